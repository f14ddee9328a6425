// The transport: the WebSocket upgrade and its credentials, message and body
// size limits, frame types, heartbeats, TLS, the operational HTTP endpoints
// and the per-address connection limit.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, connect, http, metrics, sleep, upgradeStatus } from './lib.mjs';

const MAX_MESSAGE = 64 * 1024;
const MAX_PREAUTH = 16 * 1024;

// Waits for a close, or fails after ms.
async function closedWithin(client, ms) {
  let t;
  const timeout = new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`not closed within ${ms} ms`)), ms); });
  try { return await Promise.race([client.closed, timeout]); } finally { clearTimeout(t); }
}

// A test.echo request whose serialized text is exactly `size` bytes.
function echoOfSize(size, id = 1) {
  const empty = JSON.stringify({ jsonrpc: '2.0', id, method: 'test.echo', params: { value: '' } });
  return JSON.stringify({ jsonrpc: '2.0', id, method: 'test.echo', params: { value: 'e'.repeat(size - empty.length) } });
}

function rpcBodyOfSize(size) {
  return echoOfSize(size, 1);
}

let server;
before(async () => {
  server = await startServer({
    keys: { admin: { org: 'acme', role: 'admin' }, member: { org: 'acme', role: 'member' } },
    limits: { max_message: '64KiB', max_preauth_body: '16KiB' },
  });
});
after(async () => {
  const r = await server.stop();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

test('the upgrade: without credentials is refused with 401', async () => {
  assert.equal(await upgradeStatus(server, { token: null }), 401);
  assert.equal(await upgradeStatus(server, { token: null, protocols: [] }), 401);
});

test('the upgrade: with a wrong token is refused with 401', async () => {
  assert.equal(await upgradeStatus(server, { token: 'not-a-token' }), 401);
  // A well-formed token nobody configured.
  assert.equal(await upgradeStatus(server, { token: server.tokens.admin.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')) }), 401);
  assert.equal(await upgradeStatus(server, { token: null, protocols: ['actiond.v1', 'actiond.bearer.wrong'] }), 401);
});

test('the upgrade: a token in the subprotocol actiond.bearer.<token> is accepted and actiond.v1 selected', async () => {
  const c = await connect(server, { token: null, protocols: ['actiond.v1', 'actiond.bearer.' + server.tokens.member] });
  try {
    assert.equal(c.ws.protocol, 'actiond.v1');
    const r = await c.call('heartbeat');
    assert.equal(typeof r.result.time, 'string');
  } finally {
    await c.close();
  }
});

test('the upgrade: with the Authorization header selects actiond.v1', async () => {
  const c = await connect(server);
  try {
    assert.equal(c.ws.protocol, 'actiond.v1');
    assert.equal(typeof (await c.call('heartbeat')).result.unix_ms, 'number');
  } finally {
    await c.close();
  }
});

test('the upgrade: on another path is 404', async () => {
  assert.equal(await upgradeStatus(server, { path: '/nope' }), 404);
  assert.equal(await upgradeStatus(server, { path: '/rpc' }), 404);
});

test('the upgrade: plain GET /ws without an upgrade is 426', async () => {
  const r = await http(server, '/ws');
  assert.equal(r.status, 426);
});

test('max_message: a message of exactly max_message bytes is answered', async () => {
  const c = await connect(server);
  try {
    const text = echoOfSize(MAX_MESSAGE);
    assert.equal(Buffer.byteLength(text), MAX_MESSAGE);
    c.send(text);
    const r = await c.next(5000);
    assert.equal(r.id, 1);
    assert.equal(r.result.value.length, JSON.parse(text).params.value.length);
  } finally {
    await c.close();
  }
});

test('max_message: a message just under the limit, sent in fragments, is answered', async () => {
  const c = await connect(server);
  try {
    const text = echoOfSize(MAX_MESSAGE - 100, 2);
    const step = 10000;
    for (let i = 0; i < text.length; i += step) {
      c.ws.send(text.slice(i, i + step), { fin: i + step >= text.length });
    }
    const r = await c.next(5000);
    assert.equal(r.id, 2);
    assert.equal(r.result.value, JSON.parse(text).params.value);
  } finally {
    await c.close();
  }
});

test('max_message: one frame one byte over the limit closes with 1009', async () => {
  const c = await connect(server);
  c.send(echoOfSize(MAX_MESSAGE + 1));
  const { code } = await closedWithin(c, 5000);
  assert.equal(code, 1009);
});

test('max_message: a much bigger frame closes with 1009', async () => {
  const c = await connect(server);
  c.send(echoOfSize(4 * MAX_MESSAGE));
  const { code } = await closedWithin(c, 5000);
  assert.equal(code, 1009);
});

test('max_message: a fragmented message over the limit closes with 1009', async () => {
  const c = await connect(server);
  const text = echoOfSize(MAX_MESSAGE + 5000);
  const step = 8192;
  for (let i = 0; i < text.length; i += step) {
    c.ws.send(text.slice(i, i + step), { fin: i + step >= text.length });
  }
  const { code } = await closedWithin(c, 5000);
  assert.equal(code, 1009);
});

test('max_message: fragments past the limit close with 1009 before the final fragment', async () => {
  const c = await connect(server);
  const chunk = 'x'.repeat(8192);
  c.ws.send('{"jsonrpc":"2.0","id":1,"method":"test.echo","params":{"value":"', { fin: false });
  for (let i = 0; i < 9; i++) c.ws.send(chunk, { fin: false }); // 72 KiB, never finished
  const { code } = await closedWithin(c, 5000);
  assert.equal(code, 1009);
});

test('max_message: the server still serves after closing oversized senders', async () => {
  const c = await connect(server);
  try {
    assert.ok((await c.call('heartbeat')).result.time);
  } finally {
    await c.close();
  }
  const m = await metrics(server);
  assert.ok(m.values['actiond_ws_closed_total{reason="message_too_big"}'] >= 4);
});

test('HTTP body limits: a body of exactly max_message is served, one byte more is 413', async () => {
  let r = await http(server, '/rpc', { method: 'POST', body: rpcBodyOfSize(MAX_MESSAGE) });
  assert.equal(r.status, 200);
  assert.equal(r.json.result.value.length, JSON.parse(rpcBodyOfSize(MAX_MESSAGE)).params.value.length);
  r = await http(server, '/rpc', { method: 'POST', body: rpcBodyOfSize(MAX_MESSAGE + 1) });
  assert.equal(r.status, 413);
  r = await http(server, '/rpc', { method: 'POST', body: rpcBodyOfSize(3 * MAX_MESSAGE) });
  assert.equal(r.status, 413);
});

test('HTTP body limits: an unauthenticated body over max_preauth_body is 413, under it 401', async () => {
  let r = await http(server, '/rpc', { method: 'POST', token: null, body: rpcBodyOfSize(MAX_PREAUTH + 1) });
  assert.equal(r.status, 413);
  // A wrong token may be refused before the body is read (401) or count
  // as no credential (413); it must never be served.
  r = await http(server, '/rpc', { method: 'POST', token: 'wrong', body: rpcBodyOfSize(MAX_PREAUTH + 1) });
  assert.ok(r.status === 401 || r.status === 413, `wrong token, big body: ${r.status}`);
  r = await http(server, '/rpc', { method: 'POST', token: null, body: rpcBodyOfSize(MAX_PREAUTH) });
  assert.equal(r.status, 401);
  // The same body with a credential is fine.
  r = await http(server, '/rpc', { method: 'POST', body: rpcBodyOfSize(MAX_PREAUTH + 1) });
  assert.equal(r.status, 200);
});

test('frame types: invalid UTF-8 in a text frame closes with 1007', async () => {
  const c = await connect(server);
  c.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
  const { code } = await closedWithin(c, 5000);
  assert.equal(code, 1007);
});

test('frame types: invalid UTF-8 split across fragments closes with 1007', async () => {
  const c = await connect(server);
  // The first fragment ends with the lead byte C3 of a two-byte sequence;
  // the next one goes on with 28, which is no continuation byte.
  c.ws.send(Buffer.concat([Buffer.from('{"jsonrpc":"2.0","method":"x","params":{"v":"'), Buffer.from([0xc3])]), { binary: false, fin: false });
  c.ws.send(Buffer.from([0x28, 0x22, 0x7d, 0x7d]), { fin: true });
  const { code } = await closedWithin(c, 5000);
  assert.equal(code, 1007);
});

test('frame types: a binary frame closes with 1003', async () => {
  const c = await connect(server);
  c.ws.send(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'heartbeat' })), { binary: true });
  const { code } = await closedWithin(c, 5000);
  assert.equal(code, 1003);
});

test('frame types: valid multi-byte UTF-8 is fine', async () => {
  const c = await connect(server);
  try {
    const r = await c.call('test.echo', { value: 'ünïcødé ✓ 𝄞' });
    assert.equal(r.result.value, 'ünïcødé ✓ 𝄞');
  } finally {
    await c.close();
  }
});

test('operational endpoints: /healthz and /readyz answer 200 without credentials', async () => {
  let r = await http(server, '/healthz', { token: null });
  assert.equal(r.status, 200);
  r = await http(server, '/readyz', { token: null });
  assert.equal(r.status, 200);
});

test('operational endpoints: an unknown path is 404', async () => {
  assert.equal((await http(server, '/nope')).status, 404);
  assert.equal((await http(server, '/healthz/x')).status, 404);
});

test('operational endpoints: /metrics is Prometheus text whose counters move', async () => {
  const m0 = await metrics(server);
  assert.match(m0.contentType, /^text\/plain/);
  assert.match(m0.text, /^# TYPE actiond_rpc_calls_total counter$/m);
  assert.match(m0.text, /^# TYPE actiond_ws_connections gauge$/m);
  // Every sample line is `name{labels} number`.
  for (const line of m0.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.eE+-]+$/, line);
  }
  const calls0 = m0.values.actiond_rpc_calls_total;
  const conns0 = m0.values.actiond_ws_connections;
  assert.equal(typeof calls0, 'number');
  assert.equal(typeof conns0, 'number');

  const c = await connect(server);
  for (let i = 0; i < 5; i++) assert.ok((await c.call('heartbeat')).result);
  for (let i = 0; i < 3; i++) {
    const r = await http(server, '/rpc', { method: 'POST', body: { jsonrpc: '2.0', id: i, method: 'heartbeat' } });
    assert.equal(r.status, 200);
  }
  const m1 = await metrics(server);
  assert.ok(m1.values.actiond_rpc_calls_total >= calls0 + 8, `calls ${calls0} -> ${m1.values.actiond_rpc_calls_total}`);
  assert.equal(m1.values.actiond_ws_connections, conns0 + 1);
  assert.ok(m1.values.actiond_ws_accepted_total >= 1);

  await c.close();
  // The server sees the close a moment after the client does.
  let conns = m1.values.actiond_ws_connections;
  for (let i = 0; i < 50 && conns !== conns0; i++) {
    await sleep(100);
    conns = (await metrics(server)).values.actiond_ws_connections;
  }
  assert.equal(conns, conns0);
});

let hb;
before(async () => { hb = await startServer({ server: { heartbeat_timeout: '1s' } }); });
after(async () => {
  const r = await hb.stop();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

test('heartbeat timeout: a silent socket is closed with 4000', async () => {
  const c = await connect(hb);
  const t0 = Date.now();
  const { code } = await closedWithin(c, 10000);
  assert.equal(code, 4000);
  assert.ok(Date.now() - t0 >= 900, `closed after ${Date.now() - t0} ms`);
  const m = await metrics(hb);
  assert.ok(m.values['actiond_ws_closed_total{reason="heartbeat_timeout"}'] >= 1);
});

test('heartbeat timeout: a socket that sends heartbeat every 300 ms stays open for 3 s', async () => {
  const c = await connect(hb);
  const t0 = Date.now();
  while (Date.now() - t0 < 3000) {
    const r = await c.call('heartbeat');
    assert.ok(r.result.time);
    await sleep(300);
  }
  assert.equal(c.isClosed, false);
  assert.ok((await c.call('heartbeat')).result);
  await c.close();
});

test('heartbeat timeout: any message resets the timer, a notification too', async () => {
  const c = await connect(hb);
  const t0 = Date.now();
  while (Date.now() - t0 < 2500) {
    c.send({ jsonrpc: '2.0', method: 'heartbeat' });
    await sleep(300);
  }
  assert.equal(c.isClosed, false);
  await c.close();
});

let tls, dir, ca;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'actiond-tls-'));
  const key = join(dir, 'k.pem');
  const cert = join(dir, 'c.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost',
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  ca = readFileSync(cert);
  tls = await startServer({ tls: { cert, key } });
});
after(async () => {
  const r = await tls.stop();
  rmSync(dir, { recursive: true, force: true });
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

test('TLS: heartbeat over wss:// with the certificate trusted as CA', async () => {
  assert.match(tls.wsUrl, /^wss:/);
  const c = await connect(tls, { wsOptions: { ca, servername: 'localhost', rejectUnauthorized: true } });
  try {
    assert.equal(c.ws.protocol, 'actiond.v1');
    const r = await c.call('heartbeat');
    assert.equal(typeof r.result.time, 'string');
  } finally {
    await c.close();
  }
});

test('TLS: wss:// refuses a client that does not trust the certificate', async () => {
  await assert.rejects(connect(tls, { wsOptions: { servername: 'localhost', rejectUnauthorized: true } }));
});

test('TLS: POST /rpc over https', async () => {
  const body = JSON.stringify({ jsonrpc: '2.0', id: 'h', method: 'heartbeat' });
  const { status, text } = await new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1', port: tls.port, path: '/rpc', method: 'POST', ca, servername: 'localhost',
      headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + tls.token, 'Content-Length': Buffer.byteLength(body) },
      timeout: 10000,
    }, (res) => {
      let t = '';
      res.on('data', (d) => { t += d; });
      res.on('end', () => resolve({ status: res.statusCode, text: t }));
    });
    req.on('timeout', () => req.destroy(new Error('https request timed out')));
    req.on('error', reject);
    req.end(body);
  });
  assert.equal(status, 200);
  const j = JSON.parse(text);
  assert.equal(j.id, 'h');
  assert.equal(typeof j.result.time, 'string');
});

