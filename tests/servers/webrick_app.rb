# Ruby's WEBrick, from Debian's ruby-webrick. It writes a response's headers and its body
# in separate writes; with Nagle's algorithm on (the default), the body waits until the
# client acknowledges the headers.
#
# Usage: ruby webrick_app.rb [PORT]   (0 or nothing: a free port)
# Prints "LISTENING <port>" once it accepts connections. GET /hello answers "hello\n".
require 'webrick'

server = WEBrick::HTTPServer.new(
  BindAddress: '127.0.0.1',
  Port: (ARGV[0] || 0).to_i,
  Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN),
  AccessLog: [],
)
server.mount_proc('/hello') do |_req, res|
  res['Content-Type'] = 'text/plain'
  res.body = "hello\n"
end
trap('TERM') { server.shutdown }
$stdout.puts "LISTENING #{server.listeners.first.addr[1]}"
$stdout.flush
server.start
