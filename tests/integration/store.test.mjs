// The PostgreSQL store, seen from outside: migrations applied once, calls
// that fail leave nothing half-written, a slow statement does not hold up the
// loop, and a database that goes away and comes back (twice) costs DB-backed
// calls an `unavailable` answer while it is away and nothing else: no
// restart of actiond, no closed sockets, heartbeats answered throughout.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import {
  startServer, startPostgres, connect, http, rpc, sessionCookie, within, sleep,
} from './lib.mjs';

const ORIGIN = 'http://app.test';
const KEYS = { admin: { org: 'acme', role: 'admin' } };

let pg, server, other;
let acct, apiToken; // an account of acme and one of its API tokens

before(async () => {
  pg = await startPostgres();
  server = await startServer({ db: pg.conninfo, keys: KEYS, security: { allowed_origins: ORIGIN } });
  other = await startServer({ db: pg.conninfo, keys: KEYS, security: { allowed_origins: ORIGIN } });
  acct = { email: 'store@acme.test', password: 'store-password-1' };
  const c = await rpc(server, 'admin.account_create', { ...acct, role: 'member' });
  assert.equal(c.status, 200, c.body);
  const l = await rpc(server, 'auth.login', acct, { token: null });
  assert.equal(l.status, 200, l.body);
  const t = await rpc(server, 'account.token_create', { name: 'store' }, { token: null, headers: { Cookie: sessionCookie(l), Origin: ORIGIN } });
  assert.equal(t.status, 200, t.body);
  apiToken = t.json.result.token;
});

after(async () => {
  const r = await server?.stop();
  const r2 = await other?.stop();
  pg?.destroy();
  assert.equal(r?.code, 0, 'actiond exits 0 on SIGTERM');
  assert.equal(r2?.code, 0, 'the second actiond exits 0 on SIGTERM');
});

const count = (sql) => Number(pg.psql(sql));

function expectInvalidParams(r, pointer, keyword) {
  assert.equal(r.status, 400, r.body);
  assert.equal(r.json.error.code, -32602, r.body);
  assert.equal(r.json.error.data.pointer, pointer, r.body);
  assert.equal(r.json.error.data.keyword, keyword, r.body);
  assert.equal(typeof r.json.error.data.message, 'string');
}

// ---- migrations ------------------------------------------------------------------------

test('migrations: the first start applies them, later starts on the same database apply nothing', async () => {
  assert.match(server.log(), /applying migration 001_identity\.sql/);
  assert.doesNotMatch(other.log(), /applying migration/, 'the second instance applied nothing');
  const rows = pg.psql('select * from schema_migrations order by 1');
  assert.match(rows, /001_identity\.sql/);
  const third = await startServer({ db: pg.conninfo, keys: KEYS });
  try {
    assert.doesNotMatch(third.log(), /applying migration/);
    assert.equal(pg.psql('select * from schema_migrations order by 1'), rows, 'schema_migrations unchanged');
    assert.equal((await rpc(third, 'test.db_sleep', { ms: 0 })).status, 200);
  } finally {
    assert.equal((await third.stop()).code, 0);
  }
});

test('migrations: three instances starting at once on an empty database apply each migration once', async () => {
  pg.psql('create database fresh');
  const conninfo = pg.conninfo.replace('dbname=postgres', 'dbname=fresh');
  const started = await Promise.allSettled([0, 1, 2].map(() => startServer({ db: conninfo, keys: KEYS })));
  try {
    for (const s of started) assert.equal(s.status, 'fulfilled', s.reason?.message);
    const applied = started.filter((s) => /applying migration 001_identity\.sql/.test(s.value.log()));
    assert.equal(applied.length, 1, 'one instance applied 001_identity.sql');
    assert.equal(pg.psql("select count(*) from schema_migrations where name = '001_identity.sql'", 'fresh'), '1');
    for (const s of started) assert.equal((await rpc(s.value, 'test.db_sleep', { ms: 0 })).status, 200);
  } finally {
    for (const s of started) if (s.status === 'fulfilled') assert.equal((await s.value.stop()).code, 0);
  }
});

