// The siege of tools/bench-siege: slow-header connections and a login flood
// from many loopback addresses against one actiond, and a legitimate client
// that logs in and makes a call every six seconds (auth.login allows one
// address 10 a minute).  Prints one JSON line of
// results.  Usage: node siege.mjs PORT EMAIL PASSWORD SECONDS ORIGIN
import net from 'node:net';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

const [port, email, password, seconds, origin] = process.argv.slice(2);
const PORT = Number(port), END = Date.now() + Number(seconds) * 1000;
const SLOW_ADDRS = 3;
const stats = { slow_opened: 0, slow_closed_by_server: 0, flood_sent: 0, flood_by_reason: {}, probes: [] };

function post(body, localAddress, headers = {}) {
  return new Promise((resolve) => {
    const data = JSON.stringify(body);
    const req = http.request({ host: '127.0.0.1', port: PORT, path: '/rpc', method: 'POST', localAddress, agent: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data), ...headers } }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on('error', (e) => resolve({ status: 0, text: String(e) }));
    req.setTimeout(15000, () => req.destroy());
    req.end(data);
  });
}

// Slow headers: each address keeps up to 200 connections that send a
// request line and then one header byte a second, reopened when closed.
function slowHeaders(addr) {
  let open = 0;
  const one = () => {
    if (Date.now() > END) return;
    open++;
    stats.slow_opened++;
    const s = net.connect({ host: '127.0.0.1', port: PORT, localAddress: addr });
    let t;
    s.on('connect', () => {
      s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
      t = setInterval(() => s.write('a'), 1000);
    });
    s.on('error', () => {});
    s.on('close', () => { clearInterval(t); open--; stats.slow_closed_by_server++; setTimeout(one, 200); });
  };
  for (let i = 0; i < 200; i++) one();
}

// The flood: batches of 10 logins (the victim's email and made-up ones,
// wrong passwords), back to back, from each address.
async function flood(addr, n) {
  while (Date.now() < END) {
    const batch = Array.from({ length: 10 }, (_, i) => ({
      jsonrpc: '2.0', id: i, method: 'auth.login',
      params: { email: i % 2 ? email : `x${n}-${i}-${Date.now()}@flood.test`, password: 'wrong-password-' + i },
    }));
    const r = await post(batch, addr);
    stats.flood_sent += 10;
    let list = [];
    try { list = JSON.parse(r.text); } catch { list = []; }
    for (const a of Array.isArray(list) ? list : [list]) {
      const k = a?.error?.data?.reason || (a?.result ? 'ok' : `http_${r.status}`);
      stats.flood_by_reason[k] = (stats.flood_by_reason[k] || 0) + 1;
    }
  }
}

// The legitimate client: log in over HTTP, open the socket with the
// cookie, one heartbeat; the time for all of it.
async function probe() {
  const t0 = performance.now();
  const l = await post({ jsonrpc: '2.0', id: 1, method: 'auth.login', params: { email, password } }, '127.0.0.250');
  const loginMs = performance.now() - t0;
  if (l.status !== 200) return { ok: false, ms: loginMs, why: `login ${l.status} ${l.text.slice(0, 120)}` };
  const cookie = (l.headers['set-cookie'] || []).map((c) => c.split(';')[0]).find((c) => c.startsWith('actiond_session='));
  const ok = await new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${PORT}/ws`, ['actiond.v1'], { headers: { Cookie: cookie, Origin: origin }, localAddress: '127.0.0.250' });
    const timer = setTimeout(() => { ws.terminate(); resolve(false); }, 10000);
    ws.on('open', () => ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'heartbeat' })));
    ws.on('message', (m) => { clearTimeout(timer); resolve(!!JSON.parse(m).result); ws.close(); });
    ws.on('error', () => { clearTimeout(timer); resolve(false); });
  });
  return { ok, ms: performance.now() - t0, login_ms: loginMs };
}

// The client's address logs in once before the attack (it is then known to
// the account, as a user's usual address is).
const first = await probe();
if (!first.ok) { console.log(JSON.stringify({ error: 'no login before the siege', first })); process.exit(1); }
for (let a = 1; a <= SLOW_ADDRS; a++) slowHeaders(`127.0.1.${a}`);
const floods = [];
for (let a = 1; a <= 40; a++) floods.push(flood(`127.0.2.${a}`, a));
while (Date.now() < END) {
  await new Promise((r) => setTimeout(r, 6000));
  stats.probes.push(await probe());
}
await Promise.all(floods);
const ms = stats.probes.map((p) => p.ms).sort((a, b) => a - b);
const q = (f) => ms[Math.min(ms.length - 1, Math.floor(f * ms.length))];
console.log(JSON.stringify({
  probes: ms.length, probes_ok: stats.probes.filter((p) => p.ok).length,
  probe_p50_ms: Math.round(q(0.5)), probe_max_ms: Math.round(ms[ms.length - 1]),
  login_ms: stats.probes.map((p) => Math.round(p.login_ms || 0)),
  failures: stats.probes.filter((p) => !p.ok).map((p) => p.why || 'socket'),
  slow_connections_opened: stats.slow_opened, flood_logins_sent: stats.flood_sent, flood_answers: stats.flood_by_reason,
}));
process.exit(0);
