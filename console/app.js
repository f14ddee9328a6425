// The actiond console: sign in, decide on what agents ask to do, follow the
// invocation log, manage access.  Plain DOM, no framework; every value that
// comes from the server is written as text, never as markup.
import { ActiondClient } from '/client/actiond-client.mjs';

const STORE = 'actiond.console';
const TERMINAL = new Set(['completed', 'failed', 'denied', 'expired']);
const STATUSES = ['pending', 'approved', 'executing', 'completed', 'failed', 'denied', 'expired'];
const CLOCK_RESYNC_MS = 5 * 60 * 1000;
const MEMBER_POLL_MS = 5000;

const $ = (id) => document.getElementById(id);

// ---- small helpers -----------------------------------------------------------------

// An element: props are set as properties, except class, dataset, on*
// listeners and aria-*/role/for attributes.  Never a style attribute.
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k.startsWith('aria-') || k === 'role' || k === 'for') el.setAttribute(k, v === true ? 'true' : String(v));
      else el[k] = v;
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

function ms(iso) {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isFinite(t) ? t : null;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });

function when(iso, withDate = true) {
  const t = ms(iso);
  if (t === null) return h('span', { class: 'muted' }, '—');
  const d = new Date(t);
  const sameDay = new Date(serverNow()).toDateString() === d.toDateString();
  return h('time', { dateTime: iso, title: d.toISOString() }, (withDate && !sameDay ? dateTimeFmt : timeFmt).format(d));
}

// m:ss (h:mm:ss past an hour) of a duration in ms, rounded down.
function clock(left) {
  const s = Math.max(0, Math.floor(left / 1000));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hh ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

function spoken(left) {
  const s = Math.max(0, Math.floor(left / 1000));
  const m = Math.floor(s / 60);
  return m ? `${m} min ${s % 60} s left` : `${s} s left`;
}

function errText(e) {
  if (!e) return 'Something went wrong';
  const reason = e.reason || (e.data && e.data.reason);
  switch (reason) {
    case 'forbidden': return 'Your role may not do this.';
    case 'unauthenticated': return 'You are signed out.';
    case 'rate_limited': return `Too many requests; try again in ${Math.ceil(((e.data && e.data.retry_after_ms) || 1000) / 1000)} s.`;
    case 'unavailable': return 'The server cannot do this right now; try again.';
    case 'timeout': return 'The server did not answer in time.';
    default: break;
  }
  if (e.code === 'disconnected') return 'The connection dropped before the answer; check the log to see whether it ran.';
  if (e.code === 'queue_full' || e.code === 'closed') return 'Not connected.';
  return e.message || String(e);
}

// ---- state -------------------------------------------------------------------------

let me = null;            // the auth.login result: session_id, account_id, email, org, role
let client = null;
let offset = 0;           // server clock minus this browser's clock, in ms
let timers = [];
let stopping = false;
const cards = new Map();  // invocation_id -> card entry
const agents = new Map(); // agent_session_id -> name
const tokens = new Map(); // api token id -> name
const people = new Map();  // "session:<id>" / "api_token:<id>" -> who, for admins (admin.credential_list)
const log = { rows: new Map(), cursor: null, filter: { status: '', agent: '' }, gen: 0, scheduled: false };

const serverNow = () => Date.now() + offset;
const canDecide = () => !!me && (me.role === 'admin' || me.role === 'owner');

function saved() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE) || 'null');
    return s && typeof s.session_id === 'number' && typeof s.role === 'string' ? s : null;
  } catch { return null; }
}

function save(v) {
  try {
    if (v) localStorage.setItem(STORE, JSON.stringify(v)); else localStorage.removeItem(STORE);
  } catch { /* storage refused: the console works for this page only */ }
}

// ---- status line and messages ------------------------------------------------------

function setConn(state, text) {
  const el = $('conn');
  el.dataset.state = state;
  $('conn-text').textContent = text;
}

function toast(text, kind = 'info') {
  const el = h('div', { class: `toast ${kind}` }, text);
  $('toasts').append(el);
  setTimeout(() => el.remove(), 6000);
}

function announce(text) {
  const a = $('announcer');
  a.textContent = '';
  // A fresh text node after a tick makes screen readers speak repeated text too.
  setTimeout(() => { a.textContent = text; }, 30);
}

// ---- HTTP (login, logout, the session check) ---------------------------------------

