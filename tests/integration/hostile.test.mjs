// Hostile clients: pipelined and malformed HTTP, connections that hold
// header slots, oversized or odd headers, forbidden subprotocols, WebSocket
// protocol violations, refusals in JSON-RPC shape, and IPv6 neighbours.
// Raw exchanges go over node:net so that every byte is ours.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { startServer, connect, http, rpc, rssKiB, sessionCookie, sleep, upgradeStatus, within } from './lib.mjs';

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
