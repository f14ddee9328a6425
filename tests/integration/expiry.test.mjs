// Sessions expire: after security.session_ttl the cookie is refused, and a
// WebSocket resting on the session gets session_revoked (reason "expired")
// and is closed with 4001 without anybody revoking it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, connect, rpc, sessionCookie } from './lib.mjs';

const ORIGIN = 'http://app.test';
let server;
before(async () => {
  server = await startServer({ db: true, security: { allowed_origins: ORIGIN, session_ttl: '2s' } });
});
after(async () => {
  const r = await server.stop();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

test('an expired session closes its socket with 4001 and its cookie is refused', async () => {
  const created = await rpc(server, 'admin.account_create', { email: 'brief@example.test', password: 'short lived', role: 'member' });
  assert.equal(created.status, 200, created.body);
  const login = await rpc(server, 'auth.login', { email: 'brief@example.test', password: 'short lived' }, { token: null });
  assert.equal(login.status, 200, login.body);
  const cookie = sessionCookie(login);
  assert.ok(cookie, 'login sets the cookie');
  const headers = { Cookie: cookie, Origin: ORIGIN };

  const ws = await connect(server, { token: null, headers });
  assert.ok((await ws.call('heartbeat')).result.time);
  const listed = await rpc(server, 'account.session_list', {}, { token: null, headers });
  assert.equal(listed.status, 200, listed.body);

  const notice = await ws.next(5000);
  assert.equal(notice.method, 'session_revoked');
  assert.equal(notice.params.reason, 'expired');
  const closed = await ws.closed;
  assert.equal(closed.code, 4001);

  const late = await rpc(server, 'account.session_list', {}, { token: null, headers });
  assert.equal(late.status, 401);
  await assert.rejects(connect(server, { token: null, headers }), (e) => e.status === 401);
});
