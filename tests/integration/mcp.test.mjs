// MCP at /mcp (Streamable HTTP, docs/mcp.md) with the official TypeScript
// SDK as the client: agents and people see the tools their credential may
// call, tool calls run through the dispatch core against the fake Sentry
// (fake_upstreams.mjs), writes wait for an admin's approval over WebSocket
// while progress notifications flow, cancel stops the upstream request,
// revocation ends the session's streams, a dropped stream resumes with
// Last-Event-ID, and malformed traffic is refused and changes nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import nodeHttp from 'node:http';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { startServer, connect, rpc, sessionCookie, within, sleep, metrics } from './lib.mjs';
import { startFakeUpstreams } from './fake_upstreams.mjs';

const SENTRY_TOKEN = 'sntrys_' + randomBytes(18).toString('hex');
const LINEAR_TOKEN = 'lin_api_' + randomBytes(18).toString('hex');
const ORIGIN = 'http://app.test';
const KEYS = { admin: { org: 'acme', role: 'admin' }, boss: { org: 'acme', role: 'owner' } };
const SENTRY_TOOLS = ['sentry.delete_issue', 'sentry.get_event', 'sentry.get_issue', 'sentry.list_issue_events',
  'sentry.list_issues', 'sentry.update_issue'];
// The test build's tools an agent token may call (tests/protocol/*.json with "tool": true).
const AGENT_SPEC_TOOLS = ['test.echo', 'test.http_fetch', 'test.progress', 'test.sleep'];
const MEMBER_TOOLS = ['data.find_many', 'data.find_one', 'data.mutate', 'data.mutate_many', 'data.query',
  'entities.list', ...AGENT_SPEC_TOOLS];

let A, up, admin, member;

before(async () => {
  up = await startFakeUpstreams({ sentryToken: SENTRY_TOKEN, linearToken: LINEAR_TOKEN });
  A = await startServer({
    db: true, keys: KEYS, security: { allowed_origins: ORIGIN },
    args: ['-s', `module.integrations.sentry.base_url=${up.sentryUrl}`,
      '-s', `module.integrations.linear.base_url=${up.linearUrl}`,
      '-s', 'module.integrations.sentry.timeout_ms=3000',
      // Sentry writes expire 3 s after they are proposed (the expiry case); the others approve at once.
      '-s', 'module.integrations.sentry.approval_ms=3000'],
  });
  for (const [integration, secret] of [['sentry', SENTRY_TOKEN], ['linear', LINEAR_TOKEN]]) {
    const r = await rpc(A, 'admin.credential_set', { integration, secret });
    assert.equal(r.status, 200, r.body);
  }
  admin = await person('admin');
  member = await person('member');
});

after(async () => {
  const r = await A?.stop();
  await up?.close();
  assert.equal(r?.code, 0, 'actiond exits 0');
  assert.ok(!A.log().includes(SENTRY_TOKEN), 'no credential in the log');
});

// ---- helpers ---------------------------------------------------------------------

let seq = 0;
let ipSeq = 1;
const freshIp = () => `127.0.${60 + Math.floor(ipSeq / 250)}.${(ipSeq++ % 250) + 1}`;

async function newAgent(integrations = ['sentry']) {
  const r = await rpc(A, 'admin.agent_session_create', { name: `mcp-agent-${++seq}`, integrations });
  assert.equal(r.status, 200, r.body);
  return r.json.result;
}

// An account of role in acme, with an API token.
async function person(role) {
  const email = `mcp${++seq}-${role}@x.test`;
  const password = `pw-${seq}-${randomBytes(6).toString('hex')}`;
  let r = await rpc(A, 'admin.account_create', { email, password, role }, { token: A.tokens[role === 'owner' ? 'boss' : 'admin'] });
  assert.equal(r.status, 200, r.body);
  r = await rpc(A, 'auth.login', { email, password }, { token: null, localAddress: freshIp() });
  assert.equal(r.status, 200, r.body);
  r = await rpc(A, 'account.token_create', { name: 'mcp' }, { token: null, headers: { Cookie: sessionCookie(r), Origin: ORIGIN } });
  assert.equal(r.status, 200, r.body);
  return { token: r.json.result.token, id: r.json.result.id };
}

// An SDK client connected to /mcp with a bearer token.  opts.fetch wraps fetch.
async function mcp(token, opts = {}) {
  const transport = new StreamableHTTPClientTransport(new URL(A.url + '/mcp'), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
    fetch: opts.fetch,
    reconnectionOptions: { initialReconnectionDelay: 100, maxReconnectionDelay: 500, reconnectionDelayGrowFactor: 1.5, maxRetries: 5 },
  });
  const client = new Client({ name: 'actiond-mcp-test', version: '1.0.0' });
  const errors = [];
  client.onerror = (e) => errors.push(e);
  await client.connect(transport);
  return { client, transport, errors };
}

