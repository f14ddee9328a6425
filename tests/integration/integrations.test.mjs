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
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  startServer, startPostgres, connect, rpc, sessionCookie, within, sleep, ACTIOND, TEST_MASTER_KEY,
} from './lib.mjs';
import { startFakeUpstreams } from './fake_upstreams.mjs';

const SENTRY_TOKEN = 'sntrys_' + randomBytes(18).toString('hex');
const LINEAR_TOKEN = 'lin_api_' + randomBytes(18).toString('hex');
const ORIGIN = 'http://app.test';
const KEYS = {
  admin: { org: 'acme', role: 'admin' }, boss: { org: 'acme', role: 'owner' }, other: { org: 'rival', role: 'admin' },
  // An org whose Sentry credential is an OAuth2 client (the OAuth2 tests).
  oa: { org: 'oauthco', role: 'admin' },
};

let pg, A, B, up;

function settings(extra = []) {
  return [
    '-s', `module.integrations.sentry.base_url=${up.sentryUrl}`,
    '-s', `module.integrations.linear.base_url=${up.linearUrl}`,
    '-s', 'module.integrations.sentry.timeout_ms=3000',
    // Waiters look at the database only every 4 s: what ended elsewhere must reach them as a message.
    '-s', 'module.integrations.wait_poll_ms=4000',
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
  // The credentials never reach the log, nor do OAuth2 secrets and tokens.
  for (const s of [A, B]) {
    assert.ok(!s.log().includes(SENTRY_TOKEN) && !s.log().includes(LINEAR_TOKEN), 'no credential in the log');
    for (const t of up.oauth.issued) assert.ok(!s.log().includes(t), 'no OAuth2 secret or token in the log');
  }
});

// ---- helpers ---------------------------------------------------------------------

let seq = 0;
let ipSeq = 1;
const freshIp = () => `127.0.${40 + Math.floor(ipSeq / 250)}.${(ipSeq++ % 250) + 1}`;

async function newAgent(srv = A, { token = srv.tokens.admin, integrations = ['sentry', 'linear'] } = {}) {
  const r = await rpc(srv, 'admin.agent_session_create', { name: `agent-${++seq}`, integrations }, { token });
  assert.equal(r.status, 200, r.body);
  // Usable on both instances before the test goes on.
  for (const s of [A, B]) await usable(s, r.json.result.token);
  return r.json.result;
}

// Waits until token authenticates on srv (new credentials cross instances by NOTIFY).
async function usable(srv, token) {
  for (let i = 0; i < 200; i++) {
    const r = await rpc(srv, 'heartbeat', {}, { token });
    if (r.status === 200) return;
    await sleep(10);
  }
  assert.fail('a new credential did not become usable');
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
  for (const s of [A, B]) await usable(s, r.json.result.token);
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
  // The credential of each integration works as far as actiond knows.
  assert.equal(ints[0].credential_status, 'ok');
  assert.equal(ints[0].credential_reason, undefined);
  // Admins and owners see every integration and its credential; members do not.
  const p = await call(A, admin.token, 'actions.available', {});
  assert.equal(p.status, 200, p.body);
  assert.deepEqual(p.json.result.integrations.map((i) => [i.integration, i.credential_status]), [['sentry', 'ok'], ['linear', 'ok']]);
  assert.equal((await call(A, member.token, 'actions.available', {})).json.error.data.reason, 'forbidden');
  // An integration without a credential is not usable.
  const q = await call(A, A.tokens.oa, 'actions.available', {});
  const lin = q.json.result.integrations.find((i) => i.integration === 'linear');
  assert.equal(lin.credential_status, 'broken', q.body);
  assert.match(lin.credential_reason, /no credential is set/);
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

// ---- approvals ---------------------------------------------------------------------------

test('a write waits (202), admins hear of it at once, an approval runs it once', async () => {
  const ag = await newAgent();
  const adminWs = await connect(A, { token: admin.token });
  const ownerWs = await connect(B, { token: owner.token });
  const memberWs = await connect(A, { token: member.token });
  const agentWs = await connect(A, { token: ag.token });
  const other = await newAgent();
  const otherWs = await connect(A, { token: other.token });
  try {
    const before = up.requests.length;
    // Over HTTP the pending answer is a 202.
    const t0 = performance.now();
    const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'update_issue', params: { issue_id: '555', status: 'resolved', assigned_to: 'kim' } });
    assert.equal(r.status, 202, r.body);
    const { invocation_id: id, status, deadline } = r.json.result;
    assert.equal(status, 'pending');
    const left = Date.parse(deadline) - Date.now();
    assert.ok(left > 240000 && left <= 301000, `deadline 5 min ahead (${left} ms)`);
    const req = await note(adminWs, 'approval_requested', id);
    const latency = performance.now() - t0;
    console.log(`# approval_requested reached the admin ${latency.toFixed(1)} ms after the invoke was sent`);
    assert.ok(latency < 2000, `approval_requested within 2 s (took ${latency.toFixed(1)} ms)`);
    assert.equal(req.integration, 'sentry');
    assert.equal(req.action, 'update_issue');
    assert.equal(req.risk, 'write');
    assert.deepEqual(req.params, { issue_id: '555', status: 'resolved', assigned_to: 'kim' });
    assert.equal(req.agent_session_id, ag.agent_session_id);
    // The other instance's owner hears of it too; members and agents do not.
    await note(ownerWs, 'approval_requested', id);
    assert.ok(await memberWs.silent(200), 'members are not asked');
    assert.equal(up.requests.length, before, 'nothing ran yet');

    const a = await adminWs.call('invocations.approve', { invocation_id: id, comment: 'ship it' });
    assert.equal(a.result?.status, 'completed', JSON.stringify(a));
    assert.equal(a.result.decided_by.split(':')[0], 'api_token');
    assert.equal(a.result.comment, 'ship it');
    assert.deepEqual(a.result.result, { id: '555', title: 'Issue 555', status: 'resolved', assignedTo: 'kim' });
    const seen = up.requests.slice(before);
    assert.equal(seen.length, 1, 'exactly one upstream call');
    assert.equal(seen[0].method, 'PUT');
    assert.equal(seen[0].path, '/sentry/issues/555/');
    assert.deepEqual(JSON.parse(seen[0].body), { status: 'resolved', assignedTo: 'kim' });
    assert.equal(seen[0].authorization, `Bearer ${SENTRY_TOKEN}`);
    // Both the admin and the invoking agent hear approval_resolved, then invocation_completed.
    for (const ws of [adminWs, agentWs]) {
      const res = await note(ws, 'approval_resolved', id);
      assert.equal(res.status, 'approved');
      const done = await note(ws, 'invocation_completed', id);
      assert.equal(done.status, 'completed');
      noSecret(JSON.stringify(done));
    }
    assert.ok(await otherWs.silent(200), 'another agent session hears nothing');
    // A second decision is a conflict.
    let again = await adminWs.call('invocations.approve', { invocation_id: id });
    assert.equal(again.error?.data?.reason, 'conflict', JSON.stringify(again));
    again = await call(A, owner.token, 'invocations.deny', { invocation_id: id, reason: 'late' });
    assert.equal(again.json.error?.data?.reason, 'conflict', again.body);
  } finally {
    for (const ws of [adminWs, ownerWs, memberWs, agentWs, otherWs]) await ws.close();
  }
});

