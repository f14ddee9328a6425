// JSON-RPC 2.0 conformance against the running binary: every example of the
// specification (section 7), over WebSocket and over HTTP, plus the edges
// the examples do not show.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer, connect, http, ACTIOND } from './lib.mjs';

let server, ws;
before(async () => {
  server = await startServer();
  ws = await connect(server);
});
after(async () => {
  await ws.close();
  const r = await server.stop();
  assert.equal(r.code, 0, 'actiond exits 0 on SIGTERM');
});

// Sends raw text and collects the answer, or null if none comes.
async function wsExchange(text, quietMs = 300) {
  ws.send(text);
  try { return await ws.next(quietMs); } catch { return null; }
}
async function httpExchange(text) {
  const r = await http(server, '/rpc', { method: 'POST', body: text });
  return r.status === 204 ? null : r.json;
}

// The examples of the JSON-RPC 2.0 specification, section 7.
const examples = [
  ['positional parameters', '{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}',
    { jsonrpc: '2.0', result: 19, id: 1 }],
  ['positional parameters, reversed', '{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}',
    { jsonrpc: '2.0', result: -19, id: 2 }],
  ['named parameters', '{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}',
    { jsonrpc: '2.0', result: 19, id: 3 }],
  ['named parameters, reordered', '{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}',
    { jsonrpc: '2.0', result: 19, id: 4 }],
  ['a notification', '{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}', null],
  ['a notification of a missing method', '{"jsonrpc": "2.0", "method": "foobar"}', null],
  ['a non-existent method', '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}',
    { jsonrpc: '2.0', error: { code: -32601 }, id: '1' }],
  ['invalid JSON', '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
    { jsonrpc: '2.0', error: { code: -32700 }, id: null }],
  ['an invalid Request object', '{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
    { jsonrpc: '2.0', error: { code: -32600 }, id: null }],
  ['a batch with invalid JSON', '[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},{"jsonrpc": "2.0", "method"]',
    { jsonrpc: '2.0', error: { code: -32700 }, id: null }],
  ['an empty array', '[]', { jsonrpc: '2.0', error: { code: -32600 }, id: null }],
  ['an invalid batch (but not empty)', '[1]', [{ jsonrpc: '2.0', error: { code: -32600 }, id: null }]],
  ['an invalid batch', '[1,2,3]', [1, 2, 3].map(() => ({ jsonrpc: '2.0', error: { code: -32600 }, id: null }))],
  ['a batch', `[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]`, [
      { jsonrpc: '2.0', result: 7, id: '1' },
      { jsonrpc: '2.0', result: 19, id: '2' },
      { jsonrpc: '2.0', error: { code: -32600 }, id: null },
      { jsonrpc: '2.0', error: { code: -32601 }, id: '5' },
      { jsonrpc: '2.0', result: ['hello', 5], id: '9' },
    ]],
  ['a batch of notifications only', `[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]`, null],
];

// Compares an answer with the expected shape: error messages are free text,
// so only the error code is compared; batch answers may come in any order.
function matches(got, want) {
  if (want === null) return got === null;
  if (Array.isArray(want)) {
    if (!Array.isArray(got) || got.length !== want.length) return false;
    const left = [...got];
    return want.every((w) => {
      const i = left.findIndex((g) => matches(g, w));
      if (i < 0) return false;
      left.splice(i, 1);
      return true;
    });
  }
  if (!got || got.jsonrpc !== '2.0' || JSON.stringify(got.id) !== JSON.stringify(want.id)) return false;
  if ('error' in want) return !('result' in got) && got.error && got.error.code === want.error.code && typeof got.error.message === 'string';
  return !('error' in got) && JSON.stringify(got.result) === JSON.stringify(want.result);
}

