// The tenant-safe store: pooled sessions run as a role without BYPASSRLS,
// tenant tables show an unscoped SELECT only the caller's org rows (and no
// rows at all outside an org scope), and a statement whose call is
// cancelled or times out is cancelled in PostgreSQL too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startPostgres, connect, rpc, http, sleep, metrics } from './lib.mjs';

const KEYS = { acme: { org: 'acme', role: 'admin' }, globex: { org: 'globex', role: 'admin' } };
let pg, server;

before(async () => {
  pg = await startPostgres();
  server = await startServer({ db: pg.conninfo, keys: KEYS });
  // Tenant rows in both orgs: a sealed secret and its identity event each.
  for (const k of ['acme', 'globex']) {
    const r = await rpc(server, 'admin.credential_set', { integration: 'sentry', secret: 'x-' + k },
      { token: server.tokens[k] });
    assert.equal(r.status, 200, r.body);
  }
});

after(async () => {
  const r = await server?.stop();
  pg?.destroy();
  assert.equal(r?.code, 0);
});

const orgId = (slug) => Number(pg.psql(`select id from orgs where slug = '${slug}'`));

// Statements running pg_sleep, seen from PostgreSQL.
const sleeping = () => Number(pg.psql(
  "select count(*) from pg_stat_activity where query like 'SELECT pg_sleep%' and state = 'active'"));

async function waitFor(pred, ms, what) {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(25);
  }
  return Date.now() - t0;
}

test('the pool runs as actiond_app, which has neither superuser nor BYPASSRLS', () => {
  assert.equal(pg.psql("select rolsuper or rolbypassrls from pg_roles where rolname = 'actiond_app'"), 'f');
  assert.equal(pg.psql("select relforcerowsecurity from pg_class where relname = 'identity_events'"), 't');
});

test('an unscoped SELECT on tenant tables sees only the caller\'s org rows', async () => {
  // Both orgs have rows: the test could see them all if RLS let it.
  assert.equal(pg.psql('select count(distinct org_id) from identity_events'), '2');
  assert.equal(pg.psql('select count(*) from integration_secrets'), '2');
  for (const k of ['acme', 'globex']) {
    const r = await rpc(server, 'test.tenant_rows', {}, { token: server.tokens[k] });
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(r.json.result.event_orgs, [orgId(k)], r.body);
    assert.equal(r.json.result.secrets, 1, r.body);
  }
});

test('with the org setting unset (an anonymous call) the same SELECT sees nothing', async () => {
  const r = await rpc(server, 'test.tenant_rows', {}, { token: null });
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json.result, { event_orgs: [], events: 0, secrets: 0 });
});

test('a background batch (no call, as a sweeper runs) sees every org\'s tenant rows', async () => {
  const r = await rpc(server, 'test.background_orgs', {}, { token: server.tokens.acme });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.result.orgs, 2);
});

test('module settings: [module.NAME] reaches the module, and nothing else does', async () => {
  const s2 = await startServer({ args: ['-s', 'module.test.greeting=hello there', '-s', 'module.other.greeting=no'] });
  try {
    assert.deepEqual((await rpc(s2, 'test.setting', { key: 'greeting' })).json.result, { value: 'hello there' });
    assert.deepEqual((await rpc(s2, 'test.setting', { key: 'missing' })).json.result, { value: null });
  } finally {
    await s2.stop();
  }
});

test('a cancelled call\'s pg_sleep(30) leaves pg_stat_activity within 1 s', { timeout: 20000 }, async () => {
  const c = await connect(server, { token: server.tokens.acme });
  try {
    const p = c.call('test.db_sleep', { ms: 30000 }, 'long');
    await waitFor(() => sleeping() === 1, 5000, 'the statement starts');
    c.send({ jsonrpc: '2.0', method: 'cancel', params: { request_id: 'long' } });
    const r = await p;
    assert.equal(r.error?.data?.reason, 'cancelled', JSON.stringify(r));
    const ms = await waitFor(() => sleeping() === 0, 1000, 'the statement is cancelled');
    assert.ok(ms <= 1000);
    // The pool is fine afterwards.
    const ok = await c.call('test.db_sleep', { ms: 1 });
    assert.equal(ok.result?.slept_ms, 1, JSON.stringify(ok));
  } finally {
    await c.close();
  }
});