async function rpcHttp(method, params) {
  const res = await fetch('/rpc', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  let j = null;
  try { j = await res.json(); } catch { /* below */ }
  if (!j) throw Object.assign(new Error(`HTTP ${res.status}`), { status: res.status });
  if (j.error) throw Object.assign(new Error(j.error.message), { code: j.error.code, data: j.error.data, reason: j.error.data && j.error.data.reason, status: res.status });
  return j.result;
}

// ---- views -------------------------------------------------------------------------

function showLogin(message, email) {
  document.body.dataset.view = 'login';
  $('console-view').hidden = true;
  $('who').hidden = true;
  $('login-view').hidden = false;
  const msg = $('login-msg');
  msg.hidden = !message;
  msg.textContent = message || '';
  setConn('off', 'Signed out');
  $('login-submit').disabled = false;
  const field = $('login-email');
  if (email && !field.value) field.value = email;
  (field.value ? $('login-password') : field).focus();
}

function showConsole() {
  document.body.dataset.view = 'console';
  $('login-view').hidden = true;
  $('console-view').hidden = false;
  $('who').hidden = false;
  $('who-email').textContent = me.email;
  $('who-role').textContent = me.role;
  $('who-role').className = `pill role-${me.role}`;
  $('who-org').textContent = me.org;
  const admin = canDecide();
  $('member-note').hidden = admin;
  $('keys-hint').hidden = !admin;
  $('agents-panel').hidden = !admin;
  $('accounts-panel').hidden = !admin;
  $('audit').hidden = !admin;
  $('audit-link').hidden = !admin;
}

async function onLogin(ev) {
  ev.preventDefault();
  const email = $('login-email').value.trim();
  const password = $('login-password').value;
  const org = $('login-org').value.trim();
  const msg = $('login-msg');
  if (!email || !password) {
    msg.hidden = false;
    msg.textContent = 'Enter your email and password.';
    (email ? $('login-password') : $('login-email')).focus();
    return;
  }
  $('login-submit').disabled = true;
  msg.hidden = true;
  try {
    const params = { email, password };
    if (org) params.org = org;
    const r = await rpcHttp('auth.login', params);
    $('login-password').value = '';
    me = { session_id: r.session_id, account_id: r.account_id, email: r.email, org: r.org, role: r.role, expires_at: r.expires_at };
    save(me);
    start();
  } catch (e) {
    $('login-submit').disabled = false;
    msg.hidden = false;
    if (e.reason === 'rate_limited') msg.textContent = errText(e);
    else if (e.reason === 'unauthenticated' || e.code === -32602 || e.status === 401) msg.textContent = 'Wrong email or password.';
    else msg.textContent = `Could not sign in: ${errText(e)}`;
    $('login-password').select();
    $('login-password').focus();
  }
}

async function onLogout() {
  $('logout').disabled = true;
  const c = client;
  stop();
  if (c) await c.close(1000, 'logout').catch(() => {});
  try { await rpcHttp('auth.logout', {}); } catch { /* the session is gone either way */ }
  $('logout').disabled = false;
  const email = me && me.email;
  me = null;
  save(null);
  showLogin('You are signed out.', email);
}

// Back to the login, the connection dropped for good.
function revoked(message) {
  if (stopping) return;
  const c = client;
  stop();
  if (c) c.close().catch(() => {});
  const email = me && me.email;
  me = null;
  save(null);
  showLogin(message, email);
}

// ---- the connection ----------------------------------------------------------------

function start() {
  stopping = false;
  showConsole();
  setConn('connecting', 'Connecting…');
  const url = new URL('/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let attempts = 0;
  let sessionNote = null;
  const c = new ActiondClient(url.toString(), { reconnect: { initialMs: 250, maxMs: 8000 }, queueLimit: 50, heartbeatMs: 20000 });
  client = c;
  c.addEventListener('open', (e) => {
    if (client !== c) return;
    attempts = 0;
    setConn('open', 'Live');
    load(e.detail && e.detail.reconnected);
  });
  c.addEventListener('reconnecting', (e) => {
    if (client !== c) return;
    attempts = (e.detail && e.detail.attempt) || attempts + 1;
    setConn('reconnecting', 'Reconnecting…');
    // A connection refused again and again may rest on a session that ended.
    if (attempts % 4 === 0) checkSession();
  });
  c.addEventListener('session_revoked', (e) => { sessionNote = e.detail || {}; });
  c.addEventListener('revoked', (e) => {
    if (client !== c) return;
    const why = (e.detail && e.detail.notification) || sessionNote || {};
    revoked(why.reason === 'expired'
      ? 'Your session expired. Sign in again to continue.'
      : 'Your session was revoked. Sign in again to continue.');
  });
  c.addEventListener('approval_requested', (e) => onRequested(e.detail));
  c.addEventListener('approval_resolved', (e) => onResolved(e.detail));
  c.addEventListener('invocation_completed', (e) => onCompleted(e.detail));
  timers.push(setInterval(tick, 250));
  timers.push(setInterval(() => { if (c.state === 'open') syncClock(); }, CLOCK_RESYNC_MS));
  // Members are not sent approval notifications: they look every few seconds.
  if (!canDecide()) timers.push(setInterval(() => { if (c.state === 'open') { loadPending(); refreshLog(); } }, MEMBER_POLL_MS));
}

const ORIGIN_REFUSED = () => `The server does not take this page's sign-in from ${location.origin}: it must be listed in security.allowed_origins.`;

async function checkSession() {
  try {
    await rpcHttp('account.session_list', {});
  } catch (e) {
    if (e.status === 401) revoked('Your session has ended. Sign in again to continue.');
    else if (e.status === 403) revoked(ORIGIN_REFUSED());
  }
}

function stop() {
  stopping = true;
  for (const t of timers) clearInterval(t);
  timers = [];
  client = null;
  for (const c of cards.values()) c.el.remove();
  cards.clear();
  log.rows.clear();
  log.cursor = null;
  agents.clear();
  tokens.clear();
  people.clear();
  for (const id of ['log-body', 'sessions-list', 'tokens-list', 'agents-list', 'accounts-list', 'audit-result', 'announcer']) $(id).replaceChildren();
  updateCount();
  pendingLoaded = false;
  delete document.body.dataset.ready;
}

// What the page shows, (re)loaded when the socket opens.
async function load(reconnected) {
  const c = client;
  await syncClock();
  if (client !== c) return;
  const jobs = [loadPending(), refreshLog(), loadAccess()];
  if (canDecide()) jobs.push(verifyAudit());
  await Promise.allSettled(jobs);
  if (client !== c) return;
  document.body.dataset.ready = reconnected ? 'reconnected' : 'yes';
}

// The server's clock from heartbeat's unix_ms, taken at the midpoint of the
// fastest of three round trips.
async function syncClock() {
  const c = client;
  let best = null;
  for (let i = 0; i < 3; i++) {
    try {
      const t0 = Date.now();
      const r = await c.heartbeat({});
      const t1 = Date.now();
      if (r && typeof r.unix_ms === 'number' && (!best || t1 - t0 < best.rtt)) best = { rtt: t1 - t0, off: r.unix_ms - (t0 + t1) / 2 };
    } catch { break; }
  }
  if (best && client === c) {
    offset = best.off;
    document.body.dataset.clockOffset = String(Math.round(offset));
    tick();
  }
}

// ---- pending approvals -------------------------------------------------------------

let pendingLoaded = false;

async function loadPending() {
  const c = client;
  const announceNew = pendingLoaded;
  const added = [];
  const seen = new Set();
  let cursor = null;
  try {
    for (let page = 0; page < 10; page++) {
      const params = { status: 'pending', limit: 200 };
      if (cursor) params.cursor = cursor;
      const r = await c.invocations.list(params);
      if (client !== c) return;
      for (const inv of r.invocations) {
        seen.add(inv.invocation_id);
        if (!cards.has(inv.invocation_id)) {
          addCard(inv, announceNew);
          added.push(inv);
        }
      }
      cursor = r.next_cursor;
      if (!cursor) break;
    }
  } catch (e) {
    if (client === c) toast(`Could not load pending approvals: ${errText(e)}`, 'bad');
    return;
  }
  pendingLoaded = true;
  if (announceNew && added.length === 1) announce(`New approval request: ${added[0].integration} ${added[0].action} from ${agentName(added[0].agent_session_id)}.`);
  else if (announceNew && added.length > 1) announce(`${added.length} new approval requests.`);
  // Whatever was decided while this page was not listening.
  for (const [id, card] of cards) if (!seen.has(id) && !card.expired && !card.busy) removeCard(id);
}

function onRequested(p) {
  if (!p || !p.invocation_id) return;
  const inv = { status: 'pending', decided_by: null, decided_at: null, reason: null, comment: null, result: null, error: null, upstream_status: null, started_at: null, finished_at: null, ...p };
  upsertLog(inv);
  if (!cards.has(p.invocation_id)) {
    addCard(inv, true);
    const who = agentName(p.agent_session_id);
    announce(`New approval request: ${p.integration} ${p.action} from ${who}.`);
  }
}

function onResolved(p) {
  if (!p || !p.invocation_id) return;
  upsertLog(p);
  const card = cards.get(p.invocation_id);
  if (!card) return;
  if (p.status === 'expired') markExpired(card);
  else {
    if (!card.busy) {
      const by = p.decided_by === `session:${me && me.session_id}` ? 'you' : p.decided_by || 'someone';
      announce(`${card.inv.integration} ${card.inv.action} was ${p.status} by ${by}.`);
    }
    removeCard(p.invocation_id);
  }
}

function onCompleted(p) {
  if (p && p.invocation_id) upsertLog(p);
}

function agentName(id) {
  const n = agents.get(id);
  return n ? `${n} (#${id})` : `agent session #${id}`;
}

function addCard(inv, fresh) {
  const id = inv.invocation_id;
  if (cards.has(id)) return;
  const titleId = nextId('t');
  const timerId = nextId('c');
  const errId = nextId('e');
  const countdown = h('span', { class: 'countdown', id: timerId, role: 'timer' }, '…');
  const bar = h('progress', { class: 'ttl', max: 1000, value: 1000, 'aria-hidden': true });
  const card = { inv, expired: false, busy: false, deadline: ms(inv.deadline), created: ms(inv.created_at) };
  const el = h('article', {
    class: fresh ? 'card fresh' : 'card', tabIndex: 0, dataset: { id },
    'aria-labelledby': titleId, 'aria-describedby': timerId,
    onkeydown: (e) => cardKey(e, card),
  },
  h('div', { class: 'card-top' },
    h('span', { class: `badge risk-${inv.risk}` }, inv.risk),
    h('h3', { id: titleId, class: 'card-title' }, h('span', { class: 'integration' }, inv.integration), h('span', { class: 'sep', 'aria-hidden': true }, ' · '), h('span', { class: 'action' }, inv.action)),
    countdown),
  bar,
  h('dl', { class: 'meta' },
    h('div', null, h('dt', null, 'Agent session'), h('dd', { class: 'agent' }, agentName(inv.agent_session_id))),
    h('div', null, h('dt', null, 'Requested'), h('dd', null, when(inv.created_at))),
    h('div', null, h('dt', null, 'Invocation'), h('dd', null, h('code', { title: id }, id.slice(0, 12) + '…')))),
  h('div', { class: 'params' },
    h('div', { class: 'params-label' }, 'Params ', h('span', { class: 'muted' }, '(redacted by the server)')),
    h('pre', { tabIndex: -1 }, h('code', null, JSON.stringify(inv.params ?? {}, null, 2)))));
  card.el = el;
  card.countdown = countdown;
  card.bar = bar;
  card.error = h('p', { class: 'card-error', id: errId, role: 'alert' });
  if (canDecide()) {
    const commentId = nextId('m');
    const reasonId = nextId('r');
    const reasonErr = nextId('re');
    card.comment = h('input', { id: commentId, class: 'comment', type: 'text', maxLength: 2000, autocomplete: 'off', placeholder: 'Comment' });
    card.approve = h('button', { class: 'btn approve', type: 'button', 'aria-keyshortcuts': 'A', onclick: () => approve(card) }, 'Approve');
    card.deny = h('button', { class: 'btn deny', type: 'button', 'aria-keyshortcuts': 'D', 'aria-expanded': 'false', onclick: () => openDeny(card) }, 'Deny…');
    card.reason = h('textarea', { id: reasonId, class: 'reason', rows: 2, maxLength: 2000, required: true, 'aria-required': true, 'aria-describedby': reasonErr,
      onkeydown: (e) => {
        if (e.key === 'Escape') { e.preventDefault(); closeDeny(card, true); }
        else if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); deny(card); }
      } });
    card.reasonErr = h('p', { class: 'field-error', id: reasonErr, role: 'alert' });
    card.confirm = h('button', { class: 'btn danger confirm-deny', type: 'button', onclick: () => deny(card) }, 'Deny');
    card.denyBox = h('div', { class: 'deny-box', hidden: true },
      h('label', { for: reasonId }, 'Reason ', h('span', { class: 'req' }, '(required)')),
      card.reason, card.reasonErr,
      h('div', { class: 'buttons' }, card.confirm, h('button', { class: 'btn ghost cancel-deny', type: 'button', onclick: () => closeDeny(card, true) }, 'Cancel')));
    el.append(h('div', { class: 'decide' },
      h('div', { class: 'comment-field' }, h('label', { for: commentId, class: 'sr-only' }, 'Comment (optional)'), card.comment),
      h('div', { class: 'buttons' }, card.approve, card.deny)),
    card.denyBox);
  } else {
    el.append(h('p', { class: 'readonly muted' }, 'Waiting for an admin or owner to decide.'));
  }
  el.append(card.error);
  cards.set(id, card);
  // Most urgent first.
  const list = $('cards');
  const due = (x) => x.deadline ?? Infinity;
  const before = [...list.children].find((other) => due(cards.get(other.dataset.id)) > due(card));
  list.insertBefore(el, before || null);
  if (fresh) setTimeout(() => el.classList.remove('fresh'), 1600);
  paintCard(card);
  updateCount();
}