for (const [name, text, want] of examples) {
  test(`spec example over WebSocket: ${name}`, async () => {
    const got = await wsExchange(text);
    assert.ok(matches(got, want), `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  });
  test(`spec example over HTTP: ${name}`, async () => {
    const got = await httpExchange(text);
    assert.ok(matches(got, want), `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  });
}

test('ids are echoed exactly as given', async () => {
  for (const id of ['abc', '', 'ünï', 0, -7, 12345678901234, 1.5, 0.1, 1e-7, null]) {
    const r = await wsExchange(JSON.stringify({ jsonrpc: '2.0', method: 'heartbeat', id }));
    assert.deepEqual(r.id, id, `id ${JSON.stringify(id)}`);
    assert.equal(typeof r.result.time, 'string');
  }
});

test('a malformed id is refused with -32600 and a null id', async () => {
  for (const id of [[1], { a: 1 }, true]) {
    const r = await wsExchange(JSON.stringify({ jsonrpc: '2.0', method: 'heartbeat', id }));
    assert.equal(r.error.code, -32600);
    assert.equal(r.id, null);
  }
});

test('envelope violations are -32600 with the id echoed', async () => {
  for (const req of [
    { jsonrpc: '1.0', method: 'heartbeat', id: 5 },
    { method: 'heartbeat', id: 5 },
    { jsonrpc: '2.0', id: 5 },
    { jsonrpc: '2.0', method: 'heartbeat', params: 'x', id: 5 },
    { jsonrpc: '2.0', method: 'heartbeat', params: 3, id: 5 },
  ]) {
    const r = await wsExchange(JSON.stringify(req));
    assert.equal(r.error.code, -32600, JSON.stringify(req));
    assert.equal(r.id, 5);
  }
});

test('-32602 carries the failing JSON pointer and keyword', async () => {
  let r = await ws.call('test.echo', { value: 1, tags: ['ok', 'far too long'] });
  assert.equal(r.error.code, -32602);
  assert.equal(r.error.data.pointer, '/tags/1');
  assert.equal(r.error.data.keyword, 'maxLength');
  r = await ws.call('test.echo', {});
  assert.equal(r.error.code, -32602);
  assert.equal(r.error.data.keyword, 'required');
  assert.equal(r.error.data.pointer, '');
  r = await ws.call('test.echo', { value: 1, count: 11 });
  assert.deepEqual([r.error.data.pointer, r.error.data.keyword], ['/count', 'maximum']);
  r = await ws.call('heartbeat', { unexpected: true });
  assert.deepEqual([r.error.code, r.error.data.keyword], [-32602, 'additionalProperties']);
  r = await ws.call('heartbeat', [1]);
  assert.equal(r.error.code, -32602, 'by-position params where the method takes names');
  r = await ws.call('subtract', [1, 2, 3]);
  assert.equal(r.error.code, -32602, 'more positional params than names');
});

test('a result that breaks its output schema: -32603 in debug builds, passed on with NDEBUG', async () => {
  const checked = /debug build/.test(execFileSync(ACTIOND, ['--version']).toString());
  const r = await ws.call('test.bad_output', {});
  if (checked) assert.equal(r.error.code, -32603);
  else assert.deepEqual(r.result, { unexpected: 'field' });
});

test('a parse error reports where', async () => {
  const r = await wsExchange('{"jsonrpc":"2.0",\n "id": 1, "method": }');
  assert.equal(r.error.code, -32700);
  assert.equal(r.id, null);
  assert.equal(r.error.data.line, 2);
});

test('duplicate keys are a parse error', async () => {
  const r = await wsExchange('{"jsonrpc":"2.0","id":1,"id":2,"method":"heartbeat"}');
  assert.equal(r.error.code, -32700);
});

test('nesting deeper than the limit is refused without a crash', async () => {
  const deep = '['.repeat(65) + ']'.repeat(65);
  let r = await wsExchange(`{"jsonrpc":"2.0","id":1,"method":"test.echo","params":{"value":${deep}}}`);
  assert.equal(r.error.code, -32600);
  assert.equal(r.error.data.reason, 'payload_too_large');
  const huge = '['.repeat(100000) + ']'.repeat(100000);
  r = await wsExchange(huge);
  assert.equal(r.error.code, -32600);
  // Brackets inside strings do not count.
  r = await ws.call('test.echo', { value: '['.repeat(1000) });
  assert.equal(r.result.value.length, 1000);
  const ok = '['.repeat(60) + ']'.repeat(60);
  r = await wsExchange(`{"jsonrpc":"2.0","id":2,"method":"test.echo","params":{"value":${ok}}}`);
  assert.ok(Array.isArray(r.result.value));
});

test('batch edge cases', async () => {
  // Mixed: valid, invalid member, notification, unknown method.
  let r = await wsExchange(JSON.stringify([
    { jsonrpc: '2.0', method: 'heartbeat', id: 'a' },
    { jsonrpc: '2.0', method: 'heartbeat' },
    { jsonrpc: '2.0', method: 'nope', id: 'b' },
    'x',
    { jsonrpc: '2.0', method: 'test.echo', params: { value: [1, 2] }, id: 'c' },
  ]));
  assert.equal(r.length, 4);
  const byId = Object.fromEntries(r.filter((x) => x.id !== null).map((x) => [x.id, x]));
  assert.ok(byId.a.result.time);
  assert.equal(byId.b.error.code, -32601);
  assert.deepEqual(byId.c.result.value, [1, 2]);
  assert.equal(r.filter((x) => x.id === null)[0].error.code, -32600);
  // A batch whose members wait answers once, when the slowest is done.
  const t0 = Date.now();
  r = await wsExchange(JSON.stringify([
    { jsonrpc: '2.0', method: 'test.sleep', params: { ms: 200 }, id: 1 },
    { jsonrpc: '2.0', method: 'heartbeat', id: 2 },
  ]), 2000);
  assert.equal(r.length, 2);
  assert.ok(Date.now() - t0 >= 190);
  // Too long a batch is refused as a whole.
  const long = Array.from({ length: 101 }, (_, i) => ({ jsonrpc: '2.0', method: 'heartbeat', id: i }));
  r = await wsExchange(JSON.stringify(long));
  assert.equal(r.error.code, -32600);
  assert.equal(r.error.data.reason, 'payload_too_large');
  const max = Array.from({ length: 100 }, (_, i) => ({ jsonrpc: '2.0', method: 'heartbeat', id: i }));
  r = await wsExchange(JSON.stringify(max));
  assert.equal(r.length, 100);
  assert.deepEqual(r.map((x) => x.id).sort((a, b) => a - b), max.map((x) => x.id));
});

test('application errors carry a stable reason', async () => {
  const r = await ws.call('test.sleep', { ms: 5000 });
  assert.equal(r.error.data.reason, 'timeout');
  assert.ok(r.error.code <= -32000 && r.error.code >= -32099);
});

test('HTTP status mirrors the answer', async () => {
  let r = await http(server, '/rpc', { method: 'POST', body: { jsonrpc: '2.0', id: 1, method: 'nope' } });
  assert.equal(r.status, 404);
  r = await http(server, '/rpc', { method: 'POST', body: '{' });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32700);
  r = await http(server, '/rpc', { method: 'POST', body: { jsonrpc: '2.0', method: 'heartbeat' } });
  assert.equal(r.status, 204);
  assert.equal(r.body, '');
  r = await http(server, '/rpc', { method: 'POST', body: { jsonrpc: '2.0', id: 1, method: 'test.sleep', params: { ms: 4000 } } });
  assert.equal(r.status, 504);
  assert.equal(r.json.error.data.reason, 'timeout');
  r = await http(server, '/rpc', { method: 'POST', body: [{ jsonrpc: '2.0', id: 1, method: 'nope' }] });
  assert.equal(r.status, 200, 'a batch answers 200 whatever its members say');
});

