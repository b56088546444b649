// tokend login page: register, log in, show the current user, refresh an
// expired access token, log out; password reset and e-mail verification
// from the mailed links. Vanilla JS, no build step.
'use strict';

const params = new URLSearchParams(location.search);
// The API's base URL: ?api=http://host:port, default a local `cargo run`.
const API = (params.get('api') || 'http://127.0.0.1:8000').replace(/\/+$/, '');
// How tokens are kept: ?mode=cookie or ?mode=tutorial, default localStorage
// (below).
const MODE = ['cookie', 'tutorial'].includes(params.get('mode')) ? params.get('mode') : 'localStorage';

// Token storage, behind a small interface so that the rest of the page does
// not care where tokens live. Three implementations, chosen by ?mode=:
//   access()        the access token, or null
//   save(data)      keep what this mode keeps of a login answer
//   saveRefreshed(data)  the same for a refresh answer
//   refreshBody()   the body that presents the refresh token, or null if none
//   clear()         forget everything
//   credentials     fetch's `credentials` for the token calls

// localStorage mode (default): both tokens in localStorage. Any script on this
// origin can read them, hence the strict CSP in index.html.
const localStorageStore = {
  credentials: 'same-origin',
  access: () => localStorage.getItem('tokend.access'),
  save({ access, refresh }) {
    localStorage.setItem('tokend.access', access);
    // A refresh answers a new refresh token only with rotation on (the old
    // one is then spent); with TOKEND__JWT__ROTATE_REFRESH_TOKENS=false it
    // answers `access` only and the refresh token we hold stays valid.
    if (refresh) localStorage.setItem('tokend.refresh', refresh);
  },
  saveRefreshed(data) { this.save(data); },
  refreshBody() {
    const refresh = localStorage.getItem('tokend.refresh');
    return refresh ? { refresh } : null;
  },
  clear() {
    localStorage.removeItem('tokend.access');
    localStorage.removeItem('tokend.refresh');
  },
};

// Cookie mode (?mode=cookie, tokend with TOKEND__COOKIE__ENABLED=true): the
// refresh token lives only in tokend's HttpOnly cookie, which scripts cannot
// read; the page ignores the `refresh` field of the answers. The short-lived
// access token is kept in memory only, so a reload starts with a refresh.
let accessToken = null;
const cookieStore = {
  credentials: 'include', // store and send the cross-origin cookie
  access: () => accessToken,
  save({ access }) { accessToken = access; },
  saveRefreshed(data) { this.save(data); },
  refreshBody: () => ({}), // no `refresh` field: tokend reads the cookie
  clear() { accessToken = null; },
};

// Tutorial mode (?mode=tutorial): the frontend of the well-known "Django +
// React" JWT tutorial, whose ProtectedRoute stores only `res.data.access`
// after a refresh. Like localStorage mode, except that the refresh token from
// the login is presented again at every refresh. That needs tokend with
// TOKEND__JWT__ROTATE_REFRESH_TOKENS=false; with rotation on, the second
// refresh presents a spent token, tokend ends the session (401 "Token is
// blacklisted") and the user is logged out.
const tutorialStore = {
  ...localStorageStore,
  saveRefreshed({ access }) { localStorage.setItem('tokend.access', access); },
};

const store = { cookie: cookieStore, tutorial: tutorialStore }[MODE] ?? localStorageStore;

const $ = (id) => document.getElementById(id);

// One call to the API. Resolves to { status, data } for every HTTP answer
// (data is the parsed JSON body, or {}); rejects only when the API cannot be
// reached (network error, CORS refusal).
async function api(path, { body, access, credentials, method } = {}) {
  const headers = { Accept: 'application/json' };
  if (body) headers['Content-Type'] = 'application/json';
  if (access) headers.Authorization = `Bearer ${access}`;
  let response;
  try {
    response = await fetch(API + path, {
      method: method ?? (body ? 'POST' : 'GET'),
      headers,
      credentials,
      body: body && JSON.stringify(body),
    });
  } catch {
    throw new Error(`Cannot reach the API at ${API} (is tokend running, and is this page's origin, ${location.origin}, in TOKEND__CORS__ALLOWED_ORIGINS?${MODE === 'cookie' ? ' Cookie mode also needs TOKEND__COOKIE__ENABLED=true.' : ''})`);
  }
  const data = await response.json().catch(() => ({}));
  return { status: response.status, data };
}

