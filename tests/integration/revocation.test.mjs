// Revocation across instances: two actiond processes, A and B, on one
// PostgreSQL cluster.  A revocation made on A closes exactly the sockets
// resting on the revoked credential, on A and on B (session_revoked, then
// close 4001), and A answers only once B has closed its own.  New
// credentials made on one instance are usable on the other within a second.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import {
  startServer, startPostgres, connect, rpc, metrics, sessionCookie, upgradeStatus, within, sleep,
} from './lib.mjs';

const ORIGIN = 'http://app.test';
const KEYS = { admin: { org: 'acme', role: 'admin' } };
const OPEN = 1;

let pg, A, B;

before(async () => {
  pg = await startPostgres();
  // One after the other: the first applies the migrations.
  A = await startServer({ db: pg.conninfo, keys: KEYS, security: { allowed_origins: ORIGIN } });
  B = await startServer({ db: pg.conninfo, keys: KEYS, security: { allowed_origins: ORIGIN } });
});

after(async () => {
  const ra = await A?.stop();
  const rb = await B?.stop();
  pg?.destroy();
  assert.equal(ra?.code, 0, 'actiond A exits 0 on SIGTERM');
  assert.equal(rb?.code, 0, 'actiond B exits 0 on SIGTERM');
});

// ---- helpers ---------------------------------------------------------------------

let ipSeq = 1;
const freshIp = () => `127.0.${20 + Math.floor(ipSeq / 250)}.${(ipSeq++ % 250) + 1}`;
let emailSeq = 0;

const byToken = (token) => ({ token });
const byProto = (token) => ({ token: null, protocols: ['actiond.v1', 'actiond.bearer.' + token] });
const byCookie = (cookie) => ({ token: null, headers: { Cookie: cookie, Origin: ORIGIN } });

async function newAccount(role = 'member') {
  const email = `user-${++emailSeq}@acme.test`;
  const password = `password-${emailSeq}-${Math.random().toString(36).slice(2)}`;
  const r = await rpc(A, 'admin.account_create', { email, password, role });
  assert.equal(r.status, 200, r.body);
  return { id: r.json.result.account_id, email, password };
}

async function login(srv, acct) {
  const r = await rpc(srv, 'auth.login', { email: acct.email, password: acct.password }, { token: null, localAddress: freshIp() });
  assert.equal(r.status, 200, r.body);
  return { cookie: sessionCookie(r), id: r.json.result.session_id };
}

async function newToken(srv, cookie, name = 'script') {
  const r = await rpc(srv, 'account.token_create', { name }, byCookie(cookie));
  assert.equal(r.status, 200, r.body);
  return r.json.result;
}

async function newAgent(srv, name = 'agent') {
  const r = await rpc(srv, 'admin.agent_session_create', { name, integrations: ['github'] });
  assert.equal(r.status, 200, r.body);
  return r.json.result;
}

// Polls an HTTP heartbeat with opts on srv until it answers 200; the ms it took.
async function usableWithin(srv, opts, ms = 1000) {
  const t0 = performance.now();
  for (;;) {
    const r = await rpc(srv, 'heartbeat', {}, opts);
    if (r.status === 200) return performance.now() - t0;
    assert.equal(r.status, 401, r.body);
    if (performance.now() - t0 > ms) assert.fail(`not usable on the other instance within ${ms} ms`);
    await sleep(10);
  }
}

// A socket that records when session_revoked arrived (and whether the close
// frame had been seen by then) and when it closed.
async function open(srv, opts, label) {
  const c = await connect(srv, opts);
  c.label = label;
  c.notes = [];
  c.ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.method === 'session_revoked') c.notes.push({ msg: m, t: performance.now(), state: c.ws.readyState });
  });
  c.closedAt = c.closed.then((x) => ({ ...x, t: performance.now() }));
  return c;
}

async function expectAlive(c) {
  assert.equal(c.isClosed, false, `${c.label} stays open`);
  const r = await within(c.call('heartbeat', {}), 1000, `${c.label} heartbeat`);
  assert.ok(r.result?.unix_ms > 0, JSON.stringify(r));
  assert.equal(c.notes.length, 0, `${c.label} got no session_revoked`);
}

