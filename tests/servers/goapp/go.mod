module redprobe/goapp

go 1.19