let lim;
before(async () => { lim = await startServer({ limits: { max_conns_per_ip: 3 } }); });
after(async () => {
  const r = await lim.stop();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

test('max_conns_per_ip = 3: the 4th upgrade gets 429; after one closes a new one is accepted', async () => {
  const open = [];
  for (let i = 0; i < 3; i++) open.push(await connect(lim));
  assert.equal(await upgradeStatus(lim), 429);
  // Refused upgrades do not use up the allowance.
  assert.equal(await upgradeStatus(lim), 429);
  for (const c of open) assert.ok((await c.call('heartbeat')).result);

  await open.shift().close();
  // The server learns of the close a moment after the client; retry for a while.
  let fourth = null;
  for (let i = 0; i < 50 && !fourth; i++) {
    try { fourth = await connect(lim); } catch (e) {
      if (e.status !== 429) throw e;
      await sleep(100);
    }
  }
  assert.ok(fourth, 'a new connection is accepted once one closed');
  assert.ok((await fourth.call('heartbeat')).result);
  assert.equal(await upgradeStatus(lim), 429, 'and the limit holds again');
  open.push(fourth);
  for (const c of open) await c.close();
  // HTTP is not limited by the WebSocket count.
  assert.equal((await http(lim, '/healthz')).status, 200);
});
