// Operating actiond: what a second process on the same data directory gets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { startServer, ACTIOND, TEST_MASTER_KEY, rpc } from './lib.mjs';

let server;

before(async () => {
  server = await startServer({ db: true });
});

after(async () => {
  const r = await server?.stop();
  assert.equal(r?.code, 0);
});

test('a second actiond on the same data directory is refused, naming the first one\'s pid', async () => {
  const r = await new Promise((resolve) => {
    execFile(ACTIOND, ['-c', join(server.dir, 'actiond.conf')],
      { env: { ...process.env, ACTIOND_MASTER_KEY: TEST_MASTER_KEY }, timeout: 15000 },
      (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stderr }));
  });
  assert.notEqual(r.code, 0, 'it exits with an error');
  assert.match(r.stderr, new RegExp(`in use by another actiond \\(pid ${server.proc.pid}\\)`));
  assert.doesNotMatch(r.stderr, /embedded PostgreSQL running/, 'it never touched the cluster');
  // The first one is unharmed.
  const h = await rpc(server, 'heartbeat', {});
  assert.equal(h.status, 200);
  assert.doesNotMatch(server.log(), /exited|restarting/);
});

// ---- error messages that say what to do -------------------------------------------------

const run = (args) => new Promise((resolve) => {
  execFile(ACTIOND, args, { timeout: 10000 }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
});

test('a duration without a unit names the units; a number out of range names the range', async () => {
  let r = await run(['-s', 'server.heartbeat_timeout=30', '--check-config']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /server\.heartbeat_timeout: "30" \(expected a duration with a unit: ms, s, m or h/);
  r = await run(['-s', 'limits.max_batch=0', '--check-config']);
  assert.match(r.stderr, /limits\.max_batch: "0" \(expected a whole number from 1 to 100000\)/);
});

test('a configuration error names the file and the line', async () => {
  const { writeFileSync, mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const f = join(mkdtempSync(join(tmpdir(), 'actiond-conf-')), 'bad.conf');
  writeFileSync(f, '[server]\nlisten = 127.0.0.1:0\n\n[limits]\nmax_queue = lots\n');
  const r = await run(['-c', f, '--check-config']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, new RegExp(`${f.replace(/[.]/g, '\\.')}:5: .*max_queue.*KiB`));
});

test('forbidden names the credential kinds or roles the method is for', async () => {
  const s2 = await startServer({ keys: { member: { org: 'acme', role: 'member' } } });
  try {
    const r = await rpc(s2, 'test.admin_only', {});
    assert.equal(r.status, 403, r.body);
    assert.match(r.json.error.message, /^test\.admin_only is for admin, owner; this credential's role is member$/);
    assert.deepEqual(r.json.error.data.allowed_roles, ['admin', 'owner']);
  } finally {
    await s2.stop();
  }
});