// The calls that issue, rotate or revoke tokens (POST /api/token/...).
const tokenApi = (path, body) => api(`/api/token/${path}`, { body, credentials: store.credentials });

// DRF error bodies: {"detail": "..."} or field errors {"field": ["msg", ...]}.
function errorText(data, status) {
  if (typeof data.detail === 'string') return data.detail;
  const lines = Object.entries(data).map(([field, msgs]) =>
    `${field === 'non_field_errors' ? '' : field + ': '}${[].concat(msgs).join(' ')}`);
  return lines.join('\n') || `Request failed (HTTP ${status})`;
}

// --- Rendering. Text only (textContent), never HTML from the API. ---

function show({ status = '', error = '' } = {}) {
  $('status').textContent = status;
  $('error').textContent = error;
}

// Field errors of the last answer, cleared before each request.
function clearFieldErrors() {
  document.querySelectorAll('.field-error').forEach((p) => { p.textContent = ''; });
  document.querySelectorAll('[aria-invalid]').forEach((input) => input.removeAttribute('aria-invalid'));
}

// An error answer: each DRF field error next to its field in `form`, in the
// server's words; a `detail` and errors of fields the form lacks in #error.
function showErrors(form, data, status) {
  clearFieldErrors();
  if (typeof data.detail === 'string') return show({ error: data.detail });
  const rest = {};
  for (const [field, msgs] of Object.entries(data)) {
    const input = form.elements.namedItem(field);
    const slot = input && $(`${input.id}-error`);
    if (!slot) {
      rest[field] = msgs;
      continue;
    }
    slot.textContent = [].concat(msgs).join(' ');
    input.setAttribute('aria-invalid', 'true');
  }
  const marked = Object.keys(data).length > Object.keys(rest).length;
  show({ error: Object.keys(rest).length || !marked ? errorText(rest, status) : 'Please correct the marked fields.' });
}

// The page's views: one of these at a time.
const VIEWS = ['auth', 'forgot-form', 'reset-form', 'session'];
function showView(id, messages) {
  for (const view of VIEWS) $(view).hidden = view !== id;
  $('unverified').hidden = true;
  clearFieldErrors();
  show(messages);
}

const showSignedOut = (messages) => showView('auth', messages);

function showSignedIn(user, messages) {
  $('who').textContent = user.username;
  $('user-id').textContent = user.id;
  showView('session', messages);
}