/*
 * Opens matching[0] and matching[1] on A and on B and a bystander on each,
 * runs revoke() (a call to A answering the http() result), and checks: all
 * four sockets got session_revoked (credential, reason) and then 4001; the
 * bystanders stay and answer; the revoked credentials get 401 on both
 * instances, at the upgrade and over HTTP; and, reported last so that the
 * rest is checked anyway, A's answer counts B (instances 1, acked 1) and
 * reached the client only after every matching socket, on A and on B, had
 * got session_revoked and its close frame.
 */
async function revokeAcross({ matching, bystander, revoke, credentials, reason, revoked = 1 }) {
  const socks = { A: [], B: [] };
  const bys = [];
  for (const [name, srv] of [['A', A], ['B', B]]) {
    for (const [i, m] of matching.entries()) {
      await usableWithin(srv, m.http);
      socks[name].push(await open(srv, m.ws, `${name}${i}`));
    }
    await usableWithin(srv, bystander); // made on A: B learns of it through NOTIFY
    bys.push(await open(srv, bystander, `bystander on ${name}`));
  }
  const all = [...socks.A, ...socks.B];
  const t0 = performance.now();
  const r = await within(revoke(), 8000, 'the revoking call');
  const tAnswer = performance.now();
  // Right when A's answer is in, every matching socket must have been told and be closing.
  const atAnswer = all.map((c) => ({ label: c.label, notified: c.notes.length, state: c.ws.readyState }));

  assert.equal(r.status, 200, r.body);
  const a = r.json.result;
  assert.equal(a.revoked, revoked, r.body);
  assert.equal(a.sockets_closed, socks.A.length, `A closed its ${socks.A.length} sockets: ${r.body}`);
  assert.equal(a.instances, 1, r.body);

  const timings = { answer: Math.round(tAnswer - t0) };
  for (const c of all) {
    const closed = await within(c.closedAt, 4000, `${c.label} closed`);
    assert.equal(closed.code, 4001, `${c.label} closed with 4001`);
    assert.equal(c.notes.length, 1, `${c.label}: one session_revoked`);
    const n = c.notes[0];
    assert.equal(n.state, OPEN, `${c.label}: session_revoked came before the close frame`);
    assert.ok(n.t <= closed.t);
    assert.equal('id' in n.msg, false);
    if (credentials instanceof RegExp) assert.match(n.msg.params.credential, credentials, c.label);
    else assert.ok(credentials.includes(n.msg.params.credential), `${c.label}: ${JSON.stringify(n.msg)}`);
    assert.equal(n.msg.params.reason, reason);
    timings[c.label] = Math.round(n.t - t0);
  }
  for (const c of bys) await expectAlive(c);
  for (const m of matching) {
    for (const srv of [A, B]) {
      assert.equal(await upgradeStatus(srv, m.ws), 401, 'a revoked credential cannot upgrade');
      const h = await rpc(srv, 'heartbeat', {}, m.http);
      assert.equal(h.status, 401, h.body);
      assert.equal(h.json.error.data?.reason ?? h.json.error.reason, 'unauthenticated');
    }
  }
  for (const c of bys) await c.close();

  const problems = [];
  if (a.instances_acked !== 1 || a.instances_missing.length !== 0) {
    problems.push(`B did not acknowledge: ${r.body} after ${timings.answer} ms`);
  }
  for (const s of atAnswer) {
    if (s.notified !== 1 || s.state === OPEN) {
      problems.push(`${s.label} had not got session_revoked and its close frame when A's answer arrived `
        + `(session_revoked ${timings[s.label] - timings.answer} ms after the answer)`);
    }
  }
  assert.deepEqual(problems, [], `timings (ms from the call): ${JSON.stringify(timings)}`);
  return timings;
}

// ---- each credential kind -------------------------------------------------------------

