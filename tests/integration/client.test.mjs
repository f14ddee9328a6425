// The generated JavaScript client (build/clients/actiond-client.mjs, from
// tools/gen-client.mjs) against the real actiond: typed calls, errors,
// reconnect with backoff and the calls queued meanwhile, the queue bound,
// revocation (4001: no reconnect), cancel through an AbortSignal, the change
// feed followed again with `since` after a reconnect, and the heartbeat.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import WebSocket, { WebSocketServer } from 'ws';
import { startServer, startPostgres, rpc, metrics, sleep, within } from './lib.mjs';

const BUILD = process.env.ACTIOND_BUILD_ROOT || new URL('../../build', import.meta.url).pathname;
const { ActiondClient, ActiondError } = await import(BUILD + '/clients/actiond-client.mjs');

const KEYS = {
  acme: { org: 'acme', role: 'admin' },
  member: { org: 'acme', role: 'member' },
};
let pg, A, B, portA;
const clients = [];
const others = [];

// A on a fixed port, so that it can be stopped and started again there.
async function startA() {
  A = await startServer({ db: pg.conninfo, keys: KEYS, args: portA ? ['-l', `127.0.0.1:${portA}`] : [] });
  portA = A.port;
  return A;
}

before(async () => {
  pg = await startPostgres();
  await startA();
  B = await startServer({ db: pg.conninfo, keys: KEYS });
  for (const entity of ['contact', 'note']) {
    const r = await rpc(A, 'entities.define', { entity, schema: { type: 'object' } }, { token: A.tokens.acme });
    assert.equal(r.json?.result?.version, 1, r.body);
  }
});

after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  for (const o of others) await o();
  const ra = await A?.stop();
  const rb = await B?.stop();
  pg?.destroy();
  assert.equal(ra?.code, 0);
  assert.equal(rb?.code, 0);
});

// A client of A (by default) whose token is A's current one, and the log of
// its events.
function client(opts = {}) {
  const c = new ActiondClient(opts.url ?? `ws://127.0.0.1:${portA}/ws`, {
    WebSocket,
    token: () => A.tokens.acme,
    ...opts,
  });
  c.events = [];
  for (const type of ['open', 'close', 'reconnecting', 'revoked', 'resubscribed', 'reset'])
    c.addEventListener(type, (e) => c.events.push({ type, detail: e.detail, t: performance.now() }));
  clients.push(c);
  return c;
}

const of = (c, type) => c.events.filter((e) => e.type === type).map((e) => e.detail);

async function until(pred, ms = 10000, what = 'condition') {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}

async function write(server, params) {
  const r = await rpc(server, 'data.mutate', params, { token: server.tokens.acme });
  assert.ok(r.json?.result, r.body);
  return r.json.result;
}

