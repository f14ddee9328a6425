// data.mutate and data.mutate_many next to a model of their documented
// rules (docs/data.md, Records): random creates, updates, upserts and
// deletes, with and without expected_version, over a few ids, sent as
// JSON-RPC batches (whose writes actiond applies in the order they came,
// from the first, which finds the entity's schema not yet cached) and as
// all-or-nothing mutate_many.  Every answer's
// outcome (the record and its version, not_found, conflict) and, after
// each round, every record of the entity must be what the model says.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startPostgres, http, rpc } from './lib.mjs';
import { generator } from './random.mjs';

const { rnd, pick } = generator(Number(process.env.MUTATION_SEED || 5));
let pg, A;

before(async () => {
  pg = await startPostgres();
  A = await startServer({ db: pg.conninfo, keys: { acme: { org: 'acme', role: 'admin' } } });
  const r = await rpc(A, 'entities.define', { entity: 'm', schema: { type: 'object' } }, { token: A.tokens.acme });
  assert.ok(r.json?.result, r.body);
});

after(async () => {
  const r = await A?.stop();
  pg?.destroy();
  assert.equal(r?.code, 0);
});

const ids = ['x', 'y', 'z'];
function op(model) {
  const kind = pick(['create', 'create', 'update', 'upsert', 'delete']);
  const o = { operation: kind, entity: 'm' };
  if (kind !== 'create' || rnd() < 0.8) o.id = pick(ids);
  if (kind !== 'delete') o.data = { n: Math.floor(rnd() * 100) };
  if ((kind === 'update' || kind === 'delete') && rnd() < 0.4) {
    const v = model.get(o.id)?.version ?? 1;
    o.expected_version = rnd() < 0.6 ? v : v + 1;
  }
  return o;
}
// Applies o to the model: the outcome, or a reason.
function apply(model, o) {
  const cur = o.id !== undefined ? model.get(o.id) : undefined;
  switch (o.operation) {
    case 'create':
      if (cur) return { reason: 'conflict' };
      break;
    case 'update':
    case 'delete':
      if (!cur) return { reason: 'not_found' };
      if (o.expected_version !== undefined && o.expected_version !== cur.version) return { reason: 'conflict' };
      break;
  }
  if (o.operation === 'delete') {
    model.delete(o.id);
    return { record: { id: o.id, ...cur } };
  }
  const rec = { data: o.data, version: cur ? cur.version + 1 : 1 };
  return { record: { id: o.id, ...rec }, set: rec };
}

test('writes in batches and all-or-nothing groups do what the model says', async () => {
  const model = new Map();
  const check = (got, want, what) => {
    if (want.reason) {
      assert.equal(got.error?.data?.reason, want.reason, `${what}: ${JSON.stringify(got)}`);
      return;
    }
    assert.ok(got.result, `${what}: ${JSON.stringify(got.error)}`);
    const rec = got.result.record;
    if (want.record.id !== undefined) assert.equal(rec.id, want.record.id, what);
    assert.equal(rec.version, want.record.version, what);
    assert.deepEqual(rec.data, want.record.data, what);
  };
  let answered = 0, refused = 0;
  for (let round = 0; round < 60; round++) {
    if (rnd() < 0.7) {
      // A JSON-RPC batch of single writes: each its own call, in order.
      const ops = Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => op(model));
      const res = await http(A, '/rpc', { method: 'POST', token: A.tokens.acme,
        body: ops.map((o, i) => ({ jsonrpc: '2.0', id: i, method: 'data.mutate', params: o })) });
      assert.equal(res.status, 200, res.body);
      const byId = new Map(res.json.map((r) => [r.id, r]));
      ops.forEach((o, i) => {
        const want = apply(model, o);
        if (want.set) model.set(o.id ?? byId.get(i).result.record.id, want.set);
        check(byId.get(i), want, `round ${round} op ${i} ${JSON.stringify(o)}`);
        if (want.reason) refused++; else answered++;
      });
    } else {
      // mutate_many: all or nothing.
      const ops = Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => op(model));
      const trial = new Map([...model].map(([k, v]) => [k, { ...v }]));
      let failed = null;
      const made = [];
      for (const [i, o] of ops.entries()) {
        const want = apply(trial, o);
        if (want.reason) { failed = { i, reason: want.reason }; break; }
        if (want.set && o.id !== undefined) trial.set(o.id, want.set);
        made.push(want);
      }
      const r = await rpc(A, 'data.mutate_many', { ops }, { token: A.tokens.acme });
      if (failed) {
        assert.equal(r.json.error?.data?.reason, failed.reason, `round ${round} ${JSON.stringify(ops)}: ${r.body}`);
        refused++;
      } else {
        assert.ok(r.json.result, `round ${round} ${JSON.stringify(ops)}: ${r.body}`);
        const recs = r.json.result.records;
        assert.equal(recs.length, ops.length);
        ops.forEach((o, i) => {
          if (o.id === undefined) trial.set(recs[i].id, made[i].set);
          assert.equal(recs[i].version, made[i].record.version, `round ${round} op ${i}`);
        });
        model.clear();
        for (const [k, v] of trial) model.set(k, v);
        answered++;
      }
    }
    // What is stored is the model.
    const all = await rpc(A, 'data.find_many', { entity: 'm', limit: 200 }, { token: A.tokens.acme });
    const stored = Object.fromEntries(all.json.result.records.map((x) => [x.id, { data: x.data, version: x.version }]));
    assert.deepEqual(stored, Object.fromEntries(model), `after round ${round}`);
  }
  assert.ok(answered > 50 && refused > 20, `${answered} answered, ${refused} refused`);
});
