#!/usr/bin/env node
// gen-client.mjs - generates the JavaScript client of actiond from the action
// specs under protocol/actions/.
//
//   node tools/gen-client.mjs OUTDIR [SPEC.json ...]
//
// writes OUTDIR/actiond-client.mjs (a plain ES module with no imports: it runs
// in browsers without a bundler and in Node) and OUTDIR/actiond-client.d.ts
// (its TypeScript declarations: one interface per action's params and result,
// converted from their JSON Schemas, and the typed notification events), and
// OUTDIR/actiond-client.d.mts, one line that points TypeScript (which looks
// for the types of a .mjs in a .d.mts) at actiond-client.d.ts.
// Without SPEC arguments it reads every protocol/actions/*.json of the tree
// this script lives in; the build (clients/meson.build) passes the spec files
// it compiles into the server, so that a change to one rebuilds the client.
//
// The server's notifications have no spec files.  Their params are described
// by the NOTIFICATIONS table below, written from what the server sends (each
// entry names the source that builds it); keep it in step with those sources.
//
// No dependencies beyond Node itself; the output depends only on the inputs
// (sorted by method), so two runs over the same specs give the same bytes.

import { readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// ---- server notifications -----------------------------------------------------------

// Each: method, summary, source (where the server builds it) and the JSON
// Schema of its params.  {from: [method, pointer]} takes a schema out of an
// action spec; pick keeps some of its properties (all of them required: the
// server always sends the key, null when there is no value); override
// replaces properties.
const NOTIFICATIONS = [
  {
    method: 'changes',
    summary: 'A committed write to an entity this socket follows (changes.subscribe): live notifications follow the answer\'s seq, in increasing seq, with no gap and no duplicate.',
    source: 'src/modules/data/feed.c deliver()',
    schema: { from: ['changes.subscribe', '/result/properties/changes/items'] },
  },
  {
    method: 'session_revoked',
    summary: 'The credential this socket rests on was revoked; the socket is closed with 4001 right after (do not reconnect with it).',
    source: 'src/transport/ws.c ad_ws_revoke()',
    schema: {
      type: 'object',
      required: ['credential', 'reason'],
      additionalProperties: false,
      properties: {
        credential: { type: 'string', description: 'the revoked credential, KIND:ID (e.g. api_token:3738037598424002, session:..., agent_token:...)' },
        reason: { type: 'string', description: 'why: "revoked", "logout", "agent session revoked", "account disabled", ...' },
      },
    },
  },
  {
    method: 'progress',
    summary: 'Progress of an in-flight request of this socket (request_id), sent by actions that report progress; the other keys are the action\'s.',
    source: 'src/core/dispatch.c ad_call_progress()',
    schema: {
      type: 'object',
      required: ['request_id'],
      properties: { request_id: { type: ['string', 'number'], description: 'the id of the request it is about' } },
    },
  },
  {
    method: 'approval_requested',
    summary: 'An agent invoked a write action that waits for a decision (to the org\'s admins and owners).',
    source: 'src/modules/integrations/invoke.c (the pending branch)',
    schema: {
      from: ['invocations.get', '/result'],
      pick: ['invocation_id', 'agent_session_id', 'integration', 'action', 'risk', 'params', 'deadline', 'created_at'],
    },
  },
  {
    method: 'approval_resolved',
    summary: 'A pending invocation was approved, denied or expired (to the org\'s admins and owners and to the invoking agent session).',
    source: 'src/modules/integrations/module.c ig_publish_resolved()',
    schema: {
      from: ['invocations.get', '/result'],
      pick: ['invocation_id', 'integration', 'action', 'status', 'decided_by', 'decided_at', 'reason', 'comment'],
      override: { status: { enum: ['approved', 'denied', 'expired'] } },
    },
  },
  {
    method: 'invocation_completed',
    summary: 'An invocation ended (completed or failed), with its whole state as invocations.get answers it.',
    source: 'src/modules/integrations/run.c recorded(), sweeper.c',
    schema: { from: ['invocations.get', '/result'] },
  },
  {
    method: 'integration_credential_broken',
    summary: 'The org\'s credential of an integration stopped working (the token server refused it); calls fail until an admin sets it again.',
    source: 'src/modules/integrations/oauth.c',
    schema: {
      type: 'object',
      required: ['integration', 'credential_status', 'reason', 'at'],
      additionalProperties: false,
      properties: {
        integration: { type: 'string' },
        credential_status: { const: 'broken' },
        reason: { type: 'string', description: 'why, never a secret' },
        at: { type: 'string', description: 'UTC, ISO 8601' },
      },
    },
  },
];

// Names the client's own events use: a notification of the same name is
// still delivered as a `notification` event, never under its own name.
const CLIENT_EVENTS = ['open', 'close', 'error', 'revoked', 'reconnecting', 'notification', 'reset', 'resubscribed', 'statechange'];

// Members of ActiondClient: an action namespace (or top-level action) with one
// of these names would shadow it, and the generator refuses.
const RESERVED = new Set([
  'url', 'state', 'queued', 'inflight', 'call', 'notify', 'connect', 'close', 'ready',
  'setToken', 'on', 'once', 'addEventListener', 'removeEventListener', 'dispatchEvent',
  'constructor', 'toString', 'valueOf',
]);

// ---- inputs ---------------------------------------------------------------------------

function die(msg) {
  process.stderr.write('gen-client: ' + msg + '\n');
  process.exit(1);
}

const args = process.argv.slice(2);
if (args.length < 1 || args[0] === '-h' || args[0] === '--help')
  die('usage: node tools/gen-client.mjs OUTDIR [SPEC.json ...]');
const outDir = args[0];
let files = args.slice(1);
if (!files.length) {
  const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'protocol', 'actions');
  files = readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => join(dir, f));
}

const specs = new Map();
for (const f of files) {
  let s;
  try {
    s = JSON.parse(readFileSync(f, 'utf8'));
  } catch (e) {
    die(`${f}: ${e.message}`);
  }
  for (const k of ['method', 'summary', 'kind', 'auth', 'risk', 'params', 'result'])
    if (!(k in s)) die(`${f}: no "${k}"`);
  if (!/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/.test(s.method)) die(`${f}: bad method ${s.method}`);
  if (specs.has(s.method)) die(`${f}: ${s.method} is defined twice`);
  specs.set(s.method, s);
}
const methods = [...specs.keys()].sort();

// ---- JSON Schema → TypeScript ---------------------------------------------------------

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const propKey = (k) => (IDENT.test(k) ? k : JSON.stringify(k));
const literal = (v) => (v === null || typeof v !== 'object' ? JSON.stringify(v) : 'unknown');

function union(types) {
  const u = [...new Set(types)];
  if (u.includes('unknown')) return 'unknown';
  const t = u.filter((x) => x !== 'never');
  if (!t.length) return 'never';
  return t.join(' | ');
}

function pascal(method) {
  return method.split(/[._]/).filter(Boolean).map((w) => w[0].toUpperCase() + w.slice(1)).join('');
}

