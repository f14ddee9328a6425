// Test harness: starts the real actiond binary with a throwaway config and
// gives tests WebSocket and HTTP clients that speak to it.
import { spawn, execFileSync, execFile } from 'node:child_process';
import nodeHttp from 'node:http';
import nodeHttps from 'node:https';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { randomBytes } from 'node:crypto';

// One master key for every server of a test process, so instances that
// share a database agree on token hashes.
export const TEST_MASTER_KEY = randomBytes(32).toString('hex');

export const ACTIOND = process.env.ACTIOND || new URL('../../build/src/actiond', import.meta.url).pathname;

// A fresh random token and the hash actiond's config wants.
export function genToken() {
  const out = execFileSync(ACTIOND, ['gen-token']).toString();
  return {
    token: /^token=(.*)$/m.exec(out)[1],
    hash: /^token_hash=(.*)$/m.exec(out)[1],
  };
}

// Starts actiond.  opts.keys: {name: {org, role}}; opts.server / opts.limits /
// opts.modules: extra INI settings; opts.tls: {cert, key}; opts.wrap: a
// command (array) that runs actiond, given as its trailing arguments, and
// must exec it (so signals reach actiond).  Resolves to a handle with the
// port, the tokens by key name, and stop().
export async function startServer(opts = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'actiond-test-'));
  const keys = opts.keys || { admin: { org: 'acme', role: 'admin' } };
  const tokens = {};
  let ini = '[server]\nlisten = 127.0.0.1:0\nlog_level = info\n';
  for (const [k, v] of Object.entries(opts.server || {})) ini += `${k} = ${v}\n`;
  if (opts.tls) ini += `tls_cert = ${opts.tls.cert}\ntls_key = ${opts.tls.key}\n`;
  // The core tests run without a database unless they ask for one.
  ini += '[database]\n';
  if (typeof opts.db === 'string') {
    // An external database (a conninfo); instances sharing it share the key.
    ini += `url = ${opts.db}\n`;
    for (const [k, v] of Object.entries(opts.database || {})) ini += `${k} = ${v}\n`;
  } else if (opts.db) {
    // opts.dataDir: a cluster that outlives this server (the caller removes
    // it), so that a second start finds what the first one left.
    const dataDir = opts.dataDir || join(dir, 'data');
    chmodSync(dir, 0o755); // the embedded server runs as another user
    ini += `data_dir = ${dataDir}\nfsync = off\n`;
    for (const [k, v] of Object.entries(opts.database || {})) ini += `${k} = ${v}\n`;
  } else {
    ini += 'enabled = off\n';
  }
  ini += '[security]\n';
  for (const [k, v] of Object.entries(opts.security || {})) ini += `${k} = ${v}\n`;
  ini += '[limits]\n';
  for (const [k, v] of Object.entries(opts.limits || {})) ini += `${k} = ${v}\n`;
  if (opts.modules) {
    ini += '[modules]\n';
    for (const [k, v] of Object.entries(opts.modules)) ini += `${k} = ${v}\n`;
  }
  for (const [name, k] of Object.entries(keys)) {
    const t = genToken();
    tokens[name] = t.token;
    ini += `[api_key ${name}]\norg = ${k.org}\nrole = ${k.role}\ntoken_hash = ${t.hash}\n`;
  }
  const conf = join(dir, 'actiond.conf');
  writeFileSync(conf, ini);
  const env = { ...process.env, ACTIOND_MASTER_KEY: opts.masterKey || TEST_MASTER_KEY };
  const argv = [ACTIOND, '-c', conf, ...(opts.args || [])];
  if (opts.wrap) argv.unshift(...opts.wrap);
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
  let log = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('actiond did not start:\n' + log)), 10000);
    proc.stderr.on('data', (d) => {
      log += d.toString();
      if (process.env.ACTIOND_TEST_LOG) process.stderr.write(d);
      // HOST:PORT, or (listen = unix:PATH) no port at all
      const m = /listening on \w+(?::\/\/[^:]+:(\d+)| over unix:)/.exec(log);
      if (m) { clearTimeout(timer); resolve(m[1] ? Number(m[1]) : 0); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`actiond exited ${code}:\n${log}`)); });
  });
  proc.removeAllListeners('exit');
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve({ code, sig })));
  const scheme = opts.tls ? 'https' : 'http';
  const server = {
    proc, port, tokens, dir, exited,
    token: tokens[Object.keys(keys)[0]],
    url: `${scheme}://127.0.0.1:${port}`,
    wsUrl: `${opts.tls ? 'wss' : 'ws'}://127.0.0.1:${port}/ws`,
    log: () => log,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const r = await exited;
      rmSync(dir, { recursive: true, force: true });
      return r;
    },
  };
  return server;
}

