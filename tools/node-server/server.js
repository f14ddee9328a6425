#!/usr/bin/env node
// Node.js peer for tools/bench and tools/bench-publish: what a user of a
// TypeScript JSON-RPC framework would run instead of actiond.  npm `ws`
// (WebSocketServer) + npm `json-rpc-2.0` (JSONRPCServer), with two methods:
// `heartbeat` answering { time: <ISO-8601 now> } like actiond's heartbeat,
// and `bench.publish {size}`, which broadcasts the notification actiond's
// test.publish sends (test.published {tag: "", pad: <size bytes>}) to every
// connected client the usual way: serialised once, ws.send() per client.
//
//   node server.js --port N [--host 127.0.0.1]
//
// Serves ws://HOST:N/ws, accepts subprotocol actiond.v1 and any
// Authorization header (no authentication is done).
'use strict';

const { WebSocketServer } = require('ws');
const { JSONRPCServer } = require('json-rpc-2.0');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const port = Number(arg('--port', '8090'));
const host = arg('--host', '127.0.0.1');
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node server.js --port N [--host ADDR]');
  process.exit(2);
}

const rpc = new JSONRPCServer();
rpc.addMethod('heartbeat', () => ({ time: new Date().toISOString() }));

let wss;
rpc.addMethod('bench.publish', ({ size }) => {
  const text = JSON.stringify({
    jsonrpc: '2.0', method: 'test.published', params: { tag: '', pad: 'p'.repeat(size) },
  });
  let recipients = 0;
  for (const c of wss.clients) {
    if (c.readyState === c.OPEN) {
      c.send(text);
      recipients++;
    }
  }
  return { recipients };
});

wss = new WebSocketServer({
  host,
  port,
  path: '/ws',
  // Choose actiond.v1 when offered; a client that offers only other
  // subprotocols gets none (ws then sends no Sec-WebSocket-Protocol).
  handleProtocols: (protocols) => (protocols.has('actiond.v1') ? 'actiond.v1' : false),
});

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    rpc.receiveJSON(data.toString()).then((response) => {
      if (response && ws.readyState === ws.OPEN) ws.send(JSON.stringify(response));
    });
  });
});

wss.on('listening', () => {
  console.error(`node-server: listening on ws://${host}:${port}/ws (ws + json-rpc-2.0)`);
});
wss.on('error', (err) => {
  console.error(`node-server: ${err.message}`);
  process.exit(1);
});

function shutdown() {
  for (const c of wss.clients) c.terminate();
  wss.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
