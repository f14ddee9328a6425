// Identity: accounts, login and the session cookie, logout, API tokens,
// sessions, agent sessions, account disabling, integration secrets, tenant
// isolation, and secrets that never appear in clear (log or database).
//
// One server on its own embedded PostgreSQL for most tests, and a second
// one on an external cluster for what needs reading the database.  Every
// login comes from its own loopback address (auth.login is limited to 10 a
// minute per address), except in the rate-limit test, which is last.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  startServer, startPostgres, connect, rpc, sessionCookie, upgradeStatus, within, sleep,
} from './lib.mjs';

const ORIGIN = 'http://app.test';
const KEYS = {
  admin: { org: 'acme', role: 'admin' },
  member: { org: 'acme', role: 'member' },
  gadmin: { org: 'globex', role: 'admin' },
};

let server;   // embedded database
let pg;       // external cluster
let server2;  // on pg, logging at debug level
const used = new Set(); // every token, password and secret sent to server2

before(async () => {
  [server, pg] = await Promise.all([
    startServer({ db: true, keys: KEYS, security: { allowed_origins: ORIGIN } }),
    startPostgres(),
  ]);
  server2 = await startServer({
    db: pg.conninfo, keys: KEYS, security: { allowed_origins: ORIGIN }, args: ['--log-level', 'debug'],
  });
});

after(async () => {
  const r = await server?.stop();
  const r2 = await server2?.stop();
  pg?.destroy();
  assert.equal(r?.code, 0, 'actiond (embedded database) exits 0 on SIGTERM');
  assert.equal(r2?.code, 0, 'actiond (external database) exits 0 on SIGTERM');
});

// ---- helpers ---------------------------------------------------------------

// Each login from its own source address: the per-IP login limit stays out
// of the way of every test but the one about it.
let ipSeq = 1;
const freshIp = () => `127.0.${10 + Math.floor(ipSeq / 250)}.${(ipSeq++ % 250) + 1}`;

let emailSeq = 0;
const password = () => 'pw-' + randomBytes(12).toString('base64url');

// Connection options for a credential: a token (Bearer) or a cookie (with
// an Origin, the allowed one unless told).
const byToken = (token) => ({ token });
const byCookie = (cookie, origin = ORIGIN) => ({
  token: null,
  headers: origin === null ? { Cookie: cookie } : { Cookie: cookie, Origin: origin },
});

function expectHttpError(r, status, reason) {
  assert.equal(r.status, status, `HTTP ${r.status}: ${r.body}`);
  assert.ok(r.json?.error, `an error body: ${r.body}`);
  if (r.json.jsonrpc) {
    assert.equal(r.json.error.data?.reason, reason, r.body);
    assert.equal('result' in r.json, false);
  } else {
    assert.equal(r.json.error.reason, reason, r.body);
  }
}

function expectWsError(r, reason, code) {
  assert.ok(r.error, `expected an error, got ${JSON.stringify(r)}`);
  assert.equal(r.error.data?.reason, reason, JSON.stringify(r.error));
  assert.equal(r.error.code, code);
}

// Creates an account in the key's org; {id, email, password}.
async function newAccount(srv, role = 'member', { key = 'admin', name = 'user' } = {}) {
  const email = `${name}-${++emailSeq}@${KEYS[key].org}.test`;
  const pw = password();
  const r = await rpc(srv, 'admin.account_create', { email, password: pw, role }, { token: srv.tokens[key] });
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json.result, { account_id: r.json.result.account_id, email, role });
  if (srv === server2) used.add(pw);
  return { id: r.json.result.account_id, email, password: pw };
}

// Logs in over HTTP; {cookie, session_id, result, res}.
async function login(srv, acct, { org } = {}) {
  const params = { email: acct.email, password: acct.password };
  if (org) params.org = org;
  const res = await rpc(srv, 'auth.login', params, { token: null, localAddress: freshIp() });
  assert.equal(res.status, 200, `login ${acct.email}: ${res.body}`);
  const cookie = sessionCookie(res);
  assert.ok(cookie, 'a session cookie is set');
  if (srv === server2) used.add(cookie.slice('actiond_session='.length));
  return { cookie, session_id: res.json.result.session_id, result: res.json.result, res };
}

// An API token of the account behind a cookie.
async function newToken(srv, cookie, name = 'script') {
  const r = await rpc(srv, 'account.token_create', { name }, byCookie(cookie));
  assert.equal(r.status, 200, r.body);
  if (srv === server2) used.add(r.json.result.token);
  return r.json.result;
}

// A socket that remembers, for each message, whether the close frame had
// already been seen (it must not have been, for session_revoked).
async function open(srv, opts) {
  const c = await connect(srv, opts);
  c.log = [];
  c.ws.on('message', (data) => c.log.push({ msg: JSON.parse(data.toString()), state: c.ws.readyState }));
  return c;
}

// c got session_revoked for credential (with reason), then the close 4001.
async function expectRevoked(c, credential, reason) {
  const { code } = await within(c.closed, 3000, 'close after revocation');
  assert.equal(code, 4001, 'closed with 4001');
  const notes = c.log.filter((e) => e.msg.method === 'session_revoked');
  assert.equal(notes.length, 1, `one session_revoked: ${JSON.stringify(c.log)}`);
  const n = notes[0];
  assert.equal(n.state, 1, 'session_revoked arrived before the close frame');
  assert.equal(n.msg.jsonrpc, '2.0');
  assert.equal('id' in n.msg, false, 'a notification');
  if (credential) assert.equal(n.msg.params.credential, credential);
  if (reason) assert.equal(n.msg.params.reason, reason);
  assert.equal(c.log.at(-1), n, 'nothing after session_revoked');
}

async function expectAlive(c) {
  assert.equal(c.isClosed, false, 'the socket stays open');
  const r = await within(c.call('heartbeat', {}), 1000, 'heartbeat');
  assert.ok(r.result?.unix_ms > 0, JSON.stringify(r));
  assert.equal(c.log.some((e) => e.msg.method === 'session_revoked'), false, 'no session_revoked');
}

