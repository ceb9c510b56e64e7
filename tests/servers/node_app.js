// The test server on Node's `http` module (libuv). Same routes as app.py.
// Usage: node node_app.js <host> <port | unix socket path>; prints "LISTENING" once ready.
// With TLS_CERT and TLS_KEY set, it serves HTTPS (Node's `https`, OpenSSL inside `node`).
"use strict";
const http = require("http");
const https = require("https");
const fs = require("fs");

const [host, where] = process.argv.slice(2);

function reply(res, status, body, type = "text/plain") {
  res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

// HTTPS when TLS_CERT and TLS_KEY name a certificate and its key.
const tls = process.env.TLS_CERT
  ? { cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) }
  : null;
// /call?port=P&paths=/a,POST:/b[&via=fetch]: an outgoing call to http://127.0.0.1:P<path>
// for each path, in order, with http.request on a keep-alive agent (or the global fetch,
// undici); answers 200 with one line per call: its status, or the error's code.
const upstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function callOnce(port, spec, via) {
  const i = spec.lastIndexOf(":");
  const [method, target] = i > 0 ? [spec.slice(0, i), spec.slice(i + 1)] : ["GET", spec];
  const body = method === "POST" ? Buffer.alloc(1000, "b") : null;
  if (via === "fetch") {
    return fetch(`http://127.0.0.1:${port}${target}`, { method, body })
      .then(async (r) => (await r.arrayBuffer(), String(r.status)))
      .catch((e) => (e.cause && e.cause.code) || e.name);
  }
  return new Promise((resolve) => {
    const headers = body ? { "Content-Length": body.length } : {};
    const req = http.request({ host: "127.0.0.1", port, path: target, method, headers, agent: upstreamAgent }, (r) => {
      r.on("data", () => {});
      r.on("end", () => resolve(String(r.statusCode)));
    });
    req.on("error", (e) => resolve(e.code || e.name));
    req.end(body);
  });
}
async function call(url) {
  const port = Number(url.searchParams.get("port"));
  const lines = [];
  for (const spec of url.searchParams.get("paths").split(",")) {
    lines.push(await callOnce(port, spec, url.searchParams.get("via")));
  }
  return lines.join("\n") + "\n";
}

const handler = (req, res) => {
  const url = new URL(req.url, "http://localhost");
  const path = url.pathname;
  if (path === "/call") {
    call(url).then((body) => reply(res, 200, body));
    return;
  }
  if (req.method === "POST" && path === "/echo") {
    let n = 0;
    req.on("data", (c) => (n += c.length));
    req.on("end", () => reply(res, 201, `${n}\n`));
    return;
  }
  if (path === "/hello") return reply(res, 200, "hello world\n");
  if (path.startsWith("/users/")) return reply(res, 200, `{"user": "${path.slice(7)}"}\n`, "application/json");
  if (path === "/missing") return reply(res, 404, "not found\n");
  if (path === "/error") return reply(res, 500, "internal error\n");
  if (path === "/sleep") {
    const ms = Number(url.searchParams.get("ms") || 50);
    return setTimeout(() => reply(res, 200, "slept\n"), ms);
  }
  if (path === "/stream") {
    // Chunked, written over time.
    const parts = Number(url.searchParams.get("parts") || 3);
    const ms = Number(url.searchParams.get("ms") || 20);
    res.writeHead(200, { "Content-Type": "text/plain" });
    let i = 0;
    const next = () => {
      res.write(`part ${i}\n`);
      if (++i < parts) setTimeout(next, ms);
      else res.end();
    };
    return next();
  }
  if (path === "/burst") {
    // Chunked, every part written in the same tick: Node corks the socket and sends the
    // head and all the chunks (size, data, CRLF each) in one writev on the next tick.
    const parts = Number(url.searchParams.get("parts") || 3);
    res.writeHead(200, { "Content-Type": "text/plain" });
    for (let i = 0; i < parts; i++) res.write(`part ${i}\n`);
    return res.end();
  }
  if (path === "/big") {
    const kb = Number(url.searchParams.get("kb") || 256);
    return reply(res, 200, Buffer.alloc(kb * 1024, "x"), "application/octet-stream");
  }
  if (path === "/busy") {
    // Holds the event loop for N ms: requests on other connections wait, unread, in their
    // sockets' receive queues.
    const until = Date.now() + Number(url.searchParams.get("ms") || 20);
    while (Date.now() < until) {}
    return reply(res, 200, "busy\n");
  }
  if (path === "/nocontent") {
    res.writeHead(204);
    return res.end();
  }
  reply(res, 404, "not found\n");
};
const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
server.keepAliveTimeout = 60000;
const target = /^\d+$/.test(where) ? [Number(where), host] : [where];
server.listen(...target, () => console.log("LISTENING"));