test('linear writes run after approval with their GraphQL mutations', async () => {
  const ag = await newAgent();
  const cases = [
    ['create_issue', { team_id: 'team-1', title: 'Crash on save', priority: 2 }, /^mutation CreateIssue\(/, { input: { teamId: 'team-1', title: 'Crash on save', priority: 2 } }],
    ['update_issue', { issue_id: 'lin-7', title: 'Renamed' }, /^mutation UpdateIssue\(/, { id: 'lin-7', input: { title: 'Renamed' } }],
    ['add_comment', { issue_id: 'lin-7', body: 'Looking into it' }, /^mutation AddComment\(/, { input: { issueId: 'lin-7', body: 'Looking into it' } }],
  ];
  for (const [action, params, doc, variables] of cases) {
    const r = await call(A, ag.token, 'actions.invoke', { integration: 'linear', action, params });
    assert.equal(r.status, 202, r.body);
    const before = up.requests.length;
    const a = await call(A, admin.token, 'invocations.approve', { invocation_id: r.json.result.invocation_id });
    assert.equal(a.json.result?.status, 'completed', a.body);
    const seen = up.requests.slice(before);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].authorization, LINEAR_TOKEN);
    assert.match(seen[0].graphql.query, doc);
    assert.deepEqual(seen[0].graphql.variables, variables);
  }
});

test('deny records the reason; the agent\'s HTTP wait answers with it', async () => {
  const ag = await newAgent();
  const agentWs = await connect(B, { token: ag.token });
  try {
    const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'update_issue', params: { issue_id: '556', status: 'ignored' } });
    const id = r.json.result.invocation_id;
    const waiting = call(B, ag.token, 'invocations.wait', { invocation_id: id, timeout_ms: 20000 });
    await sleep(300);
    let d = await call(A, admin.token, 'invocations.deny', { invocation_id: id });
    assert.equal(d.json.error?.code, -32602, 'deny needs a reason');
    d = await call(A, admin.token, 'invocations.deny', { invocation_id: id, reason: 'not this week' });
    assert.equal(d.json.result?.status, 'denied', d.body);
    assert.equal(d.json.result.reason, 'not this week');
    const w = await within(waiting, 5000, 'wait');
    assert.equal(w.json.result.status, 'denied', w.body);
    assert.equal(w.json.result.reason, 'not this week');
    const res = await note(agentWs, 'approval_resolved', id);
    assert.equal(res.status, 'denied');
    assert.equal(res.reason, 'not this week');
  } finally {
    await agentWs.close();
  }
});

test('invocations.wait over HTTP answers on completion, or at its timeout', async () => {
  const ag = await newAgent();
  const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'update_issue', params: { issue_id: '557', status: 'resolved' } });
  const id = r.json.result.invocation_id;
  const t0 = performance.now();
  const timedOut = await call(A, ag.token, 'invocations.wait', { invocation_id: id, timeout_ms: 300 });
  assert.equal(timedOut.json.result.status, 'pending', timedOut.body);
  assert.ok(performance.now() - t0 >= 250, 'waited its timeout');
  // Waited on B, approved on A: B learns of it by itself.
  const waiting = call(B, ag.token, 'invocations.wait', { invocation_id: id, timeout_ms: 20000 });
  await sleep(300);
  const t1 = performance.now();
  const a = await call(A, admin.token, 'invocations.approve', { invocation_id: id });
  assert.equal(a.json.result.status, 'completed', a.body);
  const w = await within(waiting, 5000, 'wait');
  const gap = performance.now() - t1;
  console.log(`# a wait on the other instance answered ${gap.toFixed(0)} ms after the approval was sent`);
  // B polls only every 4 s in this test (wait_poll_ms): answering sooner
  // means A's message about the outcome reached it.
  assert.ok(gap < 2000, `the other instance was told, not left to its poll (${gap.toFixed(0)} ms)`);
  assert.equal(w.json.result.status, 'completed', w.body);
  assert.equal(w.json.result.upstream_status, 200);
  // Limits.
  const bad = await call(A, ag.token, 'invocations.wait', { invocation_id: id, timeout_ms: 60001 });
  assert.equal(bad.json.error.code, -32602);
  const unknown = await call(A, ag.token, 'invocations.wait', { invocation_id: '0'.repeat(32), timeout_ms: 10 });
  assert.equal(unknown.json.error.data.reason, 'not_found');
});

