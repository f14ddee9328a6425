// Outbound HTTP (include/actiond/http_client.h) through the test-only action
// test.http_fetch, against local Node servers on loopback: responses and
// request bodies, the response-size cap, timeouts, cancellation, TLS
// verification, the in-flight cap, and name resolution off the event loop
// (a slow DNS server must not delay other sockets).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, connect, metrics, within, sleep } from './lib.mjs';

const listen = (srv) => new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv.address().port)));

// A server that accepts connections and never answers; it records each
// connection, when its first bytes arrive, and when it closes.
async function hangServer() {
  const conns = [];
  const srv = createNetServer((sock) => {
    const c = { sock, data: '', closed: false };
    c.gotData = new Promise((resolve) => sock.once('data', resolve));
    c.gone = new Promise((resolve) => sock.once('close', () => { c.closed = true; resolve(); }));
    sock.on('data', (d) => { c.data += d; });
    sock.on('error', () => {});
    conns.push(c);
    srv.emit('conn', c);
  });
  const port = await listen(srv);
  return {
    port, conns,
    nextConn: () => new Promise((resolve) => srv.once('conn', resolve)),
    close() { for (const c of conns) c.sock.destroy(); return new Promise((r) => srv.close(r)); },
  };
}

// The local HTTP server most tests talk to.
let web, webPort;
const seen = []; // requests received: {method, url, headers, body}
const bigStream = { chunks: 0, closedEarly: false };

function handle(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    seen.push({ method: req.method, url: req.url, headers: req.headers, body });
    if (req.url === '/hello') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=x-test', 'X-Mixed-Case': 'yes' });
      res.end('hello world');
    } else if (req.url === '/echo') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, len: body.length, sha256: createHash('sha256').update(body).digest('hex') }));
    } else if (req.url === '/missing') {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('no such thing');
    } else if (req.url === '/redirect') {
      res.writeHead(302, { Location: '/hello' });
      res.end();
    } else if (req.url === '/many-headers') {
      for (let i = 0; i < 150; i++) res.setHeader(`X-Header-${i}`, 'v');
      res.end('fine');
    } else if (req.url === '/big-declared') {
      // 5 MB with a Content-Length: refused on the headers alone.
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': 5 * 1024 * 1024 });
      res.end(Buffer.alloc(5 * 1024 * 1024, 'b'));
    } else if (req.url === '/big-stream') {
      // 5 MB in 50 chunks of 100 KiB, 40 ms apart, with no length: the
      // client must stop reading once it passes its cap, long before the end.
      bigStream.chunks = 0;
      bigStream.closedEarly = false;
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      res.on('close', () => { if (!res.writableFinished) bigStream.closedEarly = true; });
      const chunk = Buffer.alloc(100 * 1024, 's');
      const push = () => {
        if (res.destroyed) return;
        if (bigStream.chunks === 50) { res.end(); return; }
        bigStream.chunks++;
        res.write(chunk);
        setTimeout(push, 40);
      };
      push();
    } else {
      res.writeHead(500);
      res.end();
    }
  });
}

