// The change feed next to what the database committed: random writes on
// two instances (single writes, JSON-RPC batches, mutate_many that commit
// or fail as a whole) to two entities, with four subscribers (two per
// instance, one of them following both entities) that drop their socket at
// random and come back with `since` (and `epoch`), replaying in pages when
// there is more.  In the end each subscriber must have received exactly the
// changes of its entities that data_changes holds after the seq it started
// from: each once, in seq order, none missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startPostgres, connect, rpc, http } from './lib.mjs';
import { generator } from './random.mjs';

const { rnd, pick } = generator(Number(process.env.FEED_SEED || 3));
const KEYS = { acme: { org: 'acme', role: 'admin' } };
let pg, A, B;

before(async () => {
  pg = await startPostgres();
  A = await startServer({ db: pg.conninfo, keys: KEYS });
  B = await startServer({ db: pg.conninfo, keys: KEYS });
  for (const entity of ['fe', 'other']) {
    const r = await rpc(A, 'entities.define', { entity, schema: { type: 'object' } }, { token: A.tokens.acme });
    assert.ok(r.json?.result, r.body);
  }
});

after(async () => {
  const ra = await A?.stop();
  const rb = await B?.stop();
  pg?.destroy();
  assert.equal(ra?.code, 0);
  assert.equal(rb?.code, 0);
});

async function subscribe(s, since) {
  s.ws = await connect(s.server, { token: s.server.tokens.acme });
  for (;;) {
    const params = { entities: s.entities };
    if (since !== undefined) Object.assign(params, { since, epoch: s.epoch });
    const r = await s.ws.call('changes.subscribe', params);
    assert.ok(r.result, JSON.stringify(r));
    assert.equal(r.result.reset, false, JSON.stringify(r.result));
    s.epoch = r.result.epoch;
    s.got.push(...r.result.changes);
    if (!r.result.more) return r.result.seq;
    since = r.result.changes.at(-1).seq;
  }
}
const take = (s) => s.got.push(...s.ws.drain().filter((m) => m.method === 'changes').map((m) => m.params));
const last = (s, from) => (s.got.length ? s.got.at(-1).seq : from);

const ids = ['p', 'q', 'r', 's'];
const write = () => {
  const operation = pick(['create', 'update', 'upsert', 'delete', 'create']);
  const o = { operation, entity: rnd() < 0.7 ? 'fe' : 'other' };
  if (operation !== 'create' || rnd() < 0.5) o.id = pick(ids);
  if (operation !== 'delete') o.data = { n: Math.floor(rnd() * 10) };
  return o;
};

test('every subscriber gets every committed change of its entities once, in order, across reconnects', async () => {
  const subs = [[A, ['fe']], [A, ['fe', 'other']], [B, ['fe']], [B, ['other']]]
    .map(([server, entities]) => ({ server, entities, got: [] }));
  for (const s of subs) s.from = await subscribe(s);
  let writes = 0;
  for (let round = 0; round < 80; round++) {
    const server = pick([A, B]);
    const r = rnd();
    if (r < 0.4) {
      await rpc(server, 'data.mutate', write(), { token: server.tokens.acme });
      writes++;
    } else if (r < 0.65) {
      const batch = Array.from({ length: 2 + Math.floor(rnd() * 5) }, (_, i) =>
        ({ jsonrpc: '2.0', id: i, method: 'data.mutate', params: write() }));
      await http(server, '/rpc', { method: 'POST', token: server.tokens.acme, body: batch });
      writes += batch.length;
    } else if (r < 0.85) {
      // All or nothing: one that fails (an update of a missing id) writes nothing.
      const ops = Array.from({ length: 1 + Math.floor(rnd() * 3) }, write);
      if (rnd() < 0.3) ops.push({ operation: 'update', entity: 'fe', id: 'never', data: {} });
      await rpc(server, 'data.mutate_many', { ops }, { token: server.tokens.acme });
      writes += ops.length;
    } else {
      const s = pick(subs);
      take(s);
      await s.ws.close();
      await subscribe(s, last(s, s.from));
    }
    for (const s of subs) take(s);
  }
  assert.ok(writes > 100, `${writes} writes`);
  // Every change committed after each subscriber's start, of its entities.
  const committed = (s) => pg.psql(`select seq, entity, op, array_to_string(ids, ',') from data_changes
    where org_id = (select id from orgs where slug = 'acme') and seq > ${s.from}
      and entity in (${s.entities.map((e) => `'${e}'`).join(',')}) order by seq`)
    .split('\n').filter(Boolean).map((l) => l.split('|'))
    .map(([seq, entity, op, i]) => ({ seq: Number(seq), entity, op, ids: i.split(',') }));
  for (const s of subs) {
    const want = committed(s);
    const t0 = Date.now();
    while (last(s, s.from) < want.at(-1).seq && Date.now() - t0 < 15000) {
      try { s.got.push(...[await s.ws.next(500)].filter((m) => m.method === 'changes').map((m) => m.params)); } catch { /* none yet */ }
    }
    take(s);
    const seen = s.got.map(({ seq, entity, op, ids: i }) => ({ seq, entity, op, ids: [...i].sort() }));
    assert.deepEqual(seen, want.map((c) => ({ ...c, ids: c.ids.sort() })), `subscriber of ${s.entities} on ${s.server === A ? 'A' : 'B'}`);
    assert.ok(want.length > 5, `${want.length} changes`);
    await s.ws.close();
  }
});
