// The life of a call and of a connection: cancel, timeout, rate limits,
// roles, slow consumers and backpressure, and the SIGTERM drain.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, connect, http, metrics, rssKiB, sleep } from './lib.mjs';

const MiB = 1024 * 1024;

// Resolves with p, or rejects after ms: every wait ends by itself.
function within(p, ms, what = 'operation') {
  let t;
  const timeout = new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms); });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

// Samples the RSS of pid every 25 ms until stop() is called; stop() returns the peak.
function rssSampler(pid) {
  let peak = rssKiB(pid);
  const timer = setInterval(() => {
    try { peak = Math.max(peak, rssKiB(pid)); } catch { /* exited */ }
  }, 25);
  timer.unref();
  return { sample() { peak = Math.max(peak, rssKiB(pid)); }, stop() { clearInterval(timer); this.sample(); return peak; } };
}

// c.call(), but failing at once if the socket closes first.
function callOpen(c, method, params, ms) {
  const closed = c.closed.then(({ code, reason }) => { throw new Error(`${method}: socket closed ${code} ${reason}`); });
  return within(Promise.race([c.call(method, params), closed]), ms, method);
}

function expectReason(r, reason, code) {
  assert.ok(r.error, `expected an error, got ${JSON.stringify(r).slice(0, 200)}`);
  assert.equal(r.error.data?.reason, reason, JSON.stringify(r.error));
  assert.equal(r.error.code, code);
  assert.equal('result' in r, false);
}

