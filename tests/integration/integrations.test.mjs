// Integration actions with risk-based approval: two actiond instances, A and
// B, on one PostgreSQL cluster, against fake Sentry and Linear upstreams
// (fake_upstreams.mjs) that check the credential actiond injects.  Agents
// invoke; reads run at once; writes wait for an admin or owner, whose
// approval runs them once; dangerous ones are denied.  Nothing an agent
// sees, and nothing stored, holds the credential.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import {
  startServer, startPostgres, connect, rpc, sessionCookie, within, sleep,
} from './lib.mjs';
import { startFakeUpstreams } from './fake_upstreams.mjs';

const SENTRY_TOKEN = 'sntrys_' + randomBytes(18).toString('hex');
const LINEAR_TOKEN = 'lin_api_' + randomBytes(18).toString('hex');
const ORIGIN = 'http://app.test';
const KEYS = { admin: { org: 'acme', role: 'admin' }, boss: { org: 'acme', role: 'owner' }, other: { org: 'rival', role: 'admin' } };

let pg, A, B, up;

function settings(extra = []) {
  return [
    '-s', `module.integrations.sentry.base_url=${up.sentryUrl}`,
    '-s', `module.integrations.linear.base_url=${up.linearUrl}`,
    '-s', 'module.integrations.sentry.timeout_ms=3000',
    ...extra,
  ];
}

before(async () => {
  up = await startFakeUpstreams({ sentryToken: SENTRY_TOKEN, linearToken: LINEAR_TOKEN });
  pg = await startPostgres();
  A = await startServer({ db: pg.conninfo, keys: KEYS, args: settings(), security: { allowed_origins: ORIGIN } });
  // B expires linear writes after 1.5 s, for the expiry cases.
  B = await startServer({ db: pg.conninfo, keys: KEYS, args: settings(['-s', 'module.integrations.linear.approval_ms=1500']) });
  for (const [integration, secret] of [['sentry', SENTRY_TOKEN], ['linear', LINEAR_TOKEN]]) {
    const r = await rpc(A, 'admin.credential_set', { integration, secret });
    assert.equal(r.status, 200, r.body);
  }
  const r = await rpc(A, 'admin.credential_set', { integration: 'sentry', secret: 'rival-' + SENTRY_TOKEN }, { token: A.tokens.other });
  assert.equal(r.status, 200, r.body);
  admin = await person('admin');
  owner = await person('owner');
  member = await person('member');
});

after(async () => {
  const ra = await A?.stop();
  const rb = await B?.stop();
  pg?.destroy();
  await up?.close();
  assert.equal(ra?.code, 0, 'A exits 0');
  assert.equal(rb?.code, 0, 'B exits 0');
  // The credentials never reach the log.
  for (const s of [A, B]) {
    assert.ok(!s.log().includes(SENTRY_TOKEN) && !s.log().includes(LINEAR_TOKEN), 'no credential in the log');
  }
});

// ---- helpers ---------------------------------------------------------------------

let seq = 0;
let ipSeq = 1;
const freshIp = () => `127.0.${40 + Math.floor(ipSeq / 250)}.${(ipSeq++ % 250) + 1}`;

async function newAgent(srv = A, { token = srv.tokens.admin, integrations = ['sentry', 'linear'] } = {}) {
  const r = await rpc(srv, 'admin.agent_session_create', { name: `agent-${++seq}`, integrations }, { token });
  assert.equal(r.status, 200, r.body);
  return r.json.result;
}

// An account of role in the admin key's org (or the key given), with an API token.
async function person(role, key = 'admin') {
  const email = `p${++seq}-${role}@x.test`;
  const password = `pw-${seq}-${randomBytes(6).toString('hex')}`;
  let r = await rpc(A, 'admin.account_create', { email, password, role }, { token: A.tokens[role === 'owner' ? 'boss' : key] });
  assert.equal(r.status, 200, r.body);
  r = await rpc(A, 'auth.login', { email, password }, { token: null, localAddress: freshIp() });
  assert.equal(r.status, 200, r.body);
  const cookie = sessionCookie(r);
  r = await rpc(A, 'account.token_create', { name: 'approver' }, { token: null, headers: { Cookie: cookie, Origin: ORIGIN } });
  assert.equal(r.status, 200, r.body);
  return { token: r.json.result.token, cookie };
}

const call = (srv, token, method, params) => rpc(srv, method, params, { token });
const noSecret = (text) => {
  assert.ok(!text.includes(SENTRY_TOKEN), 'no Sentry credential in: ' + text.slice(0, 300));
  assert.ok(!text.includes(LINEAR_TOKEN), 'no Linear credential in: ' + text.slice(0, 300));
};

// Waits on a socket for a notification of method about invocation id.
async function note(ws, method, id, ms = 5000) {
  const t0 = performance.now();
  for (;;) {
    const left = ms - (performance.now() - t0);
    if (left <= 0) assert.fail(`no ${method} for ${id}`);
    const m = await ws.next(left);
    if (m.method === method && m.params?.invocation_id === id) return m.params;
  }
}

let admin, owner, member;

// ---- discovery -----------------------------------------------------------------------

