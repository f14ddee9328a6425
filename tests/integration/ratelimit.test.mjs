// Rate limits that combine scopes: every rule of a spec must allow a call,
// and a refused call takes nothing from the rules that would have allowed it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, rpc, sleep } from './lib.mjs';

let server;
before(async () => {
  server = await startServer({ keys: { a: { org: 'acme', role: 'admin' }, b: { org: 'acme', role: 'member' } } });
});
after(async () => {
  const r = await server.stop();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

test('per credential and per address at once (test.limited_both: 3/s per credential, 4/s per address)', async () => {
  const statuses = async (token, n) => {
    const out = [];
    for (let i = 0; i < n; i++) out.push((await rpc(server, 'test.limited_both', {}, { token })).status);
    return out;
  };
  // Key a: its own limit (3) stops it first.
  assert.deepEqual(await statuses(server.tokens.a, 4), [200, 200, 200, 429]);
  // Key b, same address: one call left of the address's 4, then the address limit.
  const b = await statuses(server.tokens.b, 2);
  assert.deepEqual(b, [200, 429]);
  const refused = await rpc(server, 'test.limited_both', {}, { token: server.tokens.b });
  assert.equal(refused.json.error.data.reason, 'rate_limited');
  assert.ok(refused.json.error.data.retry_after_ms > 0 && refused.json.error.data.retry_after_ms <= 1000);
  // After the window both budgets are back.
  await sleep(1100);
  assert.equal((await rpc(server, 'test.limited_both', {}, { token: server.tokens.b })).status, 200);
});
