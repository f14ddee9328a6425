// Revoke-to-close benchmark: opens one WebSocket per API token, then revokes
// the tokens one by one over HTTP and measures, on the client, the time from
// sending account.token_revoke to (a) the session_revoked notification, (b)
// the 'close' event of the socket (4001; it fires once the close handshake
// and the TCP close are done) and (c) the revoke call's answer.  Prints
// p50/p99/max in microseconds.
//
//   node tools/node-server/revoke-bench.mjs --url http://127.0.0.1:PORT --token ADMIN_TOKEN [-n 200]
import WebSocket from 'ws';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) =>
  (v.startsWith('-') ? a.concat([[v.replace(/^-+/, ''), all[i + 1]]]) : a), []));
const url = args.url, owner = args.token, n = Number(args.n || 200);
if (!url || !owner) {
  console.error('usage: revoke-bench.mjs --url http://HOST:PORT --token OWNER_API_TOKEN [-n N]');
  process.exit(2);
}
const wsUrl = url.replace(/^http/, 'ws') + '/ws';

async function rpc(token, method, params) {
  const r = await fetch(url + '/rpc', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + token },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const j = await r.json();
  if (j.error) throw new Error(method + ': ' + JSON.stringify(j.error));
  return j.result;
}

const tokens = [];
for (let i = 0; i < n; i++) tokens.push(await rpc(owner, 'account.token_create', { name: 'bench-' + i }));
const sockets = await Promise.all(tokens.map((t) => new Promise((resolve, reject) => {
  const ws = new WebSocket(wsUrl, ['actiond.v1'], { headers: { Authorization: 'Bearer ' + t.token } });
  ws.once('open', () => resolve(ws));
  ws.once('error', reject);
})));

const toClose = [], toAnswer = [], toNotice = [];
let wrongCode = 0, answeredBeforeClose = 0;
for (let i = 0; i < n; i++) {
  const ws = sockets[i];
  const closed = new Promise((resolve) => ws.once('close', (code) => resolve([process.hrtime.bigint(), code])));
  const notice = new Promise((resolve) => ws.on('message', (m) => {
    if (JSON.parse(m.toString()).method === 'session_revoked') resolve(process.hrtime.bigint());
  }));
  const t0 = process.hrtime.bigint();
  const answer = rpc(owner, 'account.token_revoke', { token_id: tokens[i].id }).then(() => process.hrtime.bigint());
  const [[tc, code], ta, tn] = await Promise.all([closed, answer, notice]);
  if (code !== 4001) wrongCode++;
  toClose.push(Number(tc - t0) / 1000);
  toAnswer.push(Number(ta - t0) / 1000);
  toNotice.push(Number(tn - t0) / 1000);
}
const pct = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
console.log(`revocations=${n} close_code_not_4001=${wrongCode}`);
console.log(`revoke_to_notice_us p50=${pct(toNotice, 0.5).toFixed(0)} p99=${pct(toNotice, 0.99).toFixed(0)} max=${Math.max(...toNotice).toFixed(0)}  (session_revoked received)`);
console.log(`revoke_to_close_us p50=${pct(toClose, 0.5).toFixed(0)} p99=${pct(toClose, 0.99).toFixed(0)} max=${Math.max(...toClose).toFixed(0)}`);
console.log(`revoke_to_answer_us p50=${pct(toAnswer, 0.5).toFixed(0)} p99=${pct(toAnswer, 0.99).toFixed(0)} max=${Math.max(...toAnswer).toFixed(0)}`);
process.exit(wrongCode ? 1 : 0);