test('a session (cookie) logged out on A: its sockets on A and B get session_revoked and 4001 before A answers', { timeout: 30000 }, async (t) => {
  const acct = await newAccount();
  const s = await login(A, acct);
  const other = await login(A, acct); // same account, another session: must stay
  await usableWithin(B, byCookie(other.cookie));
  const timings = await revokeAcross({
    matching: [{ ws: byCookie(s.cookie), http: byCookie(s.cookie) }, { ws: byCookie(s.cookie), http: byCookie(s.cookie) }],
    bystander: byCookie(other.cookie),
    revoke: () => rpc(A, 'auth.logout', {}, byCookie(s.cookie)),
    credentials: [`session:${s.id}`],
    reason: 'logout',
  });
  t.diagnostic(`ms from the call to session_revoked / answer: ${JSON.stringify(timings)}`);
});

test('an API token revoked on A: its sockets (Bearer and subprotocol) on A and B close 4001 before A answers', { timeout: 30000 }, async (t) => {
  const acct = await newAccount();
  const s = await login(A, acct);
  const tok = await newToken(A, s.cookie, 'revoked');
  const keep = await newToken(A, s.cookie, 'kept'); // same account, another token
  await usableWithin(B, byToken(keep.token));
  const timings = await revokeAcross({
    matching: [{ ws: byToken(tok.token), http: byToken(tok.token) }, { ws: byProto(tok.token), http: byToken(tok.token) }],
    bystander: byToken(keep.token),
    revoke: () => rpc(A, 'account.token_revoke', { token_id: tok.id }, byCookie(s.cookie)),
    credentials: [`api_token:${tok.id}`],
    reason: 'revoked',
  });
  t.diagnostic(`ms from the call to session_revoked / answer: ${JSON.stringify(timings)}`);
});

test('an agent session revoked on A: its agent token\'s sockets on A and B close 4001 before A answers', { timeout: 30000 }, async (t) => {
  const ag = await newAgent(A, 'revoked agent');
  const keep = await newAgent(A, 'kept agent');
  await usableWithin(B, byToken(keep.token));
  const timings = await revokeAcross({
    matching: [{ ws: byToken(ag.token), http: byToken(ag.token) }, { ws: byProto(ag.token), http: byToken(ag.token) }],
    bystander: byToken(keep.token),
    revoke: () => rpc(A, 'admin.agent_session_revoke', { agent_session_id: ag.agent_session_id }),
    // The agent token's own id is not answered anywhere: any agent token name.
    credentials: /^agent_token:\d+$/,
    reason: 'agent session revoked',
  });
  t.diagnostic(`ms from the call to session_revoked / answer: ${JSON.stringify(timings)}`);
});

test('an account disabled on A: all its credentials\' sockets on A and B close 4001 before A answers', { timeout: 30000 }, async (t) => {
  const acct = await newAccount();
  const s = await login(A, acct);
  const tok = await newToken(A, s.cookie);
  const other = await newAccount();
  const os = await login(A, other);
  const otherTok = await newToken(A, os.cookie);
  const timings = await revokeAcross({
    matching: [{ ws: byCookie(s.cookie), http: byCookie(s.cookie) }, { ws: byToken(tok.token), http: byToken(tok.token) }],
    bystander: byToken(otherTok.token),
    revoke: () => rpc(A, 'admin.account_disable', { account_id: acct.id }),
    credentials: [`session:${s.id}`, `api_token:${tok.id}`],
    reason: 'account disabled',
  });
  t.diagnostic(`ms from the call to session_revoked / answer: ${JSON.stringify(timings)}`);
  // Disabled on B too: login there is refused.
  const r = await rpc(B, 'auth.login', { email: acct.email, password: acct.password }, { token: null, localAddress: freshIp() });
  assert.equal(r.status, 403, r.body);
});

