// tokend login page: register, log in, show the current user, refresh an
// expired access token, log out. Vanilla JS, no build step.
'use strict';

// The API's base URL: ?api=http://host:port, default a local `cargo run`.
const API = (new URLSearchParams(location.search).get('api') || 'http://127.0.0.1:8000').replace(/\/+$/, '');

// Token storage, behind a small interface so that the page does not care
// where tokens live. This is the "localStorage mode": tokens are readable by
// any script on this origin (hence the strict CSP in index.html). A cookie
// mode (HttpOnly refresh cookie set by the API) will replace this object
// later without touching the rest of the page.
const store = {
  get() {
    const access = localStorage.getItem('tokend.access');
    const refresh = localStorage.getItem('tokend.refresh');
    return access && refresh ? { access, refresh } : null;
  },
  set({ access, refresh }) {
    localStorage.setItem('tokend.access', access);
    localStorage.setItem('tokend.refresh', refresh);
  },
  clear() {
    localStorage.removeItem('tokend.access');
    localStorage.removeItem('tokend.refresh');
  },
};

const $ = (id) => document.getElementById(id);

// One call to the API. Resolves to { status, data } for every HTTP answer
// (data is the parsed JSON body, or {}); rejects only when the API cannot be
// reached (network error, CORS refusal).
async function api(path, { body, access } = {}) {
  const headers = { Accept: 'application/json' };
  if (body) headers['Content-Type'] = 'application/json';
  if (access) headers.Authorization = `Bearer ${access}`;
  let response;
  try {
    response = await fetch(API + path, {
      method: body ? 'POST' : 'GET',
      headers,
      body: body && JSON.stringify(body),
    });
  } catch {
    throw new Error(`Cannot reach the API at ${API} (is tokend running, and is this page's origin, ${location.origin}, in TOKEND__CORS__ALLOWED_ORIGINS?)`);
  }
  const data = await response.json().catch(() => ({}));
  return { status: response.status, data };
}

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

function showSignedOut(messages) {
  $('session').hidden = true;
  $('auth').hidden = false;
  show(messages);
}

function showSignedIn(user) {
  $('who').textContent = user.username;
  $('user-id').textContent = user.id;
  $('auth').hidden = true;
  $('session').hidden = false;
  show();
}

// Disable the buttons while a request is in flight; report network errors.
async function busy(task) {
  const buttons = document.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await task();
  } catch (err) {
    show({ error: err.message });
    if ($('session').hidden) $('auth').hidden = false; // never leave a blank page
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// --- Token lifecycle. ---

// Trade the stored refresh token for a new pair. The API rotates refresh
// tokens: the old one is spent, so the new one MUST be stored. Concurrent
// callers share one request, so a token is never presented twice.
let refreshing = null;
function refreshTokens() {
  refreshing ??= (async () => {
    const tokens = store.get();
    if (!tokens) return false;
    const { status, data } = await api('/api/token/refresh/', { body: { refresh: tokens.refresh } });
    if (status !== 200) return false;
    store.set({ access: data.access, refresh: data.refresh ?? tokens.refresh });
    return true;
  })().finally(() => { refreshing = null; });
  return refreshing;
}

// GET /api/user/me/; on 401 (access token expired or revoked) refresh the
// tokens once and retry. Falls back to the login form when that fails.
async function loadMe() {
  const tokens = store.get();
  if (!tokens) return showSignedOut();
  let me = await api('/api/user/me/', { access: tokens.access });
  if (me.status === 401 && await refreshTokens()) {
    me = await api('/api/user/me/', { access: store.get().access });
  }
  if (me.status === 200) return showSignedIn(me.data);
  store.clear();
  showSignedOut({ error: me.status === 401 ? 'Your session has ended, please log in again.' : errorText(me.data, me.status) });
}

// --- Actions. ---

function credentials() {
  return { username: $('username').value, password: $('password').value };
}

async function register() {
  const { status, data } = await api('/api/user/register/', { body: credentials() });
  if (status === 201) {
    show({ status: `Account "${data.username}" created. You can log in now.` });
  } else {
    show({ error: errorText(data, status) });
  }
}

async function login() {
  const { status, data } = await api('/api/token/', { body: credentials() });
  if (status !== 200) return show({ error: errorText(data, status) });
  store.set(data);
  $('password').value = '';
  await loadMe();
}

// Logout revokes the whole session server side (its access tokens too),
// then forgets the tokens here, whatever the API answered.
async function logout() {
  const tokens = store.get();
  try {
    if (tokens) await api('/api/token/blacklist/', { body: { refresh: tokens.refresh } });
  } finally {
    store.clear();
    showSignedOut({ status: 'Logged out.' });
  }
}

// --- Wiring. ---

$('api').textContent = API;
$('auth').addEventListener('submit', (e) => { e.preventDefault(); busy(login); });
$('register').addEventListener('click', () => {
  if ($('auth').reportValidity()) busy(register);
});
$('whoami').addEventListener('click', () => busy(loadMe));
$('logout').addEventListener('click', () => busy(logout));
busy(loadMe);
