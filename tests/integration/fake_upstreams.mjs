// Fake Sentry (REST) and Linear (GraphQL) servers for the integration
// tests.  They speak the request shapes of the real services, refuse any
// request without the expected Authorization header (401), record every
// request, and misbehave on demand: an issue id names the misbehaviour.
// Sentry also takes the access tokens of a fake OAuth2 token endpoint
// (POST /oauth/token, RFC 6749 6), which counts its refreshes (see
// fakeOAuth below).
//
//   echo      answers 200 with the caller's credential inside the result
//   echoauth  answers 200 with the Authorization header it got inside the result
//   e500      answers 500 with the credential in the error body
//   hang      never answers (hangsClosed() counts those the client closed)
//   badjson   answers 200 with a body that is not JSON
//   huge      answers 200 with a 5 MB JSON body
//   retry     answers 429 with Retry-After: 999999
//   retry1    answers 429 with Retry-After: 1 once, then 200
//   slow      answers 200 after 1.5 s
import http from 'node:http';
import { randomBytes } from 'node:crypto';

const GRAPHQL_OPS = {
  ListIssues: 'query ListIssues(',
  GetIssue: 'query GetIssue(',
  CreateIssue: 'mutation CreateIssue(',
  UpdateIssue: 'mutation UpdateIssue(',
  AddComment: 'mutation AddComment(',
};

