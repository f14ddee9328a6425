// Publish/subscribe.  Two actiond processes, A and B, share one PostgreSQL
// cluster; sockets of two orgs, of every class (members, an admin, an owner,
// an agent, configured keys), sit on both.  Each publish is followed by a
// fence (a publish to the whole org from the same instance): delivery is in
// order per publishing instance, so what a socket got before its fence is
// exactly what the publish sent it.  Then: a 20 KB payload crosses instances
// through the table; a socket that stops reading is closed 4008 by the time
// limit while under the byte limit; a client ping keeps a socket alive past
// the heartbeat timeout.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, startPostgres, connect, rpc, metrics, sessionCookie, within, sleep,
} from './lib.mjs';

const KEYS = { owner: { org: 'acme', role: 'owner' }, other: { org: 'other', role: 'admin' } };
const ORIGIN = 'http://app.test';

let pg, A, B;
const socks = {};

before(async () => {
  pg = await startPostgres();
  A = await startServer({ db: pg.conninfo, keys: KEYS, security: { allowed_origins: ORIGIN } });
  B = await startServer({ db: pg.conninfo, keys: KEYS, security: { allowed_origins: ORIGIN } });
});

after(async () => {
  for (const c of Object.values(socks)) if (!c.isClosed) await c.close();
  const ra = await A?.stop();
  const rb = await B?.stop();
  pg?.destroy();
  assert.equal(ra?.code, 0, 'actiond A exits 0 on SIGTERM');
  assert.equal(rb?.code, 0, 'actiond B exits 0 on SIGTERM');
});

// ---- helpers ---------------------------------------------------------------------

let ipSeq = 1;
const freshIp = () => `127.0.${40 + Math.floor(ipSeq / 250)}.${(ipSeq++ % 250) + 1}`;
let emailSeq = 0;

async function newAccount(role) {
  const email = `pub-${++emailSeq}@acme.test`;
  const password = `password-${emailSeq}-${Math.random().toString(36).slice(2)}`;
  const r = await rpc(A, 'admin.account_create', { email, password, role }, { token: A.tokens.owner });
  assert.equal(r.status, 200, r.body);
  const l = await rpc(A, 'auth.login', { email, password }, { token: null, localAddress: freshIp() });
  assert.equal(l.status, 200, l.body);
  const t = await rpc(A, 'account.token_create', { name: 'pubsub' },
    { token: null, headers: { Cookie: sessionCookie(l), Origin: ORIGIN }, localAddress: freshIp() });
  assert.equal(t.status, 200, t.body);
  return t.json.result.token;
}

// Waits until srv accepts token (credentials made on A reach B by NOTIFY).
async function usable(srv, token) {
  for (let i = 0; i < 100; i++) {
    const r = await rpc(srv, 'heartbeat', {}, { token });
    if (r.status === 200) return;
    await sleep(20);
  }
  assert.fail('credential not usable on the other instance');
}

// A socket that records the tags of test.published notifications.
async function open(label, srv, token) {
  await usable(srv, token);
  const c = await connect(srv, { token });
  c.label = label;
  c.tags = [];
  c.waits = new Map();
  c.ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.method !== 'test.published') return;
    c.tags.push(m.params.tag);
    c.last = m.params;
    c.waits.get(m.params.tag)?.();
  });
  c.until = (tag) => (c.tags.includes(tag) ? Promise.resolve()
    : within(new Promise((resolve) => c.waits.set(tag, resolve)), 5000, `${label} waiting for ${tag}`));
  const who = await c.call('test.whoami', {});
  assert.ok(who.result, JSON.stringify(who));
  c.who = who.result;
  socks[label] = c;
  return c;
}

const ACME = ['mA', 'mB', 'm2B', 'dB', 'oA', 'gA', 'gB', 'kA', 'kB'];
const OTHER = ['xA', 'xB'];
let seq = 0;

// Publishes params from srv (with key), fences both orgs from srv, and
// returns the sockets that got the publish and srv's local count.
async function publish(srv, params, key = 'owner') {
  const tag = `p${++seq}`;
  const r = await rpc(srv, 'test.publish', { size: 16, ...params, tag }, { token: srv.tokens[key] });
  assert.equal(r.status, 200, r.body);
  const fence = `f${seq}`;
  for (const k of ['owner', 'other']) {
    const f = await rpc(srv, 'test.publish', { size: 0, tag: fence }, { token: srv.tokens[k] });
    assert.equal(f.status, 200, f.body);
  }
  await Promise.all([...ACME, ...OTHER].map((l) => socks[l].until(fence)));
  const got = [...ACME, ...OTHER].filter((l) => {
    const c = socks[l];
    const i = c.tags.indexOf(tag);
    if (i >= 0) assert.ok(i < c.tags.indexOf(fence), `${l}: the publish came before its fence`);
    return i >= 0;
  });
  return { got: got.sort(), local: r.json.result.recipients };
}