// Disable the buttons while a request is in flight; report network errors.
async function busy(task) {
  const buttons = document.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await task();
  } catch (err) {
    show({ error: err.message });
    // Never leave a blank page.
    if (VIEWS.every((view) => $(view).hidden)) $('auth').hidden = false;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// --- Token lifecycle. ---

// Trade the refresh token for a new access token. With rotation on (tokend's
// default) the answer also carries a new refresh token and the old one is
// spent, so the new one MUST be kept (in cookie mode the browser does that;
// tutorial mode does not, see above). Concurrent callers share one request,
// so a token is never presented twice.
let refreshing = null;
function refreshTokens() {
  refreshing ??= (async () => {
    const body = store.refreshBody();
    if (!body) return false;
    const { status, data } = await tokenApi('refresh/', body);
    if (status !== 200) return false;
    store.saveRefreshed(data);
    return true;
  })().finally(() => { refreshing = null; });
  return refreshing;
}

// GET /api/user/me/; on 401 (access token expired or revoked) refresh the
// tokens once and retry. Without an access token (cookie mode after a
// reload), refresh first. Falls back to the login form when that fails.
// `messages` are shown with the result (see show()).
async function loadMe(messages) {
  if (!store.access() && !await refreshTokens()) return showSignedOut(messages);
  let me = await api('/api/user/me/', { access: store.access() });
  if (me.status === 401 && await refreshTokens()) {
    me = await api('/api/user/me/', { access: store.access() });
  }
  if (me.status === 200) {
    showSignedIn(me.data, messages);
    return loadDevices();
  }
  signedOutBy(me);
}

// An answer that ends the page's session (401 even after a refresh).
function signedOutBy({ status, data }) {
  store.clear();
  showSignedOut({ error: status === 401 ? 'Your session has ended, please log in again.' : errorText(data, status) });
}

// --- Your devices: the user's sessions (GET /api/user/sessions/). ---

// A Bearer call; on 401 (the access token expired meanwhile) refresh the
// tokens once and retry, as loadMe does.
async function withAccess(path, options = {}) {
  let res = await api(path, { ...options, access: store.access() });
  if (res.status === 401 && await refreshTokens()) {
    res = await api(path, { ...options, access: store.access() });
  }
  return res;
}

// "2026-12-02T08:30:00Z" in the browser's time zone.
const when = (iso) => (iso ? new Date(iso).toLocaleString() : 'unknown');

// One line per session, newest first, this browser's marked; text only.
function renderDevices(devices) {
  const list = $('devices-list');
  list.replaceChildren(...devices.map((d) => {
    const li = document.createElement('li');
    li.dataset.id = d.id;
    if (d.current) li.classList.add('current');
    const what = document.createElement('span');
    what.className = 'device';
    what.textContent = `${d.user_agent ?? 'Unknown browser'}${d.current ? ' (this device)' : ''}`;
    const where = document.createElement('span');
    where.className = 'muted';
    where.textContent = `${d.ip ?? 'unknown address'} · signed in ${when(d.created)} · last used ${when(d.last_used)}`;
    li.append(what, where);
    if (!d.current) {
      const end = document.createElement('button');
      end.type = 'button';
      end.className = 'link end-session';
      end.textContent = 'Sign out';
      end.addEventListener('click', () => busy(() => endSession(d.id)));
      li.append(end);
    }
    return li;
  }));
  // Hidden, not disabled: busy() re-enables every button it disabled.
  $('revoke-others').hidden = !devices.some((d) => !d.current);
}

async function loadDevices() {
  const res = await withAccess('/api/user/sessions/');
  if (res.status === 401) return signedOutBy(res);
  $('devices-error').textContent = res.status === 200 ? '' : errorText(res.data, res.status);
  renderDevices(res.status === 200 ? res.data : []);
}

// One other session ends (DELETE /api/user/sessions/{id}/).
async function endSession(id) {
  const res = await withAccess(`/api/user/sessions/${encodeURIComponent(id)}/`, { method: 'DELETE' });
  if (res.status === 401) return signedOutBy(res);
  if (res.status !== 200) return show({ error: errorText(res.data, res.status) });
  show({ status: 'That device is signed out.' });
  await loadDevices();
}

// Every session but this one ends: their refresh tokens are refused at once.
async function revokeOthers() {
  const res = await withAccess('/api/user/sessions/revoke-others/', { body: {} });
  if (res.status === 401) return signedOutBy(res);
  if (res.status !== 200) return show({ error: errorText(res.data, res.status) });
  const n = res.data.revoked;
  show({ status: `Signed out ${n} other device${n === 1 ? '' : 's'}.` });
  await loadDevices();
}

// --- Actions. ---

function formFields() {
  return { username: $('username').value, password: $('password').value };
}

async function register() {
  const body = formFields();
  const email = $('email').value.trim();
  if (email) body.email = email;
  const { status, data } = await api('/api/user/register/', { body });
  if (status !== 201) return showErrors($('auth'), data, status);
  clearFieldErrors();
  // With verification on, tokend has mailed a link; with "mandatory" it
  // refuses the login until the link is opened. The page cannot tell which.
  show({
    status: email
      ? `Account "${data.username}" created. If a verification e-mail arrives at ${email}, open its link, then log in.`
      : `Account "${data.username}" created. You can log in now.`,
  });
}

async function login() {
  const { status, data } = await tokenApi('', formFields());
  if (status === 401 && data.code === 'email_not_verified') {
    clearFieldErrors();
    $('resend-email').value = $('email').value;
    $('unverified').hidden = false;
    return show({ error: `${data.detail} Open the link in the verification e-mail we sent you, or have it sent again below.` });
  }
  if (status !== 200) return showErrors($('auth'), data, status);
  store.save(data);
  $('password').value = '';
  await loadMe();
}

// A new verification mail. tokend answers {"detail": "ok"} whatever the
// address (it tells no one which addresses it knows), so say what happens.
async function resendVerification() {
  const email = $('resend-email').value.trim();
  const { status, data } = await api('/api/auth/registration/resend-email/', { body: { email } });
  if (status !== 200) return showErrors($('unverified'), data, status);
  clearFieldErrors();
  show({ status: `If ${email} belongs to an account that is not verified yet, a new verification e-mail is on its way.` });
}

// "Forgot password?": tokend answers the same for known and unknown
// addresses; show its words.
async function requestReset() {
  const { status, data } = await api('/api/auth/password/reset/', { body: { email: $('forgot-email').value.trim() } });
  if (status !== 200) return showErrors($('forgot-form'), data, status);
  clearFieldErrors();
  show({ status: data.detail });
}

// The uid and token of the reset link this page was opened from.
let resetLink = null;

async function confirmReset() {
  const body = { ...resetLink, new_password1: $('new_password1').value, new_password2: $('new_password2').value };
  const { status, data } = await api('/api/auth/password/reset/confirm/', { body });
  if (status === 200) {
    // The reset revoked every session of the user, this page's included.
    store.clear();
    resetLink = null;
    $('reset-form').reset();
    return showSignedOut({ status: `${data.detail} Log in with it now.` });
  }
  if (data.uid || data.token) {
    // Expired, used, or voided by a later password change: a new link is
    // the only way on.
    const field = data.uid ? 'uid' : 'token';
    return showView('forgot-form', { error: `This reset link does not work any more (${field}: ${[].concat(data[field]).join(' ')}). Ask for a new one:` });
  }
  showErrors($('reset-form'), data, status);
}

// The address verification link: post its key, say how it went.
async function verifyEmail(key) {
  const { status, data } = await api('/api/auth/registration/verify-email/', { body: { key } });
  if (status === 200) return loadMe({ status: 'Your e-mail address is verified. You can log in now.' });
  await loadMe();
  show({
    error: status === 404
      ? `This verification link does not work (${data.detail}): it is unknown, expired or used already. Log in to have a new one sent.`
      : errorText(data, status),
  });
}

// Opened from a mailed link: #reset=UID/TOKEN or #verify=KEY (set
// TOKEND__ACCOUNTS__RESET_URL and VERIFY_URL to this page with these
// fragments). A fragment never reaches a server (nor a Referer header), so
// the one-time codes stay out of access logs; it is dropped from the address
// bar at once, so that a reload or the history does not replay it.
async function openLink() {
  const link = new URLSearchParams(location.hash.slice(1));
  if (!link.has('reset') && !link.has('verify')) return false;
  history.replaceState(null, '', location.pathname + location.search);
  if (link.has('verify')) {
    await verifyEmail(link.get('verify'));
  } else {
    const [uid, token = ''] = link.get('reset').split('/');
    resetLink = { uid, token };
    showView('reset-form');
  }
  return true;
}

// Logout revokes the whole session server side (its access tokens too),
// then forgets the tokens here, whatever the API answered (in cookie mode,
// tokend's answer also deletes the cookie).
async function logout() {
  const body = store.refreshBody();
  try {
    if (body) await tokenApi('blacklist/', body);
  } finally {
    store.clear();
    showSignedOut({ status: 'Logged out.' });
  }
}

// --- Wiring. ---

$('api').textContent = API;
$('mode').textContent = MODE;
$('auth').addEventListener('submit', (e) => { e.preventDefault(); busy(login); });
$('register').addEventListener('click', () => busy(register));
$('forgot').addEventListener('click', () => {
  $('forgot-email').value = $('email').value;
  showView('forgot-form');
});
$('unverified').addEventListener('submit', (e) => { e.preventDefault(); busy(resendVerification); });
$('forgot-form').addEventListener('submit', (e) => { e.preventDefault(); busy(requestReset); });
$('reset-form').addEventListener('submit', (e) => { e.preventDefault(); busy(confirmReset); });
document.querySelectorAll('.back').forEach((b) => b.addEventListener('click', () => busy(loadMe)));
$('whoami').addEventListener('click', () => busy(loadMe));
$('logout').addEventListener('click', () => busy(logout));
$('revoke-others').addEventListener('click', () => busy(revokeOthers));
// A link pasted into this tab changes only the fragment: no reload.
window.addEventListener('hashchange', () => busy(openLink));
busy(async () => { if (!await openLink()) await loadMe(); });