function removeCard(id) {
  const card = cards.get(id);
  if (!card) return;
  cards.delete(id);
  const hadFocus = card.el.contains(document.activeElement);
  const next = card.el.nextElementSibling || card.el.previousElementSibling;
  card.el.remove();
  updateCount();
  if (hadFocus) (next || $('approvals-title')).focus();
}

function updateCount() {
  const n = [...cards.values()].filter((c) => !c.expired).length;
  $('pending-count').textContent = String(n);
  $('pending-count').classList.toggle('zero', n === 0);
  $('cards-empty').hidden = cards.size > 0;
  document.title = n ? `(${n}) actiond console` : 'actiond console';
}

function paintCard(card) {
  if (card.expired) return;
  if (card.deadline === null) {
    card.countdown.textContent = 'no deadline';
    return;
  }
  const left = card.deadline - serverNow();
  if (left <= 0) {
    markExpired(card);
    return;
  }
  const text = clock(left);
  if (card.countdown.textContent !== text) {
    card.countdown.textContent = text;
    card.countdown.setAttribute('aria-label', spoken(left));
  }
  card.countdown.classList.toggle('urgent', left < 30000);
  const total = card.created !== null && card.deadline > card.created ? card.deadline - card.created : 300000;
  card.bar.value = Math.max(0, Math.min(1000, Math.round((left / total) * 1000)));
}