let server, c;
before(async () => {
  web = createHttpServer({ keepAlive: true }, handle);
  webPort = await listen(web);
  server = await startServer({ limits: { max_inflight: 400 } });
  c = await connect(server);
});
after(async () => {
  await c.close();
  const r = await server.stop();
  web.closeAllConnections();
  await new Promise((resolve) => web.close(resolve));
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

const fetch = (params, client = c, id) => client.call('test.http_fetch', params, id);
async function fetchOk(params, client) {
  const r = await within(fetch(params, client), 20000, 'test.http_fetch');
  assert.ok(r.result, 'a result: ' + JSON.stringify(r));
  return r.result;
}

test('a GET answers status, body and headers', async () => {
  const r = await fetchOk({ url: `http://127.0.0.1:${webPort}/hello` });
  assert.equal(r.error, 'ok');
  assert.equal(r.message, '');
  assert.equal(r.status, 200);
  assert.equal(r.body_len, 11);
  assert.equal(r.body_head, 'hello world');
  assert.equal(r.header_content_type, 'text/plain; charset=x-test');

  const nf = await fetchOk({ url: `http://127.0.0.1:${webPort}/missing` });
  assert.equal(nf.error, 'ok', 'an error status is still a response');
  assert.equal(nf.status, 404);
  assert.equal(nf.body_head, 'no such thing');

  const redir = await fetchOk({ url: `http://127.0.0.1:${webPort}/redirect` });
  assert.equal(redir.status, 302, 'redirects are not followed');
  assert.equal(seen.filter((s) => s.url === '/hello').length, 1, 'the redirect target was not fetched');
});

test('a POST body arrives intact, with the given headers', async () => {
  const body = 'line one\nline two: ünïcødé ✓ \u0000 after a NUL ' + 'x'.repeat(50000);
  const bytes = Buffer.from(body, 'utf8');
  const r = await fetchOk({
    url: `http://127.0.0.1:${webPort}/echo`, method: 'POST', body,
    headers: ['X-Test: 42', 'Content-Type: application/json'],
  });
  assert.equal(r.error, 'ok');
  assert.deepEqual(seen.at(-1).body, bytes);
  assert.equal(seen.at(-1).method, 'POST');
  assert.equal(seen.at(-1).headers['x-test'], '42');
  assert.equal(seen.at(-1).headers['content-type'], 'application/json');
  assert.equal(seen.at(-1).headers.expect, undefined, 'no Expect: 100-continue');

  const put = await fetchOk({ url: `http://127.0.0.1:${webPort}/echo`, method: 'PUT', body: 'abc' });
  assert.equal(put.error, 'ok');
  assert.equal(seen.at(-1).method, 'PUT');
  assert.equal(seen.at(-1).body.toString(), 'abc');
  assert.equal(seen.at(-1).headers['content-type'], undefined, 'no form type nobody asked for');

  const del = await fetchOk({ url: `http://127.0.0.1:${webPort}/echo`, method: 'DELETE' });
  assert.equal(del.error, 'ok');
  assert.equal(seen.at(-1).method, 'DELETE');
});

test('bad requests fail at once with "failed", and nothing is sent', async () => {
  const before = seen.length;
  for (const params of [
    { url: 'file:///etc/passwd' },
    { url: `ftp://127.0.0.1:${webPort}/` },
    { url: `http://127.0.0.1:${webPort}/hello`, headers: ['X-A: b\r\nX-Injected: 1'] },
    { url: `http://127.0.0.1:${webPort}/hello`, method: 'GET /x' },
    { url: `http://127.0.0.1:${webPort}/he llo` },
  ]) {
    const r = await fetchOk(params);
    assert.equal(r.error, 'failed', JSON.stringify(params));
    assert.equal(r.status, 0);
    assert.notEqual(r.message, '');
  }
  assert.equal(seen.length, before, 'the server saw none of them');
});

test('a closed port fails with "connect"', async () => {
  const probe = createNetServer();
  const port = await listen(probe);
  await new Promise((r) => probe.close(r));
  const r = await fetchOk({ url: `http://127.0.0.1:${port}/` });
  assert.equal(r.error, 'connect');
});

test('a 5 MB body is capped: too_large, the transfer stopped, actiond healthy', async () => {
  const declared = await fetchOk({ url: `http://127.0.0.1:${webPort}/big-declared` });
  assert.equal(declared.error, 'too_large');
  assert.equal(declared.body_len, 0, 'refused on its Content-Length, before the body');

  const streamed = await fetchOk({ url: `http://127.0.0.1:${webPort}/big-stream` });
  assert.equal(streamed.error, 'too_large');
  assert.equal(streamed.body_len, 1024 * 1024, 'exactly the cap was kept');
  assert.ok(bigStream.chunks < 50, `stopped after ${bigStream.chunks} of 50 chunks`);
  await within((async () => { while (!bigStream.closedEarly) await sleep(20); })(), 5000, 'the server sees the connection dropped');

  const small = await fetchOk({ url: `http://127.0.0.1:${webPort}/big-stream`, max_response: 1000 });
  assert.equal(small.error, 'too_large');
  assert.equal(small.body_len, 1000);

  const hb = await c.call('heartbeat', {});
  assert.ok(hb.result, 'heartbeat still answers');
  const ok = await fetchOk({ url: `http://127.0.0.1:${webPort}/hello` });
  assert.equal(ok.error, 'ok');
  const m = (await metrics(server)).values;
  assert.ok(m['actiond_http_client_errors_total{kind="too_large"}'] >= 3);
  assert.ok(m['actiond_http_client_requests_total'] >= 3);
});

test('more than 100 response headers: too_large', async () => {
  const r = await fetchOk({ url: `http://127.0.0.1:${webPort}/many-headers` });
  assert.equal(r.error, 'too_large');
  assert.match(r.message, /headers/);
});

test('a server that never answers is timed out by timeout_ms', async () => {
  const hang = await hangServer();
  try {
    const conn = hang.nextConn();
    const r = await fetchOk({ url: `http://127.0.0.1:${hang.port}/`, timeout_ms: 500 });
    assert.equal(r.error, 'timeout');
    assert.ok(r.elapsed_ms >= 450, `elapsed ${r.elapsed_ms} ms`);
    const cn = await conn;
    assert.match(cn.data, /^GET \/ HTTP\/1\.1\r\n/, 'the request was sent');
    await within(cn.gone, 5000, 'the connection is closed after the timeout');
  } finally {
    await hang.close();
  }
});

test('a cancel notification stops the transfer: cancelled, connection closed', async () => {
  const hang = await hangServer();
  try {
    const conn = hang.nextConn();
    const p = fetch({ url: `http://127.0.0.1:${hang.port}/slow`, timeout_ms: 20000 }, c, 'to-cancel');
    const cn = await within(conn, 5000, 'connection');
    await within(cn.gotData, 5000, 'request bytes');
    c.send({ jsonrpc: '2.0', method: 'cancel', params: { request_id: 'to-cancel' } });
    const r = await within(p, 5000, 'cancelled fetch');
    assert.equal(r.error?.data?.reason, 'cancelled', JSON.stringify(r));
    await within(cn.gone, 5000, 'the server sees its connection closed');
    const m = (await metrics(server)).values;
    assert.equal(m.actiond_http_client_inflight, 0);
    assert.ok(m['actiond_http_client_errors_total{kind="cancelled"}'] >= 1);
  } finally {
    await hang.close();
  }
});

test('https to a self-signed certificate fails with "tls"', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'actiond-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
  let requests = 0;
  const tls = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
    (req, res) => { requests++; res.end('secret'); });
  const port = await listen(tls);
  try {
    const r = await fetchOk({ url: `https://127.0.0.1:${port}/` });
    assert.equal(r.error, 'tls', JSON.stringify(r));
    assert.equal(r.status, 0);
    assert.equal(requests, 0, 'no request reached the unverified server');
  } finally {
    tls.closeAllConnections();
    await new Promise((r) => tls.close(r));
  }
});