async function allTools(client) {
  const tools = [];
  let cursor;
  do {
    const page = await client.listTools(cursor ? { cursor } : {});
    tools.push(...page.tools);
    cursor = page.nextCursor;
  } while (cursor);
  return tools;
}

// One raw request to /mcp: {status, headers, body, json}.
async function raw({ method = 'POST', token = A.token, session, version, body, headers = {},
  accept = 'application/json, text/event-stream' } = {}) {
  const h = { Accept: accept, ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  if (session) h['Mcp-Session-Id'] = session;
  if (version) h['MCP-Protocol-Version'] = version;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const res = await fetch(A.url + '/mcp', { method, headers: h, body: typeof body === 'string' || body === undefined ? body : JSON.stringify(body) });
  const text = await res.text();
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
  return { status: res.status, headers: res.headers, body: text, json };
}

async function rawSession(token = A.token) {
  const r = await raw({ token, body: { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } } });
  assert.equal(r.status, 200, r.body);
  const sid = r.headers.get('mcp-session-id');
  assert.match(sid, /^[0-9a-f]{32}$/, 'a 128-bit hex session id');
  assert.equal((await raw({ token, session: sid, body: { jsonrpc: '2.0', method: 'notifications/initialized' } })).status, 202);
  return sid;
}

// Waits on an admin socket for the next approval_requested of integration.
async function approvalRequested(ws, integration = 'sentry', ms = 5000) {
  const t0 = Date.now();
  for (;;) {
    const m = await ws.next(Math.max(1, ms - (Date.now() - t0)));
    if (m.method === 'approval_requested' && m.params?.integration === integration) return m.params;
  }
}

const metric = async (name) => (await metrics(A)).values[name] ?? 0;

// ---- discovery ---------------------------------------------------------------------

test('an agent token lists its agent session\'s integration tools and the spec tools it may call', async () => {
  const ag = await newAgent(['sentry']);
  const { client, transport } = await mcp(ag.token);
  try {
    assert.equal(transport.protocolVersion, '2025-06-18', 'the SDK offers 2025-11-25; actiond answers its latest');
    assert.equal(client.getServerVersion().name, 'actiond');
    assert.equal(client.getServerCapabilities().tools.listChanged, false);
    const tools = await allTools(client);
    const names = tools.map((t) => t.name).sort();
    assert.deepEqual(names, [...SENTRY_TOOLS, ...AGENT_SPEC_TOOLS].sort(),
      'sentry only (no linear: not this agent session\'s), no data.* (not for agent tokens), no test.admin_only');
    const by = Object.fromEntries(tools.map((t) => [t.name, t]));
    assert.deepEqual(by['sentry.get_issue'].annotations, { readOnlyHint: true, openWorldHint: true });
    assert.deepEqual(by['sentry.update_issue'].annotations, { readOnlyHint: false, destructiveHint: false, openWorldHint: true });
    assert.deepEqual(by['sentry.delete_issue'].annotations, { readOnlyHint: false, destructiveHint: true, openWorldHint: true });
    assert.deepEqual(by['sentry.get_issue'].inputSchema.required, ['issue_id'], 'the adapter action\'s params schema');
    assert.equal(by['sentry.get_issue'].inputSchema.type, 'object');
    assert.match(by['sentry.update_issue'].description, /approval/);
    assert.equal(by['test.echo'].inputSchema.properties.value && typeof by['test.echo'].inputSchema.properties.value, 'object',
      'a boolean subschema becomes an object schema');
    assert.match(by['test.sleep'].description, /^Test build only/);
    // The cursor pages; past the end there is nothing.
    const sid = transport.sessionId;
    const r = await raw({ token: ag.token, session: sid, version: '2025-06-18', accept: 'application/json',
      body: { jsonrpc: '2.0', id: 9, method: 'tools/list', params: { cursor: '8' } } });
    assert.deepEqual(r.json.result.tools.map((t) => t.name), names.slice(8));
    const bad = await raw({ token: ag.token, session: sid, accept: 'application/json',
      body: { jsonrpc: '2.0', id: 10, method: 'tools/list', params: { cursor: 'x' } } });
    assert.equal(bad.json.error.code, -32602);
  } finally {
    await client.close();
  }
});