// A port nothing listens on.
async function deadPort() {
  const s = net.createServer();
  await new Promise((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address();
  await new Promise((resolve) => s.close(resolve));
  return port;
}

// ---- calls -----------------------------------------------------------------------------

test('typed calls answer their results', async () => {
  const c = client();
  await within(c.ready(), 5000, 'open');
  const hb = await c.heartbeat();
  assert.match(hb.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok(Math.abs(hb.unix_ms - Date.now()) < 5000, JSON.stringify(hb));

  const made = await c.data.mutate({ operation: 'create', entity: 'contact', id: 'typed-1', data: { name: 'Ann' } });
  assert.equal(made.record.id, 'typed-1');
  assert.equal(made.record.version, 1);
  assert.ok(Number.isInteger(made.seq) && made.seq > 0);
  const one = await c.data.find_one({ entity: 'contact', id: 'typed-1' });
  assert.deepEqual(one.record.data, { name: 'Ann' });
  const listed = await c.entities.list();
  assert.deepEqual(listed.entities.map((e) => e.entity).sort(), ['contact', 'note']);
  const doc = await c.rpc.discover();
  assert.ok(doc.methods.some((m) => m.name === 'data.find_many'));
  // Untyped actions (test builds) go through call().
  assert.deepEqual(await c.call('test.echo', { value: [1, 'two'] }), { value: [1, 'two'] });
  // Progress notifications reach the call they are about, and the progress event.
  const steps = [];
  const events = [];
  const off = c.on('progress', (p) => events.push(p));
  assert.deepEqual(await c.call('test.progress', { steps: 3 }, { onProgress: (p) => steps.push(p) }), { steps: 3 });
  off();
  assert.deepEqual(steps.map((p) => [p.step, p.of]), [[1, 3], [2, 3], [3, 3]]);
  assert.equal(new Set(steps.map((p) => p.request_id)).size, 1);
  assert.deepEqual(events, steps);

  // HTTP-only actions (auth.login) go to POST /rpc.
  const made2 = await c.admin.account_create({ email: 'client-1@acme.test', password: 'client-password-1', role: 'member' });
  const login = await c.auth.login({ email: 'client-1@acme.test', password: 'client-password-1' });
  assert.equal(login.account_id, made2.account_id);
  assert.equal(login.role, 'member');
  const bad = await c.auth.login({ email: 'client-1@acme.test', password: 'not-the-password' }).then(() => null, (e) => e);
  assert.ok(bad instanceof ActiondError, String(bad));
  assert.equal(bad.code, -32001);
  assert.equal(bad.reason, 'unauthenticated');

  // The token offered as a subprotocol, as browser code would.
  const p = client({ tokenVia: 'subprotocol', token: () => A.tokens.member });
  assert.equal((await p.call('test.whoami', {})).role, 'member');
  assert.equal(c.state, 'open');
  assert.equal(c.inflight, 0);
});

test('a JSON-RPC error rejects with an ActiondError carrying code, reason and pointer', async () => {
  const c = client();
  const missing = await c.data.find_one({ entity: 'contact', id: 'nobody' }).then(() => null, (e) => e);
  assert.ok(missing instanceof ActiondError, String(missing));
  assert.equal(missing.code, -32004);
  assert.equal(missing.reason, 'not_found');
  assert.equal(typeof missing.message, 'string');

  const invalid = await c.data.mutate({ operation: 'merge', entity: 'contact', id: 'x' }).then(() => null, (e) => e);
  assert.ok(invalid instanceof ActiondError);
  assert.equal(invalid.code, -32602);
  assert.equal(invalid.pointer, '/operation');
  assert.equal(invalid.data.keyword, 'enum');

  const member = client({ token: () => A.tokens.member });
  const forbidden = await member.entities.define({ entity: 'nope', schema: true }).then(() => null, (e) => e);
  assert.ok(forbidden instanceof ActiondError);
  assert.equal(forbidden.code, -32003);
  assert.equal(forbidden.reason, 'forbidden');

  const unknown = await c.call('no.such_action', {}).then(() => null, (e) => e);
  assert.equal(unknown.code, -32601);
  // The socket is still fine.
  assert.ok((await c.heartbeat()).unix_ms > 0);
  assert.equal(of(c, 'close').length, 0);
});

// ---- reconnect and queue -------------------------------------------------------------------

test('after the server went away: reconnects with backoff, and calls queued meanwhile are answered', { timeout: 60000 }, async () => {
  const c = client({ reconnect: { initialMs: 100, maxMs: 800, factor: 2, jitter: 0 }, heartbeatMs: 0 });
  await within(c.ready(), 5000, 'open');
  assert.deepEqual(await c.call('test.echo', { value: 'before' }), { value: 'before' });

  await A.stop(); // SIGTERM: the socket is closed with 1001
  await until(() => of(c, 'close').length === 1, 5000, 'close event');
  assert.equal(of(c, 'close')[0].code, 1001);
  assert.notEqual(c.state, 'open');

  // Calls made while disconnected wait in the queue.
  const queued = [
    c.call('test.echo', { value: 'q1' }),
    c.heartbeat(),
    c.data.find_one({ entity: 'contact', id: 'typed-1' }),
  ];
  assert.equal(c.queued, 3);

  // Let a few attempts fail against the closed port, then start it again.
  await until(() => of(c, 'reconnecting').length >= 4, 10000, 'four reconnect attempts');
  await startA();
  const [echo, hb, rec] = await within(Promise.all(queued), 10000, 'queued calls');
  assert.deepEqual(echo, { value: 'q1' });
  assert.ok(hb.unix_ms > 0);
  assert.deepEqual(rec.record.data, { name: 'Ann' });
  assert.equal(c.queued, 0);
  assert.equal(c.state, 'open');

  const opens = c.events.filter((e) => e.type === 'open');
  assert.equal(opens.length, 2);
  assert.equal(opens[1].detail.reconnected, true);
  // Backoff: initialMs, doubling, capped at maxMs (no jitter here); the
  // attempts count up from 1.
  const r = of(c, 'reconnecting');
  assert.deepEqual(r.map((x) => x.attempt), r.map((_, i) => i + 1));
  assert.deepEqual(r.map((x) => x.delayMs), r.map((_, i) => Math.min(800, 100 * 2 ** i)));
  // The retries were actually spaced out: the last one began no sooner than
  // the sum of the delays before it.
  const first = c.events.find((e) => e.type === 'reconnecting').t;
  const last = c.events.filter((e) => e.type === 'reconnecting').at(-1).t;
  const waited = r.slice(0, -1).reduce((s, x) => s + x.delayMs, 0);
  assert.ok(last - first >= waited - 20, `attempts ${(last - first).toFixed(0)} ms apart, delays ${waited} ms`);
});

test('while disconnected, calls past queueLimit reject at once with queue_full', async () => {
  const c = client({ url: `ws://127.0.0.1:${await deadPort()}/ws`, queueLimit: 3, reconnect: { initialMs: 50, maxMs: 200, jitter: 0 } });
  const settled = (p) => p.then(() => null, (e) => e);
  const ac = new AbortController();
  const q1 = settled(c.call('test.echo', { value: 1 }));
  const q2 = settled(c.call('test.echo', { value: 2 }));
  const q3 = settled(c.call('test.echo', { value: 3 }, { signal: ac.signal }));
  assert.equal(c.queued, 3);
  const t0 = performance.now();
  const full = await within(settled(c.call('test.echo', { value: 4 })), 1000, 'the call past the limit');
  assert.ok(performance.now() - t0 < 50, 'rejected at once');
  assert.ok(full instanceof ActiondError, String(full));
  assert.equal(full.code, 'queue_full');
  assert.equal(c.queued, 3, 'the refused call took no place');
  await sleep(150);
  assert.ok(of(c, 'reconnecting').length >= 2, 'it keeps trying meanwhile');
  assert.equal(c.queued, 3);
  // An aborted queued call leaves the queue, and another call fits again.
  ac.abort();
  assert.equal((await q3)?.name, 'AbortError');
  assert.equal(c.queued, 2);
  const q4 = settled(c.call('test.echo', { value: 5 }));
  assert.equal(c.queued, 3);
  assert.equal((await within(settled(c.heartbeat()), 1000, 'the call past the limit'))?.code, 'queue_full');
  // close(): what waited is rejected with closed, and nothing reconnects.
  await c.close();
  for (const e of await Promise.all([q1, q2, q4])) assert.equal(e?.code, 'closed');
  const n = of(c, 'reconnecting').length;
  await sleep(300);
  assert.equal(of(c, 'reconnecting').length, n);
  assert.equal(c.state, 'closed');
  assert.equal((await settled(c.heartbeat()))?.code, 'closed');
});

test('a revoked credential (4001): the revoked event fires and the client does not reconnect', async () => {
  const made = await rpc(A, 'admin.agent_session_create', { name: 'client-test', integrations: ['sentry'] }, { token: A.tokens.acme });
  assert.equal(made.status, 200, made.body);
  const agent = made.json.result;
  const c = client({ token: agent.token, reconnect: { initialMs: 50, maxMs: 100, jitter: 0 } });
  const notes = [];
  c.on('session_revoked', (p) => notes.push(p));
  assert.ok((await c.heartbeat()).unix_ms > 0);

  const revoked = c.once('revoked');
  const r = await rpc(A, 'admin.agent_session_revoke', { agent_session_id: agent.agent_session_id }, { token: A.tokens.acme });
  assert.equal(r.status, 200, r.body);
  const d = await within(revoked, 5000, 'revoked event');
  assert.equal(d.code, 4001);
  assert.match(d.notification?.credential ?? '', /^agent_token:\d+$/);
  assert.equal(d.notification.reason, 'agent session revoked');
  assert.equal(notes.length, 1);
  assert.deepEqual(of(c, 'close').map((x) => x.code), [4001]);
  await sleep(500);
  assert.equal(of(c, 'reconnecting').length, 0, 'no reconnect after 4001');
  assert.equal(c.state, 'revoked');
  const after = await c.heartbeat().then(() => null, (e) => e);
  assert.equal(after?.code, 'revoked');
});

test('aborting the signal of a call cancels it on the server and rejects with an AbortError', async () => {
  const c = client();
  await within(c.ready(), 5000, 'open');
  const cancels = async () => (await metrics(A)).values.actiond_rpc_cancels_total;
  const before = await cancels();
  const ac = new AbortController();
  const p = c.call('test.sleep', { ms: 2500 }, { signal: ac.signal });
  await sleep(150);
  assert.equal(c.inflight, 1);
  const t0 = performance.now();
  ac.abort();
  const err = await p.then(() => null, (e) => e);
  assert.ok(performance.now() - t0 < 100, 'rejected at once');
  assert.equal(err?.name, 'AbortError');
  assert.equal(c.inflight, 0);
  // The server cancelled the request (long before its 2.5 s were up).
  const t1 = performance.now();
  while ((await cancels()) !== before + 1) {
    assert.ok(performance.now() - t1 < 1500, 'actiond_rpc_cancels_total went up by one');
    await sleep(20);
  }
  // A signal aborted already: nothing is sent.
  const pre = await c.call('test.sleep', { ms: 10 }, { signal: AbortSignal.abort() }).then(() => null, (e) => e);
  assert.equal(pre?.name, 'AbortError');
  assert.equal(c.inflight, 0);
  assert.deepEqual(await c.call('test.echo', { value: 'after' }), { value: 'after' });
  assert.equal(await cancels(), before + 1);
});

// ---- the change feed ------------------------------------------------------------------

test('after a reconnect the change feed is followed again with since: exactly the missed changes, then live', { timeout: 60000 }, async () => {
  const c = client({ reconnect: { initialMs: 100, maxMs: 400, jitter: 0 }, heartbeatMs: 0 });
  const changes = [];
  c.on('changes', (p) => changes.push(p));
  const sub = await c.changes.subscribe({ entities: ['contact'] });
  assert.equal(sub.reset, false);
  const first = await write(A, { operation: 'create', entity: 'contact', id: 'feed-0', data: { n: 0 } });
  await until(() => changes.length === 1, 5000, 'the first change');
  assert.deepEqual(changes[0], { entity: 'contact', op: 'create', ids: ['feed-0'], seq: first.seq });

  await A.stop();
  await until(() => of(c, 'close').length === 1, 5000, 'close event');
  // Written on B while the client has no socket.
  const missed = [];
  for (let i = 1; i <= 4; i++)
    missed.push(await write(B, { operation: 'create', entity: 'contact', id: `feed-${i}`, data: { n: i } }));
  await write(B, { operation: 'create', entity: 'note', id: 'not-followed', data: {} });
  missed.push(await write(B, { operation: 'update', entity: 'contact', id: 'feed-2', data: { n: 22 } }));
  await startA();

  await until(() => of(c, 'resubscribed').length === 1, 10000, 'resubscribed');
  const rs = of(c, 'resubscribed')[0];
  assert.deepEqual(rs.entities, ['contact']);
  assert.equal(rs.since, first.seq, 'subscribed again since the last seq seen');
  assert.equal(rs.replayed, missed.length);
  assert.equal(of(c, 'reset').length, 0);
  const live = await write(B, { operation: 'delete', entity: 'contact', id: 'feed-1' });
  await until(() => changes.some((x) => x.seq === live.seq), 10000, 'the live change');
  await sleep(300);
  assert.deepEqual(changes.map((x) => x.seq), [first.seq, ...missed.map((m) => m.seq), live.seq], 'each change once, in order');
  assert.deepEqual(changes.map((x) => `${x.op}:${x.ids[0]}`),
    ['create:feed-0', 'create:feed-1', 'create:feed-2', 'create:feed-3', 'create:feed-4', 'update:feed-2', 'delete:feed-1']);

  // Unsubscribed through the client: not followed again after the next reconnect.
  assert.deepEqual(await c.changes.unsubscribe({ entities: ['contact'] }), { unsubscribed: 1 });
  await A.stop();
  await startA();
  await until(() => of(c, 'open').length === 3, 10000, 'third open');
  await write(A, { operation: 'create', entity: 'contact', id: 'feed-quiet', data: {} });
  await sleep(300);
  assert.equal(of(c, 'resubscribed').length, 1);
  assert.equal(changes.length, 7);
});

test('a resubscription answered reset: true (not the org\'s epoch any more) fires the reset event, then goes live', { timeout: 60000 }, async () => {
  const c = client({ reconnect: { initialMs: 100, maxMs: 400, jitter: 0 }, heartbeatMs: 0 });
  const changes = [];
  c.on('changes', (p) => changes.push(p));
  const sub = await c.changes.subscribe({ entities: ['note'] });
  assert.equal(sub.reset, false);
  await A.stop();
  await until(() => of(c, 'close').length === 1, 5000, 'close event');
  await write(B, { operation: 'create', entity: 'note', id: 'reset-missed', data: {} });
  pg.psql("update data_feed set epoch = 'epoch-2' where org_id = (select id from orgs where slug = 'acme')");
  await startA();
  await until(() => of(c, 'reset').length === 1, 10000, 'reset event');
  const r = of(c, 'reset')[0];
  assert.deepEqual(r.entities, ['note']);
  assert.equal(r.epoch, 'epoch-2');
  assert.equal(r.since, sub.seq);
  assert.ok(r.seq > sub.seq);
  assert.equal(of(c, 'resubscribed').length, 0);
  assert.deepEqual(changes, [], 'a reset replays nothing');
  const live = await write(B, { operation: 'create', entity: 'note', id: 'reset-live', data: {} });
  await until(() => changes.length === 1, 10000, 'the live change');
  assert.equal(changes[0].seq, live.seq);
});

// ---- heartbeat ---------------------------------------------------------------------------

test('heartbeats keep a quiet socket open; without them the server closes it (4000) and the client reconnects', { timeout: 30000 }, async () => {
  const H = await startServer({ server: { heartbeat_timeout: '1s' } });
  others.push(() => H.stop());
  const url = H.wsUrl;
  const beating = client({ url, token: H.token, heartbeatMs: 300 });
  const silent = client({ url, token: H.token, heartbeatMs: 0, reconnect: { initialMs: 50, jitter: 0 } });
  await within(Promise.all([beating.ready(), silent.ready()]), 5000, 'open');
  const calls = async () => (await metrics(H)).values['actiond_method_calls_total{method="heartbeat"}'] ?? 0;
  const before = await calls();
  await sleep(2500);
  assert.deepEqual(of(beating, 'close'), [], 'the beating client was never closed');
  assert.ok((await calls()) - before >= 5, 'it sent heartbeats');
  const closes = of(silent, 'close');
  assert.ok(closes.length >= 1);
  assert.equal(closes[0].code, 4000);
  assert.ok(of(silent, 'reconnecting').length >= 1);
  assert.ok(of(silent, 'open').length >= 2, 'the silent client reconnected');
});

test('a heartbeat without an answer drops the socket and reconnects; Node sends the token as a Bearer header', async () => {
  // A WebSocket server that accepts and never answers.
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', handleProtocols: (ps) => (ps.has('actiond.v1') ? 'actiond.v1' : false) });
  await new Promise((resolve) => wss.once('listening', resolve));
  others.push(() => new Promise((resolve) => { for (const w of wss.clients) w.terminate(); wss.close(resolve); }));
  const seen = [];
  wss.on('connection', (ws, req) => {
    seen.push({ auth: req.headers.authorization, protocol: ws.protocol, messages: [] });
    const me = seen.at(-1);
    ws.on('message', (d) => me.messages.push(JSON.parse(d.toString())));
  });
  const c = client({ url: `ws://127.0.0.1:${wss.address().port}/ws`, token: 'tok-123', heartbeatMs: 200, heartbeatTimeoutMs: 200,
    reconnect: { initialMs: 50, jitter: 0 } });
  await until(() => of(c, 'close').length >= 1, 3000, 'the dead socket dropped');
  assert.equal(of(c, 'close')[0].code, 4000);
  assert.match(of(c, 'close')[0].reason, /heartbeat/);
  await until(() => seen.length >= 2, 3000, 'reconnected');
  assert.equal(seen[0].auth, 'Bearer tok-123');
  assert.equal(seen[0].protocol, 'actiond.v1');
  assert.equal(seen[0].messages[0]?.method, 'heartbeat');
  assert.ok(seen[0].messages.some((m) => m.method === 'cancel'), 'the unanswered heartbeat was cancelled');
});

test('actiond serves the client it was built with at /client/, and the console at / with its policy', async () => {
  const { readFileSync } = await import('node:fs');
  const base = `http://127.0.0.1:${B.port}`;
  const built = readFileSync(BUILD + '/clients/actiond-client.mjs');
  const r = await fetch(base + '/client/actiond-client.mjs');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/javascript/);
  assert.equal(r.headers.get('cache-control'), 'no-cache');
  assert.ok(Buffer.from(await r.arrayBuffer()).equals(built), 'the bytes the build generated');
  const etag = r.headers.get('etag');
  assert.match(etag, /^"[0-9a-f]{16}"$/);
  const again = await fetch(base + '/client/actiond-client.mjs', { headers: { 'If-None-Match': etag } });
  assert.equal(again.status, 304);
  assert.equal((await again.arrayBuffer()).byteLength, 0);
  // The hashed name is immutable.
  const hashed = await fetch(base + `/client/actiond-client.${etag.slice(1, -1)}.mjs`);
  assert.equal(hashed.status, 200);
  assert.match(hashed.headers.get('cache-control'), /immutable/);
  // The page names its script and style sheet by hashed names, and its
  // policy allows nothing inline and no framing.
  const page = await fetch(base + '/');
  assert.equal(page.status, 200);
  const csp = page.headers.get('content-security-policy');
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
  const html = await page.text();
  const js = /src="(\/console\/app\.[0-9a-f]{16}\.js)"/.exec(html);
  assert.ok(js, html.slice(0, 400));
  const script = await fetch(base + js[1]);
  assert.match(script.headers.get('cache-control'), /immutable/);
  assert.match(await script.text(), /\/client\/actiond-client\.[0-9a-f]{16}\.mjs/, 'the script imports the client by its hashed name');
  assert.equal((await fetch(base + '/', { method: 'POST', body: 'x' })).status, 405);
  assert.equal((await fetch(base + '/console/nothing.js')).status, 404);
});