test('expiry: an approval past the deadline is expired, and the sweeper expires the rest', async () => {
  const ag = await newAgent();
  const adminWs = await connect(B, { token: admin.token });
  try {
    // B gives linear writes 1.5 s.
    const r1 = await call(B, ag.token, 'actions.invoke', { integration: 'linear', action: 'add_comment', params: { issue_id: 'x1', body: 'one' } });
    const r2 = await call(B, ag.token, 'actions.invoke', { integration: 'linear', action: 'add_comment', params: { issue_id: 'x2', body: 'two' } });
    assert.equal(r1.status, 202, r1.body);
    const [id1, id2] = [r1.json.result.invocation_id, r2.json.result.invocation_id];
    const left = Date.parse(r1.json.result.deadline) - Date.now();
    assert.ok(left < 3000, `short deadline (${left} ms)`);
    await sleep(1700);
    const before = up.requests.length;
    const a = await call(A, admin.token, 'invocations.approve', { invocation_id: id1 });
    assert.equal(a.json.error?.data?.reason, 'expired', a.body);
    const res = await note(adminWs, 'approval_resolved', id2, 5000);
    assert.equal(res.status, 'expired');
    const g = await call(A, admin.token, 'invocations.get', { invocation_id: id2 });
    assert.equal(g.json.result.status, 'expired');
    const d = await call(A, admin.token, 'invocations.deny', { invocation_id: id2, reason: 'too late' });
    assert.equal(d.json.error?.data?.reason, 'expired', d.body);
    assert.equal(up.requests.length, before, 'nothing ran');
  } finally {
    await adminWs.close();
  }
});

test('revoking an agent session expires its pending invocations', async () => {
  const ag = await newAgent();
  const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'update_issue', params: { issue_id: '558', status: 'resolved' } });
  const id = r.json.result.invocation_id;
  const rv = await rpc(A, 'admin.agent_session_revoke', { agent_session_id: ag.agent_session_id });
  assert.equal(rv.status, 200, rv.body);
  const a = await call(A, admin.token, 'invocations.approve', { invocation_id: id });
  assert.equal(a.json.error?.data?.reason, 'expired', a.body);
  const g = await call(A, admin.token, 'invocations.get', { invocation_id: id });
  assert.equal(g.json.result.status, 'expired');
  assert.equal(g.json.result.reason, 'agent session revoked');
});

test('refused: another org, an agent, a member, an unknown id', async () => {
  const ag = await newAgent();
  const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'update_issue', params: { issue_id: '559', status: 'resolved' } });
  const id = r.json.result.invocation_id;
  const rival = await person('admin', 'other');
  let x = await call(A, rival.token, 'invocations.approve', { invocation_id: id });
  assert.equal(x.json.error?.data?.reason, 'not_found', x.body);
  x = await call(A, rival.token, 'invocations.get', { invocation_id: id });
  assert.equal(x.json.error?.data?.reason, 'not_found', x.body);
  x = await call(A, ag.token, 'invocations.approve', { invocation_id: id });
  assert.equal(x.json.error?.data?.reason, 'forbidden', x.body);
  x = await call(A, member.token, 'invocations.approve', { invocation_id: id });
  assert.equal(x.json.error?.data?.reason, 'forbidden', x.body);
  x = await call(A, member.token, 'invocations.deny', { invocation_id: id, reason: 'no' });
  assert.equal(x.json.error?.data?.reason, 'forbidden', x.body);
  x = await call(A, admin.token, 'invocations.approve', { invocation_id: randomBytes(16).toString('hex') });
  assert.equal(x.json.error?.data?.reason, 'not_found', x.body);
  x = await call(A, admin.token, 'invocations.approve', { invocation_id: '42' });
  assert.equal(x.json.error?.code, -32602, x.body);
  const g = await call(A, admin.token, 'invocations.get', { invocation_id: id });
  assert.equal(g.json.result.status, 'pending', 'still pending after the refusals');
});

test('50 concurrent approve/deny calls over two instances: one winner, one upstream call', async () => {
  const ag = await newAgent();
  const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'update_issue', params: { issue_id: 'race1', status: 'resolved' } });
  const id = r.json.result.invocation_id;
  const before = up.matching((q) => q.path === '/sentry/issues/race1/').length;
  const calls = [];
  for (let i = 0; i < 50; i++) {
    const srv = i % 2 ? B : A;
    calls.push(i % 3 === 0
      ? call(srv, owner.token, 'invocations.deny', { invocation_id: id, reason: `deny ${i}` })
      : call(srv, admin.token, 'invocations.approve', { invocation_id: id }));
  }
  const out = await Promise.all(calls);
  const wins = out.filter((x) => x.json.result);
  const conflicts = out.filter((x) => x.json.error?.data?.reason === 'conflict');
  assert.equal(wins.length, 1, 'exactly one winner: ' + out.map((x) => x.json.error?.data?.reason ?? x.json.result?.status).join(','));
  assert.equal(conflicts.length, 49);
  const ran = up.matching((q) => q.path === '/sentry/issues/race1/').length - before;
  assert.equal(ran, wins[0].json.result.status === 'completed' ? 1 : 0, 'the upstream saw the approved call exactly once');
  await sleep(1500); // the chainer links what was just written
  const lines = (await exportAll()).filter((l) => l.invocation_id === id);
  assert.equal(lines.filter((l) => l.event === 'approved' || l.event === 'denied').length, 1, 'one decision event');
});