test('a member\'s API token sees only member tools; a tool the credential may not call is neither listed nor callable', async () => {
  const m = await mcp(member.token);
  const a = await mcp(admin.token);
  const ag = await newAgent(['sentry']);
  const g = await mcp(ag.token);
  try {
    assert.deepEqual((await allTools(m.client)).map((t) => t.name).sort(), MEMBER_TOOLS.sort());
    assert.deepEqual((await allTools(a.client)).map((t) => t.name).sort(), [...MEMBER_TOOLS, 'test.admin_only'].sort(),
      'an admin also sees test.admin_only (roles admin, owner)');
    const refused = async (c, name, args = {}) => {
      const e = await c.callTool({ name, arguments: args }).then(() => null, (err) => err);
      assert.ok(e instanceof McpError, `${name}: refused as a protocol error (${e})`);
      assert.equal(e.code, -32602, `${name}: unknown tool`);
      assert.match(e.message, /Unknown tool/);
    };
    await refused(m.client, 'test.admin_only');
    await refused(m.client, 'sentry.list_issues', { organization_slug: 'a', project_slug: 'b' });
    await refused(m.client, 'admin.account_list');
    await refused(g.client, 'data.find_one', { entity: 'x' });
    await refused(g.client, 'linear.list_issues', { team_id: 't' });
    await refused(g.client, 'sentry.no_such_action');
    const r = await a.client.callTool({ name: 'test.admin_only', arguments: {} });
    assert.ok(!r.isError, JSON.stringify(r));

    // Data tools run through the dispatch core: validation, roles, the org's rows.
    const d = await rpc(A, 'entities.define', { entity: 'mcp_note', schema: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } });
    assert.equal(d.status, 200, d.body);
    const c = await m.client.callTool({ name: 'data.mutate', arguments: { operation: 'create', entity: 'mcp_note', id: 'n1', data: { n: 7 } } });
    assert.ok(!c.isError, JSON.stringify(c));
    assert.equal(c.structuredContent.record.id, 'n1');
    const f = await m.client.callTool({ name: 'data.find_one', arguments: { entity: 'mcp_note', id: 'n1' } });
    assert.deepEqual(f.structuredContent.record.data, { n: 7 });
    assert.deepEqual(JSON.parse(f.content[0].text), f.structuredContent, 'the text is the result\'s JSON');
    const bad = await m.client.callTool({ name: 'data.mutate', arguments: { operation: 'create', entity: 'mcp_note', data: { n: 'seven' } } });
    assert.equal(bad.isError, true, 'an action\'s error is a tool error');
    assert.match(bad.content[0].text, /n/);
    const inval = await m.client.callTool({ name: 'data.find_one', arguments: { entity: 'Bad Name' } });
    assert.equal(inval.isError, true);
    assert.match(inval.content[0].text, /^Invalid params .*"pointer":"\/entity"/);
  } finally {
    await Promise.all([m.client.close(), a.client.close(), g.client.close()]);
  }
});

// ---- calls -------------------------------------------------------------------------

test('a read tool runs against the fake Sentry with the stored credential', async () => {
  const ag = await newAgent(['sentry']);
  const { client } = await mcp(ag.token);
  try {
    const before = up.requests.length;
    const r = await client.callTool({ name: 'sentry.list_issues', arguments: { organization_slug: 'acme-co', project_slug: 'web' } });
    assert.ok(!r.isError, JSON.stringify(r));
    assert.equal(r.structuredContent.status, 'completed');
    assert.equal(r.structuredContent.result[0].title, 'Boom in acme-co/web');
    assert.ok(!r.content[0].text.includes(SENTRY_TOKEN), 'no credential in what the agent sees');
    const seen = up.requests.slice(before);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].path, '/sentry/projects/acme-co/web/issues/');
    assert.equal(seen[0].authorization, `Bearer ${SENTRY_TOKEN}`);
    // An upstream failure is a tool error with the reason.
    const f = await client.callTool({ name: 'sentry.get_issue', arguments: { issue_id: 'e500' } });
    assert.equal(f.isError, true);
    assert.match(f.content[0].text, /failed: .*upstream status 500/);
    // A dangerous action is denied at once.
    const d = await client.callTool({ name: 'sentry.delete_issue', arguments: { issue_id: '101' } });
    assert.equal(d.isError, true);
    assert.match(d.content[0].text, /denied/i);
  } finally {
    await client.close();
  }
});

