// listen = unix:PATH: WebSockets and HTTP over a Unix socket, the socket's
// permission bits, its peers counted as one address unless trusted as a
// proxy, and what actiond refuses to unlink at start.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import nodeHttp from 'node:http';
import net from 'node:net';
import { mkdtempSync, statSync, writeFileSync, existsSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startServer, wrap, sleep, ACTIOND } from './lib.mjs';

const scratch = mkdtempSync(join(tmpdir(), 'actiond-unix-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function wsOver(path, token, headers = {}) {
  const ws = new WebSocket(`ws+unix://${path}:/ws`, ['actiond.v1'], {
    headers: { Authorization: 'Bearer ' + token, ...headers },
  });
  const client = wrap(ws);
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(client));
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(Object.assign(new Error('HTTP ' + res.statusCode), { status: res.statusCode })));
  });
}

function httpOver(path, method, url, { token, body } = {}) {
  return new Promise((resolve, reject) => {
    const headers = { 'Content-Type': 'application/json' };
    if (body !== undefined) headers['Content-Length'] = Buffer.byteLength(body);
    if (token) headers.Authorization = 'Bearer ' + token;
    const req = nodeHttp.request({ socketPath: path, method, path: url, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('WebSocket and HTTP over the Unix socket; default mode 0660; gone after SIGTERM', async () => {
  const path = join(scratch, 'a.sock');
  const s = await startServer({ server: { listen: `unix:${path}` } });
  try {
    assert.match(s.log(), new RegExp(`listening on http over unix:${path}`));
    const st = statSync(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);

    const c = await wsOver(path, s.token);
    const hb = await c.call('heartbeat');
    assert.ok(hb.result && typeof hb.result.time === 'string', JSON.stringify(hb));
    const bad = await c.call('no.such_method');
    assert.equal(bad.error.code, -32601);
    await c.close();

    const r = await httpOver(path, 'POST', '/rpc', { token: s.token, body: '{"jsonrpc":"2.0","id":7,"method":"heartbeat"}' });
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).id, 7);
    const anon = await httpOver(path, 'POST', '/rpc', { body: '{"jsonrpc":"2.0","id":1,"method":"heartbeat"}' });
    assert.equal(JSON.parse(anon.body).error.data.reason, 'unauthenticated');
    assert.equal((await httpOver(path, 'GET', '/healthz')).status, 200);

    // Keep-alive: requests with bodies one after another on one connection
    // (the pipelining guard must know a new read from the socket here too).
    const sock = net.connect(path);
    await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    let got = '';
    sock.on('data', (d) => { got += d; });
    const body = '{"jsonrpc":"2.0","id":1,"method":"heartbeat"}';
    for (let i = 1; i <= 3; i++) {
      sock.write(`POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      for (let k = 0; k < 100 && (got.match(/HTTP\/1\.1 200/g) || []).length < i; k++) await sleep(20);
      assert.equal((got.match(/HTTP\/1\.1 200/g) || []).length, i, `answer ${i} on the same connection`);
    }
    assert.ok(!sock.destroyed && sock.readyState === 'open', 'the connection stays open');
    sock.destroy();
  } finally {
    const r = await s.stop();
    assert.equal(r.code, 0);
  }
  assert.ok(!existsSync(path), 'the socket is removed on exit');
});

test('unix_socket_mode sets the bits the socket is created with', async () => {
  const path = join(scratch, 'b.sock');
  const s = await startServer({ server: { listen: `unix:${path}`, unix_socket_mode: '0600' } });
  try {
    assert.equal(statSync(path).mode & 0o777, 0o600);
  } finally {
    await s.stop();
  }
});

test('peers on the socket are one address for the per-address caps, unless trusted as a proxy', async () => {
  const path = join(scratch, 'c.sock');
  const s = await startServer({ server: { listen: `unix:${path}` }, limits: { max_conns_per_ip: 2 } });
  try {
    const open = [await wsOver(path, s.token), await wsOver(path, s.token)];
    await assert.rejects(wsOver(path, s.token), (e) => e.status === 429);
    // X-Forwarded-For from an untrusted peer changes nothing.
    await assert.rejects(wsOver(path, s.token, { 'X-Forwarded-For': '203.0.113.9' }), (e) => e.status === 429);
    for (const c of open) await c.close();
  } finally {
    await s.stop();
  }

  const p2 = join(scratch, 'd.sock');
  const t = await startServer({ server: { listen: `unix:${p2}`, access_log: 'on' }, limits: { max_conns_per_ip: 2 },
    security: { trusted_proxies: 'unix' } });
  try {
    const open = [];
    for (let i = 1; i <= 4; i++) open.push(await wsOver(p2, t.token, { 'X-Forwarded-For': `203.0.113.${i}` }));
    for (const c of open) assert.ok((await c.call('heartbeat')).result);
    open.push(await wsOver(p2, t.token, { 'X-Forwarded-For': '203.0.113.1' }));
    await assert.rejects(wsOver(p2, t.token, { 'X-Forwarded-For': '203.0.113.1' }), (e) => e.status === 429,
      'the cap holds per client behind the proxy');
    for (const c of open) await c.close();
    await sleep(200);
    assert.match(t.log(), /access ws open peer=203\.0\.113\.1 via=unix/, 'the access log names the client behind the proxy');
  } finally {
    await t.stop();
  }
});

function startFails(listen) {
  const conf = join(scratch, 'fail.conf');
  writeFileSync(conf, `[server]\nlisten = ${listen}\n[database]\nenabled = off\n`);
  try {
    execFileSync(ACTIOND, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 });
  } catch (e) {
    return { code: e.status, stderr: e.stderr.toString() };
  }
  return { code: 0, stderr: '' };
}

test('a file that is not a socket, or a live server, is never unlinked; a stale socket is replaced', async () => {
  const file = join(scratch, 'not-a-socket');
  writeFileSync(file, 'keep me');
  const r = startFails(`unix:${file}`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /not a socket/);
  assert.equal(readFileSync(file, 'utf8'), 'keep me');

  const path = join(scratch, 'live.sock');
  const s = await startServer({ server: { listen: `unix:${path}` } });
  try {
    const r2 = startFails(`unix:${path}`);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /another server is listening there/);
    assert.ok((await wsOver(path, s.token)), 'the first server still answers on its socket');
  } finally {
    await s.stop();
  }

  // A socket left by a process that is gone.
  const stale = join(scratch, 'stale.sock');
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', stale]);
  assert.ok(statSync(stale).isSocket());
  const u = await startServer({ server: { listen: `unix:${stale}` } });
  try {
    const c = await wsOver(stale, u.token);
    assert.ok((await c.call('heartbeat')).result);
    await c.close();
  } finally {
    await u.stop();
  }
});

test('bad listen values are refused with what to write', () => {
  for (const v of ['unix:relative.sock', 'unix:', `unix:/${'x'.repeat(120)}`]) {
    const r = startFails(v);
    assert.notEqual(r.code, 0, v);
    assert.match(r.stderr, /unix:\/absolute\/path/, v);
  }
});