function tick() {
  for (const card of cards.values()) paintCard(card);
}

function markExpired(card) {
  if (card.expired) return;
  card.expired = true;
  card.el.classList.add('expired');
  card.countdown.textContent = 'expired';
  card.countdown.setAttribute('aria-label', 'expired');
  card.countdown.classList.remove('urgent');
  card.bar.value = 0;
  for (const b of [card.approve, card.deny, card.confirm, card.comment, card.reason]) if (b) b.disabled = true;
  if (card.denyBox) card.denyBox.hidden = true;
  card.error.textContent = '';
  if (!card.el.querySelector('.dismiss')) {
    const buttons = card.el.querySelector('.decide .buttons') || card.el;
    buttons.append(h('button', { class: 'btn ghost dismiss', type: 'button', onclick: () => removeCard(card.inv.invocation_id) }, 'Dismiss'));
  }
  announce(`${card.inv.integration} ${card.inv.action} expired without a decision.`);
  updateCount();
}

function setBusy(card, busy) {
  card.busy = busy;
  card.el.classList.toggle('busy', busy);
  card.el.setAttribute('aria-busy', busy ? 'true' : 'false');
  for (const b of [card.approve, card.deny, card.confirm]) if (b) b.disabled = busy || card.expired;
}

function cardKey(e, card) {
  if (e.target !== card.el || e.altKey || e.ctrlKey || e.metaKey) return;
  const k = e.key.toLowerCase();
  if (k === 'a' && canDecide()) { e.preventDefault(); approve(card); }
  else if (k === 'd' && canDecide()) { e.preventDefault(); openDeny(card); }
  else if (k === 'j' || e.key === 'ArrowDown' || e.key === 'ArrowRight') { e.preventDefault(); moveFocus(card, 1); }
  else if (k === 'k' || e.key === 'ArrowUp' || e.key === 'ArrowLeft') { e.preventDefault(); moveFocus(card, -1); }
}