function comment(lines, pad) {
  const l = lines.filter((x) => x !== undefined && x !== null && x !== '');
  if (!l.length) return '';
  const body = l.flatMap((x) => String(x).replace(/\*\//g, '*\\/').split('\n'));
  if (body.length === 1) return `${pad}/** ${body[0]} */\n`;
  return `${pad}/**\n${body.map((x) => `${pad} * ${x}`).join('\n')}\n${pad} */\n`;
}

// Resolves a local "#/definitions/x" (or "#/..." pointer) within root.
function deref(ref, root) {
  if (typeof ref !== 'string' || !ref.startsWith('#')) return true;
  let node = root;
  for (const part of ref.slice(1).split('/').filter(Boolean)) {
    const key = decodeURIComponent(part).replace(/~1/g, '/').replace(/~0/g, '~');
    if (!node || typeof node !== 'object' || !(key in node)) return true;
    node = node[key];
  }
  return node;
}

const COMBINERS = ['oneOf', 'anyOf', 'allOf'];
const TYPE_KEYS = ['type', 'properties', 'additionalProperties', 'required', 'items', 'enum', 'const',
  'patternProperties', '$ref'];

// A branch of oneOf/anyOf with what its parent says besides the combiner
// (properties merged, required joined), so that {type: object, properties,
// oneOf: [{required: [a]}, {required: [b]}]} becomes two object types.
function mergeBranch(base, branch) {
  if (typeof branch !== 'object' || branch === null) return branch;
  const m = { ...base };
  for (const k of COMBINERS) delete m[k];
  for (const [k, v] of Object.entries(branch)) {
    if (k === 'properties') m.properties = { ...(base.properties || {}), ...v };
    else if (k === 'required') m.required = [...new Set([...(base.required || []), ...v])];
    else m[k] = v;
  }
  return m;
}

function tsType(schema, ctx, pad = '', depth = 0) {
  if (depth > 32) return 'unknown';
  if (schema === true || schema === undefined || schema === null) return 'unknown';
  if (schema === false) return 'never';
  if (typeof schema !== 'object' || Array.isArray(schema)) return 'unknown';
  if (schema.$ref) return tsType(deref(schema.$ref, ctx.root), ctx, pad, depth + 1);
  const hasBase = TYPE_KEYS.some((k) => k in schema);
  for (const k of ['oneOf', 'anyOf']) {
    if (Array.isArray(schema[k]) && schema[k].length) {
      const t = union(schema[k].map((b) => {
        const s = hasBase ? mergeBranch(schema, b) : b;
        return wrap(tsType(s, ctx, pad, depth + 1));
      }));
      return schema.allOf ? intersect([t, ...schema.allOf.map((b) => tsType(b, ctx, pad, depth + 1))]) : t;
    }
  }
  if (Array.isArray(schema.allOf) && schema.allOf.length) {
    const rest = { ...schema };
    delete rest.allOf;
    const parts = schema.allOf.map((b) => tsType(b, ctx, pad, depth + 1));
    if (hasBase) parts.unshift(tsType(rest, ctx, pad, depth + 1));
    return intersect(parts);
  }
  if ('const' in schema) return literal(schema.const);
  if (Array.isArray(schema.enum)) return union(schema.enum.map(literal));
  let types = schema.type;
  if (types === undefined) {
    if (schema.properties || schema.required || schema.additionalProperties !== undefined || schema.patternProperties)
      types = ['object'];
    else if (schema.items !== undefined) types = ['array'];
    else return 'unknown';
  }
  if (!Array.isArray(types)) types = [types];
  return union(types.map((t) => {
    switch (t) {
      case 'string': return 'string';
      case 'integer': case 'number': return 'number';
      case 'boolean': return 'boolean';
      case 'null': return 'null';
      case 'array': return arrayType(schema, ctx, pad, depth);
      case 'object': return objectBody(schema, ctx, pad, depth);
      default: return 'unknown';
    }
  }));
}

function wrap(t) {
  return /[|&]/.test(t) && !/^[{[(]/.test(t) ? `(${t})` : t;
}

function intersect(parts) {
  const p = [...new Set(parts.filter((x) => x !== 'unknown'))];
  if (!p.length) return 'unknown';
  if (p.includes('never')) return 'never';
  return p.map(wrap).join(' & ');
}

function arrayType(schema, ctx, pad, depth) {
  const it = schema.items;
  if (Array.isArray(it)) {
    const el = it.map((s) => tsType(s, ctx, pad, depth + 1));
    if (schema.additionalItems === false) return `[${el.join(', ')}]`;
    return `[${[...el, `...${wrap(tsType(schema.additionalItems, ctx, pad, depth + 1))}[]`].join(', ')}]`;
  }
  return `Array<${tsType(it, ctx, pad, depth + 1)}>`;
}

function describe(s) {
  if (!s || typeof s !== 'object') return [];
  const out = [];
  if (s.description) out.push(s.description);
  const c = [];
  if (s.pattern) c.push(`pattern ${s.pattern}`);
  if (s.minLength !== undefined) c.push(`minLength ${s.minLength}`);
  if (s.maxLength !== undefined) c.push(`maxLength ${s.maxLength}`);
  if (s.minimum !== undefined) c.push(`minimum ${s.minimum}`);
  if (s.maximum !== undefined) c.push(`maximum ${s.maximum}`);
  if (s.minItems !== undefined) c.push(`minItems ${s.minItems}`);
  if (s.maxItems !== undefined) c.push(`maxItems ${s.maxItems}`);
  if (c.length) out.push(c.join(', '));
  if (s.default !== undefined) out.push(`@default ${JSON.stringify(s.default)}`);
  return out;
}

function objectBody(schema, ctx, pad, depth) {
  const props = schema.properties && typeof schema.properties === 'object' ? schema.properties : {};
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const ap = schema.additionalProperties;
  const open = ap !== false || schema.patternProperties;
  const inner = pad + '  ';
  const lines = [];
  const names = Object.keys(props);
  for (const r of required) if (!(r in props)) names.push(r);
  for (const name of names) {
    const s = props[name];
    lines.push(comment(describe(s), inner) +
      `${inner}${propKey(name)}${required.has(name) ? '' : '?'}: ${tsType(s, ctx, inner, depth + 1)};`);
  }
  if (!names.length) {
    if (!open) return '{ [key: string]: never }';
    if (ap === undefined || ap === true || schema.patternProperties) return '{ [key: string]: unknown }';
    return `{ [key: string]: ${tsType(ap, ctx, inner, depth + 1)} }`;
  }
  if (open) lines.push(`${inner}[key: string]: unknown;`);
  return `{\n${lines.join('\n')}\n${pad}}`;
}

// Whether params may be left out: an object schema that requires nothing.
function paramsOptional(schema) {
  if (schema === true || schema === undefined) return true;
  if (typeof schema !== 'object') return false;
  const t = schema.type;
  const isObj = t === 'object' || (Array.isArray(t) && t.includes('object')) || (t === undefined && schema.properties);
  return !!isObj && !(schema.required && schema.required.length) && !schema.oneOf && !schema.anyOf;
}

// An exported declaration: an interface when the schema is a plain object type.
function declare(name, schema, root, doc) {
  const t = tsType(schema, { root }, '');
  const head = comment(doc, '');
  if (t.startsWith('{')) return `${head}export interface ${name} ${t}\n`;
  return `${head}export type ${name} = ${t};\n`;
}

// ---- notification schemas ----------------------------------------------------------------

function pointer(doc, ptr) {
  let node = doc;
  for (const part of ptr.split('/').filter(Boolean)) {
    if (!node || typeof node !== 'object' || !(part in node)) return undefined;
    node = node[part];
  }
  return node;
}

function notificationSchema(n) {
  const s = n.schema;
  if (!s.from) return s;
  const [method, ptr] = s.from;
  const spec = specs.get(method);
  let base = spec && pointer(spec, ptr);
  if (!base) {
    process.stderr.write(`gen-client: warning: ${n.method}: ${method}${ptr} not among the inputs; its params are typed loosely\n`);
    return { type: 'object' };
  }
  base = structuredClone(base);
  if (s.pick) {
    const props = {};
    for (const k of s.pick) props[k] = base.properties?.[k] ?? true;
    base = { type: 'object', additionalProperties: false, required: [...s.pick], properties: props };
  }
  if (s.override) base.properties = { ...base.properties, ...s.override };
  return base;
}

// ---- the namespaces ------------------------------------------------------------------

// tree: { name: { methods: [method...], children: {...} } }
const tree = { methods: [], children: {} };
for (const m of methods) {
  const parts = m.split('.');
  let node = tree;
  for (const p of parts.slice(0, -1)) {
    node.children[p] ??= { methods: [], children: {} };
    node = node.children[p];
  }
  node.methods.push(m);
}
for (const m of tree.methods) if (RESERVED.has(m)) die(`action ${m} would shadow ActiondClient.${m}`);
for (const n of Object.keys(tree.children)) {
  if (RESERVED.has(n)) die(`namespace ${n} would shadow ActiondClient.${n}`);
  if (tree.methods.includes(n)) die(`${n} is both an action and a namespace`);
}

const leaf = (m) => m.split('.').pop();
const authLine = (s) => `auth: ${s.auth.credentials.join(', ')}${s.auth.roles.length ? ` (${s.auth.roles.join(', ')})` : ''}; risk: ${s.risk}` +
  (s.transports ? `; over ${s.transports.join(', ')} only` : '');

// ---- actiond-client.mjs --------------------------------------------------------------

function jsMethod(m, pad, asClassMethod) {
  const s = specs.get(m);
  const name = leaf(m);
  const doc = [s.summary, s.description, authLine(s)];
  if (s.kind === 'notification') {
    doc.push('Sent as a JSON-RPC notification (no answer); returns whether it was sent (false while disconnected: not queued).',
      `@param {import('./actiond-client.js').${pascal(m)}Params} params`, '@returns {boolean}');
    if (asClassMethod)
      return comment(doc, pad) + `${pad}${name}(params) { return this.notify(${JSON.stringify(m)}, params); }`;
    return comment(doc, pad) + `${pad}${propKey(name)}: (params) => c.notify(${JSON.stringify(m)}, params),`;
  }
  doc.push(`@param {import('./actiond-client.js').${pascal(m)}Params} ${paramsOptional(s.params) ? '[params]' : 'params'}`,
    '@param {import(\'./actiond-client.js\').CallOptions} [opts]',
    `@returns {Promise<import('./actiond-client.js').${pascal(m)}Result>}`);
  if (asClassMethod)
    return comment(doc, pad) + `${pad}${name}(params, opts) { return this.call(${JSON.stringify(m)}, params, opts); }`;
  return comment(doc, pad) + `${pad}${propKey(name)}: (params, opts) => c.call(${JSON.stringify(m)}, params, opts),`;
}

function jsNamespace(node, pad) {
  const inner = pad + '  ';
  const out = [];
  for (const m of node.methods) out.push(jsMethod(m, inner, false));
  for (const [k, child] of Object.entries(node.children).sort(([a], [b]) => (a < b ? -1 : 1)))
    out.push(`${inner}${propKey(k)}: ${jsNamespace(child, inner)},`);
  return `Object.freeze({\n${out.join('\n')}\n${pad}})`;
}

const actionsTable = {};
for (const m of methods) {
  const s = specs.get(m);
  actionsTable[m] = { kind: s.kind, risk: s.risk };
  if (s.transports) actionsTable[m].transports = s.transports;
}

const nsNames = Object.keys(tree.children).sort();
const nsFns = nsNames.map((n) =>
  `// The ${n}.* actions.\nfunction ns_${n.replace(/\W/g, '_')}(c) {\n  return ${jsNamespace(tree.children[n], '  ')};\n}\n`).join('\n');
const nsInit = nsNames.map((n) =>
  `    /** The ${n}.* actions. */\n    this.${n} = ns_${n.replace(/\W/g, '_')}(this);`).join('\n');
const topMethods = tree.methods.map((m) => jsMethod(m, '  ', true)).join('\n\n');

const RUNTIME = String.raw`
/** The close codes of actiond (README, "Close codes"). */
export const CLOSE_CODES = Object.freeze({
  NORMAL: 1000,
  SHUTDOWN: 1001,
  PROTOCOL_ERROR: 1002,
  BINARY_FRAME: 1003,
  ABNORMAL: 1006,
  INVALID_UTF8: 1007,
  POLICY: 1008,
  MESSAGE_TOO_BIG: 1009,
  HEARTBEAT_TIMEOUT: 4000,
  CREDENTIAL_REVOKED: 4001,
  SLOW_CONSUMER: 4008,
});

const DEFAULT_RECONNECT = Object.freeze({ initialMs: 250, maxMs: 10000, factor: 2, jitter: 0.3 });
const CLIENT_EVENTS = new Set(CLIENT_EVENTS_LIST);
// changes.subscribe takes at most this many entities a call.
const MAX_ENTITIES = 32;

/**
 * The error a call rejects with: a JSON-RPC error of the server (code a
 * number, data its error.data with reason, pointer...) or one of the client
 * (code a string: queue_full, disconnected, closed, revoked, timeout, http).
 */
export class ActiondError extends Error {
  constructor(code, message, data) {
    super(message);
    this.name = 'ActiondError';
    this.code = code;
    this.data = data === undefined ? null : data;
  }

  /** error.data.reason (unauthenticated, forbidden, not_found, ...), or null. */
  get reason() {
    return this.data && typeof this.data === 'object' && typeof this.data.reason === 'string' ? this.data.reason : null;
  }

  /** error.data.pointer of an invalid-params error (-32602), or null. */
  get pointer() {
    return this.data && typeof this.data === 'object' && typeof this.data.pointer === 'string' ? this.data.pointer : null;
  }
}

function abortError(signal) {
  if (signal && signal.reason !== undefined) return signal.reason;
  if (typeof DOMException === 'function') return new DOMException('The call was aborted', 'AbortError');
  const e = new Error('The call was aborted');
  e.name = 'AbortError';
  return e;
}

function makeEvent(type, detail) {
  if (typeof CustomEvent === 'function') return new CustomEvent(type, { detail });
  const e = new Event(type);
  Object.defineProperty(e, 'detail', { value: detail });
  return e;
}

const now = () => Date.now();

// ws://host/ws → http://host/rpc (wss → https).
function rpcUrlOf(wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = u.pathname.replace(/\/ws$/, '') + '/rpc';
  u.search = '';
  u.hash = '';
  return u.toString();
}

/**
 * A client of actiond over one WebSocket (subprotocol actiond.v1) that
 * reconnects, queues calls while disconnected, keeps the socket alive with
 * heartbeats and restores its change-feed subscriptions.  Events (each a
 * CustomEvent whose detail is given; on() passes the detail alone): open,
 * close, error, reconnecting, revoked, reset, resubscribed, statechange,
 * notification, and one per notification method (changes, session_revoked,
 * progress, approval_requested, ...).
 */
export class ActiondClient extends EventTarget {
  /**
   * @param {string | URL} url  ws:// or wss:// URL of actiond's /ws
   * @param {import('./actiond-client.js').ActiondClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    // In a page a relative URL ('/ws') is the page's server; http(s) is taken for ws(s).
    const base = globalThis.location && globalThis.location.href;
    const u = base ? new URL(String(url), base) : new URL(String(url));
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new TypeError('ActiondClient: the URL must be ws: or wss:, not ' + u.protocol);
    const o = options || {};
    /** The WebSocket URL. */
    this.url = u.toString();
    this._token = o.token;
    this._tokenVia = o.tokenVia || 'header';
    if (this._tokenVia !== 'header' && this._tokenVia !== 'subprotocol') throw new TypeError('ActiondClient: tokenVia is header or subprotocol');
    this._protocols = Array.isArray(o.protocols) ? o.protocols.slice() : o.protocols ? [o.protocols] : ['actiond.v1'];
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== 'function') throw new TypeError('ActiondClient: no WebSocket here; pass options.WebSocket (in Node: the WebSocket of the ws package)');
    this._reconnect = o.reconnect === false ? null : { ...DEFAULT_RECONNECT, ...(o.reconnect || {}) };
    this._queueLimit = o.queueLimit ?? 100;
    this._heartbeatMs = o.heartbeatMs ?? 20000;
    this._heartbeatTimeoutMs = o.heartbeatTimeoutMs ?? Math.min(10000, this._heartbeatMs);
    this._callTimeoutMs = o.callTimeoutMs ?? 0;
    this._rpcUrl = o.rpcUrl || rpcUrlOf(this.url);
    this._fetch = o.fetch || (typeof fetch === 'function' ? fetch.bind(globalThis) : null);
    this._nextId = 1;
    this._pending = new Map();   // id → call sent on this._ws, not answered
    this._queue = [];            // calls not sent yet
    this._ws = null;
    this._wsOpened = false;
    this._state = 'idle';
    this._attempt = 0;
    this._everOpened = false;
    this._retryTimer = null;
    this._hbTimer = null;
    this._hbBusy = false;
    this._lastRx = 0;
    this._lastTx = 0;
    this._feed = new Map();      // entity → last seq seen (changes.subscribe)
    this._epoch = null;
    this._resub = null;          // {entities: Set, held: []} while resubscribing
    this._revoked = null;        // session_revoked params
    this._closeWaiters = [];
    this._openWaiters = [];
NAMESPACE_INIT
    if (o.connect !== false) this.connect();
  }

  /** idle, connecting, open, reconnecting, closed or revoked. */
  get state() { return this._state; }

  /** Calls waiting for a connection. */
  get queued() { return this._queue.length; }

  /** Calls sent and not answered yet. */
  get inflight() { return this._pending.size; }

  /**
   * The token of the next connection: a string, or a function answering one
   * (or a promise of one), called at each connection.
   */
  setToken(token) { this._token = token; }

  /** Adds a listener that gets the event's detail; answers a function that removes it. */
  on(type, listener) {
    const fn = (e) => listener(e.detail);
    this.addEventListener(type, fn);
    return () => this.removeEventListener(type, fn);
  }

  /** Resolves with the detail of the next event of type. */
  once(type) {
    return new Promise((resolve) => this.addEventListener(type, (e) => resolve(e.detail), { once: true }));
  }

  /** Resolves when the socket is open (at once if it is). */
  ready() {
    if (this._state === 'open') return Promise.resolve();
    if (this._state === 'closed' || this._state === 'revoked') return Promise.reject(this._stateError());
    return new Promise((resolve, reject) => this._openWaiters.push({ resolve, reject }));
  }

  /**
   * Opens the socket (done by the constructor unless options.connect is
   * false); again after close() or a revocation; at once while waiting to
   * reconnect.
   */
  connect() {
    if (this._retryTimer) {
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
      this._open();
      return;
    }
    if (this._state === 'connecting' || this._state === 'open' || this._state === 'reconnecting') return;
    this._closing = false;
    this._revoked = null;
    this._attempt = 0;
    this._open();
  }

  /**
   * Closes the socket for good (no reconnect): queued and in-flight calls
   * reject with code closed.  Resolves once the socket is closed.
   */
  close(code = 1000, reason = '') {
    this._closing = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._stopHeartbeat();
    this._failQueue(new ActiondError('closed', 'the client was closed'));
    const ws = this._ws;
    if (!ws) {
      if (this._state !== 'revoked') this._setState('closed');
      this._failOpenWaiters();
      return Promise.resolve();
    }
    const p = new Promise((resolve) => this._closeWaiters.push(resolve));
    try { ws.close(code, reason); } catch { this._onClose(ws, 1006, 'close failed'); }
    return p;
  }

  /**
   * Calls method with params; resolves with its result.  Rejects with an
   * ActiondError (server errors: code, message, data; client errors:
   * queue_full, disconnected, closed, revoked, timeout), or with the
   * signal's reason (an AbortError) once opts.signal aborts, which sends the
   * server a cancel for the request.
   */
  call(method, params, opts = {}) {
    if (typeof method !== 'string' || !method) return Promise.reject(new TypeError('call: method must be a non-empty string'));
    opts = opts || {};
    const meta = ACTIONS[method];
    if (meta && meta.transports && !meta.transports.includes('websocket')) return this._http(method, params, opts);
    const signal = opts.signal;
    if (signal && signal.aborted) return Promise.reject(abortError(signal));
    if (this._state === 'closed' || this._state === 'revoked') return Promise.reject(this._stateError());
    const p = new Promise((resolve, reject) => {
      const e = { id: this._nextId++, method, params, resolve, reject, signal, onProgress: opts.onProgress, timer: null, ws: null, onAbort: null };
      if (this._state === 'open') {
        this._send(e);
      } else if (this._queue.length >= this._queueLimit) {
        reject(new ActiondError('queue_full', 'not connected and ' + this._queueLimit + ' calls already wait (queueLimit)', { queued: this._queue.length }));
        return;
      } else {
        this._queue.push(e);
      }
      if (signal) {
        e.onAbort = () => this._abandon(e, abortError(signal));
        signal.addEventListener('abort', e.onAbort, { once: true });
      }
      const t = opts.timeoutMs ?? this._callTimeoutMs;
      if (t > 0) e.timer = setTimeout(() => this._abandon(e, new ActiondError('timeout', method + ': no answer within ' + t + ' ms')), t);
    });
    if (method === 'changes.subscribe' || method === 'changes.unsubscribe') return p.then((r) => { this._track(method, params, r); return r; });
    return p;
  }

  /** Sends a JSON-RPC notification (no answer); false when not connected (it is not queued). */
  notify(method, params) {
    if (this._state !== 'open' || !this._ws) return false;
    const msg = { jsonrpc: '2.0', method };
    if (params !== undefined) msg.params = params;
    return this._write(msg);
  }

  // ---- typed actions without a namespace ----

TOP_METHODS

  // ---- connection ----

  _setState(s) {
    if (this._state === s) return;
    const from = this._state;
    this._state = s;
    this._emit('statechange', { state: s, from });
  }

  _emit(type, detail) {
    this.dispatchEvent(makeEvent(type, detail));
  }

  _stateError() {
    if (this._state === 'revoked')
      return new ActiondError('revoked', 'the credential was revoked (close 4001): set another token and connect()', this._revoked);
    return new ActiondError('closed', 'the client is closed: connect() first');
  }

  _open() {
    this._setState(this._everOpened ? 'reconnecting' : 'connecting');
    const gen = (this._gen = (this._gen || 0) + 1);
    let token;
    try {
      token = typeof this._token === 'function' ? this._token() : this._token;
    } catch (err) {
      this._emit('error', { error: err });
      this._retry();
      return;
    }
    Promise.resolve(token).then((t) => {
      if (gen === this._gen && !this._closing) this._openWith(t);
    }, (err) => {
      if (gen !== this._gen || this._closing) return;
      this._emit('error', { error: err });
      this._retry();
    });
  }

  _openWith(token) {
    const protocols = this._protocols.slice();
    let ws;
    try {
      if (token && this._tokenVia === 'subprotocol') protocols.push('actiond.bearer.' + token);
      if (token && this._tokenVia === 'header')
        ws = new this._WS(this.url, protocols, { headers: { Authorization: 'Bearer ' + token } });
      else
        ws = new this._WS(this.url, protocols);
    } catch (err) {
      this._emit('error', { error: err });
      this._retry();
      return;
    }
    this._ws = ws;
    this._wsOpened = false;
    ws.addEventListener('open', () => { if (ws === this._ws) this._onOpen(ws); });
    ws.addEventListener('message', (ev) => { if (ws === this._ws) this._onMessage(ev.data); });
    ws.addEventListener('close', (ev) => this._onClose(ws, ev.code, ev.reason));
    ws.addEventListener('error', (ev) => {
      if (ws === this._ws) this._emit('error', { error: (ev && (ev.error || ev.message)) || new Error('WebSocket error') });
    });
  }

  _onOpen(ws) {
    this._wsOpened = true;
    const reconnected = this._everOpened;
    this._everOpened = true;
    this._attempt = 0;
    this._lastRx = this._lastTx = now();
    this._setState('open');
    this._restore();
    const q = this._queue.splice(0);
    for (const e of q) this._send(e);
    this._armHeartbeat();
    this._emit('open', { reconnected });
    for (const w of this._openWaiters.splice(0)) w.resolve();
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._stopHeartbeat();
    this._resub = null;
    const opened = this._wsOpened;
    this._wsOpened = false;
    code = code || 1006;
    reason = reason || '';
    const why = this._closing
      ? new ActiondError('closed', 'the client was closed')
      : new ActiondError('disconnected', 'the connection closed (' + code + ') before the answer; the call may or may not have run', { code, reason });
    for (const e of [...this._pending.values()]) this._settle(e, why);
    if (opened) this._emit('close', { code, reason });
    const revoked = code === 4001 || this._revoked;
    if (revoked) {
      this._setState('revoked');
      this._failQueue(this._stateError());
      this._emit('revoked', { code, reason, notification: this._revoked });
      this._failOpenWaiters();
    } else if (this._closing || !this._reconnect) {
      this._setState('closed');
      this._failQueue(new ActiondError('closed', this._closing ? 'the client was closed' : 'the connection closed (' + code + ') and reconnect is off'));
      this._failOpenWaiters();
    } else {
      this._retry();
    }
    for (const w of this._closeWaiters.splice(0)) w();
  }

  _retry() {
    if (this._closing || !this._reconnect) {
      this._setState('closed');
      this._failQueue(new ActiondError('closed', 'not connected and reconnect is off'));
      this._failOpenWaiters();
      return;
    }
    const r = this._reconnect;
    this._attempt++;
    const base = Math.min(r.maxMs, r.initialMs * Math.pow(r.factor, this._attempt - 1));
    const delayMs = Math.max(0, Math.min(r.maxMs, Math.round(base * (1 + r.jitter * (2 * Math.random() - 1)))));
    this._setState('reconnecting');
    this._emit('reconnecting', { attempt: this._attempt, delayMs });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._closing) this._open();
    }, delayMs);
  }

  // Gives up a socket that stopped answering: closed at once (not waiting
  // for a close handshake that will not come), then reconnected.
  _drop(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    try {
      if (typeof ws.terminate === 'function') ws.terminate();
      else ws.close(code, reason);
    } catch { /* already closing */ }
    this._onClose(ws, code, reason);
  }

  _failQueue(err) {
    for (const e of this._queue.splice(0)) this._settle(e, err);
  }

  _failOpenWaiters() {
    const err = this._stateError();
    for (const w of this._openWaiters.splice(0)) w.reject(err);
  }

  // ---- calls ----

  _write(msg) {
    try {
      this._ws.send(JSON.stringify(msg));
      this._lastTx = now();
      return true;
    } catch (err) {
      this._emit('error', { error: err });
      return false;
    }
  }

  _send(e) {
    e.ws = this._ws;
    this._pending.set(e.id, e);
    const msg = { jsonrpc: '2.0', id: e.id, method: e.method };
    if (e.params !== undefined) msg.params = e.params;
    this._write(msg);
  }

  // Ends a call with err: a queued one leaves the queue; one in flight on
  // the open socket is cancelled on the server.
  _abandon(e, err) {
    if (this._pending.get(e.id) === e && e.ws === this._ws && this._state === 'open')
      this.notify('cancel', { request_id: e.id });
    this._settle(e, err);
  }

  _settle(e, err, result) {
    if (e.done) return;
    e.done = true;
    clearTimeout(e.timer);
    if (e.signal && e.onAbort) e.signal.removeEventListener('abort', e.onAbort);
    if (this._pending.get(e.id) === e) this._pending.delete(e.id);
    const i = this._queue.indexOf(e);
    if (i >= 0) this._queue.splice(i, 1);
    if (err) e.reject(err); else e.resolve(result);
  }

  // A call of the client itself, only on the open socket (never queued).
  _internal(method, params, timeoutMs) {
    if (this._state !== 'open') return Promise.reject(new ActiondError('disconnected', 'not connected'));
    return new Promise((resolve, reject) => {
      const e = { id: this._nextId++, method, params, resolve, reject, timer: null, ws: null };
      this._send(e);
      if (timeoutMs > 0) e.timer = setTimeout(() => this._abandon(e, new ActiondError('timeout', method + ': no answer within ' + timeoutMs + ' ms')), timeoutMs);
    });
  }

  async _http(method, params, opts) {
    if (!this._fetch) throw new ActiondError('http', method + ' is answered over HTTP only, and there is no fetch here (options.fetch)');
    const token = typeof this._token === 'function' ? await this._token() : this._token;
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const body = { jsonrpc: '2.0', id: this._nextId++, method };
    if (params !== undefined) body.params = params;
    const res = await this._fetch(this._rpcUrl, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'include', signal: opts.signal });
    let j;
    try { j = await res.json(); } catch { throw new ActiondError('http', method + ': HTTP ' + res.status + ' without a JSON-RPC answer', { status: res.status }); }
    if (j && j.error) throw new ActiondError(j.error.code, j.error.message, j.error.data);
    return j ? j.result : undefined;
  }

  // ---- messages ----

  _onMessage(data) {
    this._lastRx = now();
    if (typeof data !== 'string') {
      if (typeof ArrayBuffer !== 'undefined' && data instanceof ArrayBuffer) data = new TextDecoder().decode(data);
      else if (data && typeof data.toString === 'function' && !(typeof Blob !== 'undefined' && data instanceof Blob)) data = data.toString();
      else return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      this._emit('error', { error: new Error('unparsable message from the server: ' + err.message) });
      return;
    }
    for (const m of Array.isArray(msg) ? msg : [msg]) this._handle(m);
  }

  _handle(m) {
    if (!m || typeof m !== 'object') return;
    if (typeof m.method === 'string' && m.id === undefined) {
      this._notification(m.method, m.params);
      return;
    }
    if (!('result' in m) && !('error' in m)) return;
    const e = this._pending.get(m.id);
    if (!e) {
      if (m.id === null && m.error)
        this._emit('error', { error: new ActiondError(m.error.code, m.error.message, m.error.data) });
      return; // an answer to an abandoned call
    }
    if (m.error) {
      const er = m.error;
      this._settle(e, new ActiondError(typeof er.code === 'number' ? er.code : -32603, String(er.message || 'error'), er.data));
    } else {
      this._settle(e, null, m.result);
    }
  }

  _notification(method, params) {
    if (method === 'changes') {
      if (!this._change(params)) return;
    } else if (method === 'progress') {
      const e = params && this._pending.get(params.request_id);
      if (e && typeof e.onProgress === 'function') {
        try { e.onProgress(params); } catch (err) { this._emit('error', { error: err }); }
      }
    } else if (method === 'session_revoked') {
      this._revoked = params || {};
    }
    this._deliver(method, params);
  }

  _deliver(method, params) {
    this._emit('notification', { method, params });
    if (!CLIENT_EVENTS.has(method)) this._emit(method, params);
  }

  // Whether a changes notification is new: held while its entity is being
  // resubscribed, dropped when its seq was seen already.
  _change(p) {
    if (!p || typeof p.entity !== 'string' || typeof p.seq !== 'number') return true;
    if (this._resub && this._resub.entities.has(p.entity)) {
      this._resub.held.push(p);
      return false;
    }
    if (!this._feed.has(p.entity)) return true;
    if (p.seq <= this._feed.get(p.entity)) return false;
    this._feed.set(p.entity, p.seq);
    return true;
  }

  // Remembers what changes.subscribe / changes.unsubscribe did through call().
  _track(method, params, r) {
    const entities = params && Array.isArray(params.entities) ? params.entities : [];
    if (method === 'changes.unsubscribe') {
      for (const e of entities) this._feed.delete(e);
      return;
    }
    if (!r || r.more) return; // more: the socket is not subscribed yet
    if (typeof r.epoch === 'string') this._epoch = r.epoch;
    for (const e of entities) this._feed.set(e, Math.max(this._feed.get(e) ?? 0, r.seq));
  }

  // After a reconnect: subscribes again to every entity followed, since the
  // last seq seen of each; what was missed is delivered as changes events.
  _restore() {
    if (!this._feed.size) return;
    const entities = [...this._feed.keys()];
    const resub = { entities: new Set(entities), held: [] };
    this._resub = resub;
    const jobs = [];
    for (let i = 0; i < entities.length; i += MAX_ENTITIES) jobs.push(this._resubscribe(entities.slice(i, i + MAX_ENTITIES), resub));
    Promise.all(jobs).then(() => {
      if (this._resub !== resub) return;
      this._resub = null;
      for (const p of resub.held.sort((a, b) => a.seq - b.seq)) if (this._change(p)) this._deliver('changes', p);
    });
  }

  async _resubscribe(entities, resub) {
    const since = Math.min(...entities.map((e) => this._feed.get(e)));
    let from = since;
    let replayed = 0;
    try {
      for (;;) {
        const params = { entities, since: from };
        if (this._epoch) params.epoch = this._epoch;
        const r = await this._internal('changes.subscribe', params, 0);
        if (this._resub !== resub) return;
        if (typeof r.epoch === 'string') this._epoch = r.epoch;
        if (r.reset) {
          for (const e of entities) this._feed.set(e, r.seq);
          resub.held = resub.held.filter((p) => !entities.includes(p.entity) || p.seq > r.seq);
          this._emit('reset', { entities, since: from, seq: r.seq, epoch: r.epoch });
          return;
        }
        for (const c of r.changes || []) {
          const last = this._feed.get(c.entity);
          if (last !== undefined && c.seq <= last) continue;
          this._feed.set(c.entity, c.seq);
          this._deliver('changes', c);
          replayed++;
        }
        if (!r.more) {
          for (const e of entities) this._feed.set(e, Math.max(this._feed.get(e), r.seq));
          this._emit('resubscribed', { entities, since, seq: r.seq, replayed });
          return;
        }
        const ch = r.changes || [];
        from = ch.length ? ch[ch.length - 1].seq : r.seq;
      }
    } catch (err) {
      if (this._resub === resub && this._state === 'open') this._emit('error', { error: err, method: 'changes.subscribe', entities });
    }
  }

  // ---- heartbeat ----

  // A heartbeat goes out when nothing was received, or nothing sent, for
  // heartbeatMs (actiond closes a socket that sent nothing for its
  // heartbeat_timeout); one not answered within heartbeatTimeoutMs drops
  // the socket, which is then reconnected.
  _armHeartbeat() {
    clearTimeout(this._hbTimer);
    this._hbTimer = null;
    if (!(this._heartbeatMs > 0) || this._state !== 'open') return;
    const idleSince = Math.min(this._lastRx, this._lastTx);
    const wait = Math.max(0, idleSince + this._heartbeatMs - now());
    this._hbTimer = setTimeout(() => this._beat(), wait);
  }

  _beat() {
    this._hbTimer = null;
    if (this._state !== 'open' || this._hbBusy) return;
    if (now() - Math.min(this._lastRx, this._lastTx) < this._heartbeatMs) {
      this._armHeartbeat();
      return;
    }
    const ws = this._ws;
    this._hbBusy = true;
    this._internal('heartbeat', {}, this._heartbeatTimeoutMs).then(() => {
      this._hbBusy = false;
      if (ws === this._ws) this._armHeartbeat();
    }, (err) => {
      this._hbBusy = false;
      if (ws !== this._ws) return;
      if (err instanceof ActiondError && err.code === 'timeout') this._drop(4000, 'no heartbeat answer within ' + this._heartbeatTimeoutMs + ' ms');
      else this._armHeartbeat();
    });
  }

  _stopHeartbeat() {
    clearTimeout(this._hbTimer);
    this._hbTimer = null;
  }
}
`;

const ACTIONS_JS = `/** The actions this client was generated from: method → {kind, risk, transports?}. */\nexport const ACTIONS = Object.freeze({\n${methods.map((m) => `  ${JSON.stringify(m)}: ${JSON.stringify(actionsTable[m])},`).join('\n')}\n});\n`;
const NOTES_JS = `/** The server notifications this client types (each also an event of that name). */\nexport const NOTIFICATIONS = Object.freeze(${JSON.stringify(NOTIFICATIONS.map((n) => n.method))});\n`;

const mjs = `// actiond-client.mjs - a client of actiond (JSON-RPC 2.0 over WebSocket).
// Generated by tools/gen-client.mjs from protocol/actions/*.json: do not edit.
// A plain ES module without imports: browsers load it as it is
// (<script type="module">), Node imports it and passes a WebSocket (the ws
// package's).  Types: actiond-client.d.ts.  Usage: docs/client.md.

${ACTIONS_JS}
${NOTES_JS}
const CLIENT_EVENTS_LIST = ${JSON.stringify(CLIENT_EVENTS)};
${RUNTIME.replace('NAMESPACE_INIT', () => nsInit).replace('TOP_METHODS', () => topMethods)}
${nsFns}`;

// ---- actiond-client.d.ts -------------------------------------------------------------

let dts = `// actiond-client.d.ts - the types of actiond-client.mjs.
// Generated by tools/gen-client.mjs from protocol/actions/*.json: do not edit.

/** A WebSocket constructor: the browser's, or the ws package's in Node. */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[], options?: { headers?: Record<string, string> }): WebSocketLike;
}

/** What the client needs of a WebSocket. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (ev: any) => void): void;
}

export interface ReconnectOptions {
  /** First delay after an unexpected close. @default 250 */
  initialMs?: number;
  /** Longest delay. @default 10000 */
  maxMs?: number;
  /** Each failed attempt multiplies the delay by this. @default 2 */
  factor?: number;
  /** Each delay is moved by up to this fraction of itself, either way (then capped at maxMs). @default 0.3 */
  jitter?: number;
}

export interface ActiondClientOptions {
  /**
   * An API token, agent token or API key: a string, or a function answering
   * one (or a promise of one), called at each connection.  Leave it out in
   * browsers, which authenticate with the session cookie.
   */
  token?: string | (() => string | null | undefined | Promise<string | null | undefined>);
  /**
   * How the token is sent: header (Authorization: Bearer, through the third
   * argument of the ws package's constructor; Node) or subprotocol (offers
   * actiond.bearer.<token> next to actiond.v1; browsers). @default 'header'
   */
  tokenVia?: 'header' | 'subprotocol';
  /** @default ['actiond.v1'] */
  protocols?: string[];
  /** @default globalThis.WebSocket */
  WebSocket?: WebSocketConstructor;
  /** Backoff of reconnects after an unexpected close; false: never reconnect. */
  reconnect?: ReconnectOptions | false;
  /** Calls queued while disconnected; past it call() rejects with code queue_full. @default 100 */
  queueLimit?: number;
  /** A heartbeat goes out after this long without a message received (or sent); 0: none. @default 20000 */
  heartbeatMs?: number;
  /** A heartbeat not answered within this drops the socket and reconnects. @default min(10000, heartbeatMs) */
  heartbeatTimeoutMs?: number;
  /** Rejects a call not answered within this (code timeout) and cancels it; 0: none. @default 0 */
  callTimeoutMs?: number;
  /** Where HTTP-only actions (auth.login, auth.logout) go. @default the URL with http(s) and /rpc */
  rpcUrl?: string;
  /** fetch for HTTP-only actions. @default globalThis.fetch */
  fetch?: (input: string, init?: any) => Promise<{ status: number; json(): Promise<any> }>;
  /** Open the socket in the constructor. @default true */
  connect?: boolean;
}

export interface CallOptions {
  /** Aborting it sends the server a cancel for the request and rejects the call with the signal's reason (an AbortError). */
  signal?: AbortSignal;
  /** Overrides options.callTimeoutMs for this call. */
  timeoutMs?: number;
  /** Gets the progress notifications of this request. */
  onProgress?: (params: ProgressNotification) => void;
}

/** Codes of errors the client makes itself (server errors have numeric codes). */
export type ClientErrorCode = 'queue_full' | 'disconnected' | 'closed' | 'revoked' | 'timeout' | 'http';

export declare class ActiondError extends Error {
  constructor(code: number | ClientErrorCode, message: string, data?: unknown);
  /** The JSON-RPC error code (-32602, -32004, ...) or a ClientErrorCode. */
  readonly code: number | ClientErrorCode;
  /** error.data as the server sent it (null when none). */
  readonly data: { reason?: string; pointer?: string; keyword?: string; message?: string; [key: string]: unknown } | null;
  /** error.data.reason (unauthenticated, forbidden, not_found, conflict, cancelled, ...) or null. */
  readonly reason: string | null;
  /** error.data.pointer of an invalid-params error, or null. */
  readonly pointer: string | null;
}

export declare const CLOSE_CODES: {
  readonly NORMAL: 1000; readonly SHUTDOWN: 1001; readonly PROTOCOL_ERROR: 1002; readonly BINARY_FRAME: 1003;
  readonly ABNORMAL: 1006; readonly INVALID_UTF8: 1007; readonly POLICY: 1008; readonly MESSAGE_TOO_BIG: 1009;
  readonly HEARTBEAT_TIMEOUT: 4000; readonly CREDENTIAL_REVOKED: 4001; readonly SLOW_CONSUMER: 4008;
};

export type ClientState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' | 'revoked';

// ---- actions ----

`;

for (const m of methods) {
  const s = specs.get(m);
  const P = pascal(m);
  dts += declare(`${P}Params`, s.params, s.params, [`Params of ${m}: ${s.summary}`]) + "\n";
  dts += declare(`${P}Result`, s.result, s.result, [`Result of ${m}${s.kind === 'notification' ? ' (when sent with an id)' : ''}.`]);
  dts += '\n';
}

dts += `/** Every action: its params and result. */\nexport interface ActiondMethods {\n`;
for (const m of methods)
  dts += `  ${JSON.stringify(m)}: { params: ${pascal(m)}Params; result: ${pascal(m)}Result };\n`;
dts += `}\n\nexport declare const ACTIONS: { readonly [M in keyof ActiondMethods]: { kind: 'request_response' | 'notification'; risk: 'read' | 'write' | 'danger'; transports?: Array<'http' | 'websocket'> } };\n\n`;

dts += '// ---- notifications (server → client) ----\n\n';
for (const n of NOTIFICATIONS) {
  const schema = notificationSchema(n);
  dts += declare(`${pascal(n.method)}Notification`, schema, schema, [n.summary, `Sent by ${n.source}.`]);
}
dts += `\n/** Every notification this client types, by method. */\nexport interface ActiondNotifications {\n`;
for (const n of NOTIFICATIONS) dts += `  ${n.method}: ${pascal(n.method)}Notification;\n`;
dts += `}\n\nexport declare const NOTIFICATIONS: Array<keyof ActiondNotifications>;\n\n`;

dts += `// ---- events ----

export interface OpenEventDetail { /** true after a reconnect */ reconnected: boolean }
export interface CloseEventDetail { code: number; reason: string }
export interface ReconnectingEventDetail { /** 1 for the first retry after a close */ attempt: number; delayMs: number }
export interface RevokedEventDetail { code: number; reason: string; /** the session_revoked params, when it came */ notification: SessionRevokedNotification | null }
export interface ResetEventDetail { entities: string[]; since: number; seq: number; epoch: string }
export interface ResubscribedEventDetail { entities: string[]; since: number; seq: number; /** changes delivered from the answer's replay */ replayed: number }
export interface ErrorEventDetail { error: unknown; method?: string; entities?: string[] }
export interface StateChangeEventDetail { state: ClientState; from: ClientState }
export type NotificationEventDetail =
  | { [M in keyof ActiondNotifications]: { method: M; params: ActiondNotifications[M] } }[keyof ActiondNotifications]
  | { method: string; params: unknown };

/** Every event of ActiondClient with its detail. */
export interface ActiondEventMap extends ActiondNotifications {
  open: OpenEventDetail;
  close: CloseEventDetail;
  error: ErrorEventDetail;
  reconnecting: ReconnectingEventDetail;
  revoked: RevokedEventDetail;
  reset: ResetEventDetail;
  resubscribed: ResubscribedEventDetail;
  statechange: StateChangeEventDetail;
  notification: NotificationEventDetail;
}

// The listener and options of addEventListener, spelled out so that the
// types need no DOM library (Node's own types declare EventTarget and Event).
type ListenerOptions = boolean | { capture?: boolean; once?: boolean; passive?: boolean; signal?: AbortSignal };
type AnyListener = ((ev: Event) => void) | { handleEvent(ev: Event): void } | null;

type ParamsArgs<M extends keyof ActiondMethods> = {} extends ActiondMethods[M]['params']
  ? [params?: ActiondMethods[M]['params'], opts?: CallOptions]
  : [params: ActiondMethods[M]['params'], opts?: CallOptions];

`;

function dtsMethod(m, pad) {
  const s = specs.get(m);
  const P = pascal(m);
  const opt = paramsOptional(s.params) ? '?' : '';
  const doc = comment([s.summary, authLine(s)], pad);
  if (s.kind === 'notification')
    return doc + `${pad}${propKey(leaf(m))}(params: ${P}Params): boolean;`;
  return doc + `${pad}${propKey(leaf(m))}(params${opt}: ${P}Params, opts?: CallOptions): Promise<${P}Result>;`;
}

function dtsNamespace(node, pad) {
  const inner = pad + '  ';
  const out = [];
  for (const m of node.methods) out.push(dtsMethod(m, inner));
  for (const [k, child] of Object.entries(node.children).sort(([a], [b]) => (a < b ? -1 : 1)))
    out.push(`${inner}readonly ${propKey(k)}: ${dtsNamespace(child, inner)};`);
  return `{\n${out.join('\n')}\n${pad}}`;
}

dts += `export declare class ActiondClient extends EventTarget {
  constructor(url: string | URL, options?: ActiondClientOptions);
  readonly url: string;
  readonly state: ClientState;
  /** Calls waiting for a connection. */
  readonly queued: number;
  /** Calls sent and not answered yet. */
  readonly inflight: number;
  setToken(token: ActiondClientOptions['token']): void;
  connect(): void;
  close(code?: number, reason?: string): Promise<void>;
  ready(): Promise<void>;
  call<M extends keyof ActiondMethods>(method: M, ...args: ParamsArgs<M>): Promise<ActiondMethods[M]['result']>;
  call(method: string, params?: unknown, opts?: CallOptions): Promise<unknown>;
  notify(method: string, params?: unknown): boolean;
  on<K extends keyof ActiondEventMap>(type: K, listener: (detail: ActiondEventMap[K]) => void): () => void;
  on(type: string, listener: (detail: unknown) => void): () => void;
  once<K extends keyof ActiondEventMap>(type: K): Promise<ActiondEventMap[K]>;
  once(type: string): Promise<unknown>;
  addEventListener<K extends keyof ActiondEventMap>(type: K, listener: (ev: CustomEvent<ActiondEventMap[K]>) => void, options?: ListenerOptions): void;
  addEventListener(type: string, listener: AnyListener, options?: ListenerOptions): void;
  removeEventListener<K extends keyof ActiondEventMap>(type: K, listener: (ev: CustomEvent<ActiondEventMap[K]>) => void, options?: ListenerOptions): void;
  removeEventListener(type: string, listener: AnyListener, options?: ListenerOptions): void;

`;
for (const m of tree.methods) dts += dtsMethod(m, '  ') + '\n';
for (const n of nsNames) dts += `  /** The ${n}.* actions. */\n  readonly ${propKey(n)}: ${dtsNamespace(tree.children[n], '  ')};\n`;
dts += '}\n';

mkdirSync(resolve(outDir), { recursive: true });
writeFileSync(join(outDir, 'actiond-client.mjs'), mjs);
writeFileSync(join(outDir, 'actiond-client.d.ts'), dts);
// TypeScript looks for the types of a .mjs in a .d.mts: this one points it
// at actiond-client.d.ts.
writeFileSync(join(outDir, 'actiond-client.d.mts'),
  '// Generated by tools/gen-client.mjs: the types of actiond-client.mjs are in actiond-client.d.ts.\n' +
  "export * from './actiond-client.js';\n");