// ---- audiences across two instances ----------------------------------------------

test('a publish reaches exactly the matching sockets of its org, on both instances', { timeout: 60000 }, async () => {
  const m = await newAccount('member');
  const m2 = await newAccount('member');
  const d = await newAccount('admin');
  const o = await newAccount('owner');
  const ag = await rpc(A, 'admin.agent_session_create', { name: 'bot', integrations: [] }, { token: A.tokens.owner });
  assert.equal(ag.status, 200, ag.body);

  await open('mA', A, m);
  await open('mB', B, m);
  await open('m2B', B, m2);
  await open('dB', B, d);
  await open('oA', A, o);
  await open('gA', A, ag.json.result.token);
  await open('gB', B, ag.json.result.token);
  await open('kA', A, A.tokens.owner);
  await open('kB', B, B.tokens.owner);
  await open('xA', A, A.tokens.other);
  await open('xB', B, B.tokens.other);
  assert.equal(socks.mA.who.account_id, socks.mB.who.account_id);
  assert.notEqual(socks.xA.who.org_id, socks.kA.who.org_id);

  const sorted = (...l) => l.sort();
  let r = await publish(A, {});
  assert.deepEqual(r.got, sorted(...ACME), 'no audience: the whole org, never another org');
  assert.equal(r.local, 4, 'A counts its own acme sockets (and none of B)');

  r = await publish(A, { roles: ['member'] });
  assert.deepEqual(r.got, sorted('mA', 'mB', 'm2B'));
  assert.equal(r.local, 1);
  r = await publish(B, { roles: ['admin', 'owner'] });
  assert.deepEqual(r.got, sorted('dB', 'oA'), 'a key with role owner is a key, not an owner');
  r = await publish(A, { roles: ['agents'] });
  assert.deepEqual(r.got, sorted('gA', 'gB'));
  r = await publish(B, { roles: ['keys'] });
  assert.deepEqual(r.got, sorted('kA', 'kB'));

  r = await publish(B, { account: socks.mA.who.account_id });
  assert.deepEqual(r.got, sorted('mA', 'mB'), 'an account: all its sockets, on both instances');
  assert.equal(r.local, 1);
  r = await publish(A, { account: socks.mA.who.account_id, roles: ['admin'] });
  assert.deepEqual(r.got, [], 'every field must match');
  r = await publish(A, { agent_session: socks.gA.who.agent_session_id });
  assert.deepEqual(r.got, sorted('gA', 'gB'));
  r = await publish(A, { account: socks.m2B.who.account_id });
  assert.deepEqual(r.got, ['m2B']);

  // The other org with the same account id gets nothing (ids are per org in the index).
  r = await publish(A, { account: socks.mA.who.account_id }, 'other');
  assert.deepEqual(r.got, []);
  r = await publish(B, {}, 'other');
  assert.deepEqual(r.got, sorted(...OTHER));

  // Topics.
  for (const l of ['mA', 'gB', 'dB', 'xA']) {
    const s = await socks[l].call('test.subscribe', { topic: 'room-1' });
    assert.deepEqual(s.result, { ok: true }, JSON.stringify(s));
  }
  assert.deepEqual((await socks.mA.call('test.subscribe', { topic: 'room-1' })).result, { ok: true }, 'idempotent');
  r = await publish(A, { topic: 'room-1' });
  assert.deepEqual(r.got, sorted('mA', 'gB', 'dB'), 'a topic is per org');
  r = await publish(B, { topic: 'room-1', roles: ['member', 'agents'] });
  assert.deepEqual(r.got, sorted('mA', 'gB'));
  r = await publish(A, { topic: 'room-2' });
  assert.deepEqual(r.got, []);
  assert.deepEqual((await socks.gB.call('test.unsubscribe', { topic: 'room-1' })).result, { ok: true });
  r = await publish(B, { topic: 'room-1' });
  assert.deepEqual(r.got, sorted('mA', 'dB'));
  r = await publish(B, { topic: 'room-1' }, 'other');
  assert.deepEqual(r.got, ['xA']);
});