function revokeAnswer(r, { revoked, sockets } = {}) {
  assert.equal(r.status, 200, r.body);
  const a = r.json.result;
  assert.deepEqual(Object.keys(a).filter((k) => k !== 'credentials_revoked').sort(), ['instances', 'instances_acked', 'instances_missing', 'revoked', 'sockets_closed']);
  if (revoked !== undefined) assert.equal(a.revoked, revoked, r.body);
  if (sockets !== undefined) assert.equal(a.sockets_closed, sockets, r.body);
  assert.equal(a.instances, 0, 'no other instance shares the embedded database');
  assert.deepEqual(a.instances_missing, []);
  return a;
}

// ---- accounts ----------------------------------------------------------------

let alice, bob; // admin and member of acme, created by the first test

test('admin.account_create: the admin key creates an admin and a member; a duplicate email is a conflict', async () => {
  alice = await newAccount(server, 'admin', { name: 'alice' });
  bob = await newAccount(server, 'member', { name: 'bob' });
  assert.ok(Number.isInteger(alice.id) && Number.isInteger(bob.id) && alice.id !== bob.id);

  const dup = await rpc(server, 'admin.account_create', { email: alice.email.toUpperCase(), password: password(), role: 'member' });
  expectHttpError(dup, 409, 'conflict');
  assert.equal(dup.json.error.code, -32009);

  // The duplicate changed nothing: the first password still logs in.
  const s = await login(server, alice);
  assert.equal(s.result.account_id, alice.id);
  assert.equal(s.result.role, 'admin');
});

test('admin.account_create: a member key or member session is forbidden; only owners create owners', async () => {
  const bobSession = await login(server, bob);
  const aliceSession = await login(server, alice);
  const tries = [
    ['member key', { token: server.tokens.member }, 'member'],
    ['member session', byCookie(bobSession.cookie), 'member'],
    ['admin key, owner', { token: server.tokens.admin }, 'owner'],
    ['admin session, owner', byCookie(aliceSession.cookie), 'owner'],
  ];
  const emails = [];
  for (const [what, opts, role] of tries) {
    const email = `forbidden-${++emailSeq}@acme.test`;
    emails.push(email);
    const r = await rpc(server, 'admin.account_create', { email, password: password(), role }, opts);
    expectHttpError(r, 403, 'forbidden');
    assert.equal(r.json.error.code, -32003, what);
  }
  // Nothing was created: the same emails are free for the admin.
  const r = await rpc(server, 'admin.account_create', { email: emails[0], password: password(), role: 'member' });
  assert.equal(r.status, 200, r.body);
});

// ---- login and the cookie ------------------------------------------------------------------

test('auth.login over HTTP answers the session and sets an HttpOnly, SameSite=Strict cookie', async () => {
  const t0 = Date.now();
  const { res, result, cookie } = await login(server, { email: alice.email.toUpperCase(), password: alice.password });
  assert.equal(result.account_id, alice.id);
  assert.equal(result.email, alice.email);
  assert.equal(result.org, 'acme');
  assert.equal(result.role, 'admin');
  assert.ok(Number.isInteger(result.session_id) && result.session_id > 0);
  assert.ok(Date.parse(result.expires_at) > t0, `expires_at in the future: ${result.expires_at}`);

  const set = res.headers.getSetCookie().find((c) => c.startsWith('actiond_session='));
  const attrs = set.split(';').map((s) => s.trim());
  assert.match(cookie, /^actiond_session=ads_[A-Za-z0-9_-]{20,}$/);
  assert.ok(attrs.includes('HttpOnly'), set);
  assert.ok(attrs.includes('SameSite=Strict'), set);
  assert.ok(attrs.includes('Path=/'), set);
  assert.equal(attrs.some((a) => /^secure$/i.test(a)), false, 'no Secure without TLS');
  const maxAge = attrs.find((a) => a.startsWith('Max-Age='));
  assert.ok(maxAge && Number(maxAge.slice(8)) > 0, set);
  assert.equal(res.body.includes(cookie.slice(16)), false, 'the session token is not in the body');
});

test('auth.login: a wrong password and an unknown email are both 401 unauthenticated, with the same message', async () => {
  const wrong = await rpc(server, 'auth.login', { email: alice.email, password: 'not-the-password' }, { token: null, localAddress: freshIp() });
  const unknown = await rpc(server, 'auth.login', { email: 'nobody-at-all@acme.test', password: 'not-the-password' }, { token: null, localAddress: freshIp() });
  for (const r of [wrong, unknown]) {
    expectHttpError(r, 401, 'unauthenticated');
    assert.equal(r.json.error.code, -32001);
    assert.equal(r.headers.getSetCookie().some((c) => c.startsWith('actiond_session=ads_')), false, 'no cookie');
  }
  assert.equal(wrong.json.error.message, unknown.json.error.message);
  assert.deepEqual(wrong.json.error.data, unknown.json.error.data);
});

test('the session cookie with an allowed Origin works over HTTP and for the WebSocket upgrade', async () => {
  const s = await login(server, bob);
  const r = await rpc(server, 'account.session_list', {}, byCookie(s.cookie));
  assert.equal(r.status, 200, r.body);
  assert.ok(r.json.result.sessions.some((x) => x.id === s.session_id && x.current === true));

  const c = await open(server, byCookie(s.cookie));
  assert.equal(c.ws.protocol, 'actiond.v1');
  const hb = await within(c.call('heartbeat', {}), 1000, 'heartbeat');
  assert.ok(hb.result.unix_ms > 0);
  const list = await within(c.call('account.session_list', {}), 2000, 'session_list');
  assert.ok(list.result.sessions.some((x) => x.id === s.session_id && x.current === true), JSON.stringify(list));
  await c.close();
});

