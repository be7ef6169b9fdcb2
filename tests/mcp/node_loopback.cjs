// Preload for Node MCP servers that call app.listen(PORT) without a host
// (e.g. @modelcontextprotocol/server-everything streamableHttp / sse, which
// would bind all interfaces). Usage:
//   PORT=18800 node --require tests/mcp/node_loopback.cjs .../server-everything/dist/index.js streamableHttp
// - forces every TCP listen() onto 127.0.0.1 (unix-socket listens untouched),
// - prints `READY` on stdout once the server listens,
// - SIGTERM -> exit 0 (the servers only handle SIGINT themselves).
"use strict";
const net = require("node:net");
const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a0 = args[0];
  if (typeof a0 === "number" || (typeof a0 === "string" && /^\d+$/.test(a0))) {
    if (typeof args[1] !== "string") args.splice(1, 0, "127.0.0.1");
  } else if (a0 && typeof a0 === "object" && !a0.path && a0.port !== undefined) {
    args[0] = Object.assign({}, a0, { host: "127.0.0.1" });
  }
  this.once("listening", () => {
    const addr = this.address();
    process.stderr.write(`[node_loopback] listening on ${JSON.stringify(addr)}\n`);
    process.stdout.write("READY\n");
  });
  return origListen.apply(this, args);
};
process.on("SIGTERM", () => process.exit(0));
