// tokend login page: register, log in, show the current user, refresh an
// expired access token, log out. Vanilla JS, no build step.
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
async function api(path, { body, access, credentials } = {}) {
  const headers = { Accept: 'application/json' };
  if (body) headers['Content-Type'] = 'application/json';
  if (access) headers.Authorization = `Bearer ${access}`;
  let response;
  try {
    response = await fetch(API + path, {
      method: body ? 'POST' : 'GET',
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
async function loadMe() {
  if (!store.access() && !await refreshTokens()) return showSignedOut();
  let me = await api('/api/user/me/', { access: store.access() });
  if (me.status === 401 && await refreshTokens()) {
    me = await api('/api/user/me/', { access: store.access() });
  }
  if (me.status === 200) return showSignedIn(me.data);
  store.clear();
  showSignedOut({ error: me.status === 401 ? 'Your session has ended, please log in again.' : errorText(me.data, me.status) });
}

// --- Actions. ---

function formFields() {
  return { username: $('username').value, password: $('password').value };
}

async function register() {
  const { status, data } = await api('/api/user/register/', { body: formFields() });
  if (status === 201) {
    show({ status: `Account "${data.username}" created. You can log in now.` });
  } else {
    show({ error: errorText(data, status) });
  }
}

async function login() {
  const { status, data } = await tokenApi('', formFields());
  if (status !== 200) return show({ error: errorText(data, status) });
  store.save(data);
  $('password').value = '';
  await loadMe();
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
$('register').addEventListener('click', () => {
  if ($('auth').reportValidity()) busy(register);
});
$('whoami').addEventListener('click', () => busy(loadMe));
$('logout').addEventListener('click', () => busy(logout));
busy(loadMe);