test('admin.session_revoke_all for one account on A closes that account\'s session sockets on A and B', { timeout: 30000 }, async () => {
  const acct = await newAccount();
  const s1 = await login(A, acct);
  const s2 = await login(B, acct);
  const tok = await newToken(A, s1.cookie); // a token of the same account: not a session, stays
  await revokeAcross({
    matching: [{ ws: byCookie(s1.cookie), http: byCookie(s1.cookie) }, { ws: byCookie(s2.cookie), http: byCookie(s2.cookie) }],
    bystander: byToken(tok.token),
    revoke: () => rpc(A, 'admin.session_revoke_all', { account_id: acct.id }),
    credentials: [`session:${s1.id}`, `session:${s2.id}`],
    reason: 'revoked',
    revoked: 2,
  });
});

test('twenty revocations in a row: B acknowledges every one, none waits for the 3 s ack timeout', { timeout: 90000 }, async () => {
  const misses = [];
  for (let i = 0; i < 20 && misses.length === 0; i++) {
    const ag = await newAgent(A, `burst ${i}`);
    await usableWithin(B, byToken(ag.token));
    const onB = await open(B, byToken(ag.token), 'B0');
    const t0 = performance.now();
    const r = await within(rpc(A, 'admin.agent_session_revoke', { agent_session_id: ag.agent_session_id }), 8000, 'revoke');
    const ms = Math.round(performance.now() - t0);
    assert.equal(r.status, 200, r.body);
    assert.equal((await within(onB.closedAt, 4000, 'B closed')).code, 4001, `round ${i}: B closed its socket`);
    if (r.json.result.instances_acked !== 1 || ms > 1000) misses.push(`round ${i}: ${r.body} after ${ms} ms`);
  }
  assert.deepEqual(misses, [], 'B closed its socket, yet A did not count its acknowledgement');
});

// ---- propagation --------------------------------------------------------------------------

test('credentials made on one instance are usable on the other within a second', { timeout: 30000 }, async (t) => {
  const acct = await newAccount();
  const seen = {};
  const sA = await login(A, acct);
  seen.sessionAtoB = await usableWithin(B, byCookie(sA.cookie));
  const tA = await newToken(A, sA.cookie);
  seen.tokenAtoB = await usableWithin(B, byToken(tA.token));
  const gA = await newAgent(A);
  seen.agentAtoB = await usableWithin(B, byToken(gA.token));
  const sB = await login(B, acct);
  seen.sessionBtoA = await usableWithin(A, byCookie(sB.cookie));
  const tB = await newToken(B, sB.cookie);
  seen.tokenBtoA = await usableWithin(A, byToken(tB.token));
  // And the socket upgrade takes them too.
  for (const [srv, opts] of [[B, byCookie(sA.cookie)], [B, byToken(tA.token)], [B, byProto(gA.token)], [A, byToken(tB.token)]]) {
    assert.equal(await upgradeStatus(srv, opts), 101);
  }
  // An account created on A logs in on B.
  const fresh = await newAccount();
  await login(B, fresh);
  t.diagnostic(`ms until usable on the other instance: ${JSON.stringify(Object.fromEntries(Object.entries(seen).map(([k, v]) => [k, Math.round(v)])))}`);
});

// ---- the histogram ------------------------------------------------------------------------------

function histogram(m) {
  const buckets = Object.entries(m.values)
    .filter(([k]) => k.startsWith('actiond_revoke_close_seconds_bucket{'))
    .map(([k, v]) => [/le="([^"]+)"/.exec(k)[1], v]);
  return { buckets, count: m.values.actiond_revoke_close_seconds_count, sum: m.values.actiond_revoke_close_seconds_sum };
}