// ---- all or nothing ------------------------------------------------------------------------

test('bad input leaves nothing written: invalid params are -32602 and add no row', async () => {
  const tables = ['agent_sessions', 'credentials', 'accounts', 'memberships', 'integration_secrets', 'identity_events'];
  const before = Object.fromEntries(tables.map((t) => [t, count(`select count(*) from ${t}`)]));
  const cases = [
    [{ name: 'x', integrations: ['Not-A-Name'] }, '/integrations/0', 'pattern'],
    [{ name: 'x', integrations: ['github', 'github'] }, '/integrations', 'uniqueItems'],
    [{ name: '', integrations: [] }, '/name', 'minLength'],
    [{ integrations: [] }, '', 'required'],
    [{ name: 'x', integrations: [], extra: true }, '', 'additionalProperties'],
    [{ name: 'x', integrations: Array.from({ length: 33 }, (_, i) => `i${i}`) }, '/integrations', 'maxItems'],
    [{ name: 'x', integrations: 'github' }, '/integrations', 'type'],
  ];
  for (const [params, pointer, keyword] of cases) {
    expectInvalidParams(await rpc(server, 'admin.agent_session_create', params), pointer, keyword);
  }
  expectInvalidParams(await rpc(server, 'admin.account_create', { email: 'no-at-sign', password: 'long-enough-1', role: 'member' }), '/email', 'pattern');
  expectInvalidParams(await rpc(server, 'admin.account_create', { email: 'short@acme.test', password: 'short', role: 'member' }), '/password', 'minLength');
  expectInvalidParams(await rpc(server, 'admin.account_create', { email: 'role@acme.test', password: 'long-enough-1', role: 'root' }), '/role', 'enum');
  expectInvalidParams(await rpc(server, 'admin.credential_set', { integration: 'Bad Name', secret: 's' }), '/integration', 'pattern');
  const after = Object.fromEntries(tables.map((t) => [t, count(`select count(*) from ${t}`)]));
  assert.deepEqual(after, before);
});

test('bad input leaves nothing written: a duplicate email is a conflict and the first account is untouched', async () => {
  const email = 'twice@acme.test';
  const first = await rpc(server, 'admin.account_create', { email, password: 'first-password', role: 'member' });
  assert.equal(first.status, 200, first.body);
  // Ids on the wire are opaque: find the row by its email.
  const id = pg.psql(`select id from accounts where email = '${email}'`);
  const hash = pg.psql(`select password_hash from accounts where id = ${id}`);
  const events = count('select count(*) from identity_events');
  for (const e of [email, 'TWICE@acme.test', 'Twice@Acme.Test']) {
    const dup = await rpc(server, 'admin.account_create', { email: e, password: 'second-password', role: 'admin' });
    assert.equal(dup.status, 409, dup.body);
    assert.equal(dup.json.error.data.reason, 'conflict');
  }
  assert.equal(count(`select count(*) from accounts where lower(email) = '${email}'`), 1);
  assert.equal(pg.psql(`select password_hash from accounts where id = ${id}`), hash, 'the password is unchanged');
  assert.equal(pg.psql(`select string_agg(role, ',') from memberships where account_id = ${id}`), 'member', 'the role is unchanged');
  assert.equal(count('select count(*) from identity_events'), events, 'no event for what did not happen');
  assert.equal((await rpc(server, 'auth.login', { email, password: 'first-password' }, { token: null, localAddress: '127.0.3.1' })).status, 200);
  assert.equal((await rpc(server, 'auth.login', { email, password: 'second-password' }, { token: null, localAddress: '127.0.3.2' })).status, 401);
});