let server, c;
before(async () => {
  server = await startServer({
    keys: {
      admin: { org: 'acme', role: 'admin' },
      member: { org: 'acme', role: 'member' },
      other: { org: 'globex', role: 'admin' },
      lim1: { org: 'acme', role: 'member' },
      lim2: { org: 'acme', role: 'member' },
      lim3: { org: 'acme', role: 'member' },
    },
    limits: { max_inflight: 4 },
  });
  c = await connect(server);
});
after(async () => {
  await c.close();
  const r = await server.stop();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

test('cancel: a cancel notification makes an in-flight sleep answer cancelled', { timeout: 20000 }, async () => {
  const t0 = Date.now();
  const p = c.call('test.sleep', { ms: 2000 }, 11);
  await sleep(100);
  c.send({ jsonrpc: '2.0', method: 'cancel', params: { request_id: 11 } });
  const r = await within(p, 5000, 'cancelled sleep');
  assert.equal(r.id, 11);
  expectReason(r, 'cancelled', -32010);
  assert.ok(Date.now() - t0 < 1500, `answered after ${Date.now() - t0} ms`);
  assert.equal(await c.silent(200), true, 'the cancel notification itself is not answered');
});

test('cancel: string ids can be cancelled', { timeout: 20000 }, async () => {
  const t0 = Date.now();
  const p = c.call('test.sleep', { ms: 2000 }, 'sleep-a');
  await sleep(100);
  c.send({ jsonrpc: '2.0', method: 'cancel', params: { request_id: 'sleep-a' } });
  const r = await within(p, 5000, 'cancelled sleep');
  assert.equal(r.id, 'sleep-a');
  expectReason(r, 'cancelled', -32010);
  assert.ok(Date.now() - t0 < 1500, `answered after ${Date.now() - t0} ms`);
});

test('cancel: cancelling an unknown id is silent and the socket keeps working', { timeout: 20000 }, async () => {
  c.send({ jsonrpc: '2.0', method: 'cancel', params: { request_id: 'no-such-request' } });
  c.send({ jsonrpc: '2.0', method: 'cancel', params: { request_id: 424242 } });
  assert.equal(await c.silent(300), true);
  const r = await within(c.call('heartbeat'), 5000, 'heartbeat');
  assert.equal(typeof r.result.time, 'string');
  assert.equal(c.isClosed, false);
});

test('cancel: cancel sent with an id says whether it found the request', { timeout: 20000 }, async () => {
  let r = await within(c.call('cancel', { request_id: 'unknown' }, 'c1'), 5000, 'cancel');
  assert.deepEqual(r.result, { cancelled: false });
  const p = c.call('test.sleep', { ms: 2000 }, 'sleep-b');
  await sleep(100);
  r = await within(c.call('cancel', { request_id: 'sleep-b' }, 'c2'), 5000, 'cancel');
  assert.deepEqual(r.result, { cancelled: true });
  expectReason(await within(p, 5000, 'cancelled sleep'), 'cancelled', -32010);
  // Once answered, the id is no longer in flight.
  r = await within(c.call('cancel', { request_id: 'sleep-b' }, 'c3'), 5000, 'cancel');
  assert.deepEqual(r.result, { cancelled: false });
});

test('cancel: ids match by type and value: "7" does not cancel 7', { timeout: 20000 }, async () => {
  const p = c.call('test.sleep', { ms: 600 }, 7);
  await sleep(50);
  const r = await within(c.call('cancel', { request_id: '7' }, 'c4'), 5000, 'cancel');
  assert.deepEqual(r.result, { cancelled: false });
  const s = await within(p, 5000, 'sleep');
  assert.deepEqual(s.result, { slept_ms: 600 });
});

test('cancel: a socket cannot cancel the requests of another socket', { timeout: 20000 }, async () => {
  const other = await connect(server);
  try {
    const p = c.call('test.sleep', { ms: 500 }, 'mine');
    await sleep(50);
    const r = await within(other.call('cancel', { request_id: 'mine' }, 1), 5000, 'cancel');
    assert.deepEqual(r.result, { cancelled: false });
    assert.deepEqual((await within(p, 5000, 'sleep')).result, { slept_ms: 500 });
  } finally {
    await other.close();
  }
});

test('timeout: a sleep past the spec timeout (3 s) answers timeout', { timeout: 20000 }, async () => {
  const c = await connect(server);
  try {
    const t0 = Date.now();
    const r = await within(c.call('test.sleep', { ms: 5000 }), 10000, 'timed-out sleep');
    const took = Date.now() - t0;
    expectReason(r, 'timeout', -32008);
    assert.ok(took >= 2900 && took < 4900, `answered after ${took} ms`);
    assert.ok((await c.call('heartbeat')).result, 'the socket still works');
  } finally {
    await c.close();
  }
});

test('rate limit: the 4th call within a second is rate_limited, and works again after retry_after_ms', { timeout: 20000 }, async () => {
  const c = await connect(server, { token: server.tokens.lim1 });
  try {
    for (let i = 0; i < 3; i++) assert.deepEqual((await c.call('test.limited', {})).result, { ok: true }, `call ${i + 1}`);
    const r = await c.call('test.limited', {});
    expectReason(r, 'rate_limited', -32029);
    const wait = r.error.data.retry_after_ms;
    assert.equal(typeof wait, 'number');
    assert.ok(wait > 0 && wait <= 1000, `retry_after_ms = ${wait}`);
    await sleep(wait + 25);
    assert.deepEqual((await c.call('test.limited', {})).result, { ok: true }, 'after retry_after_ms');
    // Other methods are not limited.
    assert.ok((await c.call('heartbeat')).result);
  } finally {
    await c.close();
  }
});

test('rate limit: inside one batch of 5, exactly 3 succeed', { timeout: 20000 }, async () => {
  const c = await connect(server, { token: server.tokens.lim2 });
  try {
    c.send(Array.from({ length: 5 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'test.limited', params: {} })));
    const r = await c.next(5000);
    assert.ok(Array.isArray(r));
    assert.equal(r.length, 5);
    assert.deepEqual(r.map((x) => x.id).sort(), [0, 1, 2, 3, 4]);
    const ok = r.filter((x) => x.result && x.result.ok === true);
    const limited = r.filter((x) => x.error && x.error.data?.reason === 'rate_limited');
    assert.equal(ok.length, 3);
    assert.equal(limited.length, 2);
    for (const x of limited) {
      assert.equal(x.error.code, -32029);
      assert.ok(x.error.data.retry_after_ms > 0 && x.error.data.retry_after_ms <= 1000);
    }
  } finally {
    await c.close();
  }
});

test('rate limit: over HTTP the 4th call is 429 with Retry-After', { timeout: 20000 }, async () => {
  const body = { jsonrpc: '2.0', id: 1, method: 'test.limited', params: {} };
  for (let i = 0; i < 3; i++) {
    const r = await http(server, '/rpc', { method: 'POST', token: server.tokens.lim3, body });
    assert.equal(r.status, 200, `call ${i + 1}`);
  }
  const r = await http(server, '/rpc', { method: 'POST', token: server.tokens.lim3, body });
  assert.equal(r.status, 429);
  assert.equal(r.json.error.data.reason, 'rate_limited');
  const ra = r.headers.get('retry-after');
  assert.match(ra ?? '', /^\d+$/, `Retry-After: ${ra}`);
  assert.ok(Number(ra) >= 1 && Number(ra) <= 1, `Retry-After: ${ra} for a 1 s window`);
  assert.ok(r.json.error.data.retry_after_ms > 0 && r.json.error.data.retry_after_ms <= 1000);
});

test('roles: a member calling test.admin_only is forbidden; an admin is served', { timeout: 20000 }, async () => {
  const m = await connect(server, { token: server.tokens.member });
  const a = await connect(server, { token: server.tokens.admin });
  try {
    expectReason(await m.call('test.admin_only', {}), 'forbidden', -32003);
    assert.deepEqual((await a.call('test.admin_only', {})).result, { ok: true });
  } finally {
    await m.close();
    await a.close();
  }
  const body = { jsonrpc: '2.0', id: 1, method: 'test.admin_only', params: {} };
  let r = await http(server, '/rpc', { method: 'POST', token: server.tokens.member, body });
  assert.equal(r.status, 403);
  assert.equal(r.json.error.data.reason, 'forbidden');
  r = await http(server, '/rpc', { method: 'POST', token: server.tokens.admin, body });
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.result, { ok: true });
});