// An open WebSocket with helpers: call() sends a request and waits for the
// answer with the same id; next() waits for the next message of any kind.
// opts.path: another path than /ws; opts.wsOptions: extra options of the npm
// ws client (ca, servername, maxPayload...).  A refused upgrade rejects with
// an error whose .status is the HTTP status.
export async function connect(server, { token = server.token, protocols = ['actiond.v1'], headers, wsOptions = {}, path } = {}) {
  const h = { ...(headers || {}) };
  if (token) h.Authorization = 'Bearer ' + token;
  const url = path === undefined ? server.wsUrl : server.wsUrl.replace(/\/ws$/, path);
  const ws = new WebSocket(url, protocols, { headers: h, rejectUnauthorized: false, ...wsOptions });
  const client = wrap(ws);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(Object.assign(new Error('HTTP ' + res.statusCode), { status: res.statusCode })));
  });
  return client;
}

export function wrap(ws) {
  const queue = [];
  const waiters = [];
  const pending = new Map();
  let nextId = 1;
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  let isClosed = false;
  ws.on('close', () => { isClosed = true; });
  // Socket errors (EPIPE, ECONNRESET after the server hung up) end in a
  // 'close' event; keep them from being unhandled 'error' events.
  let lastError = null;
  ws.on('error', (e) => { lastError = e; });
  ws.on('message', (data) => {
    const text = data.toString();
    let msg;
    try { msg = JSON.parse(text); } catch { msg = { unparsable: text }; }
    if (msg && !Array.isArray(msg) && msg.id !== undefined && pending.has(JSON.stringify(msg.id))) {
      const p = pending.get(JSON.stringify(msg.id));
      pending.delete(JSON.stringify(msg.id));
      p(msg);
      return;
    }
    if (waiters.length) waiters.shift()(msg); else queue.push(msg);
  });
  return {
    ws,
    closed,
    send(obj) { ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); },
    call(method, params, id) {
      if (id === undefined) id = nextId++;
      const req = { jsonrpc: '2.0', id, method };
      if (params !== undefined) req.params = params;
      return new Promise((resolve) => {
        pending.set(JSON.stringify(id), resolve);
        ws.send(JSON.stringify(req));
      });
    },
    next(timeoutMs = 5000) {
      if (queue.length) return Promise.resolve(queue.shift());
      return new Promise((resolve, reject) => {
        const w = (m) => { clearTimeout(t); resolve(m); };
        const t = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error('no message within ' + timeoutMs + ' ms'));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    // Resolves to true if no message arrives within ms.
    async silent(ms) {
      try { await this.next(ms); return false; } catch { return true; }
    },
    close() { ws.close(); return closed; },
    // Takes every message received and not yet consumed by next().
    drain() { return queue.splice(0, queue.length); },
    get isClosed() { return isClosed; },
    get error() { return lastError; },
  };
}

// HTTP helper: fetch with the bearer token; returns {status, headers, body, json}.
// opts.localAddress: the source address to connect from (any 127.x.y.z on
// Linux), so that per-IP limits see distinct callers.
export async function http(server, path, { method = 'GET', body, token = server.token, headers = {}, localAddress } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = 'Bearer ' + token;
  if (body !== undefined && !h['Content-Type']) h['Content-Type'] = 'application/json';
  if (localAddress) return httpFrom(server, path, method, h, body, localAddress);
  const res = await fetch(server.url + path, { method, headers: h, body: typeof body === 'string' || body === undefined ? body : JSON.stringify(body) });
  const text = await res.text();
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
  return { status: res.status, headers: res.headers, body: text, json };
}

// http() over node:http, from a chosen source address.
function httpFrom(server, path, method, headers, body, localAddress) {
  const u = new URL(server.url + path);
  const payload = typeof body === 'string' || body === undefined ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = (u.protocol === 'https:' ? nodeHttps : nodeHttp).request(u, {
      method, headers, localAddress, agent: false, rejectUnauthorized: false,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        const h = new Headers();
        for (let i = 0; i < res.rawHeaders.length; i += 2) h.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
        let json;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: h, body: text, json });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

// One JSON-RPC request over POST /rpc; opts as for http() plus id.
export function rpc(server, method, params, { id = 1, ...opts } = {}) {
  const body = { jsonrpc: '2.0', id, method };
  if (params !== undefined) body.params = params;
  return http(server, '/rpc', { ...opts, method: 'POST', body });
}

// The "actiond_session=..." pair of a response's Set-Cookie, or null.
export function sessionCookie(res) {
  for (const c of res.headers.getSetCookie()) {
    const m = /^(actiond_session=[^;]*)/.exec(c);
    if (m) return m[1];
  }
  return null;
}

// The HTTP status a WebSocket upgrade gets with connect() opts (101 when
// accepted; the socket is closed again).
export async function upgradeStatus(server, opts) {
  try {
    const c = await connect(server, opts);
    await c.close();
    return 101;
  } catch (e) {
    if (e.status === undefined) throw e;
    return e.status;
  }
}

// Resolves with p, or rejects after ms: every wait ends by itself.
export function within(p, ms, what = 'operation') {
  let t;
  const timeout = new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms); });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

