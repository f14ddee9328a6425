// The validator next to Ajv (draft-07): random schemas over the keywords
// actiond supports and random instances, each verdict of
// tests/unit/schema_oracle.c equal to Ajv's.  Ajv is an independent
// implementation held to the same test suite; where the two disagree one
// of them is wrong, and the test says which schema and instance.
// Not generated: `format` (Ajv leaves formats to a plugin), non-integer
// `multipleOf` (Ajv divides in binary floating point), and `contains` next
// to an array of `items` (below).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import Ajv from 'ajv';
import { generator } from './random.mjs';

const oracle = path.join(process.env.ACTIOND_BUILD_ROOT, 'tests', 'unit', 'schema_oracle');

const { rnd, pick } = generator(Number(process.env.SCHEMA_SEED || 7));
const some = (n, f) => Array.from({ length: Math.floor(rnd() * (n + 1)) }, f);

const strings = ['', 'a', 'b', 'ab', 'ba', 'abc', '\u00e9', '\u{1F600}', 'a\u{1F600}', '1', 'A'];
const keys = ['a', 'b', 'c', 'ab', '\u00e9'];
function value(d = 0) {
  const r = rnd();
  if (r < 0.1) return null;
  if (r < 0.2) return rnd() < 0.5;
  if (r < 0.38) return pick([-1, 0, 1, 2, 3, 10]);
  if (r < 0.46) return pick([0.5, 2.5, -0.5, 1.5]);
  if (r < 0.66) return pick(strings);
  if (r < 0.83 && d < 2) return some(3, () => value(d + 1));
  if (d < 2) return Object.fromEntries(some(3, () => [pick(keys), value(d + 1)]));
  return pick(strings);
}

const types = ['null', 'boolean', 'integer', 'number', 'string', 'array', 'object'];
const gens = {
  type: () => (rnd() < 0.7 ? pick(types) : [pick(types), pick(types)].filter((t, i, a) => a.indexOf(t) === i)),
  enum: () => [value(1), value(1), value(1)].slice(0, 1 + Math.floor(rnd() * 3)),
  const: () => value(1),
  minimum: () => pick([-1, 0, 1, 2.5, 3]),
  maximum: () => pick([-1, 0, 1, 2.5, 3]),
  exclusiveMinimum: () => pick([-1, 0, 1, 2.5]),
  exclusiveMaximum: () => pick([0, 1, 2.5, 3]),
  multipleOf: () => pick([1, 2, 3]),
  minLength: () => pick([0, 1, 2, 3]),
  maxLength: () => pick([0, 1, 2, 3]),
  pattern: () => pick(['^a', 'b$', '^[a-c]*$', '\u00e9', '^.{2}$', '^[^a]+$', 'a|^b']),
  items: (d) => (rnd() < 0.6 ? schema(d + 1) : [schema(d + 1), schema(d + 1)]),
  additionalItems: (d) => (rnd() < 0.5 ? rnd() < 0.5 : schema(d + 1)),
  contains: (d) => schema(d + 1),
  minItems: () => pick([0, 1, 2]),
  maxItems: () => pick([0, 1, 2]),
  uniqueItems: () => rnd() < 0.7,
  properties: (d) => Object.fromEntries(some(2, () => [pick(keys), schema(d + 1)])),
  required: () => [...new Set(some(2, () => pick(keys)))],
  additionalProperties: (d) => (rnd() < 0.5 ? rnd() < 0.5 : schema(d + 1)),
  patternProperties: (d) => ({ [pick(['^a', 'b', '^\u00e9$', '.'])]: schema(d + 1) }),
  propertyNames: () => pick([{ maxLength: 1 }, { pattern: '^[ab]+$' }, { enum: ['a', 'c'] }, false]),
  minProperties: () => pick([0, 1, 2]),
  maxProperties: () => pick([0, 1, 2]),
  dependencies: (d) => ({ [pick(keys)]: rnd() < 0.5 ? [pick(keys)] : schema(d + 1) }),
  allOf: (d) => [schema(d + 1), schema(d + 1)],
  anyOf: (d) => [schema(d + 1), schema(d + 1)],
  oneOf: (d) => [schema(d + 1), schema(d + 1)],
  not: (d) => schema(d + 1),
  if: (d) => schema(d + 1),
  then: (d) => schema(d + 1),
  else: (d) => schema(d + 1),
};
const names = Object.keys(gens);
function schema(d = 0) {
  if (d > 0 && rnd() < 0.08) return rnd() < 0.5;
  const s = {};
  const n = d > 2 ? 1 : 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < n; i++) {
    const k = pick(names);
    if (d > 2 && ['items', 'additionalItems', 'contains', 'properties', 'additionalProperties',
      'patternProperties', 'dependencies', 'allOf', 'anyOf', 'oneOf', 'not', 'if', 'then', 'else'].includes(k)) continue;
    s[k] = gens[k](d);
  }
  // Ajv 8 answers valid for [] against {"contains": X, "items": [Y]} whatever
  // X (spec: "at least one of its elements is valid"), so the two are not
  // generated together.
  if (s.contains !== undefined && Array.isArray(s.items)) delete s.items;
  return s;
}

test('the validator and Ajv give the same verdict on random schemas and instances', () => {
  const ajv = new Ajv({ strict: false, allErrors: false, validateSchema: false });
  const cases = [];
  let ajvRefused = 0;
  for (let i = 0; i < 4000; i++) {
    const s = schema();
    let check;
    try {
      check = ajv.compile(s);
    } catch {
      ajvRefused++;
      continue;
    }
    for (let j = 0; j < 10; j++) {
      const x = value();
      cases.push([s, x, check(x)]);
    }
  }
  const run = spawnSync(oracle, [], {
    input: cases.map(([s, x]) => JSON.stringify([s, x])).join('\n') + '\n',
    maxBuffer: 1 << 26,
  });
  assert.equal(run.status, 0, `the oracle failed: ${run.stderr}`);
  const got = run.stdout.toString().trim().split('\n');
  assert.equal(got.length, cases.length);
  const differ = [];
  let refused = 0, valid = 0;
  got.forEach((v, i) => {
    const [s, x, want] = cases[i];
    if (v === 'E') { refused++; return; }
    if (want) valid++;
    if ((v === '1') !== want)
      differ.push(`${JSON.stringify(s)} with ${JSON.stringify(x)}: Ajv ${want}, actiond ${v === '1'}`);
  });
  console.log(`${cases.length} cases (${valid} valid), ${refused} refused by actiond, ${ajvRefused} schemas refused by Ajv`);
  assert.deepEqual(differ.slice(0, 10), [], `${differ.length} verdicts differ`);
  assert.ok(refused < cases.length / 100, `${refused} refused`);
  assert.ok(valid > cases.length / 10 && valid < cases.length * 0.9, `${valid} valid of ${cases.length}`);
});