test('a write tool waits for an admin\'s approval over WebSocket, with progress notifications', async () => {
  const ag = await newAgent(['sentry']);
  const { client } = await mcp(ag.token);
  const adminWs = await connect(A, { token: admin.token });
  try {
    const before = up.requests.length;
    const progress = [];
    const call = client.callTool({ name: 'sentry.update_issue', arguments: { issue_id: '777', status: 'resolved' },
      _meta: { 'actiond/idempotency_key': 'mcp-approve-1' } },
    undefined, { onprogress: (p) => progress.push(p) });
    const req = await approvalRequested(adminWs);
    assert.equal(req.action, 'update_issue');
    assert.deepEqual(req.params, { issue_id: '777', status: 'resolved' });
    for (let i = 0; i < 100 && !progress.length; i++) await sleep(20);
    assert.match(progress[0]?.message ?? '', /^pending/, 'pending is reported while the admin decides');
    assert.equal(up.requests.length, before, 'nothing ran before the approval');
    const a = await adminWs.call('invocations.approve', { invocation_id: req.invocation_id, comment: 'via MCP' });
    assert.equal(a.result?.status, 'completed', JSON.stringify(a));
    const r = await within(call, 10000, 'the tool call\'s outcome');
    assert.ok(!r.isError, JSON.stringify(r));
    assert.equal(r.structuredContent.status, 'completed');
    assert.equal(r.structuredContent.invocation_id, req.invocation_id);
    assert.equal(r.structuredContent.result.status, 'resolved');
    assert.deepEqual(progress.map((p) => p.message.split(':')[0].split(' ')[0]), ['pending', 'approved', 'executing']);
    assert.deepEqual(progress.map((p) => p.progress), [1, 2, 3], 'increasing progress values');
    assert.equal(up.requests.slice(before).length, 1, 'run exactly once');
    // The idempotency key went through: the same call answers the stored outcome.
    const again = await client.callTool({ name: 'sentry.update_issue', arguments: { issue_id: '777', status: 'resolved' },
      _meta: { 'actiond/idempotency_key': 'mcp-approve-1' } });
    assert.equal(again.structuredContent.invocation_id, req.invocation_id);
    assert.equal(up.requests.slice(before).length, 1, 'not run again');

    // Denied: a tool error with the reason.
    const denied = client.callTool({ name: 'sentry.update_issue', arguments: { issue_id: '778', status: 'ignored' } });
    const req2 = await approvalRequested(adminWs);
    const dn = await adminWs.call('invocations.deny', { invocation_id: req2.invocation_id, reason: 'not now' });
    assert.equal(dn.result?.status, 'denied', JSON.stringify(dn));
    const r2 = await within(denied, 10000, 'the denied call');
    assert.equal(r2.isError, true);
    assert.match(r2.content[0].text, /denied by .*: not now/);
  } finally {
    adminWs.close();
    await client.close();
  }
});

test('a write nobody approves expires: a tool error saying so', async () => {
  const ag = await newAgent(['sentry']);
  const { client } = await mcp(ag.token);
  try {
    const progress = [];
    const t0 = Date.now();
    const r = await within(client.callTool({ name: 'sentry.update_issue', arguments: { issue_id: '13', status: 'ignored' } },
      undefined, { onprogress: (p) => progress.push(p) }), 10000, 'the expiry');
    assert.equal(r.isError, true, JSON.stringify(r));
    assert.match(r.content[0].text, /expired/);
    assert.equal(r.structuredContent.status, 'expired');
    assert.deepEqual(progress.map((p) => p.message.split(':')[0]), ['pending']);
    assert.ok(Date.now() - t0 >= 2500, 'not before the deadline');
  } finally {
    await client.close();
  }
});

test('a client that accepts JSON only gets the pending state as the result', async () => {
  const ag = await newAgent(['sentry']);
  const sid = await rawSession(ag.token);
  const r = await raw({ token: ag.token, session: sid, accept: 'application/json',
    body: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'sentry.update_issue', arguments: { issue_id: '900', status: 'resolved' } } } });
  assert.equal(r.status, 200, r.body);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  assert.equal(r.json.result.structuredContent.status, 'pending');
  assert.ok(!r.json.result.isError);
  assert.match(r.json.result.content[0].text, /pending/);
});