test('the session cookie without an Origin is 401, with a foreign Origin 403 (HTTP and WebSocket)', async () => {
  const s = await login(server, bob);
  const none = await rpc(server, 'account.session_list', {}, byCookie(s.cookie, null));
  expectHttpError(none, 401, 'unauthenticated');
  assert.match(none.json.error.message, /Origin/);
  const foreign = await rpc(server, 'account.session_list', {}, byCookie(s.cookie, 'http://evil.test'));
  expectHttpError(foreign, 403, 'forbidden');
  // Origins match exactly: no prefix, port or scheme games.
  for (const o of ['http://app.test.evil.test', 'https://app.test', 'http://app.test:8080', 'null']) {
    const r = await rpc(server, 'account.session_list', {}, byCookie(s.cookie, o));
    expectHttpError(r, 403, 'forbidden');
  }
  assert.equal(await upgradeStatus(server, byCookie(s.cookie, null)), 401);
  assert.equal(await upgradeStatus(server, byCookie(s.cookie, 'http://evil.test')), 403);
  // The cookie itself still works from the allowed Origin.
  assert.equal(await upgradeStatus(server, byCookie(s.cookie)), 101);
});

test('the WebSocket upgrade with an unknown Bearer, a Basic header or an unknown actiond.bearer. token is 401', async () => {
  const bearerTokens = ['not-a-token', 'adt_' + randomBytes(32).toString('base64url'),
    'ads_' + randomBytes(32).toString('base64url'), 'ada_' + randomBytes(32).toString('base64url')];
  for (const t of bearerTokens) assert.equal(await upgradeStatus(server, { token: t }), 401, t);
  assert.equal(await upgradeStatus(server, { token: null, headers: { Authorization: 'Basic eDp5' } }), 401);
  assert.equal(await upgradeStatus(server, { token: null, headers: { Authorization: 'Basic x' } }), 401);
  for (const t of bearerTokens) {
    assert.equal(await upgradeStatus(server, { token: null, protocols: ['actiond.v1', 'actiond.bearer.' + t] }), 401, t);
  }
  // An unknown session cookie, even from the allowed Origin.
  assert.equal(await upgradeStatus(server, byCookie('actiond_session=ads_' + randomBytes(32).toString('base64url'))), 401);
  // And over HTTP the same.
  const r = await rpc(server, 'heartbeat', {}, { token: null, headers: { Authorization: 'Basic x' } });
  expectHttpError(r, 401, 'unauthenticated');
});

// ---- logout ------------------------------------------------------------------------------

test('auth.logout revokes the session: its socket gets session_revoked and 4001, the cookie then gets 401', async () => {
  const s = await login(server, bob);
  const other = await login(server, bob);
  const c = await open(server, byCookie(s.cookie));
  const bystander = await open(server, byCookie(other.cookie));

  const r = await rpc(server, 'auth.logout', {}, byCookie(s.cookie));
  revokeAnswer(r, { revoked: 1, sockets: 1 });
  const cleared = r.headers.getSetCookie().find((x) => x.startsWith('actiond_session='));
  assert.ok(cleared, 'the answer clears the cookie');
  assert.match(cleared, /^actiond_session=;/);
  assert.match(cleared, /Max-Age=0/);

  await expectRevoked(c, `session:${s.session_id}`, 'logout');
  expectHttpError(await rpc(server, 'account.session_list', {}, byCookie(s.cookie)), 401, 'unauthenticated');
  assert.equal(await upgradeStatus(server, byCookie(s.cookie)), 401);
  // Only the calling session ended.
  await expectAlive(bystander);
  assert.equal((await rpc(server, 'account.session_list', {}, byCookie(other.cookie))).status, 200);
  await bystander.close();
});

test('admin.credential_list shows the org\'s sessions and tokens; admin.credential_revoke ends one of anyone\'s', async () => {
  const carol = await newAccount(server, 'member', { name: 'carol' });
  const s = await login(server, carol);
  const other = await login(server, carol);
  const tok = await newToken(server, s.cookie, 'carol-ci');
  const list = await rpc(server, 'admin.credential_list', {}, { token: server.tokens.admin });
  assert.equal(list.status, 200, list.body);
  const creds = list.json.result.credentials;
  const mine = creds.filter((c) => c.account_id === carol.id);
  assert.deepEqual(mine.map((c) => [c.kind, c.id, c.email, c.name]).sort(),
    [['api_token', tok.id, carol.email, 'carol-ci'], ['session', other.session_id, carol.email, null],
     ['session', s.session_id, carol.email, null]].sort());
  assert.ok(creds.every((c) => c.current === false), 'an API key is not among them');
  // Narrowed by kind and account; nothing of another org.
  const narrowed = await rpc(server, 'admin.credential_list', { kind: 'api_token', account_id: carol.id }, { token: server.tokens.admin });
  assert.deepEqual(narrowed.json.result.credentials.map((c) => c.name), ['carol-ci']);
  const g = await rpc(server, 'admin.credential_list', {}, { token: server.tokens.gadmin });
  assert.equal(g.json.result.credentials.some((c) => c.account_id === carol.id), false);
  // Members may not.
  expectHttpError(await rpc(server, 'admin.credential_list', {}, byCookie(s.cookie)), 403, 'forbidden');
  expectHttpError(await rpc(server, 'admin.credential_revoke', { kind: 'session', id: other.session_id }, byCookie(s.cookie)), 403, 'forbidden');

  // The admin ends one of carol's sessions: its socket closes 4001, the other lives.
  const c = await open(server, byCookie(s.cookie));
  const bystander = await open(server, byCookie(other.cookie));
  expectHttpError(await rpc(server, 'admin.credential_revoke', { kind: 'session', id: s.session_id }, { token: server.tokens.gadmin }), 404, 'not_found');
  await expectAlive(c);
  revokeAnswer(await rpc(server, 'admin.credential_revoke', { kind: 'session', id: s.session_id }, { token: server.tokens.admin }), { revoked: 1, sockets: 1 });
  await expectRevoked(c, `session:${s.session_id}`);
  await expectAlive(bystander);
  expectHttpError(await rpc(server, 'admin.credential_revoke', { kind: 'session', id: s.session_id }, { token: server.tokens.admin }), 404, 'not_found');
  // A session id taken as a token id names nothing.
  expectHttpError(await rpc(server, 'admin.credential_revoke', { kind: 'api_token', id: other.session_id }, { token: server.tokens.admin }), 404, 'not_found');
  revokeAnswer(await rpc(server, 'admin.credential_revoke', { kind: 'api_token', id: tok.id }, { token: server.tokens.admin }), { revoked: 1, sockets: 0 });
  expectHttpError(await rpc(server, 'account.session_list', {}, { token: tok.token }), 401, 'unauthenticated');
  await bystander.close();
});

