// The data module: entities and records of an org (CRUD, upsert, batches
// that are all or nothing, schema violations, optimistic concurrency), the
// isolation of orgs, the JSON filters and the SQL subset against injection,
// and the change feed across two instances sharing one database.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startPostgres, connect, rpc, http, sleep, metrics } from './lib.mjs';

const KEYS = {
  acme: { org: 'acme', role: 'admin' },
  member: { org: 'acme', role: 'member' },
  globex: { org: 'globex', role: 'admin' },
  initech: { org: 'initech', role: 'admin' },
};
let pg, A, B;
const sockets = [];

before(async () => {
  pg = await startPostgres();
  // The feed reads the database on its own only every 30 s here: what the
  // other instance wrote must be announced to reach its subscribers in time.
  const announced = ['-s', 'module.data.poll_ms=30000'];
  A = await startServer({ db: pg.conninfo, keys: KEYS, args: announced });
  B = await startServer({ db: pg.conninfo, keys: KEYS, args: announced });
  for (const org of ['acme', 'globex']) {
    const r = await call(A, 'entities.define', {
      entity: 'contact',
      schema: {
        type: 'object',
        required: ['name'],
        properties: {
          name: { type: 'string', maxLength: 100 },
          age: { type: 'integer', minimum: 0 },
          tags: { type: 'array', items: { type: 'string' } },
          address: { type: 'object', properties: { city: { type: 'string' } } },
        },
      },
      indexes: ['age'],
    }, org);
    assert.equal(r.result?.version, 1, JSON.stringify(r));
  }
});

after(async () => {
  for (const s of sockets) if (!s.isClosed) await s.close();
  const ra = await A?.stop();
  const rb = await B?.stop();
  pg?.destroy();
  assert.equal(ra?.code, 0);
  assert.equal(rb?.code, 0);
});

async function call(server, method, params, key = 'acme') {
  const r = await rpc(server, method, params, { token: server.tokens[key] });
  assert.ok(r.json, r.body);
  return r.json;
}

function ok(r) {
  assert.ok(r.result, JSON.stringify(r.error));
  return r.result;
}

function bad(r, pointer, keyword) {
  assert.equal(r.error?.code, -32602, JSON.stringify(r));
  if (pointer !== undefined) assert.equal(r.error.data.pointer, pointer, JSON.stringify(r));
  if (keyword !== undefined) assert.equal(r.error.data.keyword, keyword, JSON.stringify(r));
  return r.error.data;
}

const reason = (r) => r.error?.data?.reason;
const mutate = (p, key = 'acme', server = A) => call(server, 'data.mutate', p, key);
const lastSeq = (org) => Number(pg.psql(
  `select coalesce((select last_seq from data_feed f join orgs o on o.id = f.org_id where o.slug = '${org}'), 0)`));

async function subscriber(server, entities, since, key = 'acme') {
  const ws = await connect(server, { token: server.tokens[key] });
  sockets.push(ws);
  const params = { entities };
  if (since !== undefined) params.since = since;
  const r = await ws.call('changes.subscribe', params);
  assert.ok(r.result, JSON.stringify(r));
  return { ws, sub: r.result };
}

// Collects `changes` notifications until pred(list) holds.
async function collect(ws, pred, ms = 10000) {
  const got = [];
  const t0 = Date.now();
  while (!pred(got)) {
    const m = await ws.next(Math.max(1, ms - (Date.now() - t0)));
    if (m.method === 'changes') got.push(m.params);
  }
  return got;
}

// ---- records ---------------------------------------------------------------------

test('create, read, update, delete and upsert a record', async () => {
  const c = ok(await mutate({ operation: 'create', entity: 'contact', id: 'crud-1', data: { name: 'Ann', age: 30 } }));
  assert.deepEqual(c.record.data, { name: 'Ann', age: 30 });
  assert.equal(c.record.version, 1);
  assert.ok(Number.isInteger(c.seq) && c.seq > 0);
  const made = ok(await mutate({ operation: 'create', entity: 'contact', data: { name: 'Generated' } }));
  assert.match(made.record.id, /^[0-9a-f-]{36}$/);

  assert.deepEqual(ok(await call(A, 'data.find_one', { entity: 'contact', id: 'crud-1' })).record, c.record);
  // Every reader writes a record as the write answered it.
  assert.deepEqual(ok(await call(A, 'data.find_many', { entity: 'contact', filter: { _id: 'crud-1' } })).records, [c.record]);
  assert.deepEqual(ok(await call(A, 'data.query', { sql: "SELECT * FROM contact WHERE _id = 'crud-1'" })).rows, [c.record]);
  // The other instance reads the same database.
  assert.deepEqual(ok(await call(B, 'data.find_one', { entity: 'contact', id: 'crud-1' })).record.data, c.record.data);

  const u = ok(await mutate({ operation: 'update', entity: 'contact', id: 'crud-1', data: { name: 'Ann', age: 31 } }));
  assert.equal(u.record.version, 2);
  assert.equal(u.seq, c.seq + 2);
  assert.equal(u.record.created_at, c.record.created_at);

  // Upsert makes a missing record, then replaces it.
  const up1 = ok(await mutate({ operation: 'upsert', entity: 'contact', id: 'crud-2', data: { name: 'Bo' } }));
  assert.equal(up1.record.version, 1);
  const up2 = ok(await mutate({ operation: 'upsert', entity: 'contact', id: 'crud-2', data: { name: 'Bob' } }));
  assert.equal(up2.record.version, 2);
  assert.deepEqual(up2.record.data, { name: 'Bob' });

  const d = ok(await mutate({ operation: 'delete', entity: 'contact', id: 'crud-2' }));
  assert.deepEqual(d.record.data, { name: 'Bob' });
  assert.equal(reason(await call(A, 'data.find_one', { entity: 'contact', id: 'crud-2' })), 'not_found');
  assert.equal(reason(await mutate({ operation: 'delete', entity: 'contact', id: 'crud-2' })), 'not_found');
  assert.equal(reason(await mutate({ operation: 'update', entity: 'contact', id: 'nobody', data: { name: 'x' } })), 'not_found');
  assert.equal(reason(await mutate({ operation: 'create', entity: 'contact', id: 'crud-1', data: { name: 'dup' } })), 'conflict');
  assert.equal(reason(await mutate({ operation: 'create', entity: 'nothing', data: { name: 'x' } })), 'not_found');

  // find_one by filter; an id or a filter is needed.
  assert.equal(ok(await call(A, 'data.find_one', { entity: 'contact', filter: { name: 'Ann', age: { ge: 31 } } })).record.id, 'crud-1');
  bad(await call(A, 'data.find_one', { entity: 'contact' }), '/id', 'required');
  bad(await mutate({ operation: 'update', entity: 'contact', data: { name: 'x' } }), '/id', 'required');
  bad(await mutate({ operation: 'create', entity: 'contact' }), '/data', 'required');
});