test('at most 10 pending per agent session', async () => {
  const ag = await newAgent();
  const out = await Promise.all(Array.from({ length: 12 }, (_, i) => call(i % 2 ? A : B, ag.token, 'actions.invoke', { integration: 'sentry', action: 'update_issue', params: { issue_id: `lim${i}`, status: 'resolved' } })));
  assert.equal(out.filter((x) => x.status === 202).length, 10, out.map((x) => x.status).join(','));
  const refused = out.filter((x) => x.json.error);
  assert.equal(refused.length, 2);
  for (const x of refused) assert.equal(x.json.error.data.reason, 'rate_limited', x.body);
  // Reads still run.
  const rd = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: { issue_id: '1' } });
  assert.equal(rd.json.result.status, 'completed', rd.body);
});

// All of this org's chain, as parsed lines.
// `actiond audit verify ARGS` against the test database: {status, stdout, stderr}.
function auditCli(args) {
  const r = spawnSync(ACTIOND, ['-c', join(A.dir, 'actiond.conf'), 'audit', 'verify', ...args], {
    env: { ...process.env, ACTIOND_MASTER_KEY: TEST_MASTER_KEY }, encoding: 'utf8', timeout: 30000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function exportAll(token = A.tokens.admin) {
  const lines = [];
  let after = 0;
  for (;;) {
    const r = await call(A, token, 'audit.export', { after, limit: 1000 });
    assert.equal(r.status, 200, r.body);
    for (const l of r.json.result.lines.split('\n')) if (l) lines.push(JSON.parse(l));
    if (r.json.result.next_after === null) return lines;
    after = r.json.result.next_after;
  }
}

// ---- idempotency ----------------------------------------------------------------------------

test('idempotency keys: the stored outcome, conflict on other params, in_progress while running', async () => {
  const ag = await newAgent();
  const inv = (params, key, srv = A) => call(srv, ag.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params, idempotency_key: key });
  let before = up.matching((q) => q.path === '/sentry/issues/idem1/').length;
  const first = await inv({ issue_id: 'idem1' }, 'k-1');
  assert.equal(first.json.result.status, 'completed', first.body);
  const again = await inv({ issue_id: 'idem1' }, 'k-1', B);
  assert.equal(again.json.result.invocation_id, first.json.result.invocation_id);
  assert.deepEqual(again.json.result.result, first.json.result.result);
  assert.equal(up.matching((q) => q.path === '/sentry/issues/idem1/').length - before, 1, 'ran once');
  const other = await inv({ issue_id: 'idem2' }, 'k-1');
  assert.equal(other.json.error?.data?.reason, 'conflict', other.body);
  assert.equal(other.json.error.data.detail, 'params_mismatch');
  // Another agent session has keys of its own.
  const ag2 = await newAgent();
  const own = await call(A, ag2.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: { issue_id: 'idem2' }, idempotency_key: 'k-1' });
  assert.equal(own.json.result.status, 'completed', own.body);
  // While the first still runs.
  before = up.matching((q) => q.path === '/sentry/issues/slow/').length;
  const slow = inv({ issue_id: 'slow' }, 'k-slow');
  await sleep(400);
  const during = await inv({ issue_id: 'slow' }, 'k-slow', B);
  assert.equal(during.json.error?.data?.reason, 'conflict', during.body);
  assert.equal(during.json.error.data.detail, 'in_progress');
  assert.equal((await slow).json.result.status, 'completed');
  const after = await inv({ issue_id: 'slow' }, 'k-slow');
  assert.equal(after.json.result.status, 'completed');
  assert.equal(up.matching((q) => q.path === '/sentry/issues/slow/').length - before, 1, 'ran once');
  // A pending write answers pending again, without a second invocation.
  const w1 = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'update_issue', params: { issue_id: 'idem3', status: 'resolved' }, idempotency_key: 'k-w' });
  const w2 = await call(B, ag.token, 'actions.invoke', { integration: 'sentry', action: 'update_issue', params: { issue_id: 'idem3', status: 'resolved' }, idempotency_key: 'k-w' });
  assert.equal(w2.status, 202);
  assert.equal(w2.json.result.invocation_id, w1.json.result.invocation_id);
});

// ---- upstream misbehaviour ---------------------------------------------------------------------

test('misbehaving upstreams end in clean failed invocations with nothing leaked', async () => {
  const ag = await newAgent();
  const run = async (issue) => {
    const t0 = performance.now();
    const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: { issue_id: issue } });
    assert.equal(r.status, 200, r.body);
    noSecret(r.body);
    const g = await call(A, admin.token, 'invocations.get', { invocation_id: r.json.result.invocation_id });
    noSecret(g.body);
    return { inv: r.json.result, ms: performance.now() - t0 };
  };
  // An upstream that echoes the credential: completed, redacted.
  let { inv } = await run('echo');
  assert.equal(inv.status, 'completed');
  assert.equal(inv.result.seen_token, '[redacted]');
  assert.equal(inv.result.nested.deep[0].note, 'Bearer [redacted] was used');
  assert.equal(inv.result.token, '[redacted]');
  assert.equal(inv.result.Password, '[redacted]');
  assert.equal(inv.result.api_KEY, '[redacted]');
  assert.equal(inv.result.cookie, '[redacted]');
  // 500 with the credential in the body.
  ({ inv } = await run('e500'));
  assert.equal(inv.status, 'failed');
  assert.equal(inv.upstream_status, 500);
  assert.match(inv.error, /HTTP 500/);
  assert.match(inv.error, /\[redacted\]/);
  // Invalid JSON.
  ({ inv } = await run('badjson'));
  assert.equal(inv.status, 'failed');
  assert.equal(inv.upstream_status, 200);
  assert.match(inv.error, /invalid JSON/);
  // 5 MB.
  ({ inv } = await run('huge'));
  assert.equal(inv.status, 'failed');
  assert.match(inv.error, /larger than/);
  // Retry-After far beyond the timeout: failed at once, status kept.
  let ms;
  ({ inv, ms } = await run('retry'));
  assert.equal(inv.status, 'failed');
  assert.equal(inv.upstream_status, 429);
  assert.match(inv.error, /retry after 3000 ms/);
  assert.ok(ms < 2500, `did not wait (${ms.toFixed(0)} ms)`);
  // Retry-After: 1 fits the timeout: retried once.
  ({ inv } = await run('retry1'));
  assert.equal(inv.status, 'completed', JSON.stringify(inv));
  assert.equal(inv.result.title, 'after retry');
  // A hanging upstream: failed at the (configured) 3 s timeout.
  ({ inv, ms } = await run('hang'));
  assert.equal(inv.status, 'failed');
  assert.match(inv.error, /did not answer within 3000 ms/);
  assert.ok(ms >= 2900 && ms < 10000, `timed out after ${ms.toFixed(0)} ms`);
  // A large valid result is stored truncated, still valid JSON.
  ({ inv } = await run('big'));
  assert.equal(inv.status, 'completed');
  assert.equal(inv.result.truncated, true);
  assert.ok(JSON.stringify(inv.result).length <= 10240 + 64);
  assert.ok(inv.result.bytes > 10240);
  // The wrong credential: the upstream's 401 is a failed invocation.
  const rival = await newAgent(A, { token: A.tokens.other, integrations: ['sentry'] });
  const r = await call(A, rival.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: { issue_id: '1' } });
  assert.equal(r.json.result.status, 'failed', r.body);
  assert.equal(r.json.result.upstream_status, 401);
  assert.ok(!r.body.includes('rival-'), 'the rival credential is not shown');
});

