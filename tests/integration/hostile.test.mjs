// Hostile clients: pipelined and malformed HTTP, connections that hold
// header slots, oversized or odd headers, forbidden subprotocols, WebSocket
// protocol violations, refusals in JSON-RPC shape, and IPv6 neighbours.
// Raw exchanges go over node:net so that every byte is ours.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { startServer, connect, http, metrics, rpc, rssKiB, sessionCookie, sleep, upgradeStatus, within } from './lib.mjs';

// Sends bytes on a fresh connection and collects what comes back until the
// server closes or ms pass.  Resolves {data, closed, reset}.
function exchange(port, bytes, { ms = 3000, localAddress, host = '127.0.0.1', keepOpen = false } = {}) {
  return new Promise((resolve) => {
    const chunks = [];
    let reset = false;
    const s = net.connect({ port, host, localAddress }, () => s.write(bytes));
    const done = (closed) => {
      clearTimeout(t);
      if (!keepOpen || closed) s.destroy();
      resolve({ data: Buffer.concat(chunks).toString('latin1'), closed, reset, socket: s });
    };
    const t = setTimeout(() => done(false), ms);
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => { reset = true; });
    s.on('close', () => done(true));
  });
}

// Splits a byte stream of HTTP/1.1 responses (all with Content-Length).
function responses(data) {
  const out = [];
  let rest = data;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const head = rest.slice(0, end);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
    const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (rest.length < end + 4 + len) break;
    out.push({ status, head, body: rest.slice(end + 4, end + 4 + len) });
    rest = rest.slice(end + 4 + len);
  }
  return out;
}

// CPU seconds (user + system) the process has used so far.
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

const GET_HEALTHZ = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';