test('a record that breaks the schema is refused with the pointer of the failing value', async () => {
  bad(await mutate({ operation: 'create', entity: 'contact', data: { name: 'x', age: 'old' } }), '/data/age', 'type');
  bad(await mutate({ operation: 'create', entity: 'contact', data: { age: 3 } }), '/data', 'required');
  bad(await mutate({ operation: 'create', entity: 'contact', data: { name: 'x', address: { city: 5 } } }), '/data/address/city', 'type');
  bad(await call(A, 'data.mutate_many', { ops: [
    { operation: 'create', entity: 'contact', data: { name: 'fine' } },
    { operation: 'create', entity: 'contact', data: { name: 'x', tags: ['a', 2] } },
  ] }), '/ops/1/data/tags/1', 'type');
  // Nothing of the refused batch was written.
  assert.equal(pg.psql("select count(*) from data_records where data->>'name' = 'fine'"), '0');
});

test('expected_version: a write against another version is a conflict', async () => {
  const c = ok(await mutate({ operation: 'create', entity: 'contact', id: 'ver-1', data: { name: 'V' } }));
  ok(await mutate({ operation: 'update', entity: 'contact', id: 'ver-1', data: { name: 'V2' }, expected_version: c.record.version }));
  const stale = await mutate({ operation: 'update', entity: 'contact', id: 'ver-1', data: { name: 'V3' }, expected_version: c.record.version });
  assert.equal(reason(stale), 'conflict');
  assert.equal(reason(await mutate({ operation: 'delete', entity: 'contact', id: 'ver-1', expected_version: 1 })), 'conflict');
  assert.equal(reason(await mutate({ operation: 'upsert', entity: 'contact', id: 'ver-1', data: { name: 'U' }, expected_version: 9 })), 'conflict');
  assert.deepEqual(ok(await call(A, 'data.find_one', { entity: 'contact', id: 'ver-1' })).record.data, { name: 'V2' });
  // Two racing updates from the same version: exactly one wins.
  const race = await Promise.all([A, B].map((s, i) => mutate(
    { operation: 'update', entity: 'contact', id: 'ver-1', data: { name: 'R' + i }, expected_version: 2 }, 'acme', s)));
  assert.equal(race.filter((r) => r.result).length, 1, JSON.stringify(race));
  assert.equal(race.filter((r) => reason(r) === 'conflict').length, 1);
});

test('mutate_many is all or nothing, and a rolled-back batch leaves no change and no seq', async () => {
  const before = lastSeq('acme');
  const r = await call(A, 'data.mutate_many', { ops: [
    { operation: 'create', entity: 'contact', id: 'many-1', data: { name: 'M1' } },
    { operation: 'create', entity: 'contact', id: 'many-2', data: { name: 'M2' } },
    { operation: 'update', entity: 'contact', id: 'many-missing', data: { name: 'M3' } },
  ] });
  assert.equal(reason(r), 'not_found');
  assert.equal(r.error.data.op, 2);
  assert.equal(reason(await call(A, 'data.find_one', { entity: 'contact', id: 'many-1' })), 'not_found');
  assert.equal(lastSeq('acme'), before);
  assert.equal(pg.psql(`select count(*) from data_changes where 'many-1' = any(ids)`), '0');

  const okr = ok(await call(A, 'data.mutate_many', { ops: [
    { operation: 'create', entity: 'contact', id: 'many-1', data: { name: 'M1' } },
    { operation: 'create', entity: 'contact', id: 'many-2', data: { name: 'M2' } },
    { operation: 'delete', entity: 'contact', id: 'many-1' },
  ] }));
  assert.deepEqual(okr.records.map((x) => x.id), ['many-1', 'many-2', 'many-1']);
  assert.equal(okr.seq, before + 3);
  assert.equal(lastSeq('acme'), before + 3);
  const tooMany = Array.from({ length: 101 }, (_, i) => ({ operation: 'create', entity: 'contact', data: { name: 'n' + i } }));
  bad(await call(A, 'data.mutate_many', { ops: tooMany }), '/ops', 'maxItems');
});

test('find_many pages with an opaque cursor through every match once, in order', async () => {
  const ages = [5, 9, 1, 7, 3, 9, 2, 8];
  ok(await call(A, 'data.mutate_many', { ops: ages.map((age, i) => (
    { operation: 'create', entity: 'contact', id: `page-${i}`, data: { name: 'page', age } })) }));
  const seen = [];
  let cursor;
  for (let n = 0; n < 10; n++) {
    const params = { entity: 'contact', filter: { name: 'page', age: { gt: 1 } }, order_by: { field: 'age', direction: 'desc' }, limit: 3 };
    if (cursor) params.cursor = cursor;
    const r = ok(await call(A, 'data.find_many', params));
    seen.push(...r.records);
    cursor = r.next_cursor;
    if (!cursor) break;
  }
  assert.deepEqual(seen.map((x) => x.data.age), [9, 9, 8, 7, 5, 3, 2]);
  assert.equal(new Set(seen.map((x) => x.id)).size, 7);
  // Ties on age go by id.
  assert.deepEqual(seen.slice(0, 2).map((x) => x.id), ['page-5', 'page-1']);
  // in, like, is_null, or, not, and the metadata fields.
  const q = async (filter) => ok(await call(A, 'data.find_many', { entity: 'contact', filter, limit: 200 })).records.map((x) => x.id).sort();
  assert.deepEqual(await q({ age: { in: [1, 2] }, name: 'page' }), ['page-2', 'page-6']);
  assert.deepEqual(await q({ or: [{ _id: 'page-0' }, { _id: { like: 'page-7%' } }] }), ['page-0', 'page-7']);
  assert.deepEqual(await q({ name: 'page', not: { age: { lt: 8 } } }), ['page-1', 'page-5', 'page-7']);
  assert.deepEqual(await q({ name: 'page', age: { is_null: true } }), []);
  assert.deepEqual(await q({ name: 'page', _version: { ge: 1 }, _created_at: { gt: '2000-01-01' } }).then((l) => l.length), 8);
  // Comparisons stay within a JSON type: no number is greater than a string.
  assert.deepEqual(await q({ name: 'page', age: { gt: '1' } }), []);
  // A cursor of another order, or not a cursor at all.
  bad(await call(A, 'data.find_many', { entity: 'contact', cursor }), '/cursor');
  const other = ok(await call(A, 'data.find_many', { entity: 'contact', filter: { name: 'page' }, limit: 1 })).next_cursor;
  bad(await call(A, 'data.find_many', { entity: 'contact', order_by: { field: 'age' }, cursor: other }), '/cursor', 'cursor');
  bad(await call(A, 'data.find_many', { entity: 'contact', cursor: 'bm90IGEgY3Vyc29y' }), '/cursor', 'cursor');
  bad(await call(A, 'data.find_many', { entity: 'contact', limit: 201 }), '/limit', 'maximum');
});