test('a call whose statements do not all succeed writes none of them (one transaction)', async () => {
  // admin.credential_set writes the secret and an identity event: both or
  // neither.  (Whether it succeeds is identity.test.mjs's business; while
  // its second statement fails, this shows the first is rolled back.)
  const r = await rpc(server, 'admin.credential_set', { integration: 'atomic', secret: 'atomic-secret' });
  const secrets = count("select count(*) from integration_secrets where integration = 'atomic'");
  const events = count("select count(*) from identity_events where target = 'integration:atomic'");
  if (r.status === 200) {
    assert.deepEqual([secrets, events], [1, 1], r.body);
  } else {
    assert.deepEqual([secrets, events], [0, 0], `failed (${r.body}) but left rows behind`);
  }
});

// ---- a slow statement -------------------------------------------------------------------------

test('a slow statement on one connection does not delay heartbeats (or other DB calls) on another', { timeout: 20000 }, async () => {
  const slow = await connect(server, { token: apiToken });
  const fast = await connect(server, { token: apiToken });
  const t0 = performance.now();
  let slowDone = null;
  const p = slow.call('test.db_sleep', { ms: 3000 }).then((r) => { slowDone = performance.now(); return r; });
  await sleep(100);
  const lat = [];
  for (let i = 0; i < 20; i++) {
    const s = performance.now();
    const r = await within(fast.call('heartbeat', {}), 1000, 'heartbeat');
    lat.push(performance.now() - s);
    assert.ok(r.result.unix_ms > 0);
    await sleep(20);
  }
  // The slow socket itself still answers heartbeats, and the pool serves others.
  const s1 = performance.now();
  await within(slow.call('heartbeat', {}), 1000, 'heartbeat on the busy socket');
  const onBusy = performance.now() - s1;
  const s2 = performance.now();
  const list = await within(fast.call('account.token_list', {}), 1000, 'token_list');
  const dbCall = performance.now() - s2;
  assert.ok(list.result?.tokens, JSON.stringify(list));
  assert.equal(slowDone, null, 'all of that happened while the slow statement ran');
  assert.ok(Math.max(...lat) < 200, `heartbeat latencies (ms): ${lat.map(Math.round)}`);
  assert.ok(onBusy < 200, `heartbeat on the busy socket: ${Math.round(onBusy)} ms`);
  assert.ok(dbCall < 1000, `token_list during the slow statement: ${Math.round(dbCall)} ms`);
  const r = await within(p, 10000, 'slow statement');
  assert.deepEqual(r.result, { slept_ms: 3000 });
  assert.ok(slowDone - t0 >= 2900, `slept ${Math.round(slowDone - t0)} ms`);
  await slow.close();
  await fast.close();
});

// ---- the database goes away and comes back ----------------------------------------------------------

// Sends a heartbeat every 50 ms until stop(); stop() answers the latencies
// and the failures.
function pinger(c) {
  const lat = [];
  const failures = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const s = performance.now();
      try {
        const r = await within(c.call('heartbeat', {}), 2000, 'heartbeat');
        if (!r.result) failures.push(JSON.stringify(r));
      } catch (e) {
        failures.push(e.message);
      }
      lat.push(performance.now() - s);
      await sleep(50);
    }
  })();
  return { async stop() { running = false; await done; return { lat, failures }; } };
}

async function expectUnavailableFast(what, call) {
  const s = performance.now();
  const r = await call();
  const ms = performance.now() - s;
  const err = r.json ? r.json.error : r.error;
  assert.ok(err, `${what}: expected unavailable, got ${JSON.stringify(r.json ?? r)}`);
  assert.equal(err.data?.reason, 'unavailable', `${what}: ${JSON.stringify(err)}`);
  assert.equal(err.code, -32050);
  if (r.json) assert.equal(r.status, 503, what);
  assert.ok(ms < 1000, `${what}: answered after ${Math.round(ms)} ms`);
}

