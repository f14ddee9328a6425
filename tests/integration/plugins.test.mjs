// Plugins: the sample plugin, built here against the headers `meson install`
// puts in a staging directory (not the source tree), loaded from modules.dir
// next to four broken plugins.  Each broken one is refused with one error
// line naming the file and the reason, and actiond serves anyway; the
// sample's migration runs once; its actions answer over WebSocket and HTTP;
// row-level security keeps each org to its own notes although the plugin's
// SELECTs never mention the org, and shows an anonymous caller nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, copyFileSync, readdirSync, readFileSync, rmSync, chmodSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { startServer, connect, rpc, http, sleep, metrics, sessionCookie } from './lib.mjs';

const BUILD = process.env.ACTIOND_BUILD_ROOT || new URL('../../build', import.meta.url).pathname;
const SOURCE = process.env.ACTIOND_SOURCE_ROOT || new URL('../..', import.meta.url).pathname;
const BROKEN = ['bad_version.so', 'duplicate_method.so', 'invalid_spec.so', 'missing_symbol.so'];
const KEYS = {
  acme: { org: 'acme', role: 'member' },
  globex: { org: 'globex', role: 'owner' },
};

let work, stage, modsDir, dataDir, sampleBuild;

// The first file under dir named name, or null.
function findFile(dir, name) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const f = findFile(p, name);
      if (f) return f;
    } else if (e.name === name) {
      return p;
    }
  }
  return null;
}

// Waits until /readyz says the database pool is connected (a fresh start
// answers database-backed calls `unavailable` until then).
async function ready(server) {
  for (let i = 0; i < 100; i++) {
    if ((await http(server, '/readyz')).status === 200) return;
    await sleep(50);
  }
  throw new Error('/readyz did not answer 200 within 5 s');
}

// The lines of a log that refuse a plugin.
const refusals = (log) => log.split('\n').filter((l) => / plugin \S+ refused: /.test(l));

before(() => {
  work = mkdtempSync(join(tmpdir(), 'actiond-plugins-'));
  chmodSync(work, 0o755); // the embedded PostgreSQL runs as another user
  stage = join(work, 'stage');
  modsDir = join(work, 'modules');
  dataDir = join(work, 'data');
  sampleBuild = join(work, 'sample-build');
  mkdirSync(modsDir);
  const run = (cmd, args, env) => execFileSync(cmd, args, { stdio: 'pipe', env: { ...process.env, ...env }, timeout: 120000 });
  run('meson', ['install', '-C', BUILD, '--no-rebuild', '--quiet', '--destdir', stage]);
  const pc = findFile(stage, 'actiond.pc');
  assert.ok(pc, 'meson install puts actiond.pc into the stage');
  const pcEnv = { PKG_CONFIG_PATH: dirname(pc), PKG_CONFIG_SYSROOT_DIR: stage };
  run('meson', ['setup', '--werror', sampleBuild, join(SOURCE, 'subprojects', 'sample_plugin')], pcEnv);
  run('ninja', ['-C', sampleBuild]);
  copyFileSync(join(sampleBuild, 'sample.so'), join(modsDir, 'sample.so'));
  for (const f of BROKEN) copyFileSync(join(BUILD, 'tests', 'plugins', f), join(modsDir, f));
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the sample plugin is compiled against the installed headers only', () => {
  const cmds = JSON.parse(readFileSync(join(sampleBuild, 'compile_commands.json'), 'utf8'));
  const cmd = cmds.find((c) => c.file.endsWith('sample.c')).command;
  assert.ok(cmd.includes('-I' + join(stage, 'usr')), `includes from the stage: ${cmd}`);
  assert.ok(!cmd.includes(join(SOURCE, 'include')), `nothing from the source tree's include/: ${cmd}`);
  assert.ok(statSync(findFile(stage, 'module.h')).isFile(), 'the headers are installed');
});