test('backpressure: 40 sleeps sent at once are all answered', { timeout: 30000 }, async () => {
  const c = await connect(server);
  try {
    const answers = await within(Promise.all(Array.from({ length: 40 }, (_, i) => c.call('test.sleep', { ms: 50 }, i))), 20000, '40 sleeps');
    assert.equal(answers.length, 40);
    answers.forEach((r, i) => {
      assert.equal(r.id, i);
      assert.deepEqual(r.result, { slept_ms: 50 });
    });
  } finally {
    await c.close();
  }
});

test('backpressure: a client that stops reading is throttled, not closed, and gets every answer', { timeout: 90000 }, async (t) => {
  // 400 answers of 256 KiB: 100 MiB, far past the RSS bound if the server
  // kept reading requests and queueing their answers for a socket that does
  // not read.
  const N = 400;
  const SIZE = 262144;
  const a = await connect(server, { wsOptions: { maxPayload: 64 * MiB } });
  try {
    const baseline = rssKiB(server.proc.pid);
    const calls0 = (await metrics(server)).values.actiond_rpc_calls_total;
    const rss = rssSampler(server.proc.pid);
    a.ws._socket.pause();
    const answers = Array.from({ length: N }, (_, i) => a.call('test.blob', { size: SIZE }, i));
    // Give the server time to do whatever it would do with the backlog.
    await sleep(2500);
    const peak = rss.stop();
    const ran = (await metrics(server)).values.actiond_rpc_calls_total - calls0;
    t.diagnostic(`RSS ${baseline} KiB -> peak ${peak} KiB; ${ran} calls run while not reading`);
    assert.ok(peak < baseline + 48 * 1024, `RSS ${baseline} KiB -> peak ${peak} KiB`);
    assert.equal(a.isClosed, false);
    a.ws._socket.resume();
    const got = await within(Promise.all(answers), 45000, `${N} blobs`);
    got.forEach((r, i) => {
      assert.equal(r.id, i);
      assert.ok(r.result, JSON.stringify(r).slice(0, 200));
      assert.equal(r.result.blob.length, SIZE);
    });
    assert.equal(a.isClosed, false);
    assert.ok((await a.call('heartbeat')).result);
  } finally {
    await a.close();
  }
});