test('cancel mid-call stops the upstream request', async () => {
  const hang = { requests: 0, closed: 0 };
  const srv = nodeHttp.createServer((req) => {
    hang.requests++;
    req.socket.on('close', () => hang.closed++);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const ag = await newAgent(['sentry']);
  const { client } = await mcp(ag.token);
  try {
    const cancels = await metric('actiond_rpc_cancels_total');
    const ac = new AbortController();
    const call = client.callTool({ name: 'test.http_fetch', arguments: { url: `http://127.0.0.1:${srv.address().port}/slow` } },
      undefined, { signal: ac.signal });
    for (let i = 0; i < 200 && !hang.requests; i++) await sleep(10);
    assert.equal(hang.requests, 1, 'the upstream got the request');
    const t0 = Date.now();
    ac.abort('the user changed their mind');
    await assert.rejects(call, 'the SDK gives up on the call');
    for (let i = 0; i < 300 && !hang.closed; i++) await sleep(10);
    assert.equal(hang.closed, 1, 'the upstream saw its connection close');
    console.log(`# cancel to upstream close: ${Date.now() - t0} ms`);
    assert.equal(await metric('actiond_rpc_cancels_total'), cancels + 1, 'through the core\'s cancel');
    // The session goes on.
    assert.deepEqual((await client.callTool({ name: 'test.echo', arguments: { value: 1 } })).structuredContent, { value: 1 });
  } finally {
    await client.close();
    srv.closeAllConnections();
    srv.close();
  }
});

test('cancelling a read integration tool closes its upstream request, and the invocation ends failed', async () => {
  const ag = await newAgent(['sentry']);
  const { client } = await mcp(ag.token);
  try {
    const before = up.hangsClosed();
    const ac = new AbortController();
    const call = client.callTool({ name: 'sentry.get_issue', arguments: { issue_id: 'hang' } }, undefined, { signal: ac.signal });
    for (let i = 0; i < 200 && !up.matching((q) => q.path.endsWith('/issues/hang/')).length; i++) await sleep(10);
    assert.ok(up.matching((q) => q.path.endsWith('/issues/hang/')).length >= 1, 'Sentry got the request');
    ac.abort('changed my mind');
    await assert.rejects(call);
    for (let i = 0; i < 100 && up.hangsClosed() === before; i++) await sleep(10); // well before the 3 s timeout
    assert.equal(up.hangsClosed(), before + 1, 'Sentry saw its request dropped');
    // The invocation says what happened.
    const ws = await connect(A, { token: A.tokens.admin });
    let inv;
    for (let i = 0; i < 100; i++) {
      inv = (await ws.call('invocations.list', { agent_session_id: ag.agent_session_id, limit: 1 })).result?.invocations?.[0];
      if (inv?.status === 'failed') break;
      await sleep(20);
    }
    assert.equal(inv?.status, 'failed', JSON.stringify(inv));
    assert.match(inv.error, /cancelled by the caller/);
    await ws.close();
  } finally {
    await client.close();
  }
});

// ---- streams -----------------------------------------------------------------------

test('a dropped stream resumes with Last-Event-ID without losing the outcome', async () => {
  const ag = await newAgent(['sentry']);
  const seen = [];
  let dropped = false;
  let postStream; // the stream id in the dropped POST's event ids
  // Breaks the POST stream of the write call right after its first progress event.
  const dropFetch = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    seen.push({ method: init.method || 'GET', lastEventId: headers.get('last-event-id') });
    if (init.method !== 'POST' || dropped || !String(init.body).includes('sentry.update_issue')) return fetch(url, init);
    dropped = true;
    const ac = new AbortController();
    const res = await fetch(url, { ...init, signal: ac.signal });
    const reader = res.body.getReader();
    let text = '';
    let cut = false;
    const body = new ReadableStream({
      async pull(controller) {
        if (cut) {
          controller.error(new Error('the test dropped the stream'));
          ac.abort();
          return;
        }
        const { value, done } = await reader.read();
        if (done) { controller.close(); return; }
        controller.enqueue(value);
        text += new TextDecoder().decode(value);
        postStream ??= /^id: (\d+)-/m.exec(text)?.[1];
        if (text.includes('notifications/progress') && text.endsWith('\n\n')) cut = true;
      },
    });
    return new Response(body, { status: res.status, headers: res.headers });
  };
  const { client, errors } = await mcp(ag.token, { fetch: dropFetch });
  const adminWs = await connect(A, { token: admin.token });
  try {
    const resumes = await metric('actiond_mcp_resumptions_total');
    const progress = [];
    const call = client.callTool({ name: 'sentry.update_issue', arguments: { issue_id: '4242', status: 'resolved' } },
      undefined, { onprogress: (p) => progress.push(p) });
    const req = await approvalRequested(adminWs);
    // The SDK noticed the drop and came back with GET and Last-Event-ID.
    let resumed;
    for (let i = 0; i < 300 && !resumed; i++) {
      resumed = postStream && seen.find((s) => s.method === 'GET' && s.lastEventId?.startsWith(`${postStream}-`));
      if (!resumed) await sleep(10);
    }
    assert.ok(dropped && resumed, `the SDK resumed: ${JSON.stringify(seen)}`);
    assert.ok(errors.some((e) => /dropped the stream|disconnected/.test(String(e))), 'the drop was seen');
    const a = await adminWs.call('invocations.approve', { invocation_id: req.invocation_id });
    assert.equal(a.result?.status, 'completed', JSON.stringify(a));
    const r = await within(call, 10000, 'the outcome after the resumption');
    assert.ok(!r.isError, JSON.stringify(r));
    assert.equal(r.structuredContent.status, 'completed');
    assert.equal(r.structuredContent.invocation_id, req.invocation_id);
    assert.deepEqual(progress.map((p) => p.progress), [1, 2, 3], 'no progress lost or repeated');
    assert.ok(await metric('actiond_mcp_resumptions_total') > resumes);
  } finally {
    adminWs.close();
    await client.close();
  }
});

test('the event log replays what a resumed stream missed, and says 204 when there is nothing more', async () => {
  const sid = await rawSession();
  // test.progress answers at once, after three progress events: an SSE stream.
  const r = await raw({ session: sid, body: { jsonrpc: '2.0', id: 'p', method: 'tools/call', params: { name: 'test.progress', arguments: { steps: 3 }, _meta: { progressToken: 'tok' } } } });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const events = r.body.split('\n\n').filter(Boolean).map((e) => ({ id: /^id: (.*)$/m.exec(e)?.[1], data: /^data: ?(.*)$/m.exec(e)?.[1] }));
  assert.equal(events[0].data, '', 'a priming event first');
  assert.deepEqual(events.slice(1).map((e) => JSON.parse(e.data).method ?? 'response'),
    ['notifications/progress', 'notifications/progress', 'notifications/progress', 'response']);
  // From the first progress event on: the rest again, in order, then the end.
  const g = await raw({ method: 'GET', session: sid, accept: 'text/event-stream', headers: { 'Last-Event-ID': events[1].id } });
  assert.equal(g.status, 200);
  const again = g.body.split('\n\n').filter(Boolean).map((e) => /^id: (.*)$/m.exec(e)[1]);
  assert.deepEqual(again, events.slice(2).map((e) => e.id));
  const none = await raw({ method: 'GET', session: sid, accept: 'text/event-stream', headers: { 'Last-Event-ID': events[4].id } });
  assert.equal(none.status, 204, 'a finished stream has nothing more');
  const bogus = await raw({ method: 'GET', session: sid, accept: 'text/event-stream', headers: { 'Last-Event-ID': '999-1' } });
  assert.equal(bogus.status, 400);
});

test('revoking the agent session ends its open streams at once and the next call is refused', async () => {
  const ag = await newAgent(['sentry']);
  const { client, transport } = await mcp(ag.token);
  const sid = transport.sessionId;
  const adminWs = await connect(A, { token: admin.token });
  // A GET stream of our own next to the SDK's, to watch it end.
  const ctl = new AbortController();
  const get = await fetch(A.url + '/mcp', { headers: { Authorization: `Bearer ${ag.token}`, Accept: 'text/event-stream', 'Mcp-Session-Id': sid }, signal: ctl.signal });
  assert.equal(get.status, 200);
  const reader = get.body.getReader();
  await reader.read(); // the priming event
  try {
    const pending = client.callTool({ name: 'sentry.update_issue', arguments: { issue_id: '31', status: 'resolved' } });
    pending.catch(() => {});
    await approvalRequested(adminWs);
    const t0 = Date.now();
    const r = await rpc(A, 'admin.agent_session_revoke', { agent_session_id: ag.agent_session_id });
    assert.equal(r.status, 200, r.body);
    // Ours and the POST stream at least (the SDK's own GET stream too, once it is open).
    assert.ok(r.json.result.sockets_closed >= 2, `the streams count as sockets closed: ${r.body}`);
    let ended = false;
    for (;;) {
      const { done } = await within(reader.read(), 2000, 'the GET stream to end');
      if (done) { ended = true; break; }
    }
    assert.ok(ended);
    console.log(`# revoke to GET stream end: ${Date.now() - t0} ms`);
    const e = await within(pending.then(() => null, (err) => err), 2000, 'the pending call to be answered');
    assert.ok(e instanceof McpError, String(e));
    assert.equal(e.code, -32001, 'unauthenticated');
    const next = await client.callTool({ name: 'test.echo', arguments: { value: 1 } }).then(() => null, (err) => err);
    assert.ok(next instanceof StreamableHTTPError, String(next));
    assert.equal(next.code, 401, 'the revoked token is refused');
    // The session is gone for every credential.
    const other = await raw({ token: A.token, session: sid, body: { jsonrpc: '2.0', id: 1, method: 'ping' } });
    assert.equal(other.status, 404);
  } finally {
    ctl.abort();
    adminWs.close();
    await client.close();
  }
});

test('a revoked API token ends its sessions too; DELETE ends one', async () => {
  const p = await person('member');
  const { client, transport } = await mcp(p.token);
  const sid = transport.sessionId;
  const r = await rpc(A, 'account.token_revoke', { token_id: p.id }, { token: p.token });
  assert.equal(r.status, 200, r.body);
  assert.equal((await raw({ token: member.token, session: sid, body: { jsonrpc: '2.0', id: 1, method: 'ping' } })).status, 404);
  await client.close().catch(() => {});

  const m = await mcp(member.token);
  const s2 = m.transport.sessionId;
  await m.transport.terminateSession();
  assert.equal((await raw({ token: member.token, session: s2, body: { jsonrpc: '2.0', id: 1, method: 'ping' } })).status, 404);
  await m.client.close();
});

// ---- malformed traffic ---------------------------------------------------------------

test('malformed traffic gets the right status and error and changes nothing', async () => {
  const ag = await newAgent(['sentry']);
  const sid = await rawSession(ag.token);
  const foreign = await rawSession(member.token);
  const ping = { jsonrpc: '2.0', id: 1, method: 'ping' };
  const before = { upstream: up.requests.length, calls: await metric('actiond_mcp_tool_calls_total') };
  const expect = (r, status, code, what) => {
    assert.equal(r.status, status, `${what}: ${r.body}`);
    if (code !== undefined) assert.equal(r.json?.error?.code, code, `${what}: ${r.body}`);
  };
  expect(await raw({ token: ag.token, body: ping }), 400, -32600, 'no session id');
  expect(await raw({ token: ag.token, session: foreign, body: ping }), 404, -32004, 'another credential\'s session');
  expect(await raw({ token: ag.token, session: '0'.repeat(32), body: ping }), 404, -32004, 'an unknown session');
  expect(await raw({ token: ag.token, session: sid, version: '2024-01-01', body: ping }), 400, -32600, 'an unsupported protocol version');
  expect(await raw({ token: ag.token, session: sid, headers: { Origin: 'http://evil.test' }, body: ping }), 403, -32003, 'a foreign Origin');
  expect(await raw({ token: ag.token, session: sid, headers: { Origin: ORIGIN }, body: ping }), 200, undefined, 'an allowed Origin');
  expect(await raw({ token: ag.token, session: sid, headers: { Origin: A.url }, body: ping }), 200, undefined, 'the server\'s own Origin');
  const noauth = await raw({ token: null, session: sid, body: ping });
  expect(noauth, 401, -32001, 'no credential');
  assert.equal(noauth.headers.get('www-authenticate'), 'Bearer');
  expect(await raw({ token: 'adt_' + 'x'.repeat(43), session: sid, body: ping }), 401, -32001, 'a bad token');
  expect(await raw({ token: ag.token, session: sid, body: ' '.repeat(1100 * 1024) }), 413, -32013, 'a body over limits.max_message');
  const thousand = Array.from({ length: 1000 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: 'sentry.get_issue', arguments: { issue_id: String(i) } } }));
  const b = await raw({ token: ag.token, session: sid, body: thousand });
  expect(b, 400, -32600, 'a batch of 1,000');
  assert.equal(b.json.error.data.reason, 'payload_too_large');
  assert.ok(!Array.isArray(b.json), 'one error, not 1,000 answers');
  expect(await raw({ token: ag.token, session: sid, body: '{"jsonrpc":"2.0",' }), 400, -32700, 'a parse error');
  expect(await raw({ token: ag.token, session: sid, body: [] }), 400, -32600, 'an empty batch');
  expect(await raw({ token: ag.token, session: sid, accept: 'text/html', body: ping }), 406, -32600, 'an Accept with neither');
  expect(await raw({ method: 'GET', token: ag.token, session: sid, accept: 'application/json' }), 406, -32600, 'GET without text/event-stream');
  expect(await raw({ method: 'PUT', token: ag.token, session: sid, body: ping }), 405, -32600, 'PUT');
  expect(await raw({ method: 'DELETE', token: ag.token }), 400, -32600, 'DELETE without a session id');
  expect(await raw({ token: ag.token, body: [{ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18' } }, ping] }),
    400, -32600, 'initialize inside a batch');
  // A batch (MCP 2025-03-26) is answered as one array; a bad element answers -32600 with its id.
  const mixed = await raw({ token: ag.token, session: sid, accept: 'application/json', body: [ping, { jsonrpc: '1.0', id: 2, method: 'ping' }, { jsonrpc: '2.0', id: 3, method: 'resources/list' }] });
  assert.equal(mixed.status, 200);
  assert.deepEqual(mixed.json.map((x) => [x.id, x.error?.code ?? 'ok']), [[1, 'ok'], [2, -32600], [3, -32601]]);
  // Nothing ran, and the session still works.
  assert.equal(up.requests.length, before.upstream, 'no upstream request');
  assert.equal(await metric('actiond_mcp_tool_calls_total'), before.calls, 'no tool call');
  const ok = await raw({ token: ag.token, session: sid, version: '2025-06-18', accept: 'application/json', body: ping });
  assert.deepEqual(ok.json, { jsonrpc: '2.0', id: 1, result: {} });
  // The older revision is negotiated when offered.
  const old = await raw({ token: ag.token, body: { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'old', version: '1' } } } });
  assert.equal(old.json.result.protocolVersion, '2025-03-26');
});

// ---- limits and the drain ---------------------------------------------------------------

test('session and stream caps, idle expiry, and SIGTERM ending streams cleanly', async () => {
  const S = await startServer({ limits: { mcp_sessions: 2, mcp_streams: 2, mcp_idle: '2s' } });
  const call = async (body, { session, method = 'POST', accept = 'application/json, text/event-stream', headers = {} } = {}) => {
    const h = { Authorization: `Bearer ${S.token}`, Accept: accept, 'Content-Type': 'application/json', ...headers };
    if (session) h['Mcp-Session-Id'] = session;
    const res = await fetch(S.url + '/mcp', { method, headers: h, body: body && JSON.stringify(body) });
    return res;
  };
  const init = { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18' } };
  try {
    const s1 = (await call(init)).headers.get('mcp-session-id');
    const s2 = (await call(init)).headers.get('mcp-session-id');
    // s1 holds two GET streams (the cap); s2 is idle, so a third session ends s2.
    const g1 = await call(undefined, { method: 'GET', session: s1, accept: 'text/event-stream' });
    const g2 = await call(undefined, { method: 'GET', session: s1, accept: 'text/event-stream' });
    assert.equal(g1.status, 200);
    assert.equal(g2.status, 200);
    const g3 = await call(undefined, { method: 'GET', session: s1, accept: 'text/event-stream' });
    assert.equal(g3.status, 429, 'a third stream');
    await g3.text();
    const s3 = (await call(init)).headers.get('mcp-session-id');
    assert.ok(s3);
    assert.equal((await call({ jsonrpc: '2.0', id: 1, method: 'ping' }, { session: s2 })).status, 404, 'the idle session was ended for the new one');
    // s1 (busy) and s3: the cap is reached with nothing idle but s3... end s3 by letting it idle out.
    await sleep(3500);
    assert.equal((await call({ jsonrpc: '2.0', id: 1, method: 'ping' }, { session: s3 })).status, 404, 'idle past limits.mcp_idle');
    assert.equal((await call({ jsonrpc: '2.0', id: 1, method: 'ping' }, { session: s1 })).status, 200, 'a session with open streams stays');
    // SIGTERM: the GET streams end with the chunked terminator (no error), the process exits 0.
    const ends = [g1, g2].map(async (g) => { await g.text(); return 'ended'; });
    S.proc.kill('SIGTERM');
    assert.deepEqual(await within(Promise.all(ends), 5000, 'the streams to end'), ['ended', 'ended']);
    assert.equal((await S.exited).code, 0);
  } finally {
    await S.stop();
  }
});

// ---- a third-party client ----------------------------------------------------------------

test('the MCP Inspector CLI lists and calls tools', { timeout: 150000 }, async () => {
  // The Inspector's command-line client (npm @modelcontextprotocol/inspector-cli,
  // installed with the tests; 0.17.2 is the newest whose CLI runs on Node 20).
  const cli = new URL('./node_modules/@modelcontextprotocol/inspector-cli/build/index.js', import.meta.url).pathname;
  const run = (args) => spawnSync(process.execPath, [cli, A.url + '/mcp',
    '--transport', 'http', '--header', `Authorization: Bearer ${A.token}`, ...args],
  // It finds its own package.json relative to the working directory.
  { encoding: 'utf8', timeout: 60000, cwd: new URL('.', 'file://' + cli).pathname });
  const list = run(['--method', 'tools/list']);
  assert.equal(list.status, 0, list.stderr + list.stdout);
  const names = JSON.parse(list.stdout).tools.map((x) => x.name);
  assert.ok(names.includes('data.find_one') && names.includes('test.echo'), list.stdout);
  const echo = run(['--method', 'tools/call', '--tool-name', 'test.echo', '--tool-arg', 'value=hi']);
  assert.equal(echo.status, 0, echo.stderr + echo.stdout);
  assert.deepEqual(JSON.parse(echo.stdout).structuredContent, { value: 'hi' });
});