test('actions.available: the agent session\'s integrations with risks and schemas', async () => {
  const ag = await newAgent(A, { integrations: ['sentry', 'github'] });
  const r = await call(A, ag.token, 'actions.available', {});
  assert.equal(r.status, 200, r.body);
  const ints = r.json.result.integrations;
  assert.deepEqual(ints.map((i) => i.integration), ['sentry'], 'only integrations with an adapter');
  const acts = Object.fromEntries(ints[0].actions.map((a) => [a.action, a]));
  assert.deepEqual(Object.keys(acts).sort(), ['delete_issue', 'get_event', 'get_issue', 'list_issue_events', 'list_issues', 'update_issue']);
  assert.equal(acts.get_issue.risk, 'read');
  assert.equal(acts.update_issue.risk, 'write');
  assert.equal(acts.delete_issue.risk, 'danger');
  assert.deepEqual(acts.get_issue.params.required, ['issue_id']);
  // Not for people.
  const p = await call(A, admin.token, 'actions.available', {});
  assert.equal(p.json.error.data.reason, 'forbidden', p.body);
});

// ---- reads ------------------------------------------------------------------------------

test('sentry reads run at once against the upstream with the injected credential', async () => {
  const ag = await newAgent();
  const cases = [
    ['list_issues', { organization_slug: 'acme-co', project_slug: 'web', query: 'is:unresolved a&b' }, 'GET', '/sentry/projects/acme-co/web/issues/', { query: 'is:unresolved a&b' }],
    ['get_issue', { issue_id: '101' }, 'GET', '/sentry/issues/101/', {}],
    ['list_issue_events', { issue_id: '101', full: true }, 'GET', '/sentry/issues/101/events/', { full: 'true' }],
    ['get_event', { issue_id: '101', event_id: 'ev2' }, 'GET', '/sentry/issues/101/events/ev2/', {}],
  ];
  for (const [action, params, method, path, query] of cases) {
    const before = up.requests.length;
    const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action, params });
    assert.equal(r.status, 200, r.body);
    const inv = r.json.result;
    assert.equal(inv.status, 'completed', r.body);
    assert.equal(inv.upstream_status, 200);
    assert.match(inv.invocation_id, /^[0-9a-f]{32}$/);
    noSecret(r.body);
    const seen = up.requests.slice(before);
    assert.equal(seen.length, 1, `${action}: one upstream request`);
    assert.equal(seen[0].method, method);
    assert.equal(seen[0].path, path);
    assert.deepEqual(seen[0].query, query);
    assert.equal(seen[0].authorization, `Bearer ${SENTRY_TOKEN}`);
  }
  const last = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'get_event', params: { issue_id: '7', event_id: 'e9' } });
  assert.deepEqual(last.json.result.result, { eventID: 'e9', groupID: '7', message: 'the event' });
});

test('linear reads send the GraphQL document and variables', async () => {
  const ag = await newAgent();
  let before = up.requests.length;
  let r = await call(A, ag.token, 'actions.invoke', { integration: 'linear', action: 'list_issues', params: { team_id: 'team-1', first: 5 } });
  assert.equal(r.json.result?.status, 'completed', r.body);
  let seen = up.requests.slice(before);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].method, 'POST');
  assert.equal(seen[0].authorization, LINEAR_TOKEN);
  assert.match(seen[0].graphql.query, /^query ListIssues\(/);
  assert.deepEqual(seen[0].graphql.variables, { first: 5, filter: { team: { id: { eq: 'team-1' } } } });
  assert.equal(r.json.result.result.issues.nodes[0].team, 'team-1');

  before = up.requests.length;
  r = await call(A, ag.token, 'actions.invoke', { integration: 'linear', action: 'get_issue', params: { issue_id: 'lin-7' } });
  assert.equal(r.json.result.status, 'completed', r.body);
  assert.equal(r.json.result.result.issue.id, 'lin-7');
  seen = up.requests.slice(before);
  assert.match(seen[0].graphql.query, /^query GetIssue\(/);
  assert.deepEqual(seen[0].graphql.variables, { id: 'lin-7' });

  // A GraphQL error is a failed invocation.
  r = await call(A, ag.token, 'actions.invoke', { integration: 'linear', action: 'get_issue', params: { issue_id: 'missing' } });
  assert.equal(r.json.result.status, 'failed', r.body);
  assert.match(r.json.result.error, /Entity not found/);
});

test('invoke refuses what the agent may not do, with precise errors', async () => {
  const ag = await newAgent(A, { integrations: ['sentry'] });
  let r = await call(A, ag.token, 'actions.invoke', { integration: 'linear', action: 'get_issue', params: { issue_id: 'x' } });
  assert.equal(r.json.error.data.reason, 'forbidden', r.body);
  r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'nope', params: {} });
  assert.equal(r.json.error.code, -32602);
  assert.equal(r.json.error.data.pointer, '/action');
  r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: { issue_id: 'a/b' } });
  assert.equal(r.json.error.code, -32602, r.body);
  assert.equal(r.json.error.data.pointer, '/params/issue_id');
  assert.equal(r.json.error.data.keyword, 'pattern');
  r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: {} });
  assert.equal(r.json.error.data.pointer, '/params');
  assert.equal(r.json.error.data.keyword, 'required');
  // People do not invoke.
  r = await call(A, admin.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: { issue_id: '1' } });
  assert.equal(r.json.error.data.reason, 'forbidden', r.body);
});

test('danger is stored denied and answered denied', async () => {
  const ag = await newAgent();
  const before = up.requests.length;
  const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'delete_issue', params: { issue_id: '101' } });
  assert.equal(r.json.error.data.reason, 'denied', r.body);
  const id = r.json.error.data.invocation_id;
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.equal(up.requests.length, before, 'nothing reached the upstream');
  const g = await call(A, admin.token, 'invocations.get', { invocation_id: id });
  assert.equal(g.json.result.status, 'denied');
  assert.equal(g.json.result.risk, 'danger');
});
