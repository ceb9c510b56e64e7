// The JDK's own HTTP server (com.sun.net.httpserver), as many small Java services use it.
// It writes a response's headers and its body in two writes; with Nagle's algorithm on
// (the default), the body waits until the client acknowledges the headers.
//
// Usage: java JdkServer.java [PORT]   (0 or nothing: a free port)
// Prints "LISTENING <port>" once it accepts connections. GET /hello answers "hello\n".
import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

public class JdkServer {
    public static void main(String[] args) throws Exception {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 0;
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 64);
        server.createContext("/hello", exchange -> {
            byte[] body = "hello\n".getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "text/plain");
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.start();
        System.out.println("LISTENING " + server.getAddress().getPort());
        System.out.flush();
    }
}