// ---- API tokens ----------------------------------------------------------------------------

test('account.token_create answers an adt_ token once; account.token_list never shows it', async () => {
  const s = await login(server, bob);
  const t = await newToken(server, s.cookie, 'deploy');
  assert.match(t.token, /^adt_[A-Za-z0-9_-]{20,}$/);
  assert.equal(t.name, 'deploy');
  assert.equal(t.expires_at, null);
  assert.ok(Date.parse(t.created_at) > 0);
  const t2 = await rpc(server, 'account.token_create', { name: 'short', expires_in_s: 3600 }, byCookie(s.cookie));
  assert.equal(t2.status, 200, t2.body);
  assert.ok(Date.parse(t2.json.result.expires_at) > Date.now() + 3500 * 1000, t2.body);
  assert.notEqual(t2.json.result.token, t.token);

  for (const opts of [byCookie(s.cookie), byToken(t.token)]) {
    const l = await rpc(server, 'account.token_list', {}, opts);
    assert.equal(l.status, 200, l.body);
    const ids = l.json.result.tokens.map((x) => x.id);
    assert.ok(ids.includes(t.id) && ids.includes(t2.json.result.id), l.body);
    for (const x of l.json.result.tokens) assert.deepEqual(Object.keys(x).sort(), ['created_at', 'expires_at', 'id', 'name']);
    assert.equal(l.body.includes(t.token), false, 'the token text is never listed');
    assert.equal(l.body.includes(t2.json.result.token), false);
    assert.equal(/adt_/.test(l.body), false);
  }
  // Another account sees none of them.
  const a = await login(server, alice);
  const la = await rpc(server, 'account.token_list', {}, byCookie(a.cookie));
  assert.equal(la.json.result.tokens.some((x) => x.id === t.id), false, la.body);
});

test('an API token works as Bearer over HTTP and WebSocket and as actiond.bearer.; once revoked it gets 401', async () => {
  const s = await login(server, bob);
  const t = await newToken(server, s.cookie);
  const h = await rpc(server, 'account.token_list', {}, byToken(t.token));
  assert.equal(h.status, 200, h.body);
  const viaBearer = await open(server, byToken(t.token));
  const viaProto = await open(server, { token: null, protocols: ['actiond.v1', 'actiond.bearer.' + t.token] });
  assert.equal(viaProto.ws.protocol, 'actiond.v1', 'the server picks actiond.v1, never echoes the token');
  for (const c of [viaBearer, viaProto]) {
    const r = await within(c.call('account.token_list', {}), 2000, 'token_list');
    assert.ok(r.result.tokens.some((x) => x.id === t.id), JSON.stringify(r));
  }
  const other = await newToken(server, s.cookie, 'other');
  const bystander = await open(server, byToken(other.token));

  const r = await rpc(server, 'account.token_revoke', { token_id: t.id }, byCookie(s.cookie));
  revokeAnswer(r, { revoked: 1, sockets: 2 });
  await expectRevoked(viaBearer, `api_token:${t.id}`, 'revoked');
  await expectRevoked(viaProto, `api_token:${t.id}`, 'revoked');
  await expectAlive(bystander);

  expectHttpError(await rpc(server, 'heartbeat', {}, byToken(t.token)), 401, 'unauthenticated');
  assert.equal(await upgradeStatus(server, byToken(t.token)), 401);
  assert.equal(await upgradeStatus(server, { token: null, protocols: ['actiond.v1', 'actiond.bearer.' + t.token] }), 401);
  const l = await rpc(server, 'account.token_list', {}, byCookie(s.cookie));
  assert.equal(l.json.result.tokens.some((x) => x.id === t.id), false, 'a revoked token is not listed');
  // Revoking it again finds nothing.
  expectHttpError(await rpc(server, 'account.token_revoke', { token_id: t.id }, byCookie(s.cookie)), 404, 'not_found');
  await bystander.close();
});

test('a revocation answers only after its sockets got session_revoked and the close frame', async () => {
  // README: the answer comes "only after every live WebSocket resting on the
  // revoked credential got a session_revoked notification and a close frame".
  const s = await login(server, bob);
  const late = [];
  for (let round = 0; round < 5; round++) {
    const t = await newToken(server, s.cookie, `order-${round}`);
    const socks = [await open(server, byToken(t.token)), await open(server, byToken(t.token))];
    const r = await rpc(server, 'account.token_revoke', { token_id: t.id }, byCookie(s.cookie));
    const at = socks.map((c) => ({ notified: c.log.some((e) => e.msg.method === 'session_revoked'), state: c.ws.readyState }));
    revokeAnswer(r, { revoked: 1, sockets: 2 });
    for (const c of socks) await expectRevoked(c, `api_token:${t.id}`, 'revoked');
    for (const [i, x] of at.entries()) {
      if (!x.notified || x.state === 1) late.push(`round ${round}, socket ${i}: ${x.notified ? 'no close frame yet' : 'no session_revoked yet'}`);
    }
  }
  assert.deepEqual(late, [], 'the answer arrived before the socket heard of the revocation');
});

// ---- sessions ---------------------------------------------------------------------------------

