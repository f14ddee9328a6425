// Fake Sentry (REST) and Linear (GraphQL) servers for the integration
// tests.  They speak the request shapes of the real services, refuse any
// request without the expected Authorization header (401), record every
// request, and misbehave on demand: an issue id names the misbehaviour.
//
//   echo      answers 200 with the caller's credential inside the result
//   e500      answers 500 with the credential in the error body
//   hang      never answers
//   badjson   answers 200 with a body that is not JSON
//   huge      answers 200 with a 5 MB JSON body
//   retry     answers 429 with Retry-After: 999999
//   retry1    answers 429 with Retry-After: 1 once, then 200
//   slow      answers 200 after 1.5 s
import http from 'node:http';

const GRAPHQL_OPS = {
  ListIssues: 'query ListIssues(',
  GetIssue: 'query GetIssue(',
  CreateIssue: 'mutation CreateIssue(',
  UpdateIssue: 'mutation UpdateIssue(',
  AddComment: 'mutation AddComment(',
};

export async function startFakeUpstreams({ sentryToken, linearToken }) {
  const requests = [];
  const hanging = new Set();
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
      if (url.pathname.startsWith('/sentry/')) {
        if (req.headers.authorization !== `Bearer ${sentryToken}`) return json(401, { detail: 'Invalid token' });
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

  function misbehave(id, json, res) {
    seen.set(id, (seen.get(id) || 0) + 1);
    switch (id) {
      case 'echo':
        json(200, { id, title: 'echo', seen_token: sentryToken, nested: { deep: [{ note: `Bearer ${sentryToken} was used` }] },
                    token: 'abc', Password: 'hunter2', api_KEY: 'k', cookie: 'c' });
        return true;
      case 'e500':
        json(500, { detail: `internal failure while using ${sentryToken}` });
        return true;
      case 'hang':
        hanging.add(res);
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
      if (misbehave(id, json, res)) return;
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
    requests,
    // Requests whose path (or GraphQL document) matches.
    matching(pred) { return requests.filter(pred); },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
