// data.find_many's filters and order next to a reference: random records
// with a field of every JSON type (and none), random filters over the
// documented language (docs/data.md, Filters), and the records each
// filter selects computed here from the documented rules - JSON values
// compare within one type, a missing field is null for is_null and
// matches no comparison, LIKE applies to the field's text as PostgreSQL's
// ->> gives it - must be exactly the records actiond answers.  Then every
// order (asc, desc) paged with cursors against the documented order:
// records without the field first ascending, then null, strings, numbers,
// booleans, arrays, objects.  And each filter written in data.query's SQL
// subset selects and counts the same records.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startPostgres, rpc } from './lib.mjs';
import { generator } from './random.mjs';

let pg, A;
const { rnd, pick } = generator(Number(process.env.FILTER_SEED || 11));
const MISSING = Symbol('missing');
const values = [MISSING, MISSING, null, true, false, 0, 1, -1, 2.5, 10, 'a', 'b', 'ab', 'a%', '_x', '10',
  '\u00e9', 'B', [1], [1, 2], ['a'], { x: 1 }];
const scalars = [null, true, false, 0, 1, -1, 2.5, 10, 'a', 'b', 'ab', 'a%', '_x', '10', '\u00e9', 'B'];
const likes = ['a%', '%b', '_', 'a_', '%', 'a\\%', '%\u00e9%', '1%', '[%', 'true', '%x%', '\\_x'];

before(async () => {
  pg = await startPostgres();
  A = await startServer({ db: pg.conninfo, keys: { acme: { org: 'acme', role: 'admin' } } });
  const r = await call('entities.define', { entity: 'fz', schema: { type: 'object' }, indexes: ['a'] });
  assert.ok(r.result, JSON.stringify(r));
});

after(async () => {
  const r = await A?.stop();
  pg?.destroy();
  assert.equal(r?.code, 0);
});

async function call(method, params) {
  const r = await rpc(A, method, params, { token: A.tokens.acme });
  assert.ok(r.json, r.body);
  return r.json;
}

// ---- the reference ---------------------------------------------------------

const typeOf = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'object' ? 'object'
  : typeof v);
const rank = { null: 0, string: 1, number: 2, boolean: 3, array: 4, object: 5 };
// jsonb's order: by type, then numbers by value, strings by bytes (the
// test cluster's C collation), false < true, arrays by length then items,
// objects by size then keys and values.
function cmp(x, y) {
  const tx = typeOf(x), ty = typeOf(y);
  if (tx !== ty) return rank[tx] - rank[ty];
  if (tx === 'number') return x - y;
  if (tx === 'string') return Buffer.compare(Buffer.from(x), Buffer.from(y));
  if (tx === 'boolean') return Number(x) - Number(y);
  if (tx === 'array') {
    if (x.length !== y.length) return x.length - y.length;
    for (let i = 0; i < x.length; i++) { const c = cmp(x[i], y[i]); if (c) return c; }
    return 0;
  }
  if (tx === 'object') {
    const kx = Object.keys(x).sort(), ky = Object.keys(y).sort();
    if (kx.length !== ky.length) return kx.length - ky.length;
    for (let i = 0; i < kx.length; i++) {
      const c = cmp(kx[i], ky[i]) || cmp(x[kx[i]], y[ky[i]]);
      if (c) return c;
    }
    return 0;
  }
  return 0;
}
// PostgreSQL's ->> text of a jsonb value (null for JSON null).
function text(v) {
  if (v === null) return null;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return `[${v.map((e) => jtext(e)).join(', ')}]`;
  if (typeof v === 'object') return `{${Object.keys(v).map((k) => `${JSON.stringify(k)}: ${jtext(v[k])}`).join(', ')}}`;
  return String(v);
}
const jtext = (v) => (typeof v === 'string' ? JSON.stringify(v) : text(v) ?? 'null');
function like(s, p) {
  let re = '^';
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '\\' && i + 1 < p.length) re += p[++i].replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    else if (c === '%') re += '[^]*';
    else if (c === '_') re += '[^]';
    else re += c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(re + '$', 'u').test(s);
}
// A filter's verdict on a record: true, false, or null (SQL's unknown).
function holds(f, data) {
  if ('and' in f) {
    const r = f.and.map((g) => holds(g, data));
    return r.includes(false) ? false : r.includes(null) ? null : true;
  }
  if ('or' in f) {
    const r = f.or.map((g) => holds(g, data));
    return r.includes(true) ? true : r.includes(null) ? null : false;
  }
  if ('not' in f) return !(holds(f.not, data) ?? false);
  const [field, cond] = Object.entries(f)[0];
  const has = Object.hasOwn(data, field), v = data[field];
  const [op, want] = Object.entries(cond)[0];
  switch (op) {
    case 'is_null': return want === (!has || v === null);
    case 'eq': return has ? cmp(v, want) === 0 && typeOf(v) === typeOf(want) : null;
    case 'ne': return has ? !(cmp(v, want) === 0 && typeOf(v) === typeOf(want)) : null;
    case 'in': return has ? want.some((w) => cmp(v, w) === 0 && typeOf(v) === typeOf(w)) : null;
    case 'like': return has && v !== null ? like(text(v), want) : null;
    default: {
      if (!has) return null;
      if (typeOf(v) !== typeOf(want)) return false;
      const c = cmp(v, want);
      return { lt: c < 0, le: c <= 0, gt: c > 0, ge: c >= 0 }[op];
    }
  }
}