test('account.session_list marks the current session; session_revoke of another account\'s session is not_found', async () => {
  const a1 = await login(server, alice);
  const a2 = await login(server, alice);
  const b = await login(server, bob);

  const l = await rpc(server, 'account.session_list', {}, byCookie(a1.cookie));
  assert.equal(l.status, 200, l.body);
  const mine = l.json.result.sessions;
  assert.equal(mine.find((x) => x.id === a1.session_id)?.current, true, l.body);
  assert.equal(mine.find((x) => x.id === a2.session_id)?.current, false, l.body);
  assert.equal(mine.filter((x) => x.current).length, 1);
  assert.equal(mine.some((x) => x.id === b.session_id), false, 'only the caller\'s sessions');
  // Through an API token no session is current.
  const t = await newToken(server, a1.cookie);
  const lt = await rpc(server, 'account.session_list', {}, byToken(t.token));
  assert.equal(lt.json.result.sessions.some((x) => x.current), false, lt.body);

  // Bob cannot revoke Alice's session, by cookie or by token...
  const c = await open(server, byCookie(a1.cookie));
  expectHttpError(await rpc(server, 'account.session_revoke', { session_id: a1.session_id }, byCookie(b.cookie)), 404, 'not_found');
  const bt = await newToken(server, b.cookie);
  expectHttpError(await rpc(server, 'account.session_revoke', { session_id: a1.session_id }, byToken(bt.token)), 404, 'not_found');
  // ...nor guess at ids past the end.
  expectHttpError(await rpc(server, 'account.session_revoke', { session_id: 9007199254740991 }, byCookie(b.cookie)), 404, 'not_found');
  // ...and Alice's session keeps working.
  await expectAlive(c);
  assert.equal((await rpc(server, 'account.session_list', {}, byCookie(a1.cookie))).status, 200);

  // Alice revokes her other session.
  revokeAnswer(await rpc(server, 'account.session_revoke', { session_id: a2.session_id }, byCookie(a1.cookie)), { revoked: 1, sockets: 0 });
  expectHttpError(await rpc(server, 'account.session_list', {}, byCookie(a2.cookie)), 401, 'unauthenticated');
  await expectAlive(c);
  await c.close();
});

test('account.session_revoke_all spares the current session unless include_current', async () => {
  const carol = await newAccount(server, 'member', { name: 'carol' });
  const s1 = await login(server, carol);
  const s2 = await login(server, carol);
  const s3 = await login(server, carol);
  const c1 = await open(server, byCookie(s1.cookie));
  const c2 = await open(server, byCookie(s2.cookie));
  const bobSession = await login(server, bob);
  const bystander = await open(server, byCookie(bobSession.cookie));

  revokeAnswer(await rpc(server, 'account.session_revoke_all', {}, byCookie(s1.cookie)), { revoked: 2, sockets: 1 });
  await expectRevoked(c2, `session:${s2.session_id}`);
  for (const s of [s2, s3]) expectHttpError(await rpc(server, 'account.session_list', {}, byCookie(s.cookie)), 401, 'unauthenticated');
  await expectAlive(c1);
  const l = await rpc(server, 'account.session_list', {}, byCookie(s1.cookie));
  assert.deepEqual(l.json.result.sessions.map((x) => x.id), [s1.session_id]);

  revokeAnswer(await rpc(server, 'account.session_revoke_all', { include_current: true }, byCookie(s1.cookie)), { revoked: 1, sockets: 1 });
  await expectRevoked(c1, `session:${s1.session_id}`);
  expectHttpError(await rpc(server, 'account.session_list', {}, byCookie(s1.cookie)), 401, 'unauthenticated');
  await expectAlive(bystander);
  await bystander.close();
});

// ---- agent sessions ------------------------------------------------------------------------------

test('agent sessions: the ada_ token works as Bearer, is forbidden admin and account actions, and revoking it closes its sockets', async () => {
  const r = await rpc(server, 'admin.agent_session_create', { name: 'ci agent', integrations: ['github', 'slack'] });
  assert.equal(r.status, 200, r.body);
  const a = r.json.result;
  assert.match(a.token, /^ada_[A-Za-z0-9_-]{20,}$/);
  assert.equal(a.name, 'ci agent');
  assert.deepEqual(a.integrations, ['github', 'slack']);

  const hb = await rpc(server, 'heartbeat', {}, byToken(a.token));
  assert.equal(hb.status, 200, hb.body);
  const c1 = await open(server, byToken(a.token));
  const c2 = await open(server, { token: null, protocols: ['actiond.v1', 'actiond.bearer.' + a.token] });
  for (const [method, params] of [
    ['admin.account_create', { email: `agent-${++emailSeq}@acme.test`, password: password(), role: 'member' }],
    ['admin.agent_session_create', { name: 'child', integrations: [] }],
    ['admin.credential_set', { integration: 'github', secret: 'x' }],
    ['admin.token_revoke_all', {}],
    ['account.token_list', {}],
    ['account.token_create', { name: 'escalate' }],
    ['account.session_list', {}],
  ]) {
    const h = await rpc(server, method, params, byToken(a.token));
    expectHttpError(h, 403, 'forbidden');
    expectWsError(await within(c1.call(method, params), 2000, method), 'forbidden', -32003);
  }
  const other = await rpc(server, 'admin.agent_session_create', { name: 'other agent', integrations: [] });
  const bystander = await open(server, byToken(other.json.result.token));

  const rv = await rpc(server, 'admin.agent_session_revoke', { agent_session_id: a.agent_session_id });
  revokeAnswer(rv, { revoked: 1, sockets: 2 });
  await expectRevoked(c1, undefined, 'agent session revoked');
  await expectRevoked(c2);
  assert.match(c1.log.at(-1).msg.params.credential, /^agent_token:\d+$/);
  await expectAlive(bystander);
  expectHttpError(await rpc(server, 'heartbeat', {}, byToken(a.token)), 401, 'unauthenticated');
  assert.equal(await upgradeStatus(server, byToken(a.token)), 401);
  expectHttpError(await rpc(server, 'admin.agent_session_revoke', { agent_session_id: a.agent_session_id }), 404, 'not_found');
  await bystander.close();
});

// ---- tenants ------------------------------------------------------------------------------------