test('/metrics exposes the revoke-to-close histogram, and a revocation moves it on A and on B', { timeout: 30000 }, async () => {
  const before = { A: histogram(await metrics(A)), B: histogram(await metrics(B)) };
  const revsBefore = (await metrics(A)).values.actiond_revocations_total;
  const ag = await newAgent(A);
  await usableWithin(B, byToken(ag.token));
  const sockets = [await open(A, byToken(ag.token), 'A0'), await open(A, byProto(ag.token), 'A1'), await open(B, byToken(ag.token), 'B0')];
  const r = await rpc(A, 'admin.agent_session_revoke', { agent_session_id: ag.agent_session_id });
  assert.equal(r.status, 200, r.body);
  for (const c of sockets) assert.equal((await within(c.closed, 3000, 'close')).code, 4001);

  const mA = await metrics(A);
  const after = { A: histogram(mA), B: histogram(await metrics(B)) };
  assert.match(mA.text, /# TYPE actiond_revoke_close_seconds histogram/);
  assert.equal(mA.values.actiond_revocations_total, revsBefore + 1);
  for (const [name, moved] of [['A', 2], ['B', 1]]) {
    const h = after[name];
    assert.ok(h.buckets.length >= 2, `${name}: buckets ${JSON.stringify(h.buckets)}`);
    assert.equal(h.buckets.at(-1)[0], '+Inf');
    for (let i = 1; i < h.buckets.length; i++) {
      assert.ok(Number(h.buckets[i][0]) > Number(h.buckets[i - 1][0]) || h.buckets[i][0] === '+Inf', 'le ascending');
      assert.ok(h.buckets[i][1] >= h.buckets[i - 1][1], 'buckets are cumulative');
    }
    assert.equal(h.buckets.at(-1)[1], h.count, '+Inf equals the count');
    assert.ok(h.count >= before[name].count + moved, `${name}: count ${before[name].count} -> ${h.count}`);
    assert.ok(h.sum >= before[name].sum && h.sum < before[name].sum + 10, `${name}: sum ${before[name].sum} -> ${h.sum}`);
    // Every close of this test took under 5 s.
    const le5 = h.buckets.find(([le]) => le === '5');
    if (le5) assert.equal(le5[1] - (before[name].buckets.find(([le]) => le === '5')?.[1] ?? 0), h.count - before[name].count);
  }
});

// ---- an instance that does not answer ---------------------------------------------------------------

test('an instance that does not acknowledge delays the answer by at most ~3 s and is named in instances_missing', { timeout: 60000 }, async () => {
  const ids0 = new Set(pg.psql('select id from instances').split('\n'));
  const C = await startServer({ db: pg.conninfo, keys: KEYS, security: { allowed_origins: ORIGIN } });
  let stopped = false;
  try {
    const cId = pg.psql('select id from instances').split('\n').find((x) => !ids0.has(x));
    assert.ok(cId, 'C registered itself');
    const timeoutsBefore = (await metrics(A)).values.actiond_revoke_ack_timeouts_total;
    const ag = await newAgent(A);
    await usableWithin(B, byToken(ag.token));
    const onB = await open(B, byToken(ag.token), 'B0');
    C.proc.kill('SIGSTOP');
    stopped = true;
    const t0 = performance.now();
    const r = await within(rpc(A, 'admin.agent_session_revoke', { agent_session_id: ag.agent_session_id }), 8000, 'revoke');
    const took = performance.now() - t0;
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.result.instances, 2, r.body);
    assert.equal(r.json.result.instances_acked, 1, r.body);
    assert.deepEqual(r.json.result.instances_missing, [cId]);
    assert.ok(took >= 2500 && took < 6000, `answered after ${Math.round(took)} ms`);
    assert.equal((await within(onB.closed, 1000, 'B closed')).code, 4001);
    assert.equal((await metrics(A)).values.actiond_revoke_ack_timeouts_total, timeoutsBefore + 1);
  } finally {
    if (stopped) C.proc.kill('SIGCONT');
    const rc = await C.stop();
    assert.equal(rc.code, 0, 'actiond C exits 0 on SIGTERM');
  }
  // C unregistered itself when it stopped: the next revocation waits for B only.
  assert.equal(pg.psql('select count(*) from instances'), '2');
  const ag = await newAgent(A);
  const t0 = performance.now();
  const r = await rpc(A, 'admin.agent_session_revoke', { agent_session_id: ag.agent_session_id });
  assert.equal(r.json.result.instances, 1, r.body);
  assert.equal(r.json.result.instances_acked, 1, r.body);
  assert.ok(performance.now() - t0 < 1000, 'answered at once');
});
