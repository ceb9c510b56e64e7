// The HTTP/2 test server on Node's `http2` module (nghttp2 inside `node`), core stream API.
// Usage: PORT=N [HOST=127.0.0.1] node node_h2.js; or node node_h2.js <unix socket path>.
// Prints "LISTENING" once ready. Cleartext HTTP/2 with prior knowledge (h2c, no Upgrade and
// no HTTP/1.1), or, with TLS_CERT and TLS_KEY set, HTTP/2 over TLS (ALPN h2 only).
// Routes (any method):
//   /                 200, small body
//   /items/<id>       200, small JSON body
//   /status/<code>    that status (100-199 and unknown codes: 400), small body (none for 204, 304)
//   /big?kb=N         200, N KiB body (default 200)
//   /slow?ms=N        200 after N ms (default 100)
//   /reset            response headers and 16 KiB of data, then RST_STREAM INTERNAL_ERROR
//   anything else     404
"use strict";
const http2 = require("http2");
const fs = require("fs");

const { HTTP2_HEADER_PATH, HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE } = http2.constants;

function reply(stream, status, body, type = "text/plain") {
  if (stream.destroyed || stream.closed) return;
  const empty = status === 204 || status === 304;
  stream.respond(
    empty
      ? { [HTTP2_HEADER_STATUS]: status }
      : { [HTTP2_HEADER_STATUS]: status, [HTTP2_HEADER_CONTENT_TYPE]: type, "content-length": body.length },
    { endStream: empty },
  );
  if (!empty) stream.end(body);
}

function handle(stream, headers) {
  // A client that resets or goes away: nothing to do (without a listener, Node throws).
  stream.on("error", () => {});
  const url = new URL(headers[HTTP2_HEADER_PATH] || "/", "http://localhost");
  const path = url.pathname;
  const param = (name, dflt) => Number(url.searchParams.get(name) || dflt);
  // The request body, if any, is read and dropped; the answer does not wait for it.
  stream.resume();
  if (path === "/") return reply(stream, 200, Buffer.from("hello h2\n"));
  if (path.startsWith("/items/")) {
    return reply(stream, 200, Buffer.from(`{"item": "${path.slice(7)}"}\n`), "application/json");
  }
  if (path.startsWith("/status/")) {
    const code = Number(path.slice(8));
    const status = Number.isInteger(code) && code >= 200 && code <= 599 ? code : 400;
    return reply(stream, status, Buffer.from(`status ${status}\n`));
  }
  if (path === "/big") {
    return reply(stream, 200, Buffer.alloc(param("kb", 200) * 1024, "x"), "application/octet-stream");
  }
  if (path === "/slow") return setTimeout(() => reply(stream, 200, Buffer.from("slow\n")), param("ms", 100));
  if (path === "/reset") {
    stream.respond({ [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: "application/octet-stream" });
    // Once the data is handed to the session, the stream is reset: the client sees HEADERS,
    // DATA, then RST_STREAM INTERNAL_ERROR, and never END_STREAM. destroy() with an error
    // resets with NGHTTP2_INTERNAL_ERROR without ending the stream first; close() ends the
    // writable side before it resets, and END_STREAM often wins the race (a complete 200).
    stream.write(Buffer.alloc(16 * 1024, "r"), () => stream.destroy(new Error("reset by the test server")));
    return;
  }
  reply(stream, 404, Buffer.from("not found\n"));
}

const tls = process.env.TLS_CERT
  ? { cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) }
  : null;
const server = tls ? http2.createSecureServer({ ...tls, allowHTTP1: false }) : http2.createServer();
server.on("stream", handle);
// Sessions that fail (a client that is not HTTP/2, a bad handshake) are the client's problem.
server.on("sessionError", () => {});
server.on("unknownProtocol", (socket) => socket.destroy());
const where = process.argv[2];
const target = where ? [where] : [Number(process.env.PORT), process.env.HOST || "127.0.0.1"];
server.listen(...target, () => console.log("LISTENING"));
process.on("SIGTERM", () => process.exit(0));