test('tenant isolation: the globex admin neither sees nor touches acme rows, whatever ids it sends', async () => {
  // Acme: dave with a session, an API token and an open socket; an agent session.
  const dave = await newAccount(server, 'admin', { name: 'dave' });
  const ds = await login(server, dave);
  const dt = await newToken(server, ds.cookie);
  const ag = (await rpc(server, 'admin.agent_session_create', { name: 'acme agent', integrations: ['github'] })).json.result;
  const daveSocket = await open(server, byToken(dt.token));
  const agentSocket = await open(server, byToken(ag.token));

  // Globex: an admin account with a session and a token.
  const gina = await newAccount(server, 'admin', { key: 'gadmin', name: 'gina' });
  const gs = await login(server, gina);
  assert.equal(gs.result.org, 'globex');
  const gt = await newToken(server, gs.cookie);
  const globexKey = { token: server.tokens.gadmin };

  for (const opts of [byCookie(gs.cookie), byToken(gt.token)]) {
    expectHttpError(await rpc(server, 'account.token_revoke', { token_id: dt.id }, opts), 404, 'not_found');
    expectHttpError(await rpc(server, 'account.session_revoke', { session_id: ds.session_id }, opts), 404, 'not_found');
    const tl = await rpc(server, 'account.token_list', {}, opts);
    assert.deepEqual(tl.json.result.tokens.map((x) => x.id), [gt.id], tl.body);
    const sl = await rpc(server, 'account.session_list', {}, opts);
    assert.deepEqual(sl.json.result.sessions.map((x) => x.id), [gs.session_id], sl.body);
  }
  for (const opts of [globexKey, byCookie(gs.cookie), byToken(gt.token)]) {
    expectHttpError(await rpc(server, 'admin.agent_session_revoke', { agent_session_id: ag.agent_session_id }, opts), 404, 'not_found');
    expectHttpError(await rpc(server, 'admin.account_disable', { account_id: dave.id }, opts), 404, 'not_found');
    for (const m of ['admin.session_revoke_all', 'admin.token_revoke_all']) {
      const r = await rpc(server, m, { account_id: dave.id }, opts);
      assert.equal(r.status, 200, r.body);
      assert.equal(r.json.result.revoked, 0, `${m} of an acme account from globex: ${r.body}`);
      assert.equal(r.json.result.sockets_closed, 0);
    }
  }
  // Org-wide revocations from globex stay in globex (the caller is spared).
  const all = await rpc(server, 'admin.token_revoke_all', {}, byCookie(gs.cookie));
  assert.equal(all.json.result.revoked, 1, all.body); // gina's token only
  const alls = await rpc(server, 'admin.session_revoke_all', {}, globexKey);
  assert.equal(alls.json.result.revoked, 1, alls.body); // gina's session only
  // Gina is unknown in acme.
  const wrongOrg = await rpc(server, 'auth.login', { email: gina.email, password: gina.password, org: 'acme' }, { token: null, localAddress: freshIp() });
  expectHttpError(wrongOrg, 401, 'unauthenticated');

  // Every acme credential still works.
  await expectAlive(daveSocket);
  await expectAlive(agentSocket);
  assert.equal((await rpc(server, 'account.token_list', {}, byCookie(ds.cookie))).status, 200);
  assert.equal((await rpc(server, 'account.token_list', {}, byToken(dt.token))).status, 200);
  assert.equal((await rpc(server, 'heartbeat', {}, byToken(ag.token))).status, 200);
  assert.equal(await upgradeStatus(server, byToken(ag.token)), 101);
  await daveSocket.close();
  await agentSocket.close();
});

// ---- disabling accounts -----------------------------------------------------------------------------

test('admin.account_disable revokes every credential of the account (sockets closed 4001); login is then forbidden', async () => {
  const erin = await newAccount(server, 'member', { name: 'erin' });
  const s = await login(server, erin);
  const t = await newToken(server, s.cookie);
  const cs = await open(server, byCookie(s.cookie));
  const ct = await open(server, byToken(t.token));
  const bs = await login(server, bob);
  const bystander = await open(server, byCookie(bs.cookie));

  const r = await rpc(server, 'admin.account_disable', { account_id: erin.id });
  const a = revokeAnswer(r, { sockets: 2 });
  assert.ok(a.revoked >= 1, r.body);
  assert.equal(a.credentials_revoked, 2, `its session and its token: ${r.body}`);
  await expectRevoked(cs, `session:${s.session_id}`, 'account disabled');
  await expectRevoked(ct, `api_token:${t.id}`, 'account disabled');
  await expectAlive(bystander);

  expectHttpError(await rpc(server, 'account.token_list', {}, byCookie(s.cookie)), 401, 'unauthenticated');
  expectHttpError(await rpc(server, 'account.token_list', {}, byToken(t.token)), 401, 'unauthenticated');
  assert.equal(await upgradeStatus(server, byToken(t.token)), 401);
  assert.equal(await upgradeStatus(server, byCookie(s.cookie)), 401);
  const again = await rpc(server, 'auth.login', { email: erin.email, password: erin.password }, { token: null, localAddress: freshIp() });
  expectHttpError(again, 403, 'forbidden');
  assert.equal(again.headers.getSetCookie().some((c) => c.startsWith('actiond_session=ads_')), false);
  // A wrong password for a disabled account says nothing about the account.
  const wrong = await rpc(server, 'auth.login', { email: erin.email, password: 'not-the-password' }, { token: null, localAddress: freshIp() });
  expectHttpError(wrong, 401, 'unauthenticated');
  await bystander.close();
});

test('admin.account_disable: disabling yourself is a conflict, and changes nothing', async () => {
  const s = await login(server, alice);
  const c = await open(server, byCookie(s.cookie));
  const r = await rpc(server, 'admin.account_disable', { account_id: alice.id }, byCookie(s.cookie));
  expectHttpError(r, 409, 'conflict');
  const t = await newToken(server, s.cookie);
  const r2 = await rpc(server, 'admin.account_disable', { account_id: alice.id }, byToken(t.token));
  expectHttpError(r2, 409, 'conflict');
  await expectAlive(c);
  assert.equal((await rpc(server, 'account.session_list', {}, byCookie(s.cookie))).status, 200);
  await c.close();
  // A member may not disable anyone.
  const bs = await login(server, bob);
  expectHttpError(await rpc(server, 'admin.account_disable', { account_id: alice.id }, byCookie(bs.cookie)), 403, 'forbidden');
  expectHttpError(await rpc(server, 'admin.account_disable', { account_id: alice.id }, { token: server.tokens.member }), 403, 'forbidden');
});