test('past 256 requests in flight the next fails at once; closing the socket cancels them', async () => {
  const hang = await hangServer();
  const c2 = await connect(server);
  try {
    const pending = [];
    for (let i = 0; i < 256; i++)
      pending.push(fetch({ url: `http://127.0.0.1:${hang.port}/${i}`, timeout_ms: 20000 }, c2));
    let m;
    for (let i = 0; i < 100; i++) {
      m = (await metrics(server)).values;
      if (m.actiond_http_client_inflight >= 256) break;
      await sleep(50);
    }
    assert.equal(m.actiond_http_client_inflight, 256);
    const over = await within(fetch({ url: `http://127.0.0.1:${webPort}/hello` }, c2), 5000, 'refused fetch');
    assert.equal(over.result.error, 'failed');
    assert.match(over.result.message, /too many/);
    await c2.close();
    // The calls went with their socket, and their transfers with them.
    for (let i = 0; i < 100; i++) {
      m = (await metrics(server)).values;
      if (m.actiond_http_client_inflight === 0) break;
      await sleep(50);
    }
    assert.equal(m.actiond_http_client_inflight, 0);
    assert.ok(m.actiond_http_client_refused_total >= 1);
    await within((async () => { while (hang.conns.some((x) => !x.closed)) await sleep(20); })(), 10000,
      'every hanging connection closed');
    void pending;
  } finally {
    await hang.close();
  }
});