test('invocations.list: filters, redacted params, keyset pages', async () => {
  const ag = await newAgent();
  const ids = [];
  for (let i = 0; i < 5; i++) {
    const r = await call(A, ag.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: { issue_id: `l${i}` } });
    ids.push(r.json.result.invocation_id);
  }
  const w = await call(A, ag.token, 'actions.invoke', { integration: 'linear', action: 'add_comment', params: { issue_id: 'l9', body: 'hi' } });
  let r = await call(A, admin.token, 'invocations.list', { agent_session_id: ag.agent_session_id, limit: 2 });
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json.result.invocations.map((x) => x.invocation_id), [w.json.result.invocation_id, ids[4]]);
  r = await call(A, admin.token, 'invocations.list', { agent_session_id: ag.agent_session_id, limit: 2, cursor: r.json.result.next_cursor });
  assert.deepEqual(r.json.result.invocations.map((x) => x.invocation_id), [ids[3], ids[2]]);
  r = await call(A, admin.token, 'invocations.list', { agent_session_id: ag.agent_session_id, status: 'pending' });
  assert.deepEqual(r.json.result.invocations.map((x) => x.invocation_id), [w.json.result.invocation_id]);
  assert.equal(r.json.result.next_cursor, null);
  r = await call(A, admin.token, 'invocations.list', { agent_session_id: ag.agent_session_id, integration: 'sentry', limit: 200 });
  assert.equal(r.json.result.invocations.length, 5);
  // An agent sees its own session's only.
  const other = await newAgent();
  r = await call(A, other.token, 'invocations.list', {});
  assert.equal(r.json.result.invocations.length, 0);
  r = await call(A, other.token, 'invocations.get', { invocation_id: ids[0] });
  assert.equal(r.json.error.data.reason, 'not_found');
  // Another org sees none of them.
  r = await call(A, A.tokens.other, 'invocations.list', { agent_session_id: ag.agent_session_id });
  assert.equal(r.json.result.invocations.length, 0);
  r = await call(A, admin.token, 'invocations.list', { cursor: 'f'.repeat(32) });
  assert.equal(r.json.error.code, -32602);
});

// ---- OAuth2 refresh-token credentials -------------------------------------------------------

// The org oauthco's Sentry credential is an OAuth2 client of the fake token
// endpoint; the fake Sentry takes the access tokens it issues.
let oaAdmin, oaClient;
const oaSeen = []; // every body and notification an agent of oauthco got

async function oaSetCredential(client, extra = {}) {
  const r = await rpc(A, 'admin.credential_set', { integration: 'sentry', secret: { ...client, token_url: up.oauth.url, ...extra } }, { token: A.tokens.oa });
  assert.equal(r.status, 200, r.body);
}

async function oaInvoke(srv, token, issue = '101') {
  const r = await call(srv, token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: { issue_id: issue } });
  oaSeen.push(r.body);
  return r;
}

// The stored access token, expired behind actiond's back (and at the server).
function oaExpire() {
  pg.psql("UPDATE integration_oauth SET expires_at = now() - interval '1 second' WHERE integration = 'sentry' AND org_id = (SELECT id FROM orgs WHERE slug = 'oauthco')");
  up.oauth.revokeAccess();
}

const oaRow = (col) => pg.psql(`SELECT ${col} FROM integration_oauth WHERE integration = 'sentry' AND org_id = (SELECT id FROM orgs WHERE slug = 'oauthco')`);

test('OAuth2: the first call gets an access token, later ones use the stored one', async () => {
  oaAdmin = await person('admin', 'oa');
  oaClient = up.oauth.client();
  await oaSetCredential(oaClient);
  const ag = await newAgent(A, { token: A.tokens.oa, integrations: ['sentry'] });
  const avail = await call(A, ag.token, 'actions.available', {});
  oaSeen.push(avail.body);
  assert.equal(avail.json.result.integrations[0].credential_status, 'ok', avail.body);
  const before = up.oauth.refreshes;
  let r = await oaInvoke(A, ag.token);
  assert.equal(r.json.result?.status, 'completed', r.body);
  assert.equal(up.oauth.refreshes - before, 1, 'one refresh');
  const tr = up.oauth.requests.at(-1);
  assert.equal(tr.form.grant_type, 'refresh_token');
  assert.equal(tr.form.refresh_token, oaClient.refresh_token);
  assert.equal(tr.form.client_id, oaClient.client_id);
  assert.equal(tr.clientAuth, 'post');
  const upstream = up.matching((q) => q.path === '/sentry/issues/101/').at(-1);
  assert.equal(upstream.authorization, `Bearer ${up.oauth.issued.at(-1)}`, 'the new access token is injected');
  // Stored sealed: the database holds no token in the clear.
  assert.equal(oaRow('refreshes'), '1');
  const dump = pg.dump();
  for (const t of up.oauth.issued) assert.ok(!dump.includes(t), 'no token in the clear in the database');
  // Valid for long enough: no second refresh, on either instance.
  for (const srv of [A, B]) {
    r = await oaInvoke(srv, ag.token);
    assert.equal(r.json.result?.status, 'completed', r.body);
  }
  assert.equal(up.oauth.refreshes - before, 1, 'the stored token is used');
});