// ---- secrets ------------------------------------------------------------------------------------------

test('admin.credential_set answers without the secret and the database holds no plaintext', async () => {
  const secret = 'ghp_' + randomBytes(24).toString('hex');
  const objSecret = { client_id: 'cid-' + randomBytes(6).toString('hex'), client_secret: 'cs-' + randomBytes(18).toString('hex') };
  used.add(secret).add(objSecret.client_secret).add(objSecret.client_id);

  const r = await rpc(server2, 'admin.credential_set', { integration: 'github', secret });
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(Object.keys(r.json.result).sort(), ['integration', 'updated_at']);
  assert.equal(r.json.result.integration, 'github');
  assert.equal(r.body.includes(secret), false);
  const c = await connect(server2);
  const w = await within(c.call('admin.credential_set', { integration: 'salesforce', secret: objSecret }), 3000, 'credential_set');
  assert.deepEqual(Object.keys(w.result).sort(), ['integration', 'updated_at'], JSON.stringify(w));
  assert.equal(JSON.stringify(w).includes(objSecret.client_secret), false);
  // The same secret twice is sealed twice differently (a fresh nonce).
  assert.equal((await within(c.call('admin.credential_set', { integration: 'github_copy', secret }), 3000, 'copy')).result?.integration, 'github_copy');
  await c.close();
  // Members may not.
  expectHttpError(await rpc(server2, 'admin.credential_set', { integration: 'github', secret: 'x' }, { token: server2.tokens.member }), 403, 'forbidden');
  // Another org's secret of the same name is its own row, and overwrites nothing.
  const globexSecret = 'globex-' + randomBytes(12).toString('hex');
  used.add(globexSecret);
  const g = await rpc(server2, 'admin.credential_set', { integration: 'github', secret: globexSecret }, { token: server2.tokens.gadmin });
  assert.equal(g.status, 200, g.body);
  assert.equal(pg.psql("select count(distinct org_id) from integration_secrets where integration = 'github'"), '2');

  // The escape form keeps printable bytes readable (so plaintext would show);
  // its raw line breaks are flattened so that one row stays one line.
  const rows = pg.psql("select integration, length(nonce), translate(encode(sealed, 'escape'), E'\\n\\r', '  '), encode(sealed, 'hex') from integration_secrets i join orgs o on o.id = i.org_id where o.slug = 'acme' order by integration").split('\n');
  assert.equal(rows.length, 3, rows.join('\n'));
  const hexOf = (s) => Buffer.from(s).toString('hex');
  for (const row of rows) {
    const [integration, nonceLen] = row.split('|');
    assert.equal(Number(nonceLen), 24, row);
    for (const s of [secret, objSecret.client_secret, objSecret.client_id]) {
      assert.equal(row.includes(s), false, `plaintext in the ${integration} row`);
      assert.equal(row.includes(hexOf(s)), false, `plaintext (hex) in the ${integration} row`);
    }
  }
  const sealed = Object.fromEntries(rows.map((x) => { const f = x.split('|'); return [f[0], f[3]]; }));
  assert.notEqual(sealed.github, sealed.github_copy, 'each sealing uses its own nonce');
});

