// Identity against a hostile caller: integral floats read as the integers
// they are, refused revocations that leave the cache alone, credentials
// created while their scope is revoked, U+0000 inside strings, and byte
// limits that cut UTF-8.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startServer, connect, http, rpc, sessionCookie, within, sleep } from './lib.mjs';

const KEYS = { admin: { org: 'acme', role: 'owner' }, other: { org: 'globex', role: 'owner' } };
const ORIGIN = 'http://app.test';
let server;

before(async () => {
  server = await startServer({ db: true, keys: KEYS, security: { allowed_origins: ORIGIN } });
});

after(async () => {
  const r = await server?.stop();
  assert.equal(r?.code, 0);
});

let ipSeq = 1;
const freshIp = () => `127.0.${40 + Math.floor(ipSeq / 250)}.${(ipSeq++ % 250) + 1}`;
let emailSeq = 0;

async function newAccount(role = 'member', pw = 'pw-' + randomBytes(9).toString('base64url')) {
  const email = `h-${++emailSeq}@acme.test`;
  const r = await rpc(server, 'admin.account_create', { email, password: pw, role });
  assert.equal(r.status, 200, r.body);
  return { id: r.json.result.account_id, email, password: pw };
}

async function login(acct, password = acct.password) {
  return rpc(server, 'auth.login', { email: acct.email, password }, { token: null, localAddress: freshIp() });
}

async function session(acct) {
  const r = await login(acct);
  assert.equal(r.status, 200, r.body);
  return sessionCookie(r);
}

const byCookie = (cookie) => ({ token: null, headers: { Cookie: cookie, Origin: ORIGIN } });
// Whether a session cookie still authenticates.
async function sessionWorks(cookie) {
  const r = await rpc(server, 'account.session_list', {}, byCookie(cookie));
  return r.status === 200;
}

// A raw JSON-RPC body: JSON.stringify would print 5.0 as 5.
const raw = (method, paramsText) => `{"jsonrpc":"2.0","id":1,"method":"${method}","params":${paramsText}}`;

test('an account_id of 5.0 revokes that account\'s sessions only, not the org\'s', async () => {
  const a = await newAccount();
  const b = await newAccount();
  const ca = await session(a), cb = await session(b);
  assert.ok(await sessionWorks(ca) && await sessionWorks(cb));
  const r = await http(server, '/rpc', { method: 'POST', body: raw('admin.session_revoke_all', `{"account_id": ${a.id}.0}`) });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.result.revoked, 1, r.body);
  assert.equal(await sessionWorks(ca), false, 'a\'s session is revoked');
  assert.equal(await sessionWorks(cb), true, 'b\'s session is untouched');
});

test('expires_in_s of 3600.0 makes a token that expires in an hour', async () => {
  const a = await newAccount();
  const cookie = await session(a);
  const r = await http(server, '/rpc', {
    method: 'POST', ...byCookie(cookie),
    body: raw('account.token_create', '{"name": "float", "expires_in_s": 3600.0}'),
  });
  assert.equal(r.status, 200, r.body);
  const exp = Date.parse(r.json.result.expires_at);
  assert.ok(Math.abs(exp - Date.now() - 3600e3) < 60e3, `expires_at ${r.json.result.expires_at}`);
});

test('a refused account_disable changes nothing: the owner\'s socket and token live on', async () => {
  const owner = await newAccount('owner');
  const ownerCookie = await session(owner);
  const tok = await rpc(server, 'account.token_create', { name: 'owner' }, byCookie(ownerCookie));
  assert.equal(tok.status, 200, tok.body);
  const admin = await newAccount('admin');
  const adminCookie = await session(admin);
  const c = await connect(server, { token: tok.json.result.token });
  try {
    // An admin may not disable an owner: not_found, and nothing else.
    const r = await rpc(server, 'admin.account_disable', { account_id: owner.id }, byCookie(adminCookie));
    assert.equal(r.json?.error?.data?.reason, 'not_found', r.body);
    assert.equal(await c.silent(300), true, 'no session_revoked on the owner\'s socket');
    assert.equal(c.isClosed, false);
    const h = await c.call('heartbeat', {});
    assert.ok(h.result, JSON.stringify(h));
    const again = await rpc(server, 'heartbeat', {}, { token: tok.json.result.token });
    assert.equal(again.status, 200, 'the owner\'s token still authenticates');
  } finally {
    await c.close();
  }
});

