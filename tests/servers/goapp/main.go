// The test server on Go's net/http. Same routes as app.py.
// Usage: goapp <network> <address>   (tcp 127.0.0.1:8080, tcp6 [::1]:8080, unix /path)
// Prints "LISTENING" once it accepts connections. With TLS_CERT and TLS_KEY set, it
// serves HTTPS through crypto/tls.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func query(r *http.Request, key string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(key)); err == nil {
		return v
	}
	return def
}

func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// call answers /call?port=P&paths=/a,POST:/b: an outgoing call to
// http://127.0.0.1:P<path> for each path, in order, with http.Client (keep-alive); one line
// per call: its status, or "error".
func call(r *http.Request) string {
	port := r.URL.Query().Get("port")
	var lines []string
	for _, spec := range strings.Split(r.URL.Query().Get("paths"), ",") {
		method, target := "GET", spec
		if i := strings.LastIndex(spec, ":"); i > 0 {
			method, target = spec[:i], spec[i+1:]
		}
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader(strings.Repeat("b", 1000))
		}
		req, _ := http.NewRequest(method, "http://127.0.0.1:"+port+target, body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			lines = append(lines, "error")
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lines = append(lines, strconv.Itoa(resp.StatusCode))
	}
	return strings.Join(lines, "\n") + "\n"
}

func handler(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/call":
		reply(w, 200, call(r))
	case r.Method == "POST" && p == "/echo":
		n, _ := io.Copy(io.Discard, r.Body)
		reply(w, 201, fmt.Sprintf("%d\n", n))
	case p == "/hello":
		reply(w, 200, "hello world\n")
	case strings.HasPrefix(p, "/users/"):
		reply(w, 200, fmt.Sprintf("{\"user\": \"%s\"}\n", p[7:]))
	case p == "/error":
		reply(w, 500, "internal error\n")
	case p == "/sleep":
		time.Sleep(time.Duration(query(r, "ms", 50)) * time.Millisecond)
		reply(w, 200, "slept\n")
	case p == "/stream":
		// No Content-Length and explicit flushes: chunked, written over time.
		parts, ms := query(r, "parts", 3), query(r, "ms", 20)
		f := w.(http.Flusher)
		for i := 0; i < parts; i++ {
			if i > 0 {
				time.Sleep(time.Duration(ms) * time.Millisecond)
			}
			fmt.Fprintf(w, "part %d\n", i)
			f.Flush()
		}
	case p == "/big":
		body := strings.Repeat("x", query(r, "kb", 256)*1024)
		reply(w, 200, body)
	case p == "/nocontent":
		w.WriteHeader(204)
	default:
		reply(w, 404, "not found\n")
	}
}

func main() {
	l, err := net.Listen(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("LISTENING")
	// HTTPS (crypto/tls) when TLS_CERT and TLS_KEY name a certificate and its key.
	if cert := os.Getenv("TLS_CERT"); cert != "" {
		http.ServeTLS(l, http.HandlerFunc(handler), cert, os.Getenv("TLS_KEY"))
		return
	}
	http.Serve(l, http.HandlerFunc(handler))
}