test('broken plugins are refused one line each, the sample loads and serves, twice on the same data', { timeout: 120000 }, async () => {
  const opts = { db: true, dataDir, keys: KEYS, modules: { dir: modsDir } };
  let server = await startServer(opts);
  try {
    await ready(server);
    const log = server.log();
    const lines = refusals(log);
    assert.equal(lines.length, 4, `exactly four refusals:\n${log}`);
    const line = (file) => {
      const l = lines.filter((x) => x.includes(` plugin ${join(modsDir, file)} refused: `));
      assert.equal(l.length, 1, `one refusal for ${file}:\n${log}`);
      assert.match(l[0], / ERROR /, 'at error level');
      return l[0];
    };
    assert.match(line('bad_version.so'), /refused: built for module API 999, this actiond serves 1$/);
    assert.match(line('missing_symbol.so'), /refused: .*no symbol actiond_module/);
    assert.match(line('invalid_spec.so'), /refused: .*invalid spec.*risk/i);
    assert.match(line('duplicate_method.so'), /refused: .*method heartbeat exists/);
    assert.match(log, / INFO plugin \S+\/sample\.so loaded: module sample version 1\.0\.0/);
    assert.equal(log.split('\n').filter((l) => /applying migration sample sample_notes$/.test(l)).length, 1,
      `the sample migration runs once on the first start:\n${log}`);

    // actiond serves: the core, and nothing of a refused plugin.
    const a = await connect(server, { token: server.tokens.acme });
    const hb = await a.call('heartbeat', {});
    assert.ok(hb.result && typeof hb.result.unix_ms === 'number', JSON.stringify(hb));
    for (const m of ['invalid_spec.ping', 'duplicate_method.ok']) {
      const r = await a.call(m, {});
      assert.equal(r.error?.code, -32601, `${m} is not served: ${JSON.stringify(r)}`);
    }

    // acme writes over WebSocket, globex over HTTP.
    const a1 = await a.call('sample.note_add', { body: 'acme one' });
    assert.ok(Number.isInteger(a1.result?.id), JSON.stringify(a1));
    const a2 = await a.call('sample.note_add', { body: 'acme two' });
    assert.ok(a2.result.id > a1.result.id, JSON.stringify(a2));
    const g1 = await rpc(server, 'sample.note_add', { body: 'globex one' }, { token: server.tokens.globex });
    assert.equal(g1.status, 200, g1.body);
    assert.ok(Number.isInteger(g1.json.result.id), g1.body);

    // The unscoped SELECT sees only the caller's org.
    const la = await a.call('sample.note_list', {});
    assert.deepEqual(la.result, { notes: [{ id: a1.result.id, body: 'acme one' }, { id: a2.result.id, body: 'acme two' }] });
    const lg = await rpc(server, 'sample.note_list', {}, { token: server.tokens.globex });
    assert.equal(lg.status, 200, lg.body);
    assert.deepEqual(lg.json.result, { notes: [{ id: g1.json.result.id, body: 'globex one' }] });
    const g = await connect(server, { token: server.tokens.globex });
    assert.deepEqual((await g.call('sample.note_list', {})).result, lg.json.result, 'the same over WebSocket');
    const la2 = await rpc(server, 'sample.note_list', {}, { token: server.tokens.acme });
    assert.deepEqual(la2.json.result, la.result, 'the same over HTTP');

    // Without credentials no org is set: the unscoped count sees nothing.
    const anon = await rpc(server, 'sample.note_count_anonymous', {}, { token: null });
    assert.equal(anon.status, 200, anon.body);
    assert.deepEqual(anon.json.result, { count: 0 });
    // The spec admits anonymous callers only.
    const keyed = await rpc(server, 'sample.note_count_anonymous', {}, { token: server.tokens.acme });
    assert.equal(keyed.json?.error?.data?.reason, 'forbidden', keyed.body);

    // Bad input is refused by the spec or the handler, never run.
    const tooLong = await a.call('sample.note_add', { body: 'x'.repeat(1001) });
    assert.equal(tooLong.error?.code, -32602, JSON.stringify(tooLong));
    const nul = await a.call('sample.note_add', { body: 'a\u0000b' });
    assert.equal(nul.error?.code, -32602, JSON.stringify(nul));
    assert.equal(nul.error.data.pointer, '/body');
    const extra = await a.call('sample.note_add', { body: 'x', org_id: 2 });
    assert.equal(extra.error?.code, -32602, JSON.stringify(extra));
    await a.close();
    await g.close();
  } finally {
    const r = await server.stop();
    assert.equal(r.code, 0, 'actiond exits 0 with plugins loaded');
  }

  // A second start on the same cluster applies nothing and finds the notes.
  server = await startServer(opts);
  try {
    await ready(server);
    const log = server.log();
    assert.equal(refusals(log).length, 4, log);
    assert.match(log, /sample\.so loaded/);
    assert.doesNotMatch(log, /applying migration/i, `nothing to migrate the second time:\n${log}`);
    const la = await rpc(server, 'sample.note_list', {}, { token: server.tokens.acme });
    assert.equal(la.status, 200, la.body);
    assert.deepEqual(la.json.result.notes.map((n) => n.body), ['acme one', 'acme two']);
  } finally {
    const r = await server.stop();
    assert.equal(r.code, 0);
  }
});