test('a call that times out has its statement cancelled within 1 s', { timeout: 20000 }, async () => {
  const c = await connect(server, { token: server.tokens.acme });
  try {
    const r = await c.call('test.db_sleep_timeout', { ms: 30000 });
    assert.equal(r.error?.data?.reason, 'timeout', JSON.stringify(r));
    await waitFor(() => sleeping() === 0, 1000, 'the timed-out statement is cancelled');
  } finally {
    await c.close();
  }
});

test('calls sharing the pool with a cancelled statement all succeed', { timeout: 30000 }, async () => {
  const c = await connect(server, { token: server.tokens.acme });
  try {
    for (let round = 0; round < 5; round++) {
      const long = c.call('test.db_sleep', { ms: 30000 }, 'victim-' + round);
      const short = [];
      for (let i = 0; i < 40; i++) short.push(c.call('test.db_sleep', { ms: 2 }));
      await sleep(20);
      c.send({ jsonrpc: '2.0', method: 'cancel', params: { request_id: 'victim-' + round } });
      for (let i = 0; i < 40; i++) short.push(c.call('test.db_sleep', { ms: 2 }));
      const answers = await Promise.all(short);
      for (const a of answers) assert.equal(a.result?.slept_ms, 2, JSON.stringify(a));
      assert.equal((await long).error?.data?.reason, 'cancelled');
    }
    await waitFor(() => sleeping() === 0, 1000, 'no statement left running');
  } finally {
    await c.close();
  }
});

// Read-only calls of one org that reach the pool in the same turn of the
// loop share a transaction (one scope statement, one Sync).

const grouped = async () => (await metrics(server)).values.actiond_db_grouped_jobs_total;

test('read-only calls of two orgs sent together each see only their own org', async () => {
  const before = await grouped();
  const a = await connect(server, { token: server.tokens.acme });
  const g = await connect(server, { token: server.tokens.globex });
  try {
    for (let round = 0; round < 5; round++) {
      const calls = [];
      for (let i = 0; i < 20; i++) {
        calls.push(a.call('test.tenant_rows', {}).then((r) => ['acme', r]));
        calls.push(g.call('test.tenant_rows', {}).then((r) => ['globex', r]));
      }
      for (const [k, r] of await Promise.all(calls)) {
        assert.deepEqual(r.result?.event_orgs, [orgId(k)], `${k}: ${JSON.stringify(r)}`);
        assert.equal(r.result.secrets, 1);
      }
    }
  } finally {
    await a.close();
    await g.close();
  }
  assert.ok(await grouped() > before, 'some of those calls shared a transaction');
});

test('a call failing in a shared transaction takes none of the others with it', { timeout: 20000 }, async () => {
  for (let round = 0; round < 3; round++) {
    const before = await grouped();
    // One JSON-RPC batch: its calls reach the pool in the same turn and
    // share a transaction, bounded by the third call's 500 ms statement
    // timeout.  The second (700 ms) hits that bound and runs again alone;
    // the third times out; the ones after it, skipped by PostgreSQL, run
    // again alone.  Only the third fails.
    const batch = Array.from({ length: 10 }, (_, i) => ({
      jsonrpc: '2.0', id: i,
      method: i === 2 ? 'test.db_sleep_timeout' : 'test.db_sleep',
      params: { ms: i === 2 ? 3000 : i === 1 ? 700 : 1 },
    }));
    const r = await http(server, '/rpc', { method: 'POST', body: batch, token: server.tokens.acme });
    assert.equal(r.status, 200, r.body);
    const byId = new Map(r.json.map((a) => [a.id, a]));
    assert.equal(byId.size, 10, r.body);
    assert.equal(byId.get(2).error?.data?.reason, 'timeout', JSON.stringify(byId.get(2)));
    for (let i = 0; i < 10; i++) {
      if (i !== 2) assert.equal(byId.get(i).result?.slept_ms, i === 1 ? 700 : 1, `call ${i}: ${JSON.stringify(byId.get(i))}`);
    }
    assert.ok(await grouped() >= before + 2, 'the calls shared a transaction');
  }
  await waitFor(() => sleeping() === 0, 1000, 'no statement left running');
});
