// The validator's `pattern` against Node's ECMA-262 engine: random patterns
// of the supported constructs (classes, escapes, groups, alternation,
// quantifiers, anchors, word boundaries) and random texts over letters,
// digits, spaces, newlines and non-ASCII characters.  Every verdict of
// tests/unit/schema_oracle.c (for {pattern}) must equal `new RegExp(pattern, 'u').test(text)`
// (JSON Schema patterns are ECMA-262 and match code points).  Patterns the
// validator refuses to compile (lookaround, too costly) are counted, not
// compared.
import { spawnSync } from 'node:child_process';
import { generator } from '../integration/random.mjs';

const oracle = process.argv[2];
const { rnd, pick } = generator(Number(process.env.PATTERN_SEED || 20261129));

const atoms = ['a', 'b', 'c', '1', '\u00e9', '\u65e5', '.', '\\d', '\\D', '\\w', '\\W', '\\s', '\\S',
  '[ab]', '[^a]', '[a-c]', '[^\\d]', '[\\w-]', '[.]', '\\.', '\\-', '-', '_', ' ', '\\n', '\\t',
  '[\u00e9\u65e5]', '[^\u00e9]', '\\u00e9', '[\\s\\d]', '[^\\s]', 'x', 'A', '[A-Za-z]', '[^a-c]',
  '\\r', '[\\]\\-]', '\\x41', '\\u{1F600}', '\u{1F600}', '[\u{1F600}a]', '[^\\w]', '\\/', '\\f', '\\v',
  '[\\b]', '\\u2028', '[.-]'];
const quants = ['', '', '', '', '*', '+', '?', '{2}', '{0,2}', '{1,}', '*?', '+?', '??', '{1,3}?', '{3}'];
const zero = ['^', '$', '\\b', '\\B'];

function seq(depth) {
  let out = '';
  const n = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < n; i++) {
    const r = rnd();
    if (r < 0.08) out += pick(zero);
    else if (r < 0.22 && depth < 2) out += (rnd() < 0.5 ? '(' : '(?:') + alt(depth + 1) + ')' + pick(quants);
    else out += pick(atoms) + pick(quants);
  }
  return out;
}
function alt(depth) {
  let out = seq(depth);
  while (rnd() < 0.25) out += '|' + seq(depth);
  return out;
}
function pattern() {
  return (rnd() < 0.5 ? '^' : '') + alt(0) + (rnd() < 0.5 ? '$' : '');
}
const chars = ['a', 'b', 'c', '1', '2', 'x', '_', '-', '.', ' ', '\n', '\t', '\u00e9', '\u65e5', '\u00a0', '\u2028',
  'A', '\r', '\u{1F600}', ']', '/', '\f', '\v', '\b', '\ufeff'];
function text() {
  let s = '';
  const n = Math.floor(rnd() * 8);
  for (let i = 0; i < n; i++) s += pick(chars);
  return s;
}

const cases = [];
let invalidJs = 0;
while (cases.length < 60000) {
  const p = pattern();
  let re;
  try {
    re = new RegExp(p, 'u');
  } catch {
    invalidJs++;
    continue;
  }
  for (let i = 0; i < 20; i++) {
    const t = text();
    cases.push([p, t, re.test(t)]);
  }
}
const run = spawnSync(oracle, [], {
  input: cases.map(([p, t]) => JSON.stringify([{ pattern: p }, t])).join('\n') + '\n',
  maxBuffer: 1 << 26,
});
if (run.status !== 0) {
  console.log(`not ok: the oracle failed (${run.status}): ${run.stderr}`);
  process.exit(1);
}
const got = run.stdout.toString().trim().split('\n');
if (got.length !== cases.length) {
  console.log(`not ok: ${got.length} verdicts for ${cases.length} cases`);
  process.exit(1);
}
let refused = 0, matched = 0;
const differ = [];
got.forEach((v, i) => {
  const [p, t, want] = cases[i];
  if (v === 'E') { refused++; return; }
  if (want) matched++;
  if ((v === '1') !== want) differ.push(`${JSON.stringify(p)} on ${JSON.stringify(t)}: ECMA ${want}, validator ${v === '1'}`);
});
console.log(`${cases.length} cases (${matched} matching), ${refused} refused by the validator, ` +
  `${invalidJs} generated patterns invalid in ECMA-262`);
for (const d of differ.slice(0, 20)) console.log(`  differs: ${d}`);
const compared = cases.length - refused;
if (differ.length || compared < cases.length * 0.9 || matched < compared * 0.05) {
  console.log(`not ok: ${differ.length} verdicts differ (of ${compared} compared)`);
  process.exit(1);
}
console.log('ok');