let server;
before(async () => {
  server = await startServer({
    keys: { admin: { org: 'acme', role: 'admin' } },
  });
});
after(async () => {
  const r = await within(server.stop(), 15000, 'SIGTERM');
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

// ---- 1. pipelining ---------------------------------------------------------

test('a POST pipelined behind a GET gets an answer or a clean close, and the loop keeps serving', async () => {
  const rss0 = rssKiB(server.proc.pid);
  const r = await exchange(server.port, GET_HEALTHZ +
    'POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}', { ms: 4000 });
  const got = responses(r.data);
  assert.equal(got[0]?.status, 200, 'the GET is answered');
  assert.equal(got[0].body, '{"status":"ok"}');
  // Either the POST is answered too, or the connection is closed: never a hang.
  assert.ok(got.length === 2 || r.closed, `neither an answer nor a close: ${JSON.stringify(r.data.slice(-200))}`);
  const h = await within(http(server, '/healthz', { token: null }), 3000, '/healthz on a fresh connection');
  assert.equal(h.status, 200);
  await sleep(200);
  const grown = rssKiB(server.proc.pid) - rss0;
  assert.ok(grown < 20 * 1024, `RSS grew by ${grown} KiB`);
});

test('pipelined GETs are answered in order on one connection', async () => {
  const r = await exchange(server.port, GET_HEALTHZ + 'GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n' + GET_HEALTHZ, { ms: 1500 });
  const got = responses(r.data);
  assert.deepEqual(got.map((x) => x.body), ['{"status":"ok"}', '{"status":"ready"}', '{"status":"ok"}']);
});

test('a request pipelined behind a slow call waits without spinning, then is answered', async () => {
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'test.sleep', params: { ms: 2000 } });
  const cpu0 = cpuSeconds(server.proc.pid);
  const r = await exchange(server.port,
    `POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${server.token}\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
    GET_HEALTHZ, { ms: 4000 });
  const cpu = cpuSeconds(server.proc.pid) - cpu0;
  const got = responses(r.data);
  assert.equal(got.length, 2, r.data.slice(0, 300));
  assert.deepEqual(JSON.parse(got[0].body).result, { slept_ms: 2000 });
  assert.equal(got[1].body, '{"status":"ok"}');
  // Waiting 2 s for a timer costs next to no CPU; a loop that spins on the
  // buffered request costs a good part of the 2 s.
  assert.ok(cpu < 0.25, `the server used ${cpu} s of CPU while the call slept`);
});

// ---- 2. header slots -------------------------------------------------------

// Opens n connections from localAddress that send a partial request (or
// nothing) and never finish it.  Resolves to the sockets once all are open
// or refused; .closedCount() says how many the server has closed.
async function idleConnections(port, n, localAddress) {
  const socks = [];
  let closed = 0;
  await Promise.all(Array.from({ length: n }, (_, i) => new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => {
      if (i % 2) s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
      resolve();
    });
    s.on('error', () => resolve());
    s.on('close', () => { closed++; resolve(); });
    socks.push(s);
  })));
  return { socks, closedCount: () => closed, destroy() { for (const s of socks) s.destroy(); } };
}

test('300 half-open connections from one address do not starve another address', async () => {
  const srv = await startServer({ keys: { admin: { org: 'acme', role: 'admin' } } });
  const idle = await idleConnections(srv.port, 300, '127.0.0.1');
  try {
    await sleep(300);
    const t0 = Date.now();
    const h = await within(http(srv, '/healthz', { token: null, localAddress: '127.0.0.2' }), 3000, '/healthz from 127.0.0.2');
    assert.equal(h.status, 200);
    const c = await within(connect(srv, { wsOptions: { localAddress: '127.0.0.2' } }), 3000, 'upgrade from 127.0.0.2');
    assert.equal(typeof (await within(c.call('heartbeat'), 3000, 'heartbeat')).result.time, 'string');
    await c.close();
    assert.ok(Date.now() - t0 < 3000);
  } finally {
    idle.destroy();
    await srv.stop();
  }
});

test('HTTP connections are capped per address and must send their headers in time', async () => {
  const srv = await startServer({
    keys: { admin: { org: 'acme', role: 'admin' } },
    limits: { header_timeout: '1s', max_http_conns_per_ip: 10 },
  });
  const idle = await idleConnections(srv.port, 20, '127.0.0.3');
  try {
    // Ten are over the cap and hung up on at once...
    for (let i = 0; i < 50 && idle.closedCount() < 10; i++) await sleep(20);
    assert.ok(idle.closedCount() >= 10, `${idle.closedCount()} closed at once`);
    // ...while another address is not affected.
    assert.equal((await http(srv, '/healthz', { token: null, localAddress: '127.0.0.4' })).status, 200);
    // The rest lose their connection once the header deadline passes.
    for (let i = 0; i < 200 && idle.closedCount() < 20; i++) await sleep(25);
    assert.equal(idle.closedCount(), 20, 'half-open connections outlived the header deadline');
    assert.equal((await http(srv, '/healthz', { token: null, localAddress: '127.0.0.3' })).status, 200);
  } finally {
    idle.destroy();
    await srv.stop();
  }
});

// ---- 8. long Cookie headers ------------------------------------------------

test('the session is found in a Cookie header of many cookies, over HTTP and at the upgrade', async () => {
  const ORIGIN = 'http://app.test';
  const srv = await startServer({
    db: true, keys: { admin: { org: 'acme', role: 'admin' } }, security: { allowed_origins: ORIGIN },
  });
  try {
    const email = 'cookie@acme.test', password = 'pw-long-cookie-test';
    const made = await rpc(srv, 'admin.account_create', { email, password, role: 'member' });
    assert.equal(made.status, 200, made.body);
    const login = await rpc(srv, 'auth.login', { email, password }, { token: null, localAddress: '127.0.0.21' });
    assert.equal(login.status, 200, login.body);
    const session = sessionCookie(login);
    // 3 KB of other cookies, before and after ours.
    const filler = (p) => Array.from({ length: 12 }, (_, i) => `${p}${i}=${'v'.repeat(120)}`).join('; ');
    const cookie = `${filler('a')}; ${session}; ${filler('z')}`;
    assert.ok(cookie.length > 3000);
    const headers = { Cookie: cookie, Origin: ORIGIN };
    const r = await rpc(srv, 'account.session_list', {}, { token: null, headers });
    assert.equal(r.status, 200, r.body);
    assert.ok(Array.isArray(r.json.result.sessions), r.body);
    assert.equal(await upgradeStatus(srv, { token: null, headers }), 101);
  } finally {
    await srv.stop();
  }
});

// ---- 9. subprotocols ---------------------------------------------------------

test('only actiond.v1 is served: the internal and unknown subprotocols are refused at the upgrade', async () => {
  assert.equal(await upgradeStatus(server, { protocols: ['actiond-pg'] }), 400);
  assert.equal(await upgradeStatus(server, { protocols: ['actiond-pg', 'actiond.v1'] }), 400);
  assert.equal(await upgradeStatus(server, { protocols: ['actiond.v1', 'chat'] }), 400);
  assert.equal(await upgradeStatus(server, { protocols: ['actiond.v1'] }), 101);
  assert.equal(await upgradeStatus(server, { token: null, protocols: ['actiond.v1', 'actiond.bearer.' + server.token] }), 101);
});

// ---- 12. HTTP framing ------------------------------------------------------

const rpcBody = (method, params) => JSON.stringify({ jsonrpc: '2.0', id: 7, method, params });

test('a POST without Content-Length, or chunked, is answered 411 at once', async () => {
  for (const head of [
    'POST /rpc HTTP/1.1\r\nHost: x\r\n\r\n',
    'POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n',
  ]) {
    const r = await exchange(server.port, head, { ms: 3000 });
    const got = responses(r.data);
    assert.equal(got[0]?.status, 411, JSON.stringify(r.data.slice(0, 200)));
    const j = JSON.parse(got[0].body);
    assert.equal(j.jsonrpc, '2.0');
    assert.equal(j.id, null);
    assert.equal(j.error.data.reason, 'length_required');
  }
});

test('GET /rpc: a request target over 8 KiB is 414; params get the depth limit of a POST', async () => {
  const big = encodeURIComponent(JSON.stringify({ value: 'x'.repeat(9000) }));
  const r = await exchange(server.port, `GET /rpc?method=test.echo&params=${big}&id=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${server.token}\r\n\r\n`, { ms: 3000 });
  const got = responses(r.data);
  assert.equal(got[0]?.status, 414, JSON.stringify(r.data.slice(0, 200)));
  assert.equal(JSON.parse(got[0].body).error.data.reason, 'payload_too_large');

  const deep = '['.repeat(100) + ']'.repeat(100);
  for (const [method, path, body] of [
    ['GET', `/rpc?method=test.echo&params=${encodeURIComponent(JSON.stringify({ value: JSON.parse(deep) }))}&id=2`],
    ['POST', '/rpc', rpcBody('test.echo', { value: JSON.parse(deep) })],
  ]) {
    const res = await http(server, path, { method, body });
    assert.equal(res.status, 400, `${method}: ${res.body}`);
    assert.equal(res.json.error.code, -32600);
    assert.equal(res.json.error.data.reason, 'payload_too_large', `${method}: ${res.body}`);
  }
  const ok = await http(server, `/rpc?method=test.echo&params=${encodeURIComponent('{"value":[[1]]}')}&id=3`);
  assert.equal(ok.status, 200, ok.body);
  assert.deepEqual(ok.json, { jsonrpc: '2.0', id: 3, result: { value: [[1]] } });
});

// ---- 14. refusals are JSON-RPC responses -----------------------------------

test('every /rpc refusal is a JSON-RPC 2.0 error with the status of its reason', async () => {
  const ORIGIN = 'http://app.test';
  const srv = await startServer({ keys: { admin: { org: 'acme', role: 'admin' } }, security: { allowed_origins: ORIGIN } });
  const check = (r, status, code, reason) => {
    assert.equal(r.status, status, r.body);
    assert.equal(r.json?.jsonrpc, '2.0', r.body);
    assert.equal(r.json.id, null, r.body);
    assert.equal(r.json.error.code, code, r.body);
    assert.equal(r.json.error.data.reason, reason, r.body);
    assert.equal(typeof r.json.error.message, 'string');
  };
  try {
    const body = rpcBody('heartbeat');
    check(await http(srv, '/rpc', { method: 'POST', body, token: 'adt_not-a-real-token' }), 401, -32001, 'unauthenticated');
    check(await http(srv, '/rpc?method=heartbeat', { token: 'adt_not-a-real-token' }), 401, -32001, 'unauthenticated');
    check(await http(srv, '/rpc', { method: 'POST', body, token: null, headers: { Cookie: 'actiond_session=abc' } }), 401, -32001, 'unauthenticated');
    check(await http(srv, '/rpc', { method: 'POST', body, token: null, headers: { Cookie: 'actiond_session=abc', Origin: 'http://evil.test' } }), 403, -32003, 'forbidden');
    check(await http(srv, '/rpc', { method: 'POST', body: 'x'.repeat(20000), token: null }), 413, -32013, 'payload_too_large');
    check(await http(srv, '/rpc', { method: 'PUT', body }), 405, -32600, 'method_not_allowed');
    // Other paths keep their plain error documents.
    const nf = await http(srv, '/nope');
    assert.equal(nf.status, 404);
    assert.equal(nf.json.error.reason, 'not_found');
  } finally {
    await srv.stop();
  }
});

// ---- 13. WebSocket protocol violations ----------------------------------------

// A client frame: masked unless told otherwise.
function frame(op, payload, { mask = true, fin = true, rsv = 0 } = {}) {
  const p = Buffer.from(payload);
  let hdr;
  if (p.length < 126) {
    hdr = Buffer.from([(fin ? 0x80 : 0) | rsv | op, (mask ? 0x80 : 0) | p.length]);
  } else {
    hdr = Buffer.from([(fin ? 0x80 : 0) | rsv | op, (mask ? 0x80 : 0) | 126, p.length >> 8, p.length & 0xff]);
  }
  if (!mask) return Buffer.concat([hdr, p]);
  const key = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);
  return Buffer.concat([hdr, key, Buffer.from(p.map((b, i) => b ^ key[i & 3]))]);
}
const closePayload = (code, reason = '') => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return Buffer.concat([b, Buffer.from(reason)]);
};
const UPGRADE = (token, extra = '') => 'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
  `Sec-WebSocket-Protocol: actiond.v1\r\nAuthorization: Bearer ${token}\r\n${extra}\r\n`;

// Upgrades a raw connection, sends bytes once the 101 is in (then `after`,
// if given, once a close frame came), and resolves {status, frames, closed}
// when the server hangs up, or a close frame came (stopAtClose), or ms pass.
// frames: [{op, code, reason, len}].
function rawWs(server, bytes, { ms = 3000, after, stopAtClose = false } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(server.port, '127.0.0.1');
    let buf = Buffer.alloc(0), status = 0, sentAfter = false;
    const frames = [];
    const parse = () => {
      while (buf.length >= 2) {
        const len = buf[1] & 0x7f;
        if (len > 125 || buf.length < 2 + len) return;
        const op = buf[0] & 0x0f;
        const body = buf.subarray(2, 2 + len);
        frames.push({ op, len, code: op === 8 && len >= 2 ? body.readUInt16BE(0) : undefined, reason: op === 8 ? body.subarray(2).toString() : undefined });
        buf = buf.subarray(2 + len);
        if (op === 8 && after && !sentAfter) { sentAfter = true; s.write(after); }
        if (op === 8 && stopAtClose) done(false);
      }
    };
    s.on('connect', () => s.write(UPGRADE(server.token)));
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!status) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        status = Number(/^HTTP\/1\.1 (\d{3})/.exec(buf.toString('latin1'))?.[1]);
        buf = buf.subarray(end + 4);
        if (status === 101) s.write(bytes);
      }
      parse();
    });
    let t;
    const done = (closed) => { clearTimeout(t); s.destroy(); resolve({ status, frames, closed }); };
    t = setTimeout(() => done(false), ms);
    s.on('error', () => {});
    s.on('close', () => done(true));
  });
}

test('protocol violations are closed with 1002 and a reason, before anything is processed', async () => {
  const hb = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'heartbeat' });
  const cases = [
    ['an unmasked frame', frame(1, hb, { mask: false }), 'unmasked frame'],
    ['a ping of 126 bytes', frame(9, Buffer.alloc(126, 0x61)), 'control frame over 125 bytes'],
    ['a close frame of 1 byte', frame(8, Buffer.from([3])), 'close frame of 1 byte'],
    ['RSV1 without an extension', frame(1, hb, { rsv: 0x40 }), 'reserved bits set'],
    ['opcode 3', frame(3, 'x'), 'unknown opcode'],
    ['opcode 0xb', frame(0xb, 'x'), 'unknown opcode'],
    ['a fragmented ping', frame(9, 'x', { fin: false }), 'fragmented control frame'],
    ['a continuation outside a message', frame(0, 'x'), 'continuation outside a message'],
    // A valid frame first: it is served, the violation behind it is not.
    ['a heartbeat, then an unmasked one', Buffer.concat([frame(1, hb), frame(1, hb, { mask: false })]), 'unmasked frame'],
  ];
  for (const c of [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]) {
    cases.push([`close code ${c}`, frame(8, closePayload(c, 'bye')), 'invalid close code']);
  }
  for (const [name, bytes, reason] of cases) {
    const r = await rawWs(server, bytes, { ms: 3000, stopAtClose: true });
    assert.equal(r.status, 101, name);
    const texts = r.frames.filter((f) => f.op === 1);
    const close = r.frames.find((f) => f.op === 8);
    assert.ok(close, `${name}: no close frame (got ${JSON.stringify(r.frames)})`);
    assert.equal(close.code, 1002, `${name}: ${JSON.stringify(close)}`);
    assert.equal(close.reason, reason, name);
    // Only the heartbeat sent before the violation is answered.
    assert.equal(texts.length, name.startsWith('a heartbeat') ? 1 : 0, `${name}: ${JSON.stringify(r.frames)}`);
  }
  const m = await metrics(server);
  assert.ok(m.values['actiond_ws_closed_total{reason="protocol_error"}'] >= cases.length, 'counted');
});

test('valid close codes are echoed, 1012-1014 included; after a 1002 the peer\'s close ends the connection', async () => {
  for (const c of [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999]) {
    const r = await rawWs(server, frame(8, closePayload(c, 'bye')), { ms: 3000 });
    const close = r.frames.find((f) => f.op === 8);
    assert.equal(close?.code, c, `close ${c}: ${JSON.stringify(r.frames)}`);
    assert.ok(r.closed, `close ${c}: the server hangs up after echoing`);
  }
  // The close handshake after a violation: the client answers our 1002,
  // and the server hangs up then instead of waiting out its 5 s grace.
  const r = await rawWs(server, frame(1, 'x', { mask: false }), { ms: 4000, after: frame(8, closePayload(1000)) });
  assert.equal(r.frames.find((f) => f.op === 8)?.code, 1002);
  assert.ok(r.closed, 'hung up once the client\'s close came');
  // The server still serves.
  const ws = await connect(server);
  assert.ok((await ws.call('heartbeat')).result.unix_ms > 0);
  await ws.close();
});

test('frames sent together with the upgrade request, before the 101, are refused with 400', async () => {
  const early = frame(1, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'heartbeat' }), { mask: false });
  const r = await exchange(server.port, Buffer.concat([Buffer.from(UPGRADE(server.token)), early]), { ms: 3000 });
  assert.match(r.data, /^HTTP\/1\.[01] 400 /, JSON.stringify(r.data.slice(0, 200)));
  assert.match(r.data, /nothing after it before the answer/);
  assert.doesNotMatch(r.data, /"result"/, 'the early frame was not served');
});

// ---- 19. the access log and trusted proxies --------------------------------

// The access lines of a server's log, each as {kind, fields}.
function accessLines(srv) {
  return srv.log().split('\n').filter((l) => / INFO access /.test(l)).map((l) => {
    const [, kind, rest] = / INFO access (http|ws open|ws close) (.*)$/.exec(l);
    return { kind, line: l, f: Object.fromEntries(rest.split(' ').map((kv) => kv.split('='))) };
  });
}

test('the access log: a line per HTTP request and per WebSocket open and close, with no secret in it', async () => {
  const PASSWORD = 'correct-horse-battery-staple-7';
  const COOKIE = 'cookie-secret-' + 'x'.repeat(20);
  const METRICS = 'metrics-token-secret-0123456789';
  const srv = await startServer({ keys: { admin: { org: 'acme', role: 'admin' } }, security: { metrics_token: METRICS } });
  try {
    assert.equal((await http(srv, '/healthz', { token: null })).status, 200);
    const q = await http(srv, `/rpc?method=heartbeat&params=${encodeURIComponent('{}')}&id=1&secret=${COOKIE}`);
    assert.equal(q.status, 200, q.body);
    await rpc(srv, 'auth.login', { org: 'acme', email: 'a@b.test', password: PASSWORD }, { token: null });
    await http(srv, '/rpc', { method: 'POST', body: rpcBody('heartbeat'), token: null, headers: { Cookie: `actiond_session=${COOKIE}` } });
    await http(srv, '/metrics', { token: METRICS });
    const ws = await connect(srv);
    await ws.call('heartbeat');
    await ws.call('heartbeat');
    ws.ws.close(1000, 'done');
    await ws.closed;
    const sub = await connect(srv, { token: null, protocols: ['actiond.v1', 'actiond.bearer.' + srv.token] });
    await sub.close();
    await sleep(300);
    const lines = accessLines(srv);
    const h = lines.find((l) => l.kind === 'http' && l.f.path === '/healthz');
    assert.ok(h, srv.log());
    assert.equal(h.f.method, 'GET');
    assert.equal(h.f.status, '200');
    assert.equal(h.f.peer, '127.0.0.1');
    assert.match(h.f.ms, /^\d+\.\d$/);
    assert.ok(Number(h.f.bytes_out) > 15, h.line);
    const g = lines.find((l) => l.kind === 'http' && l.f.path === '/rpc' && l.f.method === 'GET');
    assert.equal(g.f.status, '200');
    assert.equal(g.f.credential, 'api_key:admin', 'the credential id, not the token');
    assert.ok(lines.some((l) => l.kind === 'http' && l.f.method === 'POST' && l.f.path === '/rpc' && l.f.status === '401'), 'the cookie request');
    const opens = lines.filter((l) => l.kind === 'ws open');
    const closes = lines.filter((l) => l.kind === 'ws close');
    assert.equal(opens.length, 2, srv.log());
    assert.equal(closes.length, 2, srv.log());
    assert.equal(opens[0].f.credential, 'api_key:admin');
    assert.equal(closes[0].f.peer, '127.0.0.1');
    assert.equal(closes[0].f.code, '1000');
    assert.equal(closes[0].f.by, 'client');
    assert.equal(closes[0].f.msgs_in, '2');
    assert.equal(closes[0].f.msgs_out, '2');
    assert.match(closes[0].f.ms, /^\d+$/);
    assert.equal(closes[1].f.code, '1005', 'a close frame without a code');
    // No secret, anywhere in the log.
    const log = srv.log();
    for (const secret of [srv.token, PASSWORD, COOKIE, METRICS]) assert.ok(!log.includes(secret), `a secret in the log: ${secret}`);
  } finally {
    await srv.stop();
  }
  const quiet = await startServer({ server: { access_log: 'off' } });
  try {
    await http(quiet, '/healthz');
    await (await connect(quiet)).close();
    await sleep(200);
    assert.equal(accessLines(quiet).length, 0, quiet.log());
  } finally {
    await quiet.stop();
  }
});

// A POST /rpc of auth.login from a chosen source address with an
// X-Forwarded-For header; resolves the HTTP status.
async function loginFrom(srv, localAddress, xff) {
  const r = await http(srv, '/rpc', {
    method: 'POST', token: null, localAddress, headers: xff ? { 'X-Forwarded-For': xff } : {},
    body: rpcBody('auth.login', { org: 'acme', email: 'nobody@x.test', password: 'wrong-password' }),
  });
  return r.status;
}

test('trusted proxies: X-Forwarded-For names the client for the rate limits and the log, only from a trusted peer', async () => {
  const srv = await startServer({
    security: { trusted_proxies: '127.0.0.1, 10.9.0.0/16, ::1' },
    args: ['-s', 'rate_limits.auth.login=2/1m'],
  });
  try {
    // From the trusted proxy, the limit follows the forwarded address.
    assert.notEqual(await loginFrom(srv, '127.0.0.1', '203.0.113.7'), 429);
    assert.notEqual(await loginFrom(srv, '127.0.0.1', '198.51.100.1, 203.0.113.7'), 429);
    assert.equal(await loginFrom(srv, '127.0.0.1', '203.0.113.7'), 429, 'the third from 203.0.113.7');
    // Trusted hops on the right are skipped; another client has its own budget.
    assert.notEqual(await loginFrom(srv, '127.0.0.1', '203.0.113.8, 10.9.1.1'), 429);
    assert.notEqual(await loginFrom(srv, '127.0.0.1', '2001:db8::5'), 429);
    // From an untrusted peer the header is ignored: its own address counts.
    assert.notEqual(await loginFrom(srv, '127.0.0.2', '203.0.113.20'), 429);
    assert.notEqual(await loginFrom(srv, '127.0.0.2', '203.0.113.21'), 429);
    assert.equal(await loginFrom(srv, '127.0.0.2', '203.0.113.22'), 429, 'the third from 127.0.0.2, whatever it claims');
    await sleep(200);
    const lines = accessLines(srv).filter((l) => l.kind === 'http');
    assert.ok(lines.some((l) => l.f.peer === '203.0.113.7' && l.f.via === '127.0.0.1'), srv.log());
    assert.ok(lines.some((l) => l.f.peer === '2001:db8::5' && l.f.via === '127.0.0.1'), srv.log());
    assert.ok(lines.some((l) => l.f.peer === '127.0.0.2' && !l.f.via), srv.log());
    assert.ok(!lines.some((l) => /203\.0\.113\.2\d/.test(l.line)), 'an untrusted X-Forwarded-For is not believed');
    // A WebSocket through the proxy is logged under its client.
    const ws = await connect(srv, { headers: { 'X-Forwarded-For': '192.0.2.44' } });
    await ws.close();
    await sleep(200);
    assert.ok(accessLines(srv).some((l) => l.kind === 'ws open' && l.f.peer === '192.0.2.44' && l.f.via === '127.0.0.1'), srv.log());
  } finally {
    await srv.stop();
  }
});

// ---- 11c. /metrics is not for everyone ----------------------------------------

test('/metrics: loopback clients only, or the metrics token from anywhere', async () => {
  const TOKEN = 'metrics-0123456789-abcdef';
  const open = await startServer({ security: { trusted_proxies: '127.0.0.1' } });
  const guarded = await startServer({ security: { trusted_proxies: '127.0.0.1', metrics_token: TOKEN } });
  try {
    // Loopback: served.
    assert.equal((await http(open, '/metrics', { token: null })).status, 200);
    assert.equal((await http(open, '/metrics', { token: null, localAddress: '127.0.0.2' })).status, 200);
    // A client elsewhere (behind the trusted proxy): 403, token or not.
    const far = { 'X-Forwarded-For': '203.0.113.9' };
    const r = await http(open, '/metrics', { token: null, headers: far });
    assert.equal(r.status, 403, r.body);
    assert.equal(r.json.error.reason, 'forbidden');
    assert.equal((await http(open, '/metrics', { token: TOKEN, headers: far })).status, 403);
    // With security.metrics_token: the right Bearer token opens it, from anywhere.
    assert.equal((await http(guarded, '/metrics', { token: TOKEN, headers: far })).status, 200);
    assert.equal((await http(guarded, '/metrics', { token: TOKEN + 'x', headers: far })).status, 403);
    assert.equal((await http(guarded, '/metrics', { token: TOKEN.slice(0, -1), headers: far })).status, 403);
    assert.equal((await http(guarded, '/metrics', { token: null, headers: far })).status, 403);
    assert.equal((await http(guarded, '/metrics', { token: null })).status, 200, 'loopback still needs no token');
    const m = await metrics(guarded);
    assert.equal(m.values.actiond_metrics_refused_total, 3);
    assert.ok(!guarded.log().includes(TOKEN), 'the metrics token is never logged');
  } finally {
    await open.stop();
    await guarded.stop();
  }
});