test('the sample\'s set_cups write shows in the change feed; a write outside a spec\'s writes list is counted', { timeout: 120000 }, async () => {
  const dir = join(work, 'modules-feed');
  mkdirSync(dir);
  copyFileSync(join(sampleBuild, 'sample.so'), join(dir, 'sample.so'));
  copyFileSync(join(BUILD, 'tests', 'plugins', 'undeclared_write.so'), join(dir, 'undeclared_write.so'));
  const ORIGIN = 'http://app.test';
  const server = await startServer({ db: true, dataDir: join(work, 'data-feed'), keys: KEYS,
    modules: { dir }, security: { allowed_origins: ORIGIN } });
  try {
    await ready(server);
    // A member of globex with a session: set_cups needs an account.
    const email = 'drinker@globex.test', password = 'pw-' + 'x'.repeat(16);
    const made = await rpc(server, 'admin.account_create', { email, password, role: 'member' }, { token: server.tokens.globex });
    assert.equal(made.status, 200, made.body);
    const login = await rpc(server, 'auth.login', { email, password }, { token: null });
    assert.equal(login.status, 200, login.body);
    const cookie = sessionCookie(login);
    const ws = await connect(server, { token: null, headers: { Cookie: cookie, Origin: ORIGIN } });
    const sub = await ws.call('changes.subscribe', { entities: ['sample_cups'] });
    assert.ok(Number.isInteger(sub.result?.seq), JSON.stringify(sub));

    const set = await ws.call('sample.set_cups', { cups: 3 });
    assert.equal(set.result?.cups, 3, JSON.stringify(set));
    const again = await ws.call('sample.set_cups', { cups: 4.0 });
    assert.equal(again.result?.id, set.result.id, 'the same row for the same day');
    const seen = [];
    for (let i = 0; i < 50 && seen.length < 2; i++) {
      const m = await ws.next(2000);
      if (m?.method === 'changes') seen.push(m.params);
    }
    assert.deepEqual(seen.map((c) => [c.entity, c.op, c.ids]),
      [['sample_cups', 'create', [String(set.result.id)]], ['sample_cups', 'update', [String(set.result.id)]]]);
    assert.equal(seen[1].seq, seen[0].seq + 1);
    const declared = (await metrics(server)).values['actiond_undeclared_writes_total{method="sample.set_cups"}'];
    assert.equal(declared, undefined, 'a declared write is not counted');

    // undeclared_write.mark says it writes undeclared_notes, and writes
    // undeclared_marks: the feed follows what was written, and it is counted.
    const sub2 = await ws.call('changes.subscribe', { entities: ['undeclared_marks'] });
    assert.ok(sub2.result, JSON.stringify(sub2));
    const mark = await rpc(server, 'undeclared_write.mark', {}, { token: server.tokens.globex });
    assert.equal(mark.status, 200, mark.body);
    let change;
    for (let i = 0; i < 20 && !change; i++) {
      const m = await ws.next(2000);
      if (m?.method === 'changes') change = m.params;
    }
    assert.deepEqual([change.entity, change.op, change.ids], ['undeclared_marks', 'create', [String(mark.json.result.id)]]);
    let counted;
    for (let i = 0; i < 20 && !counted; i++) {
      counted = (await metrics(server)).values['actiond_undeclared_writes_total{method="undeclared_write.mark"}'];
      if (!counted) await sleep(100);
    }
    assert.equal(counted, 1);
    assert.match(server.log(), /undeclared_write\.mark wrote undeclared_marks, which its spec's writes list leaves out/);
    await ws.close();
  } finally {
    const r = await server.stop();
    assert.equal(r.code, 0);
  }
});

test('without a database too, refusals do not stop actiond, and nothing of them is served', async () => {
  const dir = join(work, 'broken-only');
  mkdirSync(dir);
  for (const f of BROKEN) copyFileSync(join(BUILD, 'tests', 'plugins', f), join(dir, f));
  // Neither a hidden file nor a non-.so file is a candidate.
  copyFileSync(join(BUILD, 'tests', 'plugins', 'bad_version.so'), join(dir, '.hidden.so'));
  copyFileSync(join(BUILD, 'tests', 'plugins', 'bad_version.so'), join(dir, 'bad_version.so.bak'));
  const server = await startServer({ modules: { dir: dir + '/' } });
  try {
    const lines = refusals(server.log());
    assert.equal(lines.length, 4, server.log());
    assert.deepEqual(lines.map((l) => / plugin \S+\/([^/ ]+) refused/.exec(l)[1]), BROKEN, 'in name order');
    assert.match(server.log(), /0 of 4 plugins loaded/);
    const c = await connect(server);
    assert.ok((await c.call('heartbeat', {})).result);
    const d = await c.call('rpc.discover', {});
    const methods = d.result.methods.map((m) => m.name);
    assert.ok(methods.includes('heartbeat'));
    assert.ok(!methods.some((m) => /^(invalid_spec|duplicate_method|bad_version|missing_symbol)\./.test(m)), methods.join());
    await c.close();
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

test('a modules.dir that does not exist stops actiond at start', async () => {
  await assert.rejects(
    startServer({ modules: { dir: join(work, 'nowhere') } }),
    /actiond exited 2:[\s\S]*modules\.dir .*nowhere: No such file or directory/);
});