test('OAuth2: an expired access token is refreshed once for 20 concurrent calls over two instances', async () => {
  const agA = await newAgent(A, { token: A.tokens.oa, integrations: ['sentry'] });
  const agB = await newAgent(B, { token: B.tokens.oa, integrations: ['sentry'] });
  oaExpire();
  const attempts = up.oauth.attempts, refreshes = up.oauth.refreshes;
  const version = Number(oaRow('version'));
  // Slow enough that every call starts while the refresh is under way.
  up.oauth.delayMs = 300;
  up.oauth.rotate = true;
  try {
    const calls = [];
    for (let i = 0; i < 10; i++) calls.push(oaInvoke(A, agA.token, `c${i}`), oaInvoke(B, agB.token, `d${i}`));
    const rs = await Promise.all(calls);
    for (const r of rs) assert.equal(r.json.result?.status, 'completed', r.body);
  } finally {
    up.oauth.delayMs = 0;
    up.oauth.rotate = false;
  }
  assert.equal(up.oauth.attempts - attempts, 1, 'one token request for 20 calls on two instances');
  assert.equal(up.oauth.refreshes - refreshes, 1, 'exactly one refresh');
  // Every call sent the one new token.
  const token = up.oauth.issued.at(-2); // the access token; the rotated refresh token is last
  const sent = up.matching((q) => /^\/sentry\/issues\/[cd]\d\/$/.test(q.path));
  assert.equal(sent.length, 20);
  for (const q of sent) assert.equal(q.authorization, `Bearer ${token}`);
  assert.equal(Number(oaRow('version')), version + 1, 'one new version');
  assert.equal(oaRow("refresh_sealed IS NOT NULL AND lease_owner IS NULL AND status = 'ok'"), 't', 'the rotated refresh token is kept, the lease released');
  // The rotated refresh token is the one used next.
  const rotated = up.oauth.issued.at(-1);
  oaExpire();
  const r = await oaInvoke(B, agB.token);
  assert.equal(r.json.result?.status, 'completed', r.body);
  assert.equal(up.oauth.requests.at(-1).form.refresh_token, rotated);
});

test('OAuth2: an upstream 401 refreshes once and retries once', async () => {
  const ag = await newAgent(A, { token: A.tokens.oa, integrations: ['sentry'] });
  up.oauth.revokeAccess(); // the stored token still looks valid to actiond
  const refreshes = up.oauth.refreshes;
  const before = up.matching((q) => q.path === '/sentry/issues/r401/').length;
  const r = await oaInvoke(A, ag.token, 'r401');
  assert.equal(r.json.result?.status, 'completed', r.body);
  assert.equal(up.oauth.refreshes - refreshes, 1);
  const sent = up.matching((q) => q.path === '/sentry/issues/r401/').slice(before);
  assert.equal(sent.length, 2, 'refused, then sent once more');
  assert.notEqual(sent[0].authorization, sent[1].authorization);
  // A token the upstream refuses even fresh: one retry, then failed.
  const refreshes2 = up.oauth.refreshes;
  const orig = up.oauth.accepts;
  up.oauth.accepts = () => false;
  try {
    const f = await oaInvoke(A, ag.token, 'r401b');
    assert.equal(f.json.result?.status, 'failed', f.body);
    assert.equal(f.json.result.upstream_status, 401);
  } finally {
    up.oauth.accepts = orig;
  }
  assert.equal(up.oauth.refreshes - refreshes2, 1, 'one refresh, not a loop');
  assert.equal(up.matching((q) => q.path === '/sentry/issues/r401b/').length, 2);
});

test('OAuth2: invalid_grant reads the stored credential again before calling it broken', async () => {
  const ag = await newAgent(A, { token: A.tokens.oa, integrations: ['sentry'] });
  oaExpire();
  // While the refresh is under way an admin sets a new client; the server
  // then refuses the old refresh token.
  for (const t of up.oauth.issued) up.oauth.revokeRefresh(t);
  const fresh = up.oauth.client();
  const attempts = up.oauth.attempts;
  up.oauth.beforeAnswer = async () => {
    up.oauth.beforeAnswer = null;
    await oaSetCredential(fresh, { client_auth: 'basic' });
  };
  const r = await oaInvoke(A, ag.token);
  up.oauth.beforeAnswer = null;
  assert.equal(r.json.result?.status, 'completed', r.body);
  assert.equal(up.oauth.attempts - attempts, 2, 'refused once, then the new credential');
  const [first, second] = up.oauth.requests.slice(-2);
  assert.equal(first.clientAuth, 'post');
  assert.equal(second.clientAuth, 'basic');
  assert.equal(second.form.refresh_token, fresh.refresh_token);
  assert.equal(oaRow('status'), 'ok');
  oaClient = fresh;
});