// GET /metrics parsed: {contentType, text, values: {'name{labels}': number}}.
export async function metrics(server) {
  const r = await http(server, '/metrics');
  if (r.status !== 200) throw new Error('/metrics answered ' + r.status);
  const values = {};
  for (const line of r.body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) values[m[1]] = Number(m[2]);
  }
  return { contentType: r.headers.get('content-type'), text: r.body, values };
}

export function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A throwaway PostgreSQL 15 cluster (fsync off, Unix socket in a private
// directory, no TCP), for tests that stop and restart the database under a
// running actiond or share it between two actiond processes.  As root, the
// server runs as the "postgres" user, as PostgreSQL demands.
const PGBIN = process.env.PGBIN || '/usr/lib/postgresql/15/bin';
export async function startPostgres({ tcpPort } = {}) {
  const { execFileSync: run } = await import('node:child_process');
  const { mkdirSync, chownSync } = await import('node:fs');
  const dir = mkdtempSync(join(tmpdir(), 'actiond-pg-'));
  chmodSync(dir, 0o755);
  const data = join(dir, 'pg');
  const sock = join(dir, 'run');
  mkdirSync(sock, { mode: 0o700 });
  const asRoot = process.getuid() === 0;
  let uid = process.getuid(), gid = process.getgid();
  if (asRoot) {
    uid = Number(run('id', ['-u', 'postgres']).toString());
    gid = Number(run('id', ['-g', 'postgres']).toString());
    chownSync(sock, uid, gid);
    chownSync(dir, uid, gid);
  }
  const as = (cmd, args) => asRoot ? run('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdio: 'pipe' })
                                  : run(cmd, args, { stdio: 'pipe' });
  as(join(PGBIN, 'initdb'), ['-D', data, '-U', 'actiond', '--auth=trust', '--no-sync', '-E', 'UTF8', '--no-locale']);
  const listen = tcpPort ? `-c listen_addresses=127.0.0.1 -p ${tcpPort}` : "-c listen_addresses=''";
  const opts = `${listen} -c unix_socket_directories=${sock} -c fsync=off -c max_connections=50`;
  // The same without blocking the event loop (clients keep talking meanwhile).
  const asAsync = (cmd, args) => new Promise((resolve, reject) => {
    const [c, a] = asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
    execFile(c, a, { maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => (err ? reject(Object.assign(err, { stderr })) : resolve(stdout)));
  });
  const pg = {
    dir, sock,
    conninfo: tcpPort ? `host=localhost port=${tcpPort} dbname=postgres user=actiond`
                      : `host=${sock} dbname=postgres user=actiond`,
    start() { as(join(PGBIN, 'pg_ctl'), ['-D', data, '-o', opts, '-l', join(dir, 'log'), '-w', 'start']); },
    stop(mode = 'fast') { as(join(PGBIN, 'pg_ctl'), ['-D', data, '-m', mode, '-w', 'stop']); },
    async startAsync() { await asAsync(join(PGBIN, 'pg_ctl'), ['-D', data, '-o', opts, '-l', join(dir, 'log'), '-w', 'start']); },
    async stopAsync(mode = 'fast') { await asAsync(join(PGBIN, 'pg_ctl'), ['-D', data, '-m', mode, '-w', 'stop']); },
    // The whole database as pg_dump's plain SQL text.
    dump() {
      return as(join(PGBIN, 'pg_dump'), ['-h', sock, '-U', 'actiond', '-d', 'postgres']).toString();
    },
    psql(sql, dbname = 'postgres') {
      return as(join(PGBIN, 'psql'), ['-h', sock, '-U', 'actiond', '-d', dbname, '-Atc', sql])
        .toString().trim();
    },
    destroy() {
      try { this.stop('immediate'); } catch { /* already stopped */ }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  pg.start();
  return pg;
}