function moveFocus(card, dir) {
  const all = [...$('cards').children];
  const i = all.indexOf(card.el) + dir;
  if (i >= 0 && i < all.length) all[i].focus();
}

async function approve(card) {
  if (!canDecide() || card.expired || card.busy) return;
  const inv = card.inv;
  const params = { invocation_id: inv.invocation_id };
  const comment = card.comment.value.trim();
  if (comment) params.comment = comment;
  card.error.textContent = '';
  setBusy(card, true);
  card.approve.textContent = 'Approving…';
  try {
    const r = await client.invocations.approve(params);
    upsertLog(r);
    toast(`Approved ${inv.integration} · ${inv.action}: ${r.status}${r.error ? ` (${r.error})` : ''}`, r.status === 'failed' ? 'bad' : 'good');
    removeCard(inv.invocation_id);
  } catch (e) {
    decisionFailed(card, e);
  } finally {
    if (card.approve) card.approve.textContent = 'Approve';
  }
}

function openDeny(card) {
  if (!canDecide() || card.expired || card.busy) return;
  card.denyBox.hidden = false;
  card.deny.setAttribute('aria-expanded', 'true');
  card.reason.focus();
}

function closeDeny(card, refocus) {
  card.denyBox.hidden = true;
  card.deny.setAttribute('aria-expanded', 'false');
  card.reasonErr.textContent = '';
  card.reason.removeAttribute('aria-invalid');
  if (refocus) card.el.focus();
}

async function deny(card) {
  if (!canDecide() || card.expired || card.busy) return;
  const reason = card.reason.value.trim();
  if (!reason) {
    card.reasonErr.textContent = 'Give a reason: the agent is told why it was denied.';
    card.reason.setAttribute('aria-invalid', 'true');
    card.reason.focus();
    return;
  }
  card.reasonErr.textContent = '';
  card.reason.removeAttribute('aria-invalid');
  card.error.textContent = '';
  setBusy(card, true);
  card.confirm.textContent = 'Denying…';
  const inv = card.inv;
  try {
    const r = await client.invocations.deny({ invocation_id: inv.invocation_id, reason });
    upsertLog(r);
    toast(`Denied ${inv.integration} · ${inv.action}`, 'info');
    removeCard(inv.invocation_id);
  } catch (e) {
    decisionFailed(card, e);
  } finally {
    if (card.confirm) card.confirm.textContent = 'Deny';
  }
}

function decisionFailed(card, e) {
  const id = card.inv.invocation_id;
  setBusy(card, false);
  switch (e && e.reason) {
    case 'expired':
      markExpired(card);
      card.error.textContent = 'Too late: the deadline passed.';
      break;
    case 'conflict':
      toast(`${card.inv.integration} · ${card.inv.action} was already decided.`, 'info');
      removeCard(id);
      client && client.invocations.get({ invocation_id: id }).then(upsertLog, () => {});
      break;
    case 'not_found':
      removeCard(id);
      break;
    default:
      card.error.textContent = errText(e);
  }
}

// ---- the invocation log ------------------------------------------------------------

const ROW_DEFAULTS = { agent_session_id: null, risk: null, params: null, deadline: null, decided_by: null, decided_at: null, reason: null, comment: null, result: null, error: null, upstream_status: null, created_at: null, started_at: null, finished_at: null };

function matches(inv) {
  const f = log.filter;
  if (f.status && inv.status !== f.status) return false;
  if (f.agent && String(inv.agent_session_id) !== f.agent) return false;
  return true;
}

async function refreshLog() {
  const c = client;
  const gen = ++log.gen;
  const params = { limit: 50 };
  if (log.filter.status) params.status = log.filter.status;
  if (log.filter.agent) params.agent_session_id = Number(log.filter.agent);
  try {
    const r = await c.invocations.list(params);
    if (client !== c || gen !== log.gen) return;
    log.rows.clear();
    for (const inv of r.invocations) log.rows.set(inv.invocation_id, inv);
    log.cursor = r.next_cursor;
    $('log-error').hidden = true;
    renderLog();
  } catch (e) {
    if (client !== c || gen !== log.gen) return;
    $('log-error').hidden = false;
    $('log-error').textContent = `Could not load the log: ${errText(e)}`;
  }
}

