// The gRPC test server on @grpc/grpc-js (gRPC in JavaScript over Node's http2): service
// redprobe.test.Echo with raw-bytes methods (a hand-written service definition, no protobuf),
// insecure h2c on 127.0.0.1:$PORT. The same methods and behaviour as grpc_server.py.
// Usage: PORT=N node grpc_server.js; prints "LISTENING" once it serves.
//   Unary         "ok" -> "ok", status OK; "code:N" -> fails with grpc status code N
//   ServerStream  "n:K" -> K messages, then OK; "n:K,code:N" -> K messages, then status code N
// Anything else fails with INVALID_ARGUMENT (3).
"use strict";
const grpc = require("@grpc/grpc-js");

const raw = (b) => b;
const method = (name, responseStream) => ({
  path: `/redprobe.test.Echo/${name}`,
  requestStream: false,
  responseStream,
  requestSerialize: raw,
  requestDeserialize: raw,
  responseSerialize: raw,
  responseDeserialize: raw,
});
const service = { Unary: method("Unary", false), ServerStream: method("ServerStream", true) };

// The request's fields: "n:3,code:13" -> {n: 3, code: 13}; "ok" -> {}; anything else: null.
function parse(payload) {
  const text = payload.toString("latin1");
  if (text === "ok") return {};
  const fields = {};
  for (const part of text.split(",")) {
    const m = /^(n|code):(\d+)$/.exec(part);
    if (!m) return null;
    fields[m[1]] = Number(m[2]);
  }
  return fields;
}

const badRequest = (payload) => ({ code: grpc.status.INVALID_ARGUMENT, details: `bad request ${payload}` });

function unary(call, callback) {
  const fields = parse(call.request);
  if (fields === null || "n" in fields) return callback(badRequest(call.request));
  if (fields.code) return callback({ code: fields.code, details: `failing with code ${fields.code} as asked` });
  callback(null, Buffer.from("ok"));
}

function serverStream(call) {
  const fields = parse(call.request);
  if (fields === null || !("n" in fields)) return call.emit("error", badRequest(call.request));
  for (let i = 0; i < fields.n; i++) call.write(Buffer.from(`message ${i}`));
  // An error ends the call with that status, after the messages written before it.
  if (!fields.code) return call.end();
  call.emit("error", { code: fields.code, details: `failing with code ${fields.code} after ${fields.n} messages` });
}

const server = new grpc.Server();
server.addService(service, { Unary: unary, ServerStream: serverStream });
server.bindAsync(`127.0.0.1:${process.env.PORT}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    console.error(err.message);
    process.exit(1);
  }
  console.log("LISTENING");
});
process.on("SIGTERM", () => server.forceShutdown());