test('GET /rpc runs read actions and refuses the others', async () => {
  let r = await http(server, '/rpc?method=heartbeat&id=7');
  assert.equal(r.status, 200);
  assert.equal(r.json.id, 7);
  assert.ok(r.json.result.time);
  r = await http(server, '/rpc?method=test.echo&params=' + encodeURIComponent(JSON.stringify({ value: 'a b&c=d' })));
  assert.equal(r.status, 200);
  assert.equal(r.json.result.value, 'a b&c=d');
  assert.equal(r.json.id, null);
  r = await http(server, '/rpc?method=test.broadcast&params=' + encodeURIComponent('{"size":1,"count":1}'));
  assert.equal(r.status, 405);
  assert.equal(r.json.error.code, -32600);
  r = await http(server, '/rpc');
  assert.equal(r.status, 400);
});

test('unauthenticated HTTP calls get 401', async () => {
  let r = await http(server, '/rpc', { method: 'POST', token: null, body: { jsonrpc: '2.0', id: 1, method: 'heartbeat' } });
  assert.equal(r.status, 401);
  assert.equal(r.json.error.data.reason, 'unauthenticated');
  r = await http(server, '/rpc', { method: 'POST', token: 'wrong', body: { jsonrpc: '2.0', id: 1, method: 'heartbeat' } });
  assert.equal(r.status, 401);
  assert.equal(r.headers.get('www-authenticate'), 'Bearer');
});

test('per-method metrics count answers, errors and latency', async () => {
  const read = async () => {
    const text = (await http(server, '/metrics')).body;
    const get = (re) => Number((re.exec(text) || [0, 'NaN'])[1]);
    return {
      calls: get(/^actiond_method_calls_total\{method="test\.echo"\} (\d+)$/m),
      errors: get(/^actiond_method_errors_total\{method="test\.echo"\} (\d+)$/m),
      count: get(/^actiond_method_seconds_count\{method="test\.echo"\} (\d+)$/m),
      inf: get(/^actiond_method_seconds_bucket\{method="test\.echo",le="\+Inf"\} (\d+)$/m),
    };
  };
  const before = await read();
  await ws.call('test.echo', { value: 1 });
  await ws.call('test.echo', { value: 2 });
  await ws.call('test.echo', {}); // invalid params: an error answer
  const after = await read();
  assert.equal(after.calls - (before.calls || 0), 3);
  assert.equal(after.errors - (before.errors || 0), 1);
  assert.equal(after.count, after.calls);
  assert.equal(after.inf, after.calls);
});