test('a login racing a disable never leaves a working session behind', { timeout: 60000 }, async () => {
  for (const delay of [0, 2, 5, 10, 20, 40, 80]) {
    const a = await newAccount();
    const loginP = login(a);
    await sleep(delay);
    const d = await rpc(server, 'admin.account_disable', { account_id: a.id });
    assert.equal(d.status, 200, d.body);
    const l = await loginP;
    if (l.status === 200) {
      const cookie = sessionCookie(l);
      assert.equal(await sessionWorks(cookie), false, `delay ${delay}: the racing session was revoked`);
      const t = await rpc(server, 'account.token_create', { name: 'late' }, byCookie(cookie));
      assert.notEqual(t.status, 200, `delay ${delay}: it cannot mint tokens: ${t.body}`);
    } else {
      assert.ok([403, 409].includes(l.status), `delay ${delay}: ${l.status} ${l.body}`);
    }
  }
});

test('a password with U+0000 is kept whole: another one with the same prefix does not log in', async () => {
  const a = await newAccount('member', '\u0000xxxxxxxxx');
  assert.equal((await login(a, '\u0000yyyyyyyyy')).status, 401);
  assert.equal((await login(a, '\u0000')).status, 400, 'too short for the spec');
  assert.equal((await login(a, '\u0000xxxxxxxxx')).status, 200);
});

test('U+0000 where a C string is needed (email, token name) is -32602, not a truncation', async () => {
  const a = await newAccount();
  const cookie = await session(a);
  const t = await rpc(server, 'account.token_create', { name: 'ab\u0000cd' }, byCookie(cookie));
  assert.equal(t.status, 400, t.body);
  assert.equal(t.json.error.code, -32602);
  assert.equal(t.json.error.data.pointer, '/name');
  const l = await rpc(server, 'auth.login', { email: `x\u0000@acme.test`, password: 'whatever-123' }, { token: null, localAddress: freshIp() });
  assert.equal(l.status, 400, l.body);
});

test('a 4-byte character across byte 255 of an email is just an unknown email, logged as nothing worse', async () => {
  const errors = () => server.log().split('\n').filter((x) => / ERROR /.test(x)).length;
  const before = errors();
  // 126 two-byte characters fill bytes 0..251; the emoji takes bytes 252..255.
  const email = '\u00e9'.repeat(126) + '\u{1F600}' + '@x.t';
  assert.ok(Buffer.byteLength(email) > 256 && [...email].length <= 254);
  const l = await rpc(server, 'auth.login', { email, password: 'whatever-123' }, { token: null, localAddress: freshIp() });
  assert.equal(l.status, 401, l.body);
  const a = await rpc(server, 'admin.account_create', { email, password: 'whatever-123', role: 'member' });
  assert.equal(a.status, 200, a.body);
  assert.equal(a.json.result.email, email, 'kept whole, not cut');
  assert.equal((await rpc(server, 'auth.login', { email, password: 'whatever-123' }, { token: null, localAddress: freshIp() })).status, 200);
  assert.equal(errors(), before, 'no ERROR line');
});

// ---- password guessing ----------------------------------------------------------------------

test('70 guesses at one account from 7 addresses: only its failure budget is checked, the rest refused', { timeout: 60000 }, async () => {
  const victim = await newAccount();
  // The owner's usual address, known to the account before the attack.
  const home = freshIp();
  const ok = await rpc(server, 'auth.login', { email: victim.email, password: victim.password }, { token: null, localAddress: home });
  assert.equal(ok.status, 200, ok.body);
  const statuses = [];
  await Promise.all(Array.from({ length: 7 }, async () => {
    const ip = freshIp();
    for (let i = 0; i < 10; i++) {
      const r = await rpc(server, 'auth.login', { email: victim.email, password: 'guess-number-' + i }, { token: null, localAddress: ip });
      statuses.push(r.status);
      if (r.status === 429) {
        assert.equal(r.json.error.data.reason, 'rate_limited');
        assert.ok(r.json.error.data.retry_after_ms > 0);
        assert.ok(Number(r.headers.get('retry-after')) >= 1);
      }
    }
  }));
  const checked = statuses.filter((s) => s === 401).length;
  assert.ok(checked >= 10 && checked <= 17, `${checked} guesses were checked (budget 10, 7 in flight): ${statuses}`);
  assert.equal(statuses.filter((s) => s === 429).length, 70 - checked);
  // The owner still gets in from home; from a new address, not yet.
  const back = await rpc(server, 'auth.login', { email: victim.email, password: victim.password }, { token: null, localAddress: home });
  assert.equal(back.status, 200, back.body);
  const away = await rpc(server, 'auth.login', { email: victim.email, password: victim.password }, { token: null, localAddress: freshIp() });
  assert.equal(away.status, 429, away.body);
});