test('topic limits: WebSocket only, 64 per socket, 128 bytes', { timeout: 30000 }, async () => {
  const c = await connect(A, { token: A.tokens.owner });
  try {
    const h = await rpc(A, 'test.subscribe', { topic: 't' }, { token: A.tokens.owner });
    assert.equal(h.json.error?.data?.reason, 'denied', 'not over HTTP: ' + h.body);
    assert.ok((await c.call('test.subscribe', { topic: 'x'.repeat(128) })).result);
    const long = await c.call('test.subscribe', { topic: 'x'.repeat(129) });
    assert.equal(long.error?.data?.reason, 'denied', JSON.stringify(long));
    // 'é' is two bytes: 65 characters, 130 bytes.
    const wide = await c.call('test.subscribe', { topic: 'é'.repeat(65) });
    assert.equal(wide.error?.data?.reason, 'denied', JSON.stringify(wide));
    for (let i = 1; i < 64; i++) assert.ok((await c.call('test.subscribe', { topic: `t${i}` })).result, `topic ${i}`);
    const over = await c.call('test.subscribe', { topic: 't64' });
    assert.equal(over.error?.data?.reason, 'denied', '65th topic: ' + JSON.stringify(over));
    assert.ok((await c.call('test.subscribe', { topic: 't1' })).result, 'one already held is fine');
    assert.ok((await c.call('test.unsubscribe', { topic: 't1' })).result);
    assert.ok((await c.call('test.subscribe', { topic: 't64' })).result, 'room again after unsubscribing');
    const big = await rpc(A, 'test.publish', { size: 1048576 }, { token: A.tokens.owner });
    assert.equal(big.json.error?.data?.reason, 'payload_too_large', 'over 1 MiB is refused: ' + big.body.slice(0, 200));
  } finally {
    await c.close();
  }
  // Its topic groups went with it.
  const m = await metrics(A);
  assert.ok(m.values.actiond_publish_groups < 20, 'groups freed: ' + m.values.actiond_publish_groups);
});

test('a 20 KB payload crosses instances through the table', { timeout: 30000 }, async () => {
  const before = (await metrics(B)).values['actiond_publish_received_total{via="table"}'];
  const r = await rpc(A, 'test.publish', { size: 20000, account: socks.m2B.who.account_id, tag: 'big' }, { token: A.tokens.owner });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.result.recipients, 0, 'nobody on A');
  await socks.m2B.until('big');
  assert.equal(socks.m2B.last.pad.length, 20000);
  assert.equal(socks.m2B.last.pad, 'p'.repeat(20000));
  const after = (await metrics(B)).values['actiond_publish_received_total{via="table"}'];
  assert.equal(after, before + 1, 'B fetched it from the table');
  assert.ok(Number(pg.psql('SELECT count(*) FROM publishes')) >= 1);
});

// ---- slow consumers and heartbeats (one instance, no database) --------------------

test('a socket that stops reading is closed 4008 by the time limit, under the byte limit', { timeout: 90000 }, async () => {
  const S = await startServer({
    keys: { admin: { org: 'acme', role: 'admin' } },
    limits: { max_queue: '64MiB', slow_queue_bytes: '256KiB', slow_queue_time: '1s' },
  });
  const a = await connect(S);
  try {
    assert.ok((await a.call('test.subscribe', { topic: 'slow' })).result);
    a.ws._socket.pause();
    // Fill the kernel's buffers until the server's own queue passes 256 KiB.
    let over = false;
    let sent = 0;
    for (let i = 0; i < 600 && !over; i++) {
      const r = await rpc(S, 'test.publish', { size: 65536, topic: 'slow' });
      assert.equal(r.json.result?.recipients, 1, r.body.slice(0, 200));
      sent += 65536;
      if (i % 4 === 3) over = (await metrics(S)).values.actiond_ws_slow_queues >= 1;
    }
    assert.ok(over, `the queue never passed slow_queue_bytes (${sent} bytes sent)`);
    let m;
    for (let i = 0; i < 100; i++) {
      m = (await metrics(S)).values;
      if (m['actiond_ws_closed_total{reason="slow_consumer_time"}'] >= 1) break;
      await sleep(100);
    }
    assert.equal(m['actiond_ws_closed_total{reason="slow_consumer_time"}'], 1, 'closed by time');
    assert.equal(m['actiond_ws_closed_total{reason="slow_consumer"}'], 0, 'not by the byte limit');
    assert.ok(sent < 64 * 1024 * 1024);
    a.ws._socket.resume();
    const { code } = await within(a.closed, 15000, 'close of the slow consumer');
    assert.equal(code, 4008);
    assert.equal((await metrics(S)).values.actiond_ws_slow_queues, 0);
  } finally {
    if (!a.isClosed) { a.ws._socket.resume(); a.ws.terminate(); }
    await S.stop();
  }
});

test('a client ping keeps a socket alive past the heartbeat timeout', { timeout: 30000 }, async () => {
  const H = await startServer({ server: { heartbeat_timeout: '2s' } });
  const pinger = await connect(H);
  const silent = await connect(H);
  const timer = setInterval(() => pinger.ws.ping(), 200);
  try {
    const s = await within(silent.closed, 6000, 'the silent socket closing');
    assert.equal(s.code, 4000);
    await sleep(2500); // more than the timeout again, pings only
    assert.equal(pinger.isClosed, false, 'the pinging socket stays open');
    clearInterval(timer);
    const p = await within(pinger.closed, 6000, 'the pinger closing once it stops');
    assert.equal(p.code, 4000);
  } finally {
    clearInterval(timer);
    if (!pinger.isClosed) pinger.ws.terminate();
    await H.stop();
  }
});