async function moreLog() {
  const c = client;
  if (!log.cursor) return;
  const gen = log.gen;
  const params = { limit: 50, cursor: log.cursor };
  if (log.filter.status) params.status = log.filter.status;
  if (log.filter.agent) params.agent_session_id = Number(log.filter.agent);
  $('log-more').disabled = true;
  try {
    const r = await c.invocations.list(params);
    if (client !== c || gen !== log.gen) return;
    for (const inv of r.invocations) if (!log.rows.has(inv.invocation_id)) log.rows.set(inv.invocation_id, inv);
    log.cursor = r.next_cursor;
    renderLog();
  } catch (e) {
    toast(`Could not load more: ${errText(e)}`, 'bad');
  } finally {
    $('log-more').disabled = false;
  }
}

function upsertLog(p) {
  if (!p || !p.invocation_id || !client) return;
  const cur = log.rows.get(p.invocation_id);
  if (!cur && !p.created_at) {
    // Only part of the row is known (a decision on an invocation not shown): fetch it.
    const c = client;
    c.invocations.get({ invocation_id: p.invocation_id }).then((inv) => { if (client === c && !log.rows.has(inv.invocation_id)) upsertLog(inv); }, () => {});
    return;
  }
  const next = { ...ROW_DEFAULTS, ...(cur || {}) };
  for (const [k, v] of Object.entries(p)) if (v !== undefined) next[k] = v;
  // approval_resolved says "approved" of what may have finished already.
  if (cur && TERMINAL.has(cur.status) && !TERMINAL.has(next.status)) next.status = cur.status;
  if (matches(next)) log.rows.set(next.invocation_id, next);
  else log.rows.delete(next.invocation_id);
  scheduleLog();
}

function scheduleLog() {
  if (log.scheduled) return;
  log.scheduled = true;
  setTimeout(() => { log.scheduled = false; renderLog(); }, 16);
}

function decidedBy(inv) {
  const db = inv.decided_by;
  if (!db) return h('span', { class: 'muted' }, inv.status === 'expired' ? 'nobody' : '—');
  let label = null;
  if (me && db === `session:${me.session_id}`) label = 'you (this session)';
  else if (db.startsWith('api_token:') && tokens.has(Number(db.slice(10)))) label = `your token “${tokens.get(Number(db.slice(10)))}”`;
  else if (people.has(db)) label = people.get(db);
  return h('span', { class: 'decider' }, label ? h('span', { class: 'decider-label' }, label, ' ') : null, h('code', null, db));
}

function detailText(inv) {
  const parts = [];
  if (inv.comment) parts.push(`Comment: ${inv.comment}`);
  if (inv.reason) parts.push(`Reason: ${inv.reason}`);
  if (inv.error) parts.push(`Error: ${inv.error}`);
  if (inv.upstream_status !== null && inv.upstream_status !== undefined) parts.push(`Upstream status: ${inv.upstream_status}`);
  parts.push(`Params: ${JSON.stringify(inv.params ?? {}, null, 2)}`);
  if (inv.result !== null && inv.result !== undefined) parts.push(`Result: ${JSON.stringify(inv.result, null, 2)}`);
  return parts.join('\n');
}

// A cell of the log, labelled for the stacked layout of narrow screens.
const cell = (label, ...content) => h('td', { dataset: { label } }, h('div', { class: 'cell' }, ...content));

function logRow(inv) {
  const note = inv.reason || inv.comment || inv.error;
  return h('tr', { dataset: { id: inv.invocation_id, status: inv.status } },
    cell('Requested', when(inv.created_at)),
    cell('Action',
      h('span', { class: 'act' }, `${inv.integration} · ${inv.action}`), ' ',
      inv.risk ? h('span', { class: `badge small risk-${inv.risk}` }, inv.risk) : null,
      h('details', { class: 'more' }, h('summary', null, 'Details'), h('pre', null, detailText(inv)))),
    cell('Status',
      h('span', { class: `status st-${STATUSES.includes(inv.status) ? inv.status : 'unknown'}` }, inv.status),
      note ? h('div', { class: 'note muted' }, note) : null),
    cell('Agent session', inv.agent_session_id ? agentName(inv.agent_session_id) : '—'),
    cell('Decided by', decidedBy(inv)),
    cell('Decided at', when(inv.decided_at)));
}

function renderLog() {
  const rows = [...log.rows.values()].sort((a, b) => (ms(b.created_at) ?? 0) - (ms(a.created_at) ?? 0) || (a.invocation_id < b.invocation_id ? 1 : -1));
  // Keep open details open across a repaint.
  const body = $('log-body');
  const open = new Set([...body.querySelectorAll('details[open]')].map((d) => d.closest('tr').dataset.id));
  const focused = body.contains(document.activeElement) ? document.activeElement.closest('tr').dataset.id : null;
  const trs = rows.map((inv) => {
    const tr = logRow(inv);
    if (open.has(inv.invocation_id)) tr.querySelector('details').open = true;
    return tr;
  });
  body.replaceChildren(...trs);
  if (focused) {
    const tr = [...body.children].find((x) => x.dataset.id === focused);
    (tr ? tr.querySelector('summary') : $('log-title')).focus();
  }
  $('log-empty').hidden = rows.length > 0;
  $('log-more').hidden = !log.cursor;
}