test('secrets never in clear: no token, password or secret in the log or in the database', async () => {
  // Everything a caller can hold: an account's password, a session, API and
  // agent tokens, integration secrets (previous test), and the config key.
  const acct = await newAccount(server2, 'admin', { name: 'secretive' });
  const s = await login(server2, acct);
  const t = await newToken(server2, s.cookie);
  const ag = await rpc(server2, 'admin.agent_session_create', { name: 'agent', integrations: ['github'] });
  used.add(ag.json.result.token);
  used.add(server2.tokens.admin).add(server2.tokens.member).add(server2.tokens.gadmin);
  // Use each once more, over HTTP and WebSocket, and fail some logins.
  for (const tok of [t.token, ag.json.result.token]) {
    assert.equal((await rpc(server2, 'heartbeat', {}, byToken(tok))).status, 200);
    const c = await connect(server2, byToken(tok));
    await within(c.call('heartbeat', {}), 1000, 'heartbeat');
    await c.close();
  }
  const wrongPw = 'wrong-' + randomBytes(8).toString('hex');
  used.add(wrongPw);
  await rpc(server2, 'auth.login', { email: acct.email, password: wrongPw }, { token: null, localAddress: freshIp() });
  await rpc(server2, 'auth.login', { email: 'ghost@acme.test', password: wrongPw }, { token: null, localAddress: freshIp() });
  // A token in a place it does not belong (the params) is not logged either.
  const r = await rpc(server2, 'account.token_revoke', { token_id: t.token }, byCookie(s.cookie));
  assert.equal(r.status, 400, r.body);
  // And a revoked one.
  assert.equal((await rpc(server2, 'account.token_revoke', { token_id: t.id }, byCookie(s.cookie))).status, 200);
  expectHttpError(await rpc(server2, 'heartbeat', {}, byToken(t.token)), 401, 'unauthenticated');
  await sleep(100); // let the log lines land

  const log = server2.log();
  assert.match(log, /listening on/);
  const dump = pg.dump();
  const tables = ['credentials', 'accounts', 'memberships', 'agent_sessions', 'integration_secrets', 'identity_events']
    .map((tb) => pg.psql(`select row_to_json(x)::text from ${tb} x`)).join('\n');
  assert.match(tables, /"kind":"agent_token"/, 'the dump has the rows');
  const bytea = pg.psql("select encode(token_hash, 'escape') from credentials union all select encode(sealed, 'escape') from integration_secrets");
  const hexOf = (x) => Buffer.from(x).toString('hex');
  assert.ok(used.size >= 10, `${used.size} secrets checked`);
  for (const x of used) {
    const what = `${x.slice(0, 6)}… (${x.length} chars)`;
    assert.equal(log.includes(x), false, `${what} in the server log`);
    assert.equal(dump.includes(x), false, `${what} in the database dump`);
    assert.equal(dump.includes(hexOf(x)), false, `${what} hex-encoded in the database dump`);
    assert.equal(tables.includes(x), false, `${what} in a table`);
    assert.equal(bytea.includes(x), false, `${what} in a bytea column`);
  }

  // Passwords are Argon2id; token hashes are 32 bytes.
  const hashes = pg.psql('select password_hash from accounts').split('\n');
  assert.ok(hashes.length >= 1);
  for (const h of hashes) assert.match(h, /^\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
  assert.equal(pg.psql('select count(*) from credentials where length(token_hash) <> 32'), '0');
});

test('the embedded server\'s log holds none of the passwords and tokens used against it', async () => {
  // The accounts and tokens of this file's earlier tests, by what the log shows.
  const log = server.log();
  for (const a of [alice, bob]) assert.equal(log.includes(a.password), false, 'a password in the log');
  assert.equal(/ad[sta]_[A-Za-z0-9_-]{20,}/.test(log), false, 'a session, API or agent token in the log');
  for (const k of Object.values(server.tokens)) assert.equal(log.includes(k), false, 'an API key in the log');
});

// ---- what admins manage ----------------------------------------------------------------------------

test('admin.account_list and admin.agent_session_list page through this org only, with a cursor', async () => {
  const srv = await startServer({ db: true, keys: { a: { org: 'pager', role: 'admin' }, b: { org: 'elsewhere', role: 'admin' } } });
  try {
    const made = [];
    for (let i = 0; i < 5; i++) {
      const r = await rpc(srv, 'admin.account_create', { email: `p${i}@pager.test`, password: 'pager-pass-1', role: 'member' });
      assert.equal(r.status, 200, r.body);
      made.push(r.json.result.account_id);
    }
    await rpc(srv, 'admin.account_create', { email: 'x@elsewhere.test', password: 'pager-pass-1', role: 'member' }, { token: srv.tokens.b });
    const seen = [];
    let cursor, pages = 0;
    do {
      const r = await rpc(srv, 'admin.account_list', cursor ? { limit: 2, cursor } : { limit: 2 });
      assert.equal(r.status, 200, r.body);
      assert.ok(r.json.result.accounts.length <= 2);
      seen.push(...r.json.result.accounts.map((a) => a.account_id));
      cursor = r.json.result.next_cursor;
      pages++;
    } while (cursor && pages < 10);
    assert.deepEqual(seen, made, 'every account of the org once, in order, none of the other org');
    assert.equal(pages, 3);

    const d = await rpc(srv, 'admin.account_disable', { account_id: made[0] });
    assert.equal(d.status, 200, d.body);
    const first = await rpc(srv, 'admin.account_list', { limit: 1 });
    assert.equal(first.json.result.accounts[0].disabled, true);

    const ag = [];
    for (let i = 0; i < 3; i++) {
      const r = await rpc(srv, 'admin.agent_session_create', { name: `agent ${i}`, integrations: ['sentry'] });
      assert.equal(r.status, 200, r.body);
      ag.push(r.json.result.agent_session_id);
    }
    await rpc(srv, 'admin.agent_session_revoke', { agent_session_id: ag[1] });
    let r = await rpc(srv, 'admin.agent_session_list', {});
    assert.deepEqual(r.json.result.agent_sessions.map((a) => a.agent_session_id), [ag[0], ag[2]], r.body);
    assert.deepEqual(r.json.result.agent_sessions[0].integrations, ['sentry']);
    assert.equal(r.json.result.next_cursor, null);
    r = await rpc(srv, 'admin.agent_session_list', { include_revoked: true, limit: 2 });
    assert.deepEqual(r.json.result.agent_sessions.map((a) => a.agent_session_id), [ag[0], ag[1]]);
    assert.ok(r.json.result.agent_sessions[1].revoked_at);
    assert.equal(typeof r.json.result.next_cursor, 'string');
    r = await rpc(srv, 'admin.agent_session_list', {}, { token: srv.tokens.b });
    assert.deepEqual(r.json.result.agent_sessions, [], 'the other org sees none of them');
  } finally {
    await srv.stop();
  }
});

// ---- last: the login rate limit (10 a minute per address) --------------------------------------------

test('auth.login is limited to 10 a minute per address: the 11th is 429 rate_limited with retry_after_ms', async () => {
  const ip = '127.0.0.200';
  const acct = await newAccount(server, 'member', { name: 'limited' });
  for (let i = 0; i < 10; i++) {
    const r = await rpc(server, 'auth.login', { email: acct.email, password: acct.password }, { token: null, localAddress: ip });
    assert.equal(r.status, 200, `login ${i + 1}: ${r.body}`);
  }
  for (const pw of [acct.password, 'wrong-password']) {
    const r = await rpc(server, 'auth.login', { email: acct.email, password: pw }, { token: null, localAddress: ip });
    expectHttpError(r, 429, 'rate_limited');
    assert.equal(r.json.error.code, -32029);
    const ms = r.json.error.data.retry_after_ms;
    assert.ok(Number.isInteger(ms) && ms > 0 && ms <= 60000, `retry_after_ms ${ms}`);
    const ra = Number(r.headers.get('retry-after'));
    assert.ok(Number.isInteger(ra) && ra >= 1 && ra <= 60, `Retry-After ${r.headers.get('retry-after')}`);
    assert.equal(r.headers.getSetCookie().some((c) => c.startsWith('actiond_session=ads_')), false);
  }
  // Another address is not affected.
  const other = await rpc(server, 'auth.login', { email: acct.email, password: acct.password }, { token: null, localAddress: '127.0.0.201' });
  assert.equal(other.status, 200, other.body);
});