export async function startFakeUpstreams({ sentryToken, linearToken }) {
  const oauth = fakeOAuth();
  const requests = [];
  const hanging = new Set();
  let hangsClosed = 0;       // hanging requests whose connection the client closed
  const seen = new Map(); // misbehaviour -> count
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      const url = new URL(req.url, 'http://x');
      const rec = {
        method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams),
        authorization: req.headers.authorization, contentType: req.headers['content-type'], body,
      };
      requests.push(rec);
      const json = (status, obj, headers = {}) => {
        res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
        res.end(JSON.stringify(obj));
      };
      if (url.pathname === '/oauth/token') return oauth.serve(req, body, json, rec);
      if (url.pathname.startsWith('/sentry/')) {
        if (req.headers.authorization !== `Bearer ${sentryToken}` && !oauth.accepts(req.headers.authorization)) {
          return json(401, { detail: 'Invalid token' });
        }
        return sentry(req.method, url.pathname.slice('/sentry'.length), rec, json, res);
      }
      if (url.pathname === '/linear/graphql') {
        if (req.headers.authorization !== linearToken) return json(401, { errors: [{ message: 'Authentication required' }] });
        if (req.method !== 'POST' || !/^application\/json/.test(req.headers['content-type'] || '')) return json(400, { errors: [{ message: 'POST JSON only' }] });
        let doc;
        try { doc = JSON.parse(body); } catch { return json(400, { errors: [{ message: 'bad JSON' }] }); }
        rec.graphql = doc;
        return linear(doc, json);
      }
      json(404, { detail: 'Not found' });
    });
  });

  function misbehave(id, json, res, rec) {
    seen.set(id, (seen.get(id) || 0) + 1);
    switch (id) {
      case 'echoauth':
        json(200, { id, title: 'echoauth', header: rec.authorization, note: `you sent ${rec.authorization}` });
        return true;
      case 'echo':
        json(200, { id, title: 'echo', seen_token: sentryToken, nested: { deep: [{ note: `Bearer ${sentryToken} was used` }] },
                    token: 'abc', Password: 'hunter2', api_KEY: 'k', cookie: 'c' });
        return true;
      case 'e500':
        json(500, { detail: `internal failure while using ${sentryToken}` });
        return true;
      case 'hang':
        hanging.add(res);
        res.on('close', () => { if (hanging.delete(res)) hangsClosed++; });
        return true;
      case 'badjson':
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"id": "badjson", oops');
        return true;
      case 'huge':
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ id, blob: 'x'.repeat(5 * 1024 * 1024) }));
        return true;
      case 'retry':
        json(429, { detail: 'slow down' }, { 'Retry-After': '999999' });
        return true;
      case 'retry1':
        if (seen.get(id) === 1) json(429, { detail: 'slow down' }, { 'Retry-After': '1' });
        else json(200, { id, title: 'after retry' });
        return true;
      case 'slow':
        setTimeout(() => json(200, { id, title: 'slow' }), 1500);
        return true;
      case 'big':
        // 40 KB of valid JSON: stored truncated.
        json(200, { id, items: Array.from({ length: 400 }, (_, i) => ({ i, text: 'é'.repeat(40) })) });
        return true;
    }
    return false;
  }

  function sentry(method, path, rec, json, res) {
    let m;
    if (method === 'GET' && (m = /^\/projects\/([^/]+)\/([^/]+)\/issues\/$/.exec(path))) {
      return json(200, [{ id: '101', title: `Boom in ${m[1]}/${m[2]}`, status: 'unresolved' }, { id: '102', title: 'Second', status: 'unresolved' }]);
    }
    if ((m = /^\/issues\/([^/]+)\/$/.exec(path))) {
      const id = decodeURIComponent(m[1]);
      if (misbehave(id, json, res, rec)) return;
      if (method === 'GET') return json(200, { id, title: `Issue ${id}`, status: 'unresolved', culprit: 'app.js' });
      if (method === 'PUT') {
        let b;
        try { b = JSON.parse(rec.body); } catch { return json(400, { detail: 'bad JSON' }); }
        return json(200, { id, title: `Issue ${id}`, ...b });
      }
      if (method === 'DELETE') return json(202, {});
    }
    if (method === 'GET' && (m = /^\/issues\/([^/]+)\/events\/$/.exec(path))) {
      return json(200, [{ eventID: 'ev1', message: 'first' }, { eventID: 'ev2', message: 'second' }]);
    }
    if (method === 'GET' && (m = /^\/issues\/([^/]+)\/events\/([^/]+)\/$/.exec(path))) {
      return json(200, { eventID: m[2], groupID: m[1], message: 'the event' });
    }
    json(404, { detail: 'Not found' });
  }

  function linear(doc, json) {
    const q = doc.query || '';
    const v = doc.variables || {};
    if (q.startsWith(GRAPHQL_OPS.ListIssues)) {
      return json(200, { data: { issues: { nodes: [{ id: 'lin-1', identifier: 'ENG-1', title: 'First', team: v.filter?.team?.id?.eq ?? null }], pageInfo: { hasNextPage: false, endCursor: null } } } });
    }
    if (q.startsWith(GRAPHQL_OPS.GetIssue)) {
      if (v.id === 'missing') return json(200, { data: null, errors: [{ message: 'Entity not found: Issue' }] });
      return json(200, { data: { issue: { id: v.id, identifier: 'ENG-7', title: 'Seven', comments: { nodes: [] } } } });
    }
    if (q.startsWith(GRAPHQL_OPS.CreateIssue)) {
      return json(200, { data: { issueCreate: { success: true, issue: { id: 'lin-new', identifier: 'ENG-99', title: v.input?.title, url: 'https://linear.app/x/ENG-99' } } } });
    }
    if (q.startsWith(GRAPHQL_OPS.UpdateIssue)) {
      return json(200, { data: { issueUpdate: { success: true, issue: { id: v.id, identifier: 'ENG-7', title: v.input?.title ?? 'Seven', state: { name: 'Todo' } } } } });
    }
    if (q.startsWith(GRAPHQL_OPS.AddComment)) {
      return json(200, { data: { commentCreate: { success: true, comment: { id: 'c1', body: v.input?.body } } } });
    }
    json(400, { errors: [{ message: 'Unknown operation' }] });
  }

  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    sentryUrl: `${base}/sentry`,
    linearUrl: `${base}/linear`,
    oauth: Object.assign(oauth, { url: `${base}/oauth/token` }),
    requests,
    // Requests whose path (or GraphQL document) matches.
    matching(pred) { return requests.filter(pred); },
    // How many "hang" requests the client gave up on (closed the connection).
    hangsClosed: () => hangsClosed,
    async close() {
      for (const res of [...hanging]) { hanging.delete(res); res.destroy(); }
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

// A fake OAuth2 authorization server's token endpoint: refresh_token grants
// only.  Clients authenticate with client_secret_post or HTTP Basic.  It
// issues random access tokens (expires_in: expiresIn), rotates refresh
// tokens when rotate is set, answers invalid_grant for a refresh token it
// does not know (with the token in error_description, as careless servers
// do), and counts what it did:
//   attempts   every token request
//   refreshes  refreshes that issued a token
//   issued     every token it handed out (access and refresh), for leak checks
// delayMs holds each answer back; beforeAnswer(rec) runs (awaited) first.
function fakeOAuth() {
  const clients = new Map();   // client_id -> client_secret
  const refresh = new Map();   // refresh token -> client_id
  const access = new Map();    // access token -> expiry (ms since the epoch)
  const rnd = (p) => p + randomBytes(16).toString('hex');
  const o = {
    attempts: 0,
    refreshes: 0,
    issued: [],
    requests: [],
    rotate: false,
    expiresIn: 3600,
    delayMs: 0,
    beforeAnswer: null,
    // A new client with one refresh token: what an admin stores.
    client() {
      const c = { client_id: rnd('cid_'), client_secret: rnd('csec_'), refresh_token: rnd('rt_') };
      clients.set(c.client_id, c.client_secret);
      refresh.set(c.refresh_token, c.client_id);
      o.issued.push(c.client_secret, c.refresh_token);
      return c;
    },
    revokeRefresh(token) { refresh.delete(token); },
    revokeAccess() { access.clear(); },
    accepts(header) {
      const m = /^Bearer (.+)$/.exec(header || '');
      return !!(m && access.has(m[1]) && access.get(m[1]) > Date.now());
    },
    async serve(req, body, json, rec) {
      o.attempts++;
      const form = Object.fromEntries(new URLSearchParams(body));
      let id = form.client_id, secret = form.client_secret;
      const basic = /^Basic (.+)$/.exec(req.headers.authorization || '');
      if (basic) {
        const [u, p] = Buffer.from(basic[1], 'base64').toString().split(':');
        id = decodeURIComponent(u);
        secret = decodeURIComponent(p);
      }
      rec.form = form;
      rec.clientAuth = basic ? 'basic' : 'post';
      o.requests.push(rec);
      if (o.beforeAnswer) await o.beforeAnswer(rec);
      if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
      if (req.method !== 'POST' || !/^application\/x-www-form-urlencoded/.test(req.headers['content-type'] || '')) {
        return json(400, { error: 'invalid_request' });
      }
      if (!clients.has(id) || clients.get(id) !== secret) return json(401, { error: 'invalid_client' });
      if (form.grant_type !== 'refresh_token') return json(400, { error: 'unsupported_grant_type' });
      if (refresh.get(form.refresh_token) !== id) {
        return json(400, { error: 'invalid_grant', error_description: `refresh token ${form.refresh_token} is not valid` });
      }
      const token = rnd('at_');
      access.set(token, Date.now() + o.expiresIn * 1000);
      o.issued.push(token);
      o.refreshes++;
      const answer = { access_token: token, token_type: 'Bearer', expires_in: o.expiresIn };
      if (o.rotate) {
        refresh.delete(form.refresh_token);
        answer.refresh_token = rnd('rt_');
        refresh.set(answer.refresh_token, id);
        o.issued.push(answer.refresh_token);
      }
      json(200, answer);
    },
  };
  return o;
}