function onFilter(ev) {
  if (ev) ev.preventDefault();
  const agent = $('f-agent').value.trim();
  if (agent && !/^[1-9][0-9]{0,15}$/.test(agent)) {
    $('log-error').hidden = false;
    $('log-error').textContent = 'An agent session is a number.';
    $('f-agent').setAttribute('aria-invalid', 'true');
    $('f-agent').focus();
    return;
  }
  $('f-agent').removeAttribute('aria-invalid');
  log.filter = { status: $('f-status').value, agent };
  if (client) refreshLog();
}

// ---- access ------------------------------------------------------------------------

// A button that asks to be pressed twice within 5 s before it acts.
function twoStep(label, confirmLabel, action) {
  let armed = null;
  const b = h('button', { class: 'btn ghost small revoke', type: 'button' }, label);
  b.addEventListener('click', async () => {
    if (!armed) {
      b.textContent = confirmLabel;
      b.classList.add('armed');
      armed = setTimeout(() => { armed = null; b.textContent = label; b.classList.remove('armed'); }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.disabled = true;
    b.textContent = 'Revoking…';
    try {
      const heading = b.closest('.panel') && b.closest('.panel').querySelector('h3');
      await action();
      if (heading && !b.isConnected && (document.activeElement === document.body || !document.activeElement)) heading.focus();
    } catch (e) {
      toast(errText(e), 'bad');
      b.disabled = false;
      b.textContent = label;
      b.classList.remove('armed');
    }
  });
  return b;
}

function row(id, main, sub, button) {
  return h('li', { dataset: { id: String(id) } }, h('div', { class: 'row-main' }, h('div', { class: 'row-title' }, main), sub ? h('div', { class: 'row-sub muted' }, sub) : null), button);
}

function empty(list, text) {
  list.replaceChildren(h('li', { class: 'empty' }, text));
}

async function loadAccess() {
  const c = client;
  // Admins and owners see (and revoke) the org's sessions and tokens,
  // members their own.
  const orgWide = canDecide();
  const owner = (x) => (orgWide ? [' · ', x.email] : []);
  const showSessions = (sessions) => {
    const list = $('sessions-list');
    if (!sessions.length) return empty(list, 'No sessions.');
    list.replaceChildren(...sessions.map((s) => row(s.id,
      [`Session #${s.id} `, s.current ? h('span', { class: 'pill here' }, 'this browser') : null],
      ['Signed in ', when(s.created_at), ' · expires ', when(s.expires_at), ...owner(s)],
      twoStep(s.current ? 'Sign out here' : 'Revoke', 'Confirm revoke', async () => {
        if (orgWide) await c.admin.credential_revoke({ kind: 'session', id: s.id });
        else await c.account.session_revoke({ session_id: s.id });
        if (client === c) { toast(`Session #${s.id} revoked`, 'good'); await loadAccess(); }
      }))));
  };
  const showTokens = (list_) => {
    tokens.clear();
    for (const t of list_) if (!orgWide || t.account_id === me.account_id) tokens.set(t.id, t.name || `#${t.id}`);
    const list = $('tokens-list');
    if (!list_.length) return empty(list, 'No API tokens.');
    list.replaceChildren(...list_.map((t) => row(t.id,
      [t.name || 'unnamed', h('span', { class: 'muted' }, ` #${t.id}`)],
      ['Created ', when(t.created_at), ' · ', t.expires_at ? ['expires ', when(t.expires_at)] : 'no expiry', ...owner(t)],
      twoStep('Revoke', 'Confirm revoke', async () => {
        if (orgWide) await c.admin.credential_revoke({ kind: 'api_token', id: t.id });
        else await c.account.token_revoke({ token_id: t.id });
        if (client === c) { toast(`Token ${t.name || t.id} revoked`, 'good'); await loadAccess(); }
      }))));
    scheduleLog();
  };
  $('sessions-title').textContent = orgWide ? 'Browser sessions of the org' : 'Your browser sessions';
  $('tokens-title').textContent = orgWide ? 'API tokens of the org' : 'Your API tokens';
  const jobs = orgWide
    ? [c.admin.credential_list({}).then((r) => {
        if (client !== c) return;
        for (const x of r.credentials) people.set(`${x.kind}:${x.id}`, x.kind === 'session' ? x.email : `${x.email}, token “${x.name || x.id}”`);
        showSessions(r.credentials.filter((x) => x.kind === 'session'));
        showTokens(r.credentials.filter((x) => x.kind === 'api_token'));
      })]
    : [c.account.session_list({}).then((r) => { if (client === c) showSessions(r.sessions); }),
       c.account.token_list({}).then((r) => { if (client === c) showTokens(r.tokens); })];
  if (canDecide()) {
    jobs.push(c.admin.agent_session_list({ limit: 200 }).then((r) => {
      if (client !== c) return;
      agents.clear();
      for (const a of r.agent_sessions) agents.set(a.agent_session_id, a.name);
      const list = $('agents-list');
      if (!r.agent_sessions.length) empty(list, 'No live agent sessions.');
      else {
        list.replaceChildren(...r.agent_sessions.map((a) => row(a.agent_session_id,
          [a.name, h('span', { class: 'muted' }, ` #${a.agent_session_id}`)],
          [a.integrations.length ? a.integrations.join(', ') : 'no integrations', ' · since ', when(a.created_at)],
          twoStep('Revoke', 'Confirm revoke', async () => {
            await c.admin.agent_session_revoke({ agent_session_id: a.agent_session_id });
            if (client === c) { toast(`Agent session ${a.name} revoked; its pending requests expire`, 'good'); await loadAccess(); }
          }))));
      }
      for (const card of cards.values()) card.el.querySelector('.agent').textContent = agentName(card.inv.agent_session_id);
      scheduleLog();
    }));
    jobs.push(c.admin.account_list({ limit: 200 }).then((r) => {
      if (client !== c) return;
      const list = $('accounts-list');
      if (!r.accounts.length) return empty(list, 'No accounts.');
      list.replaceChildren(...r.accounts.map((a) => {
        const self = a.account_id === me.account_id;
        const li = row(a.account_id,
          [a.email, ' ', h('span', { class: `pill role-${a.role}` }, a.role), a.disabled ? h('span', { class: 'pill off' }, 'disabled') : null],
          ['Since ', when(a.created_at)], null);
        if (!self && !a.disabled) {
          li.append(h('div', { class: 'row-buttons' },
            twoStep('Sessions', 'Revoke all sessions', async () => {
              const x = await c.admin.session_revoke_all({ account_id: a.account_id });
              toast(`${x.revoked} session(s) of ${a.email} revoked`, 'good');
            }),
            twoStep('Tokens', 'Revoke all tokens', async () => {
              const x = await c.admin.token_revoke_all({ account_id: a.account_id });
              toast(`${x.revoked} token(s) of ${a.email} revoked`, 'good');
            })));
        }
        return li;
      }));
    }));
  }
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed && client === c) toast(`Could not load access lists: ${errText(failed.reason)}`, 'bad');
}

// ---- audit -------------------------------------------------------------------------

async function verifyAudit() {
  const c = client;
  const box = $('audit-result');
  $('audit-verify').disabled = true;
  box.dataset.state = 'busy';
  try {
    const r = await c.audit.verify({});
    if (client !== c) return;
    box.dataset.state = r.ok ? 'ok' : 'broken';
    box.replaceChildren(
      h('p', { class: 'audit-verdict' }, h('span', { class: `status ${r.ok ? 'st-completed' : 'st-failed'}` }, r.ok ? 'intact' : 'broken'), ' ',
        r.ok ? `The chain holds: ${r.checked} event${r.checked === 1 ? '' : 's'} checked.` : `Broken at event ${r.broken && r.broken.seq}: ${r.broken && r.broken.reason}`),
      h('dl', { class: 'meta' },
        h('div', null, h('dt', null, 'Head'), h('dd', null, r.head ? h('code', { class: 'hash' }, r.head) : '—')),
        h('div', null, h('dt', null, 'Not linked yet'), h('dd', null, String(r.unchained))),
        h('div', null, h('dt', null, 'Checked at'), h('dd', null, when(new Date(serverNow()).toISOString())))));
  } catch (e) {
    if (client !== c) return;
    box.dataset.state = 'error';
    box.replaceChildren(h('p', { class: 'notice bad' }, `Could not verify: ${errText(e)}`));
  } finally {
    $('audit-verify').disabled = false;
  }
}

// ---- start -------------------------------------------------------------------------

function boot() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  $('log-filters').addEventListener('submit', onFilter);
  $('f-status').addEventListener('change', () => onFilter());
  $('f-clear').addEventListener('click', () => { $('f-status').value = ''; $('f-agent').value = ''; $('log-error').hidden = true; onFilter(); });
  $('log-more').addEventListener('click', moreLog);
  $('access-refresh').addEventListener('click', () => { if (client) loadAccess(); });
  $('audit-verify').addEventListener('click', () => { if (client) verifyAudit(); });
  const s = saved();
  if (s) resume(s);
  else showLogin();
}

// A page opened again: the cookie may still hold a session (it is HttpOnly:
// ask the server), whose login this browser remembered.
async function resume(s) {
  setConn('connecting', 'Checking your session…');
  try {
    const r = await rpcHttp('account.session_list', {});
    const cur = r.sessions.find((x) => x.current);
    if (cur) s.session_id = cur.id;
  } catch (e) {
    if (e.status === 401 || e.status === 403) {
      save(null);
      showLogin(e.status === 401 ? 'Your session has ended. Sign in again to continue.' : ORIGIN_REFUSED(), s.email);
      return;
    }
    // The server is away: the socket keeps trying.
  }
  me = s;
  save(me);
  start();
}

boot();
