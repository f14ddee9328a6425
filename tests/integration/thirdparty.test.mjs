// A third-party client: the npm json-rpc-2.0 JSONRPCClient speaking over an
// npm ws WebSocket, with none of this suite's own helpers in the message path.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { JSONRPCClient } from 'json-rpc-2.0';
import { startServer } from './lib.mjs';

let server, ws, client;
before(async () => {
  server = await startServer();
  ws = new WebSocket(server.wsUrl, ['actiond.v1'], { headers: { Authorization: 'Bearer ' + server.token } });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(new Error('HTTP ' + res.statusCode)));
  });
  client = new JSONRPCClient((request) => {
    ws.send(JSON.stringify(request));
  });
  ws.on('message', (data) => client.receive(JSON.parse(data.toString())));
  ws.on('close', (code) => client.rejectAllPendingRequests(`socket closed with ${code}`));
});
after(async () => {
  if (ws.readyState === WebSocket.OPEN) {
    const closed = new Promise((resolve) => ws.once('close', resolve));
    ws.close(1000);
    await closed;
  }
  const r = await server.stop();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

// Every request of this file gives up after 5 s rather than hang.
const call = (method, params) => client.timeout(5000).request(method, params);

test('heartbeat answers the time', async () => {
  const r = await call('heartbeat');
  assert.equal(typeof r.time, 'string');
  assert.ok(!Number.isNaN(Date.parse(r.time)), `time ${r.time} parses as a date`);
  assert.equal(typeof r.unix_ms, 'number');
  assert.ok(Math.abs(r.unix_ms - Date.now()) < 60000, 'unix_ms is now');
});

test('rpc.discover answers an OpenRPC 1.2 document', async () => {
  const doc = await call('rpc.discover');
  assert.equal(typeof doc.openrpc, 'string');
  assert.ok(doc.openrpc.startsWith('1.2'), `openrpc ${doc.openrpc}`);
  assert.equal(typeof doc.info?.title, 'string');
  assert.equal(typeof doc.info?.version, 'string');
  assert.ok(Array.isArray(doc.methods));
  const byName = new Map(doc.methods.map((m) => [m.name, m]));
  for (const name of ['heartbeat', 'cancel', 'rpc.discover']) {
    const m = byName.get(name);
    assert.ok(m, `${name} is listed`);
    assert.ok(Array.isArray(m.params), `${name} has params`);
    assert.ok(m.result && typeof m.result === 'object', `${name} has a result`);
    assert.equal(typeof m.result.name, 'string', `${name}: result has a name`);
    assert.ok('schema' in m.result, `${name}: result has a schema`);
  }
  assert.ok(byName.get('cancel').params.some((p) => p.name === 'request_id'), 'cancel takes request_id');
  assert.equal(byName.size, doc.methods.length, 'no method listed twice');
});

test('an unknown method rejects with -32601', async () => {
  await assert.rejects(call('no.such.method', {}), (e) => {
    assert.equal(e.code, -32601);
    assert.equal(typeof e.message, 'string');
    return true;
  });
  // The connection survives the error.
  assert.equal(typeof (await call('heartbeat')).time, 'string');
});

test('invalid params reject with -32602', async () => {
  await assert.rejects(call('test.echo', {}), (e) => e.code === -32602);
});

test('concurrent requests are matched to their answers', async () => {
  const values = Array.from({ length: 20 }, (_, i) => `v${i}`);
  const got = await Promise.all(values.map((value) => call('test.echo', { value })));
  assert.deepEqual(got.map((r) => r.value), values);
});