test('an entity redefined on the other instance: writes here are checked against the new schema', async () => {
  const define = (server, schema) => call(server, 'entities.define', { entity: 'stale', schema }, 'initech');
  const create = (p) => mutate({ operation: 'create', entity: 'stale', ...p }, 'initech');
  ok(await define(A, { type: 'object', properties: { n: { type: 'string' } } }));
  ok(await create({ data: { n: 'text' } })); // A caches version 1
  const v2 = ok(await define(B, { type: 'object', required: ['n'], properties: { n: { type: 'integer' } } }));
  assert.equal(v2.version, 2);
  // A still holds version 1.  A write valid under it is refused by the
  // database (another version); one invalid under it makes A read the
  // schema again.  Either way each is checked against version 2.
  const creates = await Promise.all([
    create({ data: { n: 'text' } }),
    create({ data: { n: 7 } }),
    create({ id: 'stale-id', data: { n: 8 } }),
  ]);
  bad(creates[0], '/data/n', 'type');
  assert.deepEqual(ok(creates[1]).record.data, { n: 7 });
  assert.deepEqual(ok(creates[2]).record.data, { n: 8 });
  assert.equal(pg.psql("select count(*) from data_records where entity = 'stale'"), '3');
});

test('order_by a declared field reads its index in order, records without the field first', async () => {
  ok(await call(A, 'entities.define', { entity: 'ranked', schema: { type: 'object' }, indexes: ['rank'] }, 'initech'));
  for (let b = 0; b < 10; b++) {
    ok(await call(A, 'data.mutate_many', { ops: [...Array(100).keys()].map((i) => (
      { operation: 'create', entity: 'ranked', id: `r-${String(b * 100 + i).padStart(4, '0')}`,
        data: i % 2 ? { rank: (b * 100 + i) % 997 } : {} })) }, 'initech'));
  }
  for (const id of ['r-none-1', 'r-none-2', 'r-none-3'])
    ok(await call(A, 'data.mutate', { operation: 'create', entity: 'ranked', id, data: {} }, 'initech'));
  ok(await call(A, 'data.mutate', { operation: 'create', entity: 'ranked', id: 'r-null', data: { rank: null } }, 'initech'));
  const ix = pg.psql("select indexname from pg_indexes where tablename = 'data_records' and indexdef like '%''rank''%'");
  assert.ok(ix, 'the index exists');
  // Scans of the index and entries read: a read in index order reads about
  // a page per scan; one that sorts reads all 1,004.
  const stats = () => pg.psql(`select idx_scan, idx_tup_read from pg_stat_user_indexes where indexrelname = '${ix}'`)
    .split('|').map(Number);
  const page = (direction, cursor) => call(A, 'data.find_many', {
    entity: 'ranked', order_by: { field: 'rank', direction }, limit: 4, ...(cursor ? { cursor } : {}) }, 'initech');
  const [scans0, read0] = stats();
  let [scans, read] = [scans0, read0];
  let first;
  for (let i = 0; i < 50 && scans === scans0; i++) {
    first = ok(await page('asc'));
    await sleep(300);
    [scans, read] = stats();
  }
  assert.ok(scans > scans0, `the index on rank was not scanned (${scans0} -> ${scans})`);
  assert.ok((read - read0) / (scans - scans0) < 50,
    `${read - read0} index entries read in ${scans - scans0} scans: the read sorted`);
  // Ascending: the records without the field (503, by id), then JSON null,
  // then ranks.
  assert.deepEqual(first.records.map((r) => r.id), ['r-0000', 'r-0002', 'r-0004', 'r-0006']);
  // Every page, both ways, through all 1,004 records once, in order, each
  // page reading about a page of index entries: descending pages after a
  // rank and ascending pages after a record without the field included
  // (read from the start of the order, the walks would read about 126,000
  // and 32,000).
  for (const direction of ['asc', 'desc']) {
    const seen = [];
    let cursor, pages = 0;
    const [s0, r0] = stats();
    for (let n = 0; n < 300; n++) {
      const r = ok(await page(direction, cursor));
      pages++;
      seen.push(...r.records);
      cursor = r.next_cursor;
      if (!cursor) break;
    }
    let [s1, r1] = stats();
    for (let i = 0; i < 50 && s1 - s0 < pages; i++) {
      await sleep(300);
      [s1, r1] = stats();
    }
    assert.ok(s1 - s0 >= pages, `${direction}: ${s1 - s0} index scans for ${pages} pages`);
    assert.ok((r1 - r0) / pages < 30, `${direction}: ${r1 - r0} index entries read for ${pages} pages`);
    assert.equal(seen.length, 1004, direction);
    assert.equal(new Set(seen.map((r) => r.id)).size, 1004, direction);
    const key = (r) => ('rank' in r.data ? (r.data.rank === null ? 1 : 2) : 0) * 1e6 + (r.data.rank ?? 0);
    const sorted = [...seen].sort((x, y) => (key(x) - key(y)) || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
    if (direction === 'desc') sorted.reverse();
    assert.deepEqual(seen.map((r) => r.id), sorted.map((r) => r.id), direction);
  }
});

test('reads sent together run as one statement, and each gets exactly its own answer', async () => {
  ok(await call(A, 'data.mutate_many', { ops: [...Array(10).keys()].map((i) => (
    { operation: 'create', entity: 'contact', id: `merge-${i}`, data: { name: 'merge', age: i } })) }));
  ok(await call(A, 'data.mutate', { operation: 'create', entity: 'contact', id: 'merge-g', data: { name: 'merge', age: 3 } }, 'globex'));
  const first = ok(await call(A, 'data.find_many', { entity: 'contact', filter: { name: 'merge' }, limit: 3 }));
  const byAge = ok(await call(A, 'data.find_many', { entity: 'contact', filter: { name: 'merge' }, order_by: { field: 'age' }, limit: 2 }));
  // A cursor PostgreSQL cannot read, in the same statement text as a good
  // one: the merged statement fails, each runs alone, and only it fails.
  const enc = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const broken = enc(['age', 'asc', '{not json', 'merge-1']);
  const calls = [
    ...[...Array(10).keys()].map((age) => ({ entity: 'contact', filter: { name: 'merge', age } })),
    ...[...Array(4).keys()].map((k) => ({ entity: 'contact', filter: { name: 'merge', age: { gt: k * 2 } }, limit: 2 })),
    { entity: 'contact', filter: { name: 'merge' }, limit: 3, cursor: first.next_cursor },
    { entity: 'contact', filter: { name: 'merge' }, order_by: { field: 'age' }, limit: 2, cursor: byAge.next_cursor },
    { entity: 'contact', filter: { name: 'merge' }, order_by: { field: 'age' }, limit: 2, cursor: broken },
    { entity: 'contact', filter: { name: 'nobody' } },
  ];
  // Each alone first: what each must answer.
  const alone = [];
  for (const p of calls) alone.push(await call(A, 'data.find_many', p));
  assert.ok(alone[calls.length - 2].error, 'the broken cursor fails alone too');
  assert.deepEqual(ok(alone[calls.length - 3]).records.map((x) => x.id), ['merge-2', 'merge-3']);
  const merged = async () => (await metrics(A)).values.actiond_db_merged_reads_total;
  for (let round = 0; round < 3; round++) {
    const before = await merged();
    const batch = calls.map((params, id) => ({ jsonrpc: '2.0', id, method: 'data.find_many', params }));
    const [r, g] = await Promise.all([
      http(A, '/rpc', { method: 'POST', body: batch, token: A.tokens.acme }),
      call(A, 'data.find_many', { entity: 'contact', filter: { name: 'merge' } }, 'globex'),
    ]);
    assert.equal(r.status, 200, r.body);
    const byId = new Map(r.json.map((a) => [a.id, a]));
    calls.forEach((p, id) => {
      const { jsonrpc, id: _, ...got } = byId.get(id);
      const { jsonrpc: j2, id: __, ...want } = alone[id];
      assert.deepEqual(got, want, `call ${id} ${JSON.stringify(p)}`);
    });
    assert.deepEqual(ok(g).records.map((x) => x.id), ['merge-g'], 'the other org sees its own');
    assert.ok(await merged() >= before + 10, 'the calls ran merged');
  }
  assert.deepEqual(alone.slice(0, 10).map((a) => ok(a).records.map((x) => x.id)),
    [...Array(10).keys()].map((i) => [`merge-${i}`]));
  ok(await call(A, 'data.mutate', { operation: 'delete', entity: 'contact', id: 'merge-g' }, 'globex'));
});

test('filters refuse what is not a field or an operator, with the pointer', async () => {
  const f = (filter) => call(A, 'data.find_many', { entity: 'contact', filter });
  bad(await f({ "name') OR true --": 'x' }), "/filter/name') OR true --", 'field');
  bad(await f({ org_id: { eq: 1 }, _org_id: 1 }), '/filter/_org_id', 'field');
  bad(await f({ age: { regex: '.*' } }), '/filter/age/regex', 'operator');
  bad(await f({ or: [] }), '/filter/or', 'type');
  bad(await f({ age: { in: Array(101).fill(1) } }), '/filter/age/in', 'maxItems');
  bad(await f({ _version: 'one' }), '/filter', 'type');
  let deep = { name: 'x' };
  for (let i = 0; i < 20; i++) deep = { not: deep };
  bad(await f(deep), undefined, 'maxDepth');
  // Values never become SQL: this matches nothing and breaks nothing.
  assert.deepEqual(ok(await f({ name: "x' OR '1'='1" })).records, []);
  assert.deepEqual(ok(await f({ name: { like: "%' OR 1=1; SELECT pg_sleep(5); --" } })).records, []);
});

test('entities.define: admins only, bounded schemas, and the declared indexes exist', async () => {
  assert.equal(reason(await call(A, 'entities.define', { entity: 'x', schema: {} }, 'member')), 'forbidden');
  let deep = { type: 'object' };
  for (let i = 0; i < 20; i++) deep = { type: 'object', properties: { a: deep } };
  bad(await call(A, 'entities.define', { entity: 'deep', schema: deep }), '/schema', 'maxDepth');
  bad(await call(A, 'entities.define', { entity: 'big', schema: { description: 'x'.repeat(20000) } }), '/schema', 'maxLength');
  bad(await call(A, 'entities.define', { entity: 'remote', schema: { $ref: 'http://example.com/s.json' } }), '/schema');
  bad(await call(A, 'entities.define', { entity: 'typo', schema: { type: 'strnig' } }), '/schema');
  bad(await call(A, 'entities.define', { entity: 'Bad-Name', schema: {} }), '/entity', 'pattern');
  bad(await call(A, 'entities.define', { entity: 'x', schema: {}, indexes: ["a') --"] }), '/indexes/0', 'pattern');
  const idx = pg.psql("select indexdef from pg_indexes where tablename = 'data_records' and indexname like 'data_ix_%' and indexdef like '%''contact''%'");
  assert.match(idx, /\(org_id, \(\(data -> 'age'::text\)\) NULLS FIRST, id\) WHERE \(entity = 'contact'::text\)/);
  assert.equal(idx.split('\n').length, 1, 'one index for the entity name and field, shared by the orgs');
  // ... and it serves reads under the row-level policy: a filter on the
  // field scans the index (the statistics show it within a second or so),
  // reading only the matching entries - not every record of the entity
  // with the filter applied after the policy.
  ok(await call(A, 'data.mutate_many', { ops: [...Array(100).keys()].map((i) => (
    { operation: 'create', entity: 'contact', id: `ix-${i}`, data: { name: 'ix', age: 100 + i } })) }));
  const ixName = pg.psql("select indexname from pg_indexes where tablename = 'data_records' and indexname like 'data_ix_%' and indexdef like '%''contact''%'");
  const stats = () => pg.psql(`select idx_scan, idx_tup_read from pg_stat_user_indexes where indexrelname = '${ixName}'`)
    .split('|').map(Number);
  const [scans0, read0] = stats();
  let [scans, read] = [scans0, read0];
  for (let i = 0; i < 50 && scans === scans0; i++) {
    ok(await call(A, 'data.find_many', { entity: 'contact', filter: { age: 141 }, limit: 1 }, 'member'));
    await new Promise((r) => setTimeout(r, 300));
    [scans, read] = stats();
  }
  assert.ok(scans > scans0, `the index on age was not scanned (${scans0} -> ${scans})`);
  // (Other reads' counts may land in the same window: a few entries a scan
  // on average, where reading the entity would take over 100 a scan.)
  assert.ok((read - read0) / (scans - scans0) < 20,
    `${read - read0} index entries read in ${scans - scans0} scans`);
  // A member lists what the org defined, and nothing of the other org's.
  const l = ok(await call(A, 'entities.list', {}, 'member'));
  assert.deepEqual(l.entities.map((e) => e.entity), ['contact']);
  // Redefining bumps the version; later writes use the new schema.
  const v2 = ok(await call(A, 'entities.define', { entity: 'note', schema: { type: 'object', required: ['text'] } }));
  assert.equal(v2.version, 1);
  ok(await mutate({ operation: 'create', entity: 'note', id: 'n1', data: { text: 'a' } }));
  ok(await call(B, 'entities.define', { entity: 'note', schema: { type: 'object', required: ['body'] } }));
  // A's cache holds version 1: the write must still meet version 2.
  bad(await mutate({ operation: 'create', entity: 'note', data: { text: 'b' } }), '/data', 'required');
  ok(await mutate({ operation: 'create', entity: 'note', data: { body: 'b' } }));
});

test('entity patterns run in bounded time: nested stars are cheap, exploding repetitions are refused', async () => {
  ok(await call(A, 'entities.define', { entity: 'tag', schema: {
    type: 'object', properties: { v: { type: 'string', pattern: '^(a+)+$' }, w: { type: 'string', pattern: '^(a|aa)+$' } },
  } }));
  // A backtracking matcher needs about 2^50 steps for each of these; an
  // automaton needs a few hundred.  Forty writes in 5 s leaves room for a
  // busy machine and none for a backtracking one.
  const evil = 'a'.repeat(50) + 'b';
  const t0 = Date.now();
  for (let i = 0; i < 20; i++) {
    bad(await mutate({ operation: 'create', entity: 'tag', data: { v: evil } }), '/data/v', 'pattern');
    bad(await mutate({ operation: 'create', entity: 'tag', data: { w: evil } }), '/data/w', 'pattern');
  }
  assert.ok(Date.now() - t0 < 5000, `40 refused writes took ${Date.now() - t0} ms`);
  ok(await mutate({ operation: 'create', entity: 'tag', data: { v: 'a'.repeat(50), w: 'aaa' } }));
  // A pattern without an anchor is tried at one start, not at every one:
  // tried at each of 200,000 starts this write would take minutes.
  ok(await call(A, 'entities.define', { entity: 'scan', schema: {
    type: 'object', properties: { s: { type: 'string', pattern: 'x+y' } } } }));
  const t1 = Date.now();
  bad(await mutate({ operation: 'create', entity: 'scan', data: { s: 'x'.repeat(200000) + 'b' } }), '/data/s', 'pattern');
  assert.ok(Date.now() - t1 < 3000, `a 200 KB unanchored scan took ${Date.now() - t1} ms`);
  ok(await mutate({ operation: 'create', entity: 'scan', data: { s: 'x'.repeat(1000) + 'y' } }));
  // Counted repetitions that the matcher would expand into millions of states
  // are refused when the schema is defined, naming the pattern.
  const r = await call(A, 'entities.define', { entity: 'slow', schema: { type: 'string', pattern: '((a{0,50}){0,50}){0,50}' } });
  assert.equal(r.error?.code, -32602, JSON.stringify(r));
  assert.match(JSON.stringify(r.error), /too costly/);
  // A length limit written as a pattern (a run of one character) is
  // counted, not expanded: accepted, and linear in the text.
  ok(await call(A, 'entities.define', { entity: 'handle', schema: { type: 'object', properties: {
    name: { type: 'string', pattern: '^.{1,255}$' }, slug: { type: 'string', pattern: '^[a-z0-9_]{3,5000}$' },
    color: { type: 'string', pattern: '^(red|blue)$' } } } }));
  // "^" is the start of the text, not of a line: no bypass with a newline.
  bad(await mutate({ operation: 'create', entity: 'handle', data: { color: '<b>\nred' } }), '/data/color', 'pattern');
  ok(await mutate({ operation: 'create', entity: 'handle', data: { color: 'red' } }));
  ok(await mutate({ operation: 'create', entity: 'handle', data: { name: '\u00e9'.repeat(255), slug: 'a'.repeat(5000) } }));
  bad(await mutate({ operation: 'create', entity: 'handle', data: { name: 'x'.repeat(256) } }), '/data/name', 'pattern');
  bad(await mutate({ operation: 'create', entity: 'handle', data: { name: '' } }), '/data/name', 'pattern');
  bad(await mutate({ operation: 'create', entity: 'handle', data: { slug: 'a'.repeat(4999) + 'A' } }), '/data/slug', 'pattern');
  const t2 = Date.now();
  bad(await mutate({ operation: 'create', entity: 'handle', data: { slug: 'a'.repeat(200000) } }), '/data/slug', 'pattern');
  assert.ok(Date.now() - t2 < 3000, `a 200 KB run took ${Date.now() - t2} ms`);
});

// ---- isolation --------------------------------------------------------------------

test('two orgs are isolated: ids of the other org are not found, and filters cannot reach it', async () => {
  ok(await mutate({ operation: 'create', entity: 'contact', id: 'secret-1', data: { name: 'Acme only', age: 50 } }));
  assert.equal(reason(await call(A, 'data.find_one', { entity: 'contact', id: 'secret-1' }, 'globex')), 'not_found');
  assert.equal(reason(await mutate({ operation: 'update', entity: 'contact', id: 'secret-1', data: { name: 'stolen' } }, 'globex')), 'not_found');
  assert.equal(reason(await mutate({ operation: 'delete', entity: 'contact', id: 'secret-1' }, 'globex')), 'not_found');
  // The same id in the other org is another record.
  ok(await mutate({ operation: 'create', entity: 'contact', id: 'secret-1', data: { name: 'Globex own' } }, 'globex'));
  assert.equal(ok(await call(A, 'data.find_one', { entity: 'contact', id: 'secret-1' })).record.data.name, 'Acme only');
  const acmeOrg = pg.psql("select id from orgs where slug = 'acme'");
  const g = ok(await call(A, 'data.find_many', { entity: 'contact', filter: { or: [{ org_id: Number(acmeOrg) }, { name: { like: '%' } }] }, limit: 200 }, 'globex'));
  assert.deepEqual(g.records.map((x) => x.data.name), ['Globex own']);
  const cnt = ok(await call(A, 'data.query', { sql: 'SELECT COUNT(*) FROM contact' }, 'globex'));
  assert.equal(cnt.count, 1);
  bad(await call(A, 'data.query', { sql: `SELECT * FROM contact WHERE _org_id = ${acmeOrg}` }, 'globex'), '/sql', 'syntax');
  assert.equal(ok(await call(A, 'entities.list', {}, 'globex')).entities.length, 1);
});

// ---- the SQL subset ----------------------------------------------------------------

test('data.query: the subset works, with literals and $n as parameters', async () => {
  const q = async (sql, params) => ok(await call(A, 'data.query', params ? { sql, params } : { sql }));
  const r = await q("select name, age from contact where name = 'page' and age >= $1 order by age desc, _id limit 3 offset 1", [5]);
  assert.deepEqual(r.rows, [{ name: 'page', age: 9 }, { name: 'page', age: 8 }, { name: 'page', age: 7 }]);
  assert.equal((await q("SELECT COUNT(*) FROM contact WHERE name = 'page' AND (age IN (1, 2, 3) OR age IS NULL)")).count, 3);
  assert.equal((await q("SELECT COUNT(*) FROM contact WHERE name LIKE 'pa%' AND NOT age < 5 AND age != 9")).count, 3);
  assert.equal((await q('SELECT COUNT(*) FROM contact WHERE "name" = $1 AND age IS NOT NULL', ['page'])).count, 8);
  const star = await q("SELECT * FROM contact WHERE _id = 'page-0'");
  assert.deepEqual(Object.keys(star.rows[0]).sort(), ['created_at', 'data', 'id', 'updated_at', 'version']);
  assert.deepEqual((await q("SELECT _id, _version FROM contact WHERE _id IN ('page-0', 'page-1') ORDER BY _id")).rows,
    [{ _id: 'page-0', _version: 1 }, { _id: 'page-1', _version: 1 }]);
  // A quote inside a string is data.
  assert.deepEqual((await q("SELECT * FROM contact WHERE name = 'x'' OR ''1''=''1'")).rows, []);
  assert.deepEqual((await q('SELECT * FROM nothing_here')).rows, []);
});

test('data.query: anything outside the subset is refused with its position', async () => {
  // at: the text the error must point at (its first occurrence from from).
  const refused = async (sql, at, params, from = 0) => {
    const t0 = Date.now();
    const position = sql.indexOf(at, from);
    assert.ok(position >= 0);
    const d = bad(await call(A, 'data.query', params ? { sql, params } : { sql }), '/sql', 'syntax');
    assert.equal(d.position, position, `${sql}: ${d.message}`);
    assert.match(d.message, new RegExp(`^at position ${position}: `));
    assert.ok(Date.now() - t0 < 2000);
  };
  await refused('SELECT * FROM contact WHERE name = 1 OR 1 = 1', '1 = 1');
  await refused("SELECT * FROM contact WHERE name = 'a' -- comment", '-- comment');
  await refused('SELECT * FROM contact /* c */', '/*');
  await refused('SELECT * FROM contact; DELETE FROM contact', ';');
  await refused('SELECT * FROM contact WHERE name = pg_sleep(5)', 'pg_sleep');
  await refused("SELECT set_config('app.org', '1', true) FROM contact", '(');
  await refused('SELECT * FROM contact, data_records', ',');
  await refused('SELECT * FROM contact WHERE org_id = 1 OR TRUE', 'TRUE');
  await refused('SELECT * FROM contact UNION SELECT * FROM contact', 'UNION');
  await refused('SELECT * FROM contact WHERE age = $2', '$2', [1]);
  await refused('SELECT * FROM contact LIMIT 201', '201');
  await refused('SELECT * FROM contact WHERE _version = $1', '$1', ['x']);
  await refused('DELETE FROM contact', 'DELETE');
  await refused('SELECT * FROM Contact', 'Contact');
  await refused("SELECT * FROM contact WHERE name = 'open", "'open");
  await refused('SELECT "a b" FROM contact', '"a b"');
  await refused('SELECT COUNT(*) FROM contact LIMIT 1', 'LIMIT');
  await refused('SELECT * FROM contact WHERE _org_id = 1', '_org_id');
  await refused('SELECT * FROM contact WHERE name = $1 OR 1=1', '1=1', ['x']);
  // Nesting is bounded as a filter's tree is: 15 parentheses or 31 NOTs
  // (each pair of a parenthesis and its OR and AND counts two levels).
  const count = async (sql, params) => ok(await call(A, 'data.query', params ? { sql, params } : { sql })).count;
  const parens = (n) => `SELECT COUNT(*) FROM contact WHERE ${'(name = $1 OR '.repeat(n)}age = 1${')'.repeat(n)}`;
  assert.equal(await count(parens(15), ['page']), await count(parens(1), ['page']));
  await refused(parens(16), '(', ['page'], parens(15).indexOf('age = 1'));
  const nots = (n) => `SELECT COUNT(*) FROM contact WHERE ${'NOT '.repeat(n)}name = 'page'`;
  assert.equal(await count(nots(31)), await count(nots(1)));
  await refused(nots(32), 'NOT', undefined, nots(0).indexOf('name') + 31 * 4);
});

// ---- the change feed ---------------------------------------------------------------

test('a subscriber on the other instance gets each committed write once, in seq order', async () => {
  const { ws, sub } = await subscriber(B, ['contact']);
  assert.equal(sub.reset, false);
  assert.deepEqual(sub.changes, []);
  const seqs = [];
  for (let i = 0; i < 5; i++)
    seqs.push(ok(await mutate({ operation: 'create', entity: 'contact', id: `feed-${i}`, data: { name: 'feed' } })).seq);
  ok(await mutate({ operation: 'create', entity: 'note', data: { body: 'not subscribed' } }));
  const del = ok(await mutate({ operation: 'delete', entity: 'contact', id: 'feed-0' }));
  const got = await collect(ws, (l) => l.length >= 6);
  assert.deepEqual(got.map((c) => c.seq), [...seqs, del.seq]);
  assert.equal(got[0].seq, sub.seq + 1);
  assert.deepEqual(got[0], { entity: 'contact', op: 'create', ids: ['feed-0'], seq: seqs[0] });
  assert.deepEqual(got[5], { entity: 'contact', op: 'delete', ids: ['feed-0'], seq: del.seq });
  // A failing batch emits nothing.
  assert.equal(reason(await call(A, 'data.mutate_many', { ops: [
    { operation: 'create', entity: 'contact', id: 'feed-rb', data: { name: 'rb' } },
    { operation: 'create', entity: 'contact', id: 'feed-1', data: { name: 'dup' } },
  ] })), 'conflict');
  const after = ok(await mutate({ operation: 'update', entity: 'contact', id: 'feed-1', data: { name: 'feed!' } }));
  assert.deepEqual(await collect(ws, (l) => l.length >= 1), [{ entity: 'contact', op: 'update', ids: ['feed-1'], seq: after.seq }]);
  assert.equal(after.seq, del.seq + 1 + (lastSeq('acme') - after.seq), 'no seq was spent on the rollback');
  assert.ok(await ws.silent(300));
  // Unsubscribed, nothing more comes.
  assert.deepEqual(ok(await ws.call('changes.unsubscribe', { entities: ['contact'] })), { unsubscribed: 1 });
  ok(await mutate({ operation: 'update', entity: 'contact', id: 'feed-1', data: { name: 'quiet' } }));
  assert.ok(await ws.silent(500));
  await ws.close();
  // Orgs do not see each other's feed.
  const { ws: g } = await subscriber(B, ['contact'], undefined, 'globex');
  ok(await mutate({ operation: 'update', entity: 'contact', id: 'feed-1', data: { name: 'acme' } }));
  assert.ok(await g.silent(500));
  await g.close();
});

test('any JSON value makes the round trip through writes, filters and cursors unchanged', async () => {
  ok(await call(A, 'entities.define', { entity: 'tricky', schema: { type: 'object' }, indexes: ['s'] }));
  const strings = ['quote " here', 'back\\slash', 'nl\nand\ttab', '\u0001\u001f\u007f', 'caf\u00e9', '\u{1F600}',
    '\u2028', '{"not":"json"}', "it's", '\\u0041', ''];
  const data = {
    s: strings[0], all: strings, nums: [0, -1, 2.5, -0.5, 1e300, 12345678901234, 5e-324],
    nested: { 'k"ey': { 'b\\s': [null, true, false, [], {}], '\u00e9': 'x' } },
  };
  const made = ok(await mutate({ operation: 'create', entity: 'tricky', data }));
  assert.deepEqual(made.record.data, data);
  const one = ok(await call(B, 'data.find_one', { entity: 'tricky', id: made.record.id }));
  assert.deepEqual(one.record.data, data);
  for (const str of strings) {
    const id = ok(await mutate({ operation: 'create', entity: 'tricky', data: { s: str } })).record.id;
    const found = ok(await call(A, 'data.find_many', { entity: 'tricky', filter: { s: str } }));
    assert.ok(found.records.some((r) => r.id === id && r.data.s === str), JSON.stringify(str));
    const inList = ok(await call(A, 'data.find_many', { entity: 'tricky', filter: { s: { in: [str, 'zz'] } } }));
    assert.ok(inList.records.some((r) => r.id === id), JSON.stringify(str));
  }
  // Pages ordered by the field, cursors carrying these values.
  const seen = [];
  let cursor;
  do {
    const page = ok(await call(A, 'data.find_many', { entity: 'tricky', order_by: { field: 's' }, limit: 2, cursor }));
    seen.push(...page.records.map((r) => r.data.s));
    cursor = page.next_cursor;
  } while (cursor);
  assert.equal(seen.length, strings.length + 1);
  assert.deepEqual([...seen].sort(), [strings[0], ...strings].sort());
});

test('ids made by create are time-ordered UUIDs (version 7), on every write path', async () => {
  const v7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  const ms = (id) => parseInt(id.replace(/-/g, '').slice(0, 12), 16);
  const t0 = Date.now();
  const ids = [];
  for (let i = 0; i < 3; i++) {
    ids.push(ok(await mutate({ operation: 'create', entity: 'contact', data: { name: 'v7' } })).record.id);
    await sleep(5);
  }
  // mutate_many (data_create_batch()) and a batch with an update in it (data_apply()).
  const many = ok(await call(A, 'data.mutate_many', { ops: [
    { operation: 'create', entity: 'contact', data: { name: 'v7' } },
    { operation: 'create', entity: 'contact', data: { name: 'v7' } }] }));
  ids.push(...many.records.map((r) => r.id));
  const mixed = ok(await call(A, 'data.mutate_many', { ops: [
    { operation: 'update', entity: 'contact', id: ids[0], data: { name: 'v7b' } },
    { operation: 'create', entity: 'contact', data: { name: 'v7' } }] }));
  ids.push(mixed.records.find((r) => r.id !== ids[0]).id);
  for (const id of ids) {
    assert.match(id, v7);
    assert.ok(Math.abs(ms(id) - t0) < 60000, `${id} carries the time it was made`);
  }
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(ids[0] < ids[1] && ids[1] < ids[2], 'later creates sort later');
});

test('a burst of writes to an entity not cached here reads its schema once', async () => {
  ok(await call(A, 'entities.define', { entity: 'burst', schema: { type: 'object', properties: { n: { type: 'integer' } } } }));
  const jobs = async () => (await metrics(B)).values.actiond_db_jobs_total;
  // B has not read burst's schema: 40 creates sent together, the last one
  // invalid under it (still checked against the schema read for the others).
  const before = await jobs();
  const batch = [...Array(40).keys()].map((i) => ({ jsonrpc: '2.0', id: i, method: 'data.mutate',
    params: { operation: 'create', entity: 'burst', data: { n: i < 39 ? i : 'x' } } }));
  const r = await http(B, '/rpc', { method: 'POST', body: batch, token: B.tokens.acme });
  assert.equal(r.status, 200, r.body);
  const byId = new Map(r.json.map((a) => [a.id, a]));
  for (let i = 0; i < 39; i++) assert.equal(ok(byId.get(i)).record.data.n, i);
  bad(byId.get(39), '/data/n', 'type');
  // One schema read and a few batches (and their announcements), not a read per write.
  const used = (await jobs()) - before;
  assert.ok(used <= 12, `${used} database jobs for 40 writes`);
  assert.equal(pg.psql("select count(*) from data_records where entity = 'burst'"), '39');
});

test('concurrent creates commit together, yet each is answered and fed on its own', async () => {
  const { ws } = await subscriber(A, ['contact']);
  ok(await mutate({ operation: 'create', entity: 'contact', id: 'grp-old', data: { name: 'old' } }));
  await collect(ws, (l) => l.length >= 1);
  const ids = [...Array(30).keys()].map((i) => `grp-${i}`);
  const [rs, again, exists, nul] = await Promise.all([
    Promise.all(ids.map((id) => mutate({ operation: 'create', entity: 'contact', id, data: { name: 'grp' } }))),
    mutate({ operation: 'create', entity: 'contact', id: 'grp-3', data: { name: 'again' } }),
    mutate({ operation: 'create', entity: 'contact', id: 'grp-old', data: { name: 'exists' } }),
    mutate({ operation: 'create', entity: 'contact', id: 'grp-nul', data: { name: 'a\u0000b' } }),
  ]);
  // grp-3 twice: one of the two wins, the other is a conflict.
  const three = [rs[3], again];
  assert.equal(three.filter((r) => r.result).length, 1, JSON.stringify(three));
  assert.equal(reason(three.find((r) => r.error)), 'conflict', JSON.stringify(three));
  assert.equal(reason(exists), 'conflict', JSON.stringify(exists));
  assert.equal(exists.error.data.id, 'grp-old');
  // A value PostgreSQL cannot store fails alone, with its pointer.
  bad(nul, '/data/name', 'pattern');
  assert.equal(pg.psql("select count(*) from data_records where id = 'grp-nul'"), '0');
  const won = [...rs.filter((r, i) => i !== 3 && r.result), ...three.filter((r) => r.result)].map((r) => r.result);
  assert.equal(won.length, 30);
  assert.equal(new Set(won.map((r) => r.seq)).size, 30, 'a seq each');
  // The feed: one change per record, each with the seq its write answered.
  const got = await collect(ws, (l) => l.length >= 30);
  assert.deepEqual(got.map((c) => [c.ids, c.seq]).sort((a, b) => a[1] - b[1]),
    won.map((r) => [[r.record.id], r.seq]).sort((a, b) => a[1] - b[1]));
  assert.ok(got.every((c, i) => i === 0 || c.seq === got[i - 1].seq + 1), 'in seq order, no gap');
  assert.ok(await ws.silent(300));
  assert.equal(pg.psql("select data->>'name' from data_records where id = 'grp-old'"), 'old');
});

test('a reconnect with since replays exactly what was missed, then goes live with no gap', async () => {
  const { ws, sub } = await subscriber(A, ['contact']);
  const first = ok(await mutate({ operation: 'create', entity: 'contact', id: 'since-0', data: { name: 's' } }, 'acme', B));
  assert.equal((await collect(ws, (l) => l.length >= 1))[0].seq, first.seq);
  await ws.close();
  const missed = [];
  for (let i = 1; i <= 4; i++)
    missed.push(ok(await mutate({ operation: 'create', entity: 'contact', id: `since-${i}`, data: { name: 's' } }, 'acme', B)).seq);
  ok(await mutate({ operation: 'create', entity: 'note', data: { body: 'other entity' } }, 'acme', B));
  const again = await subscriber(A, ['contact'], first.seq);
  assert.equal(again.sub.reset, false);
  assert.equal(again.sub.more, false);
  assert.equal(again.sub.epoch, sub.epoch);
  const live = ok(await mutate({ operation: 'create', entity: 'contact', id: 'since-5', data: { name: 's' } }, 'acme', B));
  // The replay runs up to the seq the answer is live from; notifications
  // carry on from there: together, exactly what was missed and then the new
  // write, each once.
  const replayed = again.sub.changes;
  assert.ok(replayed.every((c) => c.seq <= again.sub.seq));
  const got = await collect(again.ws, (l) => l.some((c) => c.seq === live.seq));
  assert.ok(got.every((c) => c.seq > again.sub.seq));
  assert.deepEqual([...replayed, ...got].map((c) => c.seq), [...missed, live.seq]);
  assert.deepEqual([...replayed, ...got].map((c) => c.ids[0]), ['since-1', 'since-2', 'since-3', 'since-4', 'since-5']);
  assert.ok(await again.ws.silent(300));
  // An epoch that is not the org's answers reset, live from now.
  const r = await subscriber(A, ['contact'], 1, 'acme').then(async () => {
    const ws2 = await connect(A, { token: A.tokens.acme });
    sockets.push(ws2);
    return ws2.call('changes.subscribe', { entities: ['contact'], since: 1, epoch: 'not-this-one' });
  });
  assert.equal(r.result.reset, true);
  assert.deepEqual(r.result.changes, []);
  // Over HTTP there is no socket to deliver to.
  const h = await rpc(A, 'changes.subscribe', { entities: ['contact'] }, { token: A.tokens.acme });
  assert.equal(h.json.error.code, -32600);
});

test('concurrent writers on both instances never make a reader skip or repeat a seq', async () => {
  const readers = [await subscriber(A, ['contact']), await subscriber(B, ['contact'])];
  const start = readers[0].sub.seq;
  const writes = [];
  for (let w = 0; w < 8; w++)
    writes.push((async () => {
      const out = [];
      for (let i = 0; i < 10; i++) {
        const s = w % 2 ? A : B;
        if (i % 3 === 2) {
          out.push(ok(await call(s, 'data.mutate_many', { ops: [
            { operation: 'create', entity: 'contact', id: `cc-${w}-${i}-a`, data: { name: 'c' } },
            { operation: 'create', entity: 'contact', id: `cc-${w}-${i}-b`, data: { name: 'c' } },
          ] })).records.length);
        } else {
          ok(await mutate({ operation: 'create', entity: 'contact', id: `cc-${w}-${i}`, data: { name: 'c' } }, 'acme', s));
          out.push(1);
        }
      }
      return out.reduce((a, b) => a + b, 0);
    })());
  const total = (await Promise.all(writes)).reduce((a, b) => a + b, 0);
  assert.equal(total, 8 * 10 + 8 * 3);
  // Every change of the entity committed after a reader's seq, in seq order.
  const committed = (from) => pg.psql(`select seq from data_changes where entity = 'contact' and seq > ${from}
    and org_id = (select id from orgs where slug = 'acme') order by seq`).split('\n').map(Number);
  for (const { ws, sub } of readers) {
    const want = committed(sub.seq);
    const got = await collect(ws, (l) => l.length >= want.length, 20000);
    assert.deepEqual(got.map((c) => c.seq), want, 'every seq, in order, once');
    assert.ok(await ws.silent(300));
  }
  // The writes of this test took consecutive seqs: nothing else wrote meanwhile.
  const mine = committed(start);
  assert.equal(mine.length, total);
  assert.deepEqual(mine, Array.from({ length: total }, (_, i) => mine[0] + i));
});

test('history older than the retention answers reset', async () => {
  const C = await startServer({ db: pg.conninfo, keys: KEYS,
    args: ['-s', 'module.data.retention_seconds=1', '-s', 'module.data.sweep_ms=200'] });
  try {
    const w = ok(await mutate({ operation: 'create', entity: 'contact', id: 'old-1', data: { name: 'old' } }, 'acme', C));
    const t0 = Date.now();
    while (pg.psql(`select count(*) from data_changes where seq <= ${w.seq} and org_id = (select id from orgs where slug = 'acme')`) !== '0') {
      assert.ok(Date.now() - t0 < 15000, 'the sweep removed old changes');
      await sleep(200);
    }
    const ws = await connect(C, { token: C.tokens.acme });
    sockets.push(ws);
    const r = (await ws.call('changes.subscribe', { entities: ['contact'], since: w.seq - 1 })).result;
    assert.equal(r.reset, true);
    assert.deepEqual(r.changes, []);
    assert.ok(r.seq >= w.seq);
    // Still live after a reset.
    const n = ok(await mutate({ operation: 'create', entity: 'contact', id: 'old-2', data: { name: 'new' } }, 'acme', C));
    assert.deepEqual((await collect(ws, (l) => l.length >= 1)).map((c) => c.seq), [n.seq]);
    await ws.close();
  } finally {
    await C.stop();
  }
});

test('a change committed without a seq (its instance stopped first) is numbered and delivered by the timer', async () => {
  const C = await startServer({ db: pg.conninfo, keys: KEYS, args: ['-s', 'module.data.poll_ms=200'] });
  try {
    const ws = await connect(C, { token: C.tokens.acme });
    sockets.push(ws);
    const sub = (await ws.call('changes.subscribe', { entities: ['contact'] })).result;
    assert.ok(sub, 'subscribed');
    // What a writer leaves behind when it stops between its commit and the
    // numbering: a captured change with no seq.
    pg.psql(`insert into data_changes (org_id, entity, op, ids, at)
             select id, 'contact', 'update', array['orphan-1'], now() - interval '5 seconds'
             from orgs where slug = 'acme'`);
    const got = await collect(ws, (l) => l.length >= 1, 5000);
    assert.deepEqual(got.map((c) => [c.entity, c.op, c.ids]), [['contact', 'update', ['orphan-1']]]);
    assert.equal(got[0].seq, sub.seq + 1, 'the next seq, no gap');
    assert.equal(pg.psql("select count(*) from data_changes where seq is null"), '0');
    await ws.close();
  } finally {
    await C.stop();
  }
});