let sc;
before(async () => {
  sc = await startServer({
    keys: { admin: { org: 'acme', role: 'admin' }, member: { org: 'acme', role: 'member' } },
    limits: { max_message: '256KiB', max_queue: '1MiB' },
  });
});
after(async () => {
  const r = await sc.stop();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

test('slow consumer: a socket that does not read is closed with 4008 and memory stays bounded', { timeout: 120000 }, async (t) => {
  const a = await connect(sc, { token: sc.tokens.member });
  const b = await connect(sc, { token: sc.tokens.admin });
  const baseline = rssKiB(sc.proc.pid);
  const rss = rssSampler(sc.proc.pid);
  try {
    a.ws._socket.pause();
    // Each notification is the pad plus a ~70-byte envelope.  16 pads of
    // a full 64 KiB would make one broadcast burst bigger than max_queue
    // (1 MiB) for every recipient, a reading one too; 128 bytes less per
    // pad keeps a burst (and the answer behind it) under the limit, so
    // only the socket that does not read overflows.
    const size = 65536 - 128;
    const count = 16;
    let total = 0;
    let noise = 0;
    let sawA = false;
    const deadline = Date.now() + 90000;
    for (let i = 0; i < 100 && total < 64 * MiB && Date.now() < deadline; i++) {
      const r = await callOpen(b, 'test.broadcast', { size, count }, 10000);
      assert.ok(r.result, `broadcast ${i}: ${JSON.stringify(r).slice(0, 200)}`);
      assert.ok(r.result.recipients >= 1);
      if (r.result.recipients >= 2) sawA = true;
      total += size * count;
      noise += b.drain().filter((m) => m.method === 'test.noise').length;
      rss.sample();
    }
    const peak = rss.stop();
    t.diagnostic(`broadcast ${total} bytes; RSS ${baseline} KiB -> peak ${peak} KiB`);
    assert.ok(total >= 64 * MiB, `broadcast only ${total} bytes`);
    assert.ok(sawA, 'the paused socket was a recipient at first');
    assert.ok(peak < baseline + 48 * 1024, `RSS ${baseline} KiB -> peak ${peak} KiB`);

    a.ws._socket.resume();
    const { code } = await within(a.closed, 15000, 'close of the slow consumer');
    assert.equal(code, 4008);
    const m = await metrics(sc);
    assert.ok(m.values['actiond_ws_closed_total{reason="slow_consumer"}'] >= 1, 'slow_consumer counted');

    // B read everything and is still served.
    assert.equal(b.isClosed, false);
    const hb = await callOpen(b, 'heartbeat', undefined, 5000);
    assert.equal(typeof hb.result.time, 'string');
    noise += b.drain().filter((m) => m.method === 'test.noise').length;
    assert.equal(noise, total / size, 'B received every notification');
  } finally {
    rss.stop();
    await b.close();
    if (!a.isClosed) { a.ws._socket.resume(); a.ws.terminate(); }
  }
});

test('SIGTERM drain: in-flight calls finish, idle sockets close 1001 at once, exit 0', { timeout: 30000 }, async () => {
  const d = await startServer({ server: { shutdown_timeout: '10s' } });
  try {
    const a = await connect(d);
    const b = await connect(d);
    const events = [];
    const sleepDone = a.call('test.sleep', { ms: 800 }).then((r) => { events.push('A answer'); return r; });
    const aClosed = a.closed.then((x) => { events.push('A closed'); return x; });
    const bClosed = b.closed.then((x) => { events.push('B closed'); return x; });
    // Wait until the server has the sleep in flight.
    for (let i = 0; i < 50; i++) {
      if ((await metrics(d)).values.actiond_rpc_calls_inflight >= 1) break;
      await sleep(20);
    }
    d.proc.kill('SIGTERM');

    const bc = await within(bClosed, 5000, 'close of the idle socket');
    assert.equal(bc.code, 1001);
    await assert.rejects(connect(d), 'no new connection after SIGTERM');

    const r = await within(sleepDone, 5000, 'sleep answer');
    assert.deepEqual(r.result, { slept_ms: 800 });
    const ac = await within(aClosed, 5000, 'close of the busy socket');
    assert.equal(ac.code, 1001);
    assert.deepEqual(events, ['B closed', 'A answer', 'A closed']);

    const ex = await within(d.exited, 10000, 'exit');
    assert.equal(ex.code, 0);
  } finally {
    await d.stop();
  }
});

test('SIGTERM drain: calls still running at shutdown_timeout answer unavailable, then 1001, exit 0', { timeout: 30000 }, async () => {
  const d = await startServer({ server: { shutdown_timeout: '1s' } });
  try {
    const a = await connect(d);
    const events = [];
    const sleepDone = a.call('test.sleep', { ms: 2800 }).then((r) => { events.push('A answer'); return r; });
    const aClosed = a.closed.then((x) => { events.push('A closed'); return x; });
    for (let i = 0; i < 50; i++) {
      if ((await metrics(d)).values.actiond_rpc_calls_inflight >= 1) break;
      await sleep(20);
    }
    d.proc.kill('SIGTERM');
    const r = await within(sleepDone, 5000, 'sleep answer');
    expectReason(r, 'unavailable', -32050);
    const ac = await within(aClosed, 5000, 'close');
    assert.equal(ac.code, 1001);
    assert.deepEqual(events, ['A answer', 'A closed']);
    const ex = await within(d.exited, 10000, 'exit');
    assert.equal(ex.code, 0);
  } finally {
    await d.stop();
  }
});
