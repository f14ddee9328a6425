// A database reached over TCP by host name: the name is resolved once at
// start (libpq would resolve it with a blocking call on every reconnect),
// and the pool connects, serves, and reconnects after a restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { startServer, startPostgres, rpc, sleep } from './lib.mjs';

const freePort = () => new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});

let pg, server;
before(async () => {
  pg = await startPostgres({ tcpPort: await freePort() });
  server = await startServer({ db: pg.conninfo });
});
after(async () => {
  const r = await server.stop();
  pg.destroy();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

async function dbCallStatus() {
  return (await rpc(server, 'test.db_sleep', { ms: 0 })).status;
}

test('the pool connects over TCP to a host name and survives a restart', async () => {
  assert.match(pg.conninfo, /host=localhost port=\d+/);
  let status = 0;
  for (let i = 0; i < 50 && status !== 200; i++) {
    status = await dbCallStatus();
    if (status !== 200) await sleep(100);
  }
  assert.equal(status, 200, 'a database-backed call succeeds');
  const ready = await rpc(server, 'heartbeat', {});
  assert.equal(ready.status, 200);
  pg.stop('fast');
  assert.equal(await dbCallStatus(), 503);
  pg.start();
  status = 0;
  for (let i = 0; i < 100 && status !== 200; i++) {
    status = await dbCallStatus();
    if (status !== 200) await sleep(100);
  }
  assert.equal(status, 200, 'back after the restart');
});

test('several hosts in database.url: each name is resolved once at start, and the pool serves', async () => {
  const port = /port=(\d+)/.exec(pg.conninfo)[1];
  const multi = await startServer({ db: `host=localhost,localhost port=${port},${port} dbname=postgres user=actiond` });
  try {
    const lines = multi.log().match(/database host localhost is [0-9a-f.:]+ \(resolved once, at start\)/g) || [];
    assert.equal(lines.length, 2, multi.log());
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      status = (await rpc(multi, 'test.db_sleep', { ms: 0 })).status;
      if (status !== 200) await sleep(100);
    }
    assert.equal(status, 200);
  } finally {
    await multi.stop();
  }
});