function filter(d = 0) {
  const r = rnd();
  if (d < 2 && r < 0.15) return { and: [filter(d + 1), filter(d + 1)] };
  if (d < 2 && r < 0.3) return { or: [filter(d + 1), filter(d + 1)] };
  if (d < 2 && r < 0.38) return { not: filter(d + 1) };
  const field = pick(['a', 'a', 'b']);
  const op = pick(['eq', 'ne', 'lt', 'le', 'gt', 'ge', 'in', 'like', 'is_null']);
  if (op === 'in') return { [field]: { in: Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => pick(values.filter((v) => v !== MISSING))) } };
  if (op === 'like') return { [field]: { like: pick(likes) } };
  if (op === 'is_null') return { [field]: { is_null: rnd() < 0.5 } };
  return { [field]: { [op]: pick(op === 'eq' || op === 'ne' ? values.filter((v) => v !== MISSING) : scalars) } };
}

// ---- the test --------------------------------------------------------------

test('filters select exactly the records the documented rules select', async () => {
  const records = [];
  const ops = [];
  for (let i = 0; i < 90; i++) {
    const data = {};
    for (const f of ['a', 'b']) { const v = pick(values); if (v !== MISSING) data[f] = v; }
    const id = `r${String(i).padStart(3, '0')}`;
    records.push({ id, data });
    ops.push({ operation: 'create', entity: 'fz', id, data });
  }
  const w = await call('data.mutate_many', { ops });
  assert.ok(w.result, JSON.stringify(w.error));
  let compared = 0, selected = 0;
  for (let t = 0; t < 300; t++) {
    const f = filter();
    const r = await call('data.find_many', { entity: 'fz', filter: f, limit: 200 });
    assert.ok(r.result, `${JSON.stringify(f)}: ${JSON.stringify(r.error)}`);
    const got = r.result.records.map((x) => x.id).sort();
    const want = records.filter((x) => holds(f, x.data) === true).map((x) => x.id).sort();
    assert.deepEqual(got, want, JSON.stringify(f));
    compared++;
    selected += want.length;
  }
  assert.equal(compared, 300);
  assert.ok(selected > 300 && selected < 300 * 80, `${selected} records selected in all`);
});

test('every order, paged with cursors, is the documented order', async () => {
  const all = (await call('data.find_many', { entity: 'fz', limit: 200 })).result.records;
  assert.equal(all.length, 90);
  for (const field of ['a', '_id', '_version']) {
    for (const direction of ['asc', 'desc']) {
      const seen = [];
      let cursor;
      for (let n = 0; n < 100; n++) {
        const r = await call('data.find_many', { entity: 'fz', order_by: { field, direction }, limit: 7, ...(cursor ? { cursor } : {}) });
        assert.ok(r.result, JSON.stringify(r.error));
        seen.push(...r.result.records.map((x) => x.id));
        cursor = r.result.next_cursor;
        if (!cursor) break;
      }
      const key = (x) => (field === 'a' ? x.data.a : field === '_id' ? x.id : x.version);
      const want = [...all].sort((x, y) => {
        const hx = field !== 'a' || Object.hasOwn(x.data, 'a'), hy = field !== 'a' || Object.hasOwn(y.data, 'a');
        const c = hx !== hy ? (hx ? 1 : -1) : hx ? cmp(key(x), key(y)) : 0;
        return c || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0);
      }).map((x) => x.id);
      if (direction === 'desc') want.reverse();
      assert.deepEqual(seen, want, `${field} ${direction}`);
    }
  }
});

// The same filter written in data.query's SQL subset: the same tree, so
// exactly the same records, and COUNT(*) their number.
function sql(f, params) {
  const val = (v) => {
    if (typeof v === 'string') return `'${v.replaceAll("'", "''")}'`;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v).toUpperCase();
    params.push(v);
    return `$${params.length}`;
  };
  if ('and' in f) return `(${f.and.map((g) => sql(g, params)).join(' AND ')})`;
  if ('or' in f) return `(${f.or.map((g) => sql(g, params)).join(' OR ')})`;
  if ('not' in f) return `NOT (${sql(f.not, params)})`;
  const [field, cond] = Object.entries(f)[0];
  const [op, want] = Object.entries(cond)[0];
  switch (op) {
    case 'is_null': return `${field} IS ${want ? '' : 'NOT '}NULL`;
    case 'in': return `${field} IN (${want.map(val).join(', ')})`;
    case 'like': return `${field} LIKE ${val(want)}`;
    default: return `${field} ${{ eq: '=', ne: '!=', lt: '<', le: '<=', gt: '>', ge: '>=' }[op]} ${val(want)}`;
  }
}

test('data.query selects and counts what the same filter selects', async () => {
  for (let t = 0; t < 150; t++) {
    const f = filter();
    const params = [];
    const where = sql(f, params);
    const q = await call('data.query', { sql: `SELECT * FROM fz WHERE ${where} LIMIT 200`, params });
    assert.ok(q.result, `${where} ${JSON.stringify(params)}: ${JSON.stringify(q.error)}`);
    const c = await call('data.query', { sql: `select count(*) from fz where ${where}`, params });
    assert.ok(c.result, `${where}: ${JSON.stringify(c.error)}`);
    const r = await call('data.find_many', { entity: 'fz', filter: f, limit: 200 });
    const want = r.result.records.map((x) => x.id).sort();
    assert.deepEqual(q.result.rows.map((x) => x.id).sort(), want, `${where} ${JSON.stringify(params)}`);
    assert.equal(c.result.count, want.length, where);
  }
});