test('OAuth2: invalid_grant marks the credential broken and tells the org\'s admins', async () => {
  const ag = await newAgent(A, { token: A.tokens.oa, integrations: ['sentry'] });
  const adminWs = await connect(B, { token: oaAdmin.token });
  const agentWs = await connect(A, { token: ag.token });
  const acmeWs = await connect(A, { token: admin.token });
  try {
    oaExpire();
    for (const t of up.oauth.issued) up.oauth.revokeRefresh(t);
    const attempts = up.oauth.attempts;
    const r = await oaInvoke(A, ag.token);
    assert.equal(r.json.result?.status, 'failed', r.body);
    assert.match(r.json.result.error, /credential for sentry is broken.*invalid_grant.*admin\.credential_set/);
    // Read again, the stored credential is the one refused: no second request.
    assert.equal(up.oauth.attempts - attempts, 1, 'one refusal');
    // The admins hear of it (on the other instance), with the reason and no secret.
    let n;
    for (;;) {
      n = await adminWs.next(5000);
      if (n.method === 'integration_credential_broken') break;
    }
    assert.equal(n.params.integration, 'sentry');
    assert.equal(n.params.credential_status, 'broken');
    assert.match(n.params.reason, /invalid_grant: refresh token \[redacted\] is not valid/);
    assert.ok(!JSON.stringify(n).includes(oaClient.refresh_token));
    // Nobody else: not the agent, not another org's admin.
    for (const ws of [agentWs, acmeWs]) {
      for (const m of ws.drain()) assert.notEqual(m.method, 'integration_credential_broken');
      oaSeen.push(...agentWs.drain().map((m) => JSON.stringify(m)));
    }
    // actions.available says so, to the agent and to admins.
    for (const token of [ag.token, A.tokens.oa]) {
      const av = await call(A, token, 'actions.available', {});
      if (token === ag.token) oaSeen.push(av.body);
      const s = av.json.result.integrations.find((i) => i.integration === 'sentry');
      assert.equal(s.credential_status, 'broken', av.body);
      assert.match(s.credential_reason, /invalid_grant/);
    }
    // The audit chain has the event.
    await sleep(300);
    const ev = (await exportAll(A.tokens.oa)).filter((l) => l.event === 'credential_broken');
    assert.equal(ev.length, 1);
    assert.equal(ev[0].actor, 'actiond');
    assert.equal(ev[0].detail.integration, 'sentry');
    assert.equal(ev[0].invocation_id, r.json.result.invocation_id);
    const v = await call(A, A.tokens.oa, 'audit.verify', {});
    assert.equal(v.json.result.ok, true, v.body);
    // Calls fail at once now, without asking the token server.
    const again = await oaInvoke(B, ag.token);
    assert.equal(again.json.result?.status, 'failed', again.body);
    assert.match(again.json.result.error, /broken/);
    assert.equal(up.oauth.attempts - attempts, 1);
    // A new credential mends it.
    oaClient = up.oauth.client();
    await oaSetCredential(oaClient);
    const ok = await oaInvoke(B, ag.token);
    assert.equal(ok.json.result?.status, 'completed', ok.body);
    const av = await call(A, ag.token, 'actions.available', {});
    assert.equal(av.json.result.integrations[0].credential_status, 'ok', av.body);
  } finally {
    await adminWs.close();
    await agentWs.close();
    await acmeWs.close();
  }
});

test('OAuth2: the agent never sees a token or client secret', async () => {
  const ag = await newAgent(A, { token: A.tokens.oa, integrations: ['sentry'] });
  // The upstream echoes the Authorization header it got: redacted.
  const r = await oaInvoke(A, ag.token, 'echoauth');
  assert.equal(r.json.result?.status, 'completed', r.body);
  assert.equal(r.json.result.result.header, 'Bearer [redacted]');
  assert.equal(r.json.result.result.note, 'you sent Bearer [redacted]');
  const list = await call(A, ag.token, 'invocations.list', {});
  oaSeen.push(list.body);
  oaSeen.push(pg.psql("SELECT string_agg(coalesce(result::text, '') || coalesce(error, ''), ' ') FROM invocations"));
  oaSeen.push(pg.psql('SELECT string_agg(detail::text, \' \') FROM invocation_events'));
  oaSeen.push(pg.psql('SELECT string_agg(coalesce(reason, \'\') || coalesce(last_error, \'\'), \' \') FROM integration_oauth'));
  const seen = oaSeen.join('\n');
  assert.ok(up.oauth.issued.length >= 8);
  for (const t of up.oauth.issued) assert.ok(!seen.includes(t), 'no OAuth2 secret or token reaches an agent or a stored text');
});

// ---- the audit chain --------------------------------------------------------------------------

