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