test('PostgreSQL stopped and started twice under a running actiond: unavailable while away, back without a restart', { timeout: 90000 }, async (t) => {
  const pid = server.proc.pid;
  const c = await connect(server, { token: apiToken });
  const bearer = { token: apiToken };
  for (let round = 1; round <= 2; round++) {
    const ping = pinger(c);
    await sleep(200);
    // A statement in flight when the database goes.
    const inflight = c.call('test.db_sleep', { ms: 10000 });
    await sleep(200);
    await pg.stopAsync('fast');
    const tStop = performance.now();
    const r0 = await within(inflight, 2000, `round ${round}: the in-flight statement`);
    assert.equal(r0.error?.data?.reason, 'unavailable', `round ${round}: in flight: ${JSON.stringify(r0)}`);
    assert.ok(performance.now() - tStop < 1500);

    for (let i = 0; i < 3; i++) {
      await expectUnavailableFast(`round ${round}: token_list over HTTP`, () => rpc(server, 'account.token_list', {}, bearer));
      await expectUnavailableFast(`round ${round}: db_sleep over HTTP`, () => rpc(server, 'test.db_sleep', { ms: 0 }, bearer));
      await expectUnavailableFast(`round ${round}: token_list over WS`, () => within(c.call('account.token_list', {}), 2000, 'token_list'));
      await expectUnavailableFast(`round ${round}: db_sleep over WS`, () => within(c.call('test.db_sleep', { ms: 0 }), 2000, 'db_sleep'));
      await sleep(300);
    }
    // What needs no database still works, known credentials included.
    assert.equal((await rpc(server, 'heartbeat', {}, bearer)).status, 200);
    assert.equal((await http(server, '/readyz')).status, 503, '/readyz says the database is away');
    assert.equal((await http(server, '/healthz')).status, 200);

    await pg.startAsync();
    const tStart = performance.now();
    let back = null;
    while (performance.now() - tStart < 15000) {
      const a = await rpc(server, 'account.token_list', {}, bearer);
      const b = await rpc(server, 'test.db_sleep', { ms: 0 }, bearer);
      if (a.status === 200 && b.status === 200) { back = performance.now() - tStart; break; }
      await sleep(100);
    }
    assert.ok(back !== null, `round ${round}: DB-backed calls did not come back within 15 s`);
    const ws = await within(c.call('account.token_list', {}), 2000, 'token_list');
    assert.ok(ws.result?.tokens.length >= 1, JSON.stringify(ws));
    assert.equal((await http(server, '/readyz')).status, 200);
    const { lat, failures } = await ping.stop();
    assert.deepEqual(failures, [], `round ${round}: heartbeats failed`);
    assert.ok(lat.length >= 10, `round ${round}: ${lat.length} heartbeats`);
    assert.ok(Math.max(...lat) < 1000, `round ${round}: slowest heartbeat ${Math.round(Math.max(...lat))} ms`);
    assert.equal(c.isClosed, false, 'the socket stayed open');
    assert.equal(server.proc.pid, pid);
    assert.equal(server.proc.exitCode, null, 'actiond did not exit');
    t.diagnostic(`round ${round}: back ${Math.round(back)} ms after PostgreSQL started; heartbeats: ${lat.length}, slowest ${Math.round(Math.max(...lat))} ms`);
  }
  await c.close();
});

test('after PostgreSQL came back, credentials and revocations still reach the other instance', { timeout: 30000 }, async () => {
  // Both instances lived through the outages above; their LISTEN must be back.
  const tok = await rpc(server, 'account.token_create', { name: 'after' }, { token: apiToken });
  assert.equal(tok.status, 200, tok.body);
  const t0 = performance.now();
  let ok = false;
  while (performance.now() - t0 < 2000) {
    if ((await rpc(other, 'heartbeat', {}, { token: tok.json.result.token })).status === 200) { ok = true; break; }
    await sleep(20);
  }
  assert.ok(ok, 'a token made on one instance was not usable on the other within 2 s');
  const onOther = await connect(other, { token: tok.json.result.token });
  const r = await rpc(server, 'account.token_revoke', { token_id: tok.json.result.id }, { token: apiToken });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.result.instances, 1, r.body);
  assert.equal((await within(onOther.closed, 4000, 'close on the other instance')).code, 4001);
  assert.equal((await rpc(other, 'heartbeat', {}, { token: tok.json.result.token })).status, 401);
});