test('audit.verify walks the chain; a changed event is the first broken link', async () => {
  await sleep(1500);
  let v = await call(A, A.tokens.admin, 'audit.verify', {});
  assert.equal(v.status, 200, v.body);
  assert.equal(v.json.result.ok, true, v.body);
  assert.ok(v.json.result.checked > 20, v.body);
  const lines = await exportAll();
  assert.equal(lines.length, v.json.result.checked);
  assert.equal(lines[0].prev_hash, '0'.repeat(64));
  for (let i = 1; i < lines.length; i++) assert.equal(lines[i].prev_hash, lines[i - 1].hash);
  noSecret(JSON.stringify(lines));
  // The rival org has a chain of its own.
  const rv = await call(A, A.tokens.other, 'audit.verify', {});
  assert.ok(rv.json.result.checked < v.json.result.checked);
  // The chain holds other events than invocations' (credential_broken).
  assert.ok(lines.every((l) => typeof l.event === 'string'));
  // Agents and members may not.
  assert.equal((await call(A, member.token, 'audit.verify', {})).json.error.data.reason, 'forbidden');
  // The runtime role cannot change a linked event.
  // The owner can, behind actiond's back: verify names the first broken link.
  const target = lines[5];
  pg.psql(`SET session_replication_role = replica; UPDATE invocation_events SET actor = 'mallory' WHERE seq = ${target.seq} AND hash = '${target.hash}'`);
  v = await call(A, A.tokens.admin, 'audit.verify', {});
  assert.equal(v.json.result.ok, false, v.body);
  assert.deepEqual(v.json.result.broken, { seq: target.seq, reason: 'hash does not match the event' });
  // So does the command line, straight from the database.
  let cli = auditCli([]);
  assert.equal(cli.status, 1, cli.stderr);
  assert.match(cli.stdout, new RegExp(`^acme: broken at seq ${target.seq}: hash does not match the event \\(${target.seq - 1} events linked before it\\)$`, 'm'));
  assert.match(cli.stdout, /^rival: ok \(\d+ events, head [0-9a-f]{64}, \d+ not linked yet\)$/m);
  assert.match(cli.stdout, /^\d+ orgs checked, 1 broken$/m);
  cli = auditCli(['--org', 'rival']);
  assert.equal(cli.status, 0, cli.stdout + cli.stderr);
  assert.match(cli.stdout, /^rival: ok/m);
  assert.doesNotMatch(cli.stdout, /acme/);
  cli = auditCli(['--org', 'acme']);
  assert.equal(cli.status, 1, cli.stdout + cli.stderr);
  cli = auditCli(['--org', 'no-such-org']);
  assert.equal(cli.status, 2);
  assert.match(cli.stderr, /no org no-such-org/);
  pg.psql(`SET session_replication_role = replica; UPDATE invocation_events SET actor = '${target.actor}' WHERE seq = ${target.seq} AND hash = '${target.hash}'`);
  v = await call(A, A.tokens.admin, 'audit.verify', {});
  assert.equal(v.json.result.ok, true, v.body);
  cli = auditCli([]);
  assert.equal(cli.status, 0, cli.stdout + cli.stderr);
  assert.match(cli.stdout, new RegExp(`^acme: ok \\(${v.json.result.checked} events, head ${v.json.result.head}, `, 'm'));
  assert.match(cli.stdout, / 0 broken$/m);
  let refused = false;
  try {
    pg.psql(`UPDATE invocation_events SET actor = 'mallory' WHERE seq = ${target.seq}`);
  } catch { refused = true; }
  assert.ok(refused, 'linked events are append-only');

  // A deleted event breaks the chain where it was.
  const orgOf = pg.psql(`SELECT org_id FROM invocation_events WHERE seq = ${target.seq} AND hash = '${target.hash}'`);
  const saved = pg.psql(`SELECT row_to_json(e) FROM invocation_events e WHERE org_id = ${orgOf} AND seq = ${target.seq}`);
  pg.psql(`SET session_replication_role = replica; DELETE FROM invocation_events WHERE org_id = ${orgOf} AND seq = ${target.seq}`);
  v = await call(A, A.tokens.admin, 'audit.verify', {});
  assert.equal(v.json.result.ok, false, 'a deletion is found: ' + v.body);
  assert.ok([target.seq, target.seq + 1].includes(v.json.result.broken.seq), v.body);
  pg.psql(`SET session_replication_role = replica; INSERT INTO invocation_events OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_record(NULL::invocation_events, '${saved.replace(/'/g, "''")}')`);
  v = await call(A, A.tokens.admin, 'audit.verify', {});
  assert.equal(v.json.result.ok, true, 'restored: ' + v.body);

  // Two events swapped (each keeping the other's place in the chain): found at the first.
  const a = target.seq, b = target.seq + 1;
  const swap = (x, y) => pg.psql(`SET session_replication_role = replica;
    UPDATE invocation_events e SET event = o.event, actor = o.actor, detail = o.detail, at = o.at, invocation_id = o.invocation_id
    FROM invocation_events o WHERE e.org_id = ${orgOf} AND o.org_id = ${orgOf}
    AND ((e.seq = ${x} AND o.seq = ${y}) OR (e.seq = ${y} AND o.seq = ${x}))`);
  swap(a, b);
  v = await call(A, A.tokens.admin, 'audit.verify', {});
  assert.equal(v.json.result.ok, false, 'a reordering is found: ' + v.body);
  assert.equal(v.json.result.broken.seq, a, v.body);
  swap(a, b);
  v = await call(A, A.tokens.admin, 'audit.verify', {});
  assert.equal(v.json.result.ok, true, 'swapped back: ' + v.body);
});

test('an invocation left executing by a process that died is failed as interrupted, never re-run', async () => {
  const C = await startServer({ db: pg.conninfo, keys: KEYS, args: settings(['-s', 'module.integrations.sentry.timeout_ms=30000']) });
  let killed = false;
  try {
    const ag = await newAgent();
    await usable(C, ag.token);
    const adminWs = await connect(A, { token: admin.token });
    const before = up.matching((q) => q.path === '/sentry/issues/hang/').length;
    const pending = call(C, ag.token, 'actions.invoke', { integration: 'sentry', action: 'get_issue', params: { issue_id: 'hang' } });
    pending.catch(() => {});
    for (let i = 0; i < 100 && up.matching((q) => q.path === '/sentry/issues/hang/').length === before; i++) await sleep(20);
    const list = await call(A, admin.token, 'invocations.list', { agent_session_id: ag.agent_session_id, status: 'executing' });
    assert.equal(list.json.result.invocations.length, 1, list.body);
    const id = list.json.result.invocations[0].invocation_id;
    C.proc.kill('SIGKILL');
    killed = true;
    const t0 = performance.now();
    const done = await note(adminWs, 'invocation_completed', id, 15000);
    console.log(`# interrupted invocation failed ${(performance.now() - t0).toFixed(0)} ms after its process died`);
    assert.equal(done.status, 'failed');
    assert.match(done.error, /interrupted/);
    await sleep(500);
    assert.equal(up.matching((q) => q.path === '/sentry/issues/hang/').length - before, 1, 'not re-run');
    await adminWs.close();
  } finally {
    if (!killed) await C.stop();
    else await C.exited;
  }
});
