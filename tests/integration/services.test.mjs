// Services of the module API seen from a client: progress notifications and
// the HTTP status of an accepted answer, and work offloaded to the worker
// threads while the loop keeps answering.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { startServer, connect, http, rpc } from './lib.mjs';

let server;

before(async () => {
  server = await startServer({});
});

after(async () => {
  const r = await server?.stop();
  assert.equal(r?.code, 0);
});

test('progress: the caller gets each step, tagged with its request id, before the answer', async () => {
  const c = await connect(server);
  try {
    const p = c.call('test.progress', { steps: 3 }, 'job-1');
    const notes = [];
    for (let i = 0; i < 3; i++) notes.push(await c.next(2000));
    const r = await p;
    assert.deepEqual(r.result, { steps: 3 });
    assert.deepEqual(notes.map((n) => [n.method, n.params.request_id, n.params.step, n.params.of, 'id' in n]),
      [['progress', 'job-1', 1, 3, false], ['progress', 'job-1', 2, 3, false], ['progress', 'job-1', 3, 3, false]]);
    assert.equal(await c.silent(200), true, 'nothing after the answer');
  } finally {
    await c.close();
  }
});

test('an answer may set its HTTP status (202 accepted); progress over HTTP is dropped', async () => {
  const r = await rpc(server, 'test.progress', { steps: 2 });
  assert.equal(r.status, 202, r.body);
  assert.deepEqual(r.json.result, { steps: 2 });
  // A batch answers 200 whatever its members set.
  const b = await http(server, '/rpc', { method: 'POST', body: [{ jsonrpc: '2.0', id: 9, method: 'test.progress', params: { steps: 1 } }] });
  assert.equal(b.status, 200, b.body);
  assert.deepEqual(b.json[0].result, { steps: 1 });
});

test('offload: a blocking sleep runs on a worker while heartbeats on another socket are answered', async () => {
  const a = await connect(server), b = await connect(server);
  try {
    const t0 = performance.now();
    const slow = a.call('test.offload', { ms: 600 });
    let worst = 0;
    for (let i = 0; i < 10; i++) {
      const h0 = performance.now();
      const h = await b.call('heartbeat', {});
      assert.ok(h.result);
      worst = Math.max(worst, performance.now() - h0);
    }
    const r = await slow;
    assert.deepEqual(r.result, { ran: true });
    assert.ok(performance.now() - t0 >= 590, 'it really slept');
    assert.ok(worst < 300, `heartbeats answered while it slept (worst ${worst.toFixed(1)} ms)`);
  } finally {
    await a.close();
    await b.close();
  }
});

test('offload: a cancelled call answers cancelled at once, and its work is not left behind', async () => {
  const c = await connect(server);
  try {
    const p = c.call('test.offload', { ms: 1500 }, 'sleepy');
    c.send({ jsonrpc: '2.0', method: 'cancel', params: { request_id: 'sleepy' } });
    const t0 = performance.now();
    const r = await p;
    assert.equal(r.error?.data?.reason, 'cancelled', JSON.stringify(r));
    assert.ok(performance.now() - t0 < 1000);
    // The worker finishes its sleep and the call is freed: later calls work.
    const again = await c.call('test.offload', { ms: 1 });
    assert.deepEqual(again.result, { ran: true });
  } finally {
    await c.close();
  }
});