test('SIGTERM with a fetch in flight: the drain cancels it, the connection closes, exit 0', async () => {
  const hang = await hangServer();
  const srv = await startServer({ server: { shutdown_timeout: '300ms' } });
  try {
    const client = await connect(srv);
    const conn = hang.nextConn();
    const p = fetch({ url: `http://127.0.0.1:${hang.port}/`, timeout_ms: 20000 }, client);
    await within((await within(conn, 5000, 'connection')).gotData, 5000, 'request bytes');
    const cn = hang.conns[0];
    const exit = await within(srv.stop(), 10000, 'actiond exit');
    assert.equal(exit.code, 0);
    const r = await within(Promise.race([p, client.closed]), 1000, 'an answer or a close');
    assert.ok(r.error?.data?.reason === 'unavailable' || r.code === 1001, JSON.stringify(r));
    await within(cn.gone, 5000, 'the transfer\'s connection is closed');
  } finally {
    await hang.close();
  }
});

// ---- name resolution off the loop -------------------------------------------

// A DNS server on 127.a.b.c:53 (UDP) that answers A queries for the names
// in delays with 127.0.0.1 after that many ms, AAAA queries at once with no
// address, and anything else with NXDOMAIN.  It logs the names asked for.
async function slowDns(delays) {
  const log = [];
  const timers = new Set();
  for (let attempt = 0; ; attempt++) {
    const sock = createSocket('udp4');
    const addr = `127.${1 + Math.floor(Math.random() * 250)}.${1 + Math.floor(Math.random() * 250)}.${1 + Math.floor(Math.random() * 250)}`;
    try {
      await new Promise((resolve, reject) => { sock.once('error', reject); sock.bind(53, addr, resolve); });
    } catch (e) {
      sock.close();
      if (attempt < 5) continue;
      throw e;
    }
    sock.on('message', (q, rinfo) => {
      let off = 12;
      const labels = [];
      while (off < q.length && q[off] !== 0) { labels.push(q.subarray(off + 1, off + 1 + q[off]).toString()); off += q[off] + 1; }
      const name = labels.join('.').toLowerCase();
      const qtype = q.readUInt16BE(off + 1);
      const question = q.subarray(12, off + 5);
      log.push({ name, qtype });
      const known = name in delays;
      const answerA = known && qtype === 1;
      const head = Buffer.alloc(12);
      head.writeUInt16BE(q.readUInt16BE(0), 0);
      head.writeUInt16BE(0x8180 | (known ? 0 : 3), 2); // response, recursion, NOERROR / NXDOMAIN
      head.writeUInt16BE(1, 4);
      head.writeUInt16BE(answerA ? 1 : 0, 6);
      const rr = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
      const reply = Buffer.concat([head, question, answerA ? rr : Buffer.alloc(0)]);
      const send = () => { timers.delete(t); sock.send(reply, rinfo.port, rinfo.address); };
      const t = setTimeout(send, answerA ? delays[name] : 0);
      timers.add(t);
    });
    return {
      addr, log,
      close() { for (const t of timers) clearTimeout(t); sock.close(); },
    };
  }
}

// Heartbeats on client every 100 ms while work() runs; returns its value
// and the round trips.
async function heartbeatsDuring(client, work) {
  const rtts = [];
  let done = false;
  const beats = (async () => {
    while (!done) {
      const t0 = process.hrtime.bigint();
      const r = await within(client.call('heartbeat', {}), 5000, 'heartbeat');
      assert.ok(r.result, 'heartbeat answers');
      rtts.push(Number(process.hrtime.bigint() - t0) / 1e6);
      await sleep(100);
    }
  })();
  try {
    return { value: await work(), rtts };
  } finally {
    done = true;
    await beats;
  }
}