test('a login flood from 40 addresses cannot starve the owner\'s login: the hashing queue is fair, bounded and refuses at once', { timeout: 60000 }, async () => {
  const owner = await newAccount('member');
  const home = freshIp();
  const before = await rpc(server, 'auth.login', { email: owner.email, password: owner.password }, { token: null, localAddress: home });
  assert.equal(before.status, 200, before.body);
  const batch = Array.from({ length: 10 }, (_, i) => ({
    jsonrpc: '2.0', id: i, method: 'auth.login',
    params: { email: `nobody-${randomBytes(4).toString('hex')}@flood.test`, password: 'flooding-' + i },
  }));
  const flood = Array.from({ length: 40 }, () => http(server, '/rpc', { method: 'POST', token: null, body: batch, localAddress: freshIp() }));
  await sleep(50); // the flood is queued first
  // From the address the owner uses: ahead of the flood.
  const mine = await rpc(server, 'auth.login', { email: owner.email, password: owner.password }, { token: null, localAddress: home });
  assert.equal(mine.status, 200, `the owner's login: ${mine.body}`);
  // From a new address: its turn among the others, or a refusal at once - never a wait past the timeout.
  const away = await rpc(server, 'auth.login', { email: owner.email, password: owner.password }, { token: null, localAddress: freshIp() });
  assert.ok(away.status === 200 || away.json?.error?.data?.reason === 'rate_limited', away.body);
  const answers = (await Promise.all(flood)).flatMap((r) => r.json);
  const refused = answers.filter((a) => a.error?.data?.reason === 'rate_limited').length;
  // The rest were checked, or waited their turn until their own timeout.
  const other = answers.filter((a) => !['rate_limited', 'unauthenticated', 'timeout'].includes(a.error?.data?.reason));
  assert.equal(answers.length, 400);
  assert.deepEqual(other, []);
  assert.ok(refused >= 40 * 5, `${refused} flood logins refused at once (at most 2 wait per address)`);
});

// ---- login and logout belong to HTTP ------------------------------------------------------------

test('auth.login and auth.logout over a WebSocket answer -32600 naming POST /rpc, and change nothing', async () => {
  const a = await newAccount();
  const cookie = await session(a);
  const c = await connect(server, { token: null, headers: { Cookie: cookie, Origin: ORIGIN } });
  try {
    const l = await c.call('auth.login', { email: a.email, password: a.password });
    assert.equal(l.error?.code, -32600, JSON.stringify(l));
    assert.match(l.error.message, /HTTP only: POST \/rpc/);
    const o = await c.call('auth.logout', {});
    assert.equal(o.error?.code, -32600, JSON.stringify(o));
    assert.equal(c.isClosed, false, 'the socket stays open');
    assert.equal(await sessionWorks(cookie), true, 'the session was not logged out');
    const list = await rpc(server, 'account.session_list', {}, byCookie(cookie));
    assert.equal(list.json.result.sessions.length, 1, 'no session was made over the socket');
  } finally {
    await c.close();
  }
});

// ---- nothing crosses orgs -------------------------------------------------------------------

test('an email with an account in another org can be created here: no "exists" from elsewhere', async () => {
  const a = await newAccount();
  const r = await rpc(server, 'admin.account_create', { email: a.email, password: 'globex-password-1', role: 'member' }, { token: server.tokens.other });
  assert.equal(r.status, 200, r.body);
  assert.notEqual(r.json.result.account_id, a.id);
  // Each password opens its own org's account; no org needs naming.
  const inAcme = await login(a);
  assert.equal(inAcme.status, 200, inAcme.body);
  assert.equal(inAcme.json.result.org, 'acme');
  const inGlobex = await login(a, 'globex-password-1');
  assert.equal(inGlobex.status, 200, inGlobex.body);
  assert.equal(inGlobex.json.result.org, 'globex');
  // Twice in the same org is still a conflict.
  const dup = await rpc(server, 'admin.account_create', { email: a.email, password: 'another-pass-1', role: 'member' }, { token: server.tokens.other });
  assert.equal(dup.status, 409, dup.body);
});

test('ids handed to clients are opaque: consecutive accounts get unrelated ids, and they work as params', async () => {
  const ids = [];
  for (let i = 0; i < 4; i++) ids.push((await newAccount()).id);
  for (const id of ids) assert.ok(Number.isSafeInteger(id) && id > 0, String(id));
  const steps = ids.slice(1).map((id, i) => id - ids[i]);
  assert.ok(steps.some((d) => Math.abs(d) > 1000), `ids ${ids} look like a sequence`);
  // An id from one kind is not another kind's: a session id does not name an account.
  const a = await newAccount();
  const l = await login(a);
  const sid = l.json.result.session_id;
  assert.equal(l.json.result.account_id, a.id, 'login answers the same account id');
  const r = await rpc(server, 'admin.account_disable', { account_id: sid });
  assert.equal(r.json?.error?.data?.reason, 'not_found', r.body);
  const d = await rpc(server, 'admin.account_disable', { account_id: a.id });
  assert.equal(d.status, 200, d.body);
});