test('a slow DNS answer does not hold up other sockets', { timeout: 60000 }, async (t) => {
  const dns = await slowDns({ 'slow.test': 2000, 'slow-timeout.test': 2000, 'slow-cancel.test': 2000 });
  const dir = mkdtempSync(join(tmpdir(), 'actiond-dns-'));
  const resolv = join(dir, 'resolv.conf');
  writeFileSync(resolv, `nameserver ${dns.addr}\noptions timeout:5 attempts:1\n`);
  // actiond in a mount namespace of its own, where /etc/resolv.conf names
  // the slow server; nothing changes outside it.
  const slowSrv = await startServer({
    wrap: ['unshare', '--mount', 'sh', '-c', 'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv],
  });
  const a = await connect(slowSrv);
  const b = await connect(slowSrv);
  t.after(async () => {
    await a.close();
    await b.close();
    const exit = await slowSrv.stop();
    dns.close();
    assert.equal(exit.code, 0, 'actiond exits 0 on SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  // 1. The fetch waits about 2 s for its name; heartbeats do not.
  const { value: r, rtts } = await heartbeatsDuring(b, () =>
    within(a.call('test.http_fetch', { url: `http://slow.test:${webPort}/hello` }), 20000, 'slow fetch'));
  assert.equal(r.result?.error, 'ok', JSON.stringify(r));
  assert.equal(r.result.body_head, 'hello world');
  assert.ok(r.result.elapsed_ms >= 1500, `the name took ${r.result.elapsed_ms} ms to resolve`);
  assert.ok(dns.log.some((q) => q.name === 'slow.test' && q.qtype === 1), 'actiond asked our DNS server');
  assert.ok(rtts.length >= 8, `${rtts.length} heartbeats during the resolve`);
  assert.ok(Math.max(...rtts) < 300, `heartbeat round trips (ms): ${rtts.map((x) => x.toFixed(1)).join(' ')}`);

  // 2. A request that times out while its name is still resolving answers
  // on time: libcurl must not wait for its resolver thread on the loop.
  const t0 = Date.now();
  const timedOut = await heartbeatsDuring(b, () =>
    within(a.call('test.http_fetch', { url: `http://slow-timeout.test:${webPort}/hello`, timeout_ms: 300 }), 20000, 'fetch'));
  assert.equal(timedOut.value.result?.error, 'timeout', JSON.stringify(timedOut.value));
  assert.ok(Date.now() - t0 < 1500, `answered after ${Date.now() - t0} ms (the name takes 2000)`);
  assert.ok(Math.max(...timedOut.rtts) < 300, `round trips: ${timedOut.rtts.join(' ')}`);

  // 3. The same for a cancel.
  const p = a.call('test.http_fetch', { url: `http://slow-cancel.test:${webPort}/hello` }, 'to-cancel');
  await within((async () => { while (!dns.log.some((q) => q.name === 'slow-cancel.test')) await sleep(10); })(), 5000, 'query');
  const t1 = Date.now();
  a.send({ jsonrpc: '2.0', method: 'cancel', params: { request_id: 'to-cancel' } });
  const cancelled = await heartbeatsDuring(b, () => within(p, 20000, 'cancelled fetch'));
  assert.equal(cancelled.value.error?.data?.reason, 'cancelled', JSON.stringify(cancelled.value));
  assert.ok(Date.now() - t1 < 1000, `answered ${Date.now() - t1} ms after the cancel`);
  assert.ok(Math.max(...cancelled.rtts) < 300, `round trips: ${cancelled.rtts.join(' ')}`);
  const hb = await within(b.call('heartbeat', {}), 300, 'heartbeat right after the cancel');
  assert.ok(hb.result);
});
