// End-to-end test of the login page in its modes (localStorage, cookie:
// tokend's HttpOnly refresh cookie, and tutorial: a client that never stores
// a new refresh token, against tokend with rotation off and on), and of its
// account flows (verification required, password reset, the links read from
// mail delivered over SMTP to tests/smtp-sink/sink.py), each against its own
// real tokend, the page served from another origin (so every API call is a
// real cross-origin request with CORS), driven in headless Chromium.
//
//   npm ci && node e2e.mjs
//
// Environment: TOKEND_BIN (default ../../target/debug/tokend), CHROMIUM
// (default /usr/bin/chromium), SCREENSHOT (default <repo>/target/e2e/login-page.png;
// the other scenarios' go next to it with a suffix, e.g. login-page-cookie.png),
// SMTP_SINK_PYTHON (a Python with tests/smtp-sink/requirements.txt installed;
// without it the account scenario is skipped, or fails under CI=true).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const TOKEND_BIN = path.resolve(process.env.TOKEND_BIN ?? path.join(repo, 'target/debug/tokend'));
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOT = path.resolve(process.env.SCREENSHOT ?? path.join(repo, 'target/e2e/login-page.png'));
const ACCESS_TTL_SECS = 2;
const TUTORIAL_REFRESHES = 4; // refresh cycles the tutorial client must survive with rotation off
const BLACKLISTED = '{"detail":"Token is blacklisted","code":"token_not_valid"}';
const SMTP_SINK_PYTHON = process.env.SMTP_SINK_PYTHON;
const MAIL_FROM = 'Login example <noreply@example.com>';
const SITE_NAME = 'Login example';
const DEADLINE_MS = 150_000; // the whole run; a hung step fails instead of blocking CI

const started = Date.now();
const log = (msg) => console.log(`[e2e ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Failure extends Error {}
function check(ok, message) {
  if (!ok) throw new Failure(message);
}

// A port that is free right now: bind port 0, read it, close.
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Start a child process, keep its output (printed if the test fails).
const children = [];
function start(name, cmd, args, options) {
  const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  child.output = '';
  child.name = name;
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding('utf8').on('data', (chunk) => { child.output += chunk; });
  }
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.once('error', (err) => { child.output += `\nspawn failed: ${err.message}\n`; });
  children.push(child);
  return child;
}

async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timeout = sleep(5000).then(() => 'timeout');
  if ((await Promise.race([child.exited, timeout])) === 'timeout') {
    child.kill('SIGKILL');
    await child.exited;
  }
}

// Resolve with fn()'s result once it is truthy; fail if the child exits first.
async function until(what, child, fn, timeoutMs = 30_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Failure(`${child.name} exited (${child.exitCode ?? child.signalCode}) while waiting for ${what}`);
    }
    const result = await fn().catch(() => null);
    if (result) return result;
    await sleep(100);
  }
  throw new Failure(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function post(url, body, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, data: await res.json().catch(() => ({})) };
}

// SCREENSHOT with a suffix: login-page.png -> login-page-cookie.png.
const screenshotWith = (suffix) => (({ dir, name, ext }) => path.join(dir, `${name}-${suffix}${ext}`))(path.parse(SCREENSHOT));

// Keep the page's state at a failure for debugging.
async function saveFailure(page, label, screenshot) {
  fs.mkdirSync(path.dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot }).catch(() => {});
  console.error(`${label}, page at failure: ${screenshot}; #status=${JSON.stringify(await page.locator('#status').textContent().catch(() => '?'))} #error=${JSON.stringify(await page.locator('#error').textContent().catch(() => '?'))}`);
}

// Exact texts of elements: { selector: text }.
async function expectText(page, wanted) {
  for (const [selector, text] of Object.entries(wanted)) {
    const got = await page.locator(selector).textContent();
    check(got === text, `${selector}: expected ${JSON.stringify(text)}, got ${JSON.stringify(got)}`);
  }
}

// Every API answer the page gets ("GET /api/user/me/ 401"), to check the
// refresh sequences; empty it with `answers.length = 0`.
function recordAnswers(page, api) {
  const answers = [];
  page.on('response', (r) => {
    if (r.url().startsWith(api) && r.request().method() !== 'OPTIONS') {
      answers.push(`${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`);
    }
  });
  return answers;
}

// Open the page, check its mode, register a user and log in.
async function registerAndLogIn(page, pageUrl, mode, username, password) {
  await page.goto(pageUrl);
  await page.locator('#auth').waitFor();
  check(await page.locator('#mode').textContent() === mode, `the page is not in ${mode} mode`);
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#register');
  await page.locator('#status', { hasText: `Account "${username}" created` }).waitFor();
  await page.click('#login');
  await page.locator('#who', { hasText: username }).waitFor();
}

// What differs between the page's localStorage and cookie modes. refreshToken() reads the page's
// current refresh token where the mode keeps it (null when there is none);
// presentRefresh() presents a refresh token from Node the way the mode does.
const MODES = {
  localStorage: {
    query: '',
    env: {},
    screenshot: SCREENSHOT,
    refreshToken: (page) => page.evaluate(() => localStorage.getItem('tokend.refresh')),
    // After a reload the page still has its (expired) access token.
    afterReload: 'GET /api/user/me/ 401, POST /api/token/refresh/ 200, GET /api/user/me/ 200, GET /api/user/sessions/ 200',
    presentRefresh: (api, token) => post(`${api}/api/token/refresh/`, { refresh: token }),
  },
  cookie: {
    query: '&mode=cookie',
    env: { TOKEND__COOKIE__ENABLED: 'true' },
    screenshot: screenshotWith('cookie'),
    refreshToken: async (page, api) => (await refreshCookie(page, api))?.value ?? null,
    // After a reload the access token (in memory) is gone: refresh first.
    afterReload: 'POST /api/token/refresh/ 200, GET /api/user/me/ 200, GET /api/user/sessions/ 200',
    presentRefresh: (api, token) => post(`${api}/api/token/refresh/`, {}, { Cookie: `tokend_refresh=${token}` }),
  },
};

// The tokend_refresh cookie the browser would send to the refresh endpoint
// (cookies(url) matches the cookie's Path, so not the API's bare origin).
async function refreshCookie(page, api) {
  return (await page.context().cookies(`${api}/api/token/refresh/`)).find((c) => c.name === 'tokend_refresh');
}

// Cookie mode: no token where scripts can read it, the cookie locked down.
async function checkCookieMode(page, api) {
  const exposed = await page.evaluate(() => ({
    storage: [localStorage, sessionStorage].flatMap((s) => Object.keys(s).flatMap((k) => [k, s.getItem(k)]))
      .filter((v) => v.includes('eyJ')),
    cookie: document.cookie,
  }));
  check(exposed.storage.length === 0, `token in Web Storage in cookie mode: ${exposed.storage}`);
  check(!exposed.cookie.includes('tokend_refresh'), `document.cookie shows the refresh cookie: ${exposed.cookie}`);
  const c = await refreshCookie(page, api);
  check(c, `no tokend_refresh cookie stored by the browser for ${api}`);
  const want = { httpOnly: true, secure: true, sameSite: 'Strict', path: '/api/token' };
  const got = Object.fromEntries(Object.keys(want).map((k) => [k, c[k]]));
  check(JSON.stringify(got) === JSON.stringify(want), `refresh cookie attributes: ${JSON.stringify(got)}`);
}

// The tutorial client (?mode=tutorial) against two tokends: with rotation
// off it must stay logged in; with rotation on (the default) it is logged
// out at its second refresh, which is why the setting exists. A grace of 0
// makes that second refresh a reuse whatever the timing.
const TUTORIAL = {
  'tutorial-rotation-off': { rotate: false, env: { TOKEND__JWT__ROTATE_REFRESH_TOKENS: 'false' } },
  'tutorial-rotation-on': { rotate: true, env: { TOKEND__JWT__REFRESH_REUSE_GRACE_SECS: '0' } },
};

// tokend on a free port, with a fresh SQLite database in its own directory
// and a 2 s access token lifetime so that the refresh path runs. `env` is an
// object, or a function of the API's URL that returns one.
async function startTokend(name, env, pageOrigin, tmp) {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  const port = await freePort();
  const api = `http://127.0.0.1:${port}`;
  const tokend = start(`tokend (${name})`, TOKEND_BIN, [], {
    cwd: dir, // the dev profile writes its signing key next to the database
    env: {
      ...process.env,
      TOKEND_PROFILE: 'dev',
      NO_COLOR: '1', // plain logs when they are printed on failure
      TOKEND__DATABASE__URL: `sqlite://${dir}/t.sqlite3`,
      TOKEND__SERVER__HOST: '127.0.0.1',
      TOKEND__SERVER__PORT: String(port),
      TOKEND__PASSWORD__BCRYPT_COST: '4',
      TOKEND__RATE_LIMIT__ENABLED: 'false',
      TOKEND__CORS__ALLOWED_ORIGINS: pageOrigin,
      TOKEND__JWT__ACCESS_TTL_SECS: String(ACCESS_TTL_SECS),
      // The replay grace must be shorter than the access lifetime.
      TOKEND__JWT__REFRESH_REUSE_GRACE_SECS: '1',
      ...(typeof env === 'function' ? env(api) : env),
    },
  });
  await until(`${api}/healthz`, tokend, async () => (await fetch(`${api}/healthz`)).status === 200);
  return api;
}

// The whole scenario in one mode, in a fresh browser context.
async function scenario(browser, mode, api, pageOrigin) {
  const m = MODES[mode];
  const step = (msg) => log(`${mode}: ${msg}`);
  const pageUrl = `${pageOrigin}/?api=${encodeURIComponent(api)}${m.query}`;
  const username = `alice-${process.pid}`;
  const password = 'correct horse battery staple';

  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (err) => step(`page error: ${err.message}`));
  const answers = recordAnswers(page, api);
  // Every refresh token of the session, all refused after logout.
  const seen = [];
  const expectRotated = async (when) => {
    const token = await m.refreshToken(page, api);
    check(token && !seen.includes(token), `no new refresh token kept ${when}`);
    seen.push(token);
    if (mode === 'cookie') await checkCookieMode(page, api);
  };
  // Let the access token expire, then `action`: the page must get `expected`
  // and still show the user (and, last, the list of their devices).
  const afterExpiry = async (action, expected) => {
    await sleep((ACCESS_TTL_SECS + 1) * 1000);
    answers.length = 0;
    await Promise.all([
      page.waitForResponse((r) => r.url() === `${api}/api/user/sessions/` && r.status() === 200),
      action(),
    ]);
    await page.locator('#who', { hasText: username }).waitFor();
    check(answers.join(', ') === expected, `expected ${expected}; the page got: ${answers.join(', ')}`);
  };

  try {
    // Register and log in: the page shows who we are.
    await registerAndLogIn(page, pageUrl, mode, username, password);
    await expectRotated('after login');
    step('registered, logged in');

    // Reload once the access token has expired: the page refreshes (the
    // refresh token rotates) and shows the user again.
    await afterExpiry(() => page.reload(), m.afterReload);
    await expectRotated('after the reload');
    step('access token expired, reloaded: refreshed, refresh token rotated');

    // Same without a reload: "Who am I?" gets a 401, refreshes, retries.
    await afterExpiry(() => page.click('#whoami'),
      'GET /api/user/me/ 401, POST /api/token/refresh/ 200, GET /api/user/me/ 200, GET /api/user/sessions/ 200');
    await expectRotated('after the refresh on 401');
    step('access token expired on the page: refreshed on 401, refresh token rotated');

    fs.mkdirSync(path.dirname(m.screenshot), { recursive: true });
    await page.screenshot({ path: m.screenshot });

    // A second browser (own storage and cookies): wrong password, taken username.
    const other = await browser.newContext();
    const page2 = await other.newPage();
    page2.setDefaultTimeout(15_000);
    await page2.goto(pageUrl);
    await page2.locator('#auth').waitFor();
    await page2.fill('#username', username);
    await page2.fill('#password', 'wrong password');
    await page2.click('#login');
    await page2.locator('#error', { hasText: 'No active account found with the given credentials' }).waitFor();
    await page2.click('#register');
    await page2.locator('#username-error', { hasText: 'A user with that username already exists.' }).waitFor();
    await expectText(page2, { '#username-error': 'A user with that username already exists.', '#error': 'Please correct the marked fields.' });
    await other.close();
    step('wrong password and taken username shown as errors');

    await devicesScenario(browser, page, pageUrl, api, username, password, step);

    // Log out: the refresh token is gone from the browser, the login form is
    // back, and the API refuses every refresh token of the session.
    await page.click('#logout');
    await page.locator('#status', { hasText: 'Logged out.' }).waitFor();
    check(await page.locator('#auth').isVisible(), 'login form not shown after logout');
    check(await m.refreshToken(page, api) === null, 'the browser still holds a refresh token after logout');
    for (const [i, token] of seen.entries()) {
      const { status, data } = await m.presentRefresh(api, token);
      check(status === 401, `refresh token #${i + 1} still works after logout: ${status} ${JSON.stringify(data)}`);
    }
    step(`logged out, the browser holds no refresh token, all ${seen.length} refused`);
  } catch (err) {
    await saveFailure(page, `${mode} mode`, m.screenshot);
    throw err;
  } finally {
    await context.close();
  }
}

// The devices the page lists (#devices-list), once there are `n`: exactly
// one marked as this one.
async function expectDevices(page, n, when) {
  await page.waitForFunction((count) => document.querySelectorAll('#devices-list li').length === count, n)
    .catch(async () => {
      throw new Failure(`${when}: expected ${n} devices, the page lists ${await page.locator('#devices-list li').count()}`);
    });
  const devices = await page.locator('#devices-list li').evaluateAll((lis) => lis.map((li) => ({
    id: li.dataset.id, current: li.classList.contains('current'), text: li.querySelector('.device').textContent,
  })));
  check(devices.filter((d) => d.current).length === 1, `${when}: not exactly one current device: ${JSON.stringify(devices)}`);
  return devices;
}

// "Your devices", in a signed-in `page`: it lists its own session, marked;
// a login in a second browser and one from Node add theirs; "Sign out" ends
// the Node one (DELETE, a CORS preflight), "Sign out other devices" the
// second browser's, which is then asked to log in again.
async function devicesScenario(browser, page, pageUrl, api, username, password, step) {
  const userAgent = await page.evaluate(() => navigator.userAgent);
  const [mine] = await expectDevices(page, 1, 'signed in alone');
  check(mine.text === `${userAgent} (this device)`, `this device shown as ${JSON.stringify(mine.text)}`);
  check(await page.locator('#revoke-others').isHidden(), '"Sign out other devices" shown without other devices');

  const other = await browser.newContext();
  const page2 = await other.newPage();
  page2.setDefaultTimeout(15_000);
  try {
    await page2.goto(pageUrl);
    await page2.locator('#auth').waitFor();
    await page2.fill('#username', username);
    await page2.fill('#password', password);
    await page2.click('#login');
    await page2.locator('#who', { hasText: username }).waitFor();
    const seen2 = await expectDevices(page2, 2, 'second browser');
    const theirs = seen2.find((d) => d.current);
    check(theirs.id !== mine.id && seen2.some((d) => d.id === mine.id && !d.current),
      `the second browser's list: ${JSON.stringify(seen2)}`);
    step('a second browser logged in: it lists two devices, its own marked');

    const nodeUa = `e2e-node/${process.pid}`;
    const res = await fetch(`${api}/api/token/`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'User-Agent': nodeUa },
      body: JSON.stringify({ username, password }),
    });
    check(res.status === 200, `login from Node: ${res.status}`);
    const nodeAccess = (await res.json()).access;
    const nodeMe = () => fetch(`${api}/api/user/me/`, { headers: { Authorization: `Bearer ${nodeAccess}` } }).then((r) => r.status);
    check(await nodeMe() === 200, 'the Node login cannot use its access token');

    await page.click('#whoami');
    const three = await expectDevices(page, 3, 'after a third login');
    check(three[0].current === false && three.find((d) => d.current).id === mine.id,
      `the first browser's list: ${JSON.stringify(three)}`);
    const node = three.find((d) => d.text === nodeUa);
    check(node, `the Node login is not listed with its user agent: ${JSON.stringify(three)}`);
    check(await page.locator('#revoke-others').isVisible(), '"Sign out other devices" not shown');

    // The access token may have expired (2 s): then 401, a refresh, and
    // the call again. The answer that counts is the one after that.
    const lastAnswer = (url, method) => page.waitForResponse((r) => r.url() === url && r.request().method() === method
      && r.status() !== 401);
    const [deleted] = await Promise.all([
      lastAnswer(`${api}/api/user/sessions/${node.id}/`, 'DELETE'),
      page.click(`#devices-list li[data-id="${node.id}"] .end-session`),
    ]);
    check(deleted.status() === 200, `DELETE of the Node session: ${deleted.status()}`);
    const two = await expectDevices(page, 2, 'after signing out the Node login');
    check(!two.some((d) => d.id === node.id), `the Node session still listed: ${JSON.stringify(two)}`);
    check(await nodeMe() === 401, 'the Node access token still works after "Sign out"');
    step('"Sign out" on one device: DELETE 200, it is gone from the list, its access token refused');

    const [revoked] = await Promise.all([
      lastAnswer(`${api}/api/user/sessions/revoke-others/`, 'POST'),
      page.click('#revoke-others'),
    ]);
    const body = await revoked.json();
    check(revoked.status() === 200 && JSON.stringify(body) === '{"revoked":1}',
      `revoke-others: ${revoked.status()} ${JSON.stringify(body)}`);
    const one = await expectDevices(page, 1, 'after "Sign out other devices"');
    check(one[0].id === mine.id, `the remaining device is not this one: ${JSON.stringify(one)}`);
    await expectText(page, { '#status': 'Signed out 1 other device.' });
    check(await page.locator('#revoke-others').isHidden(), '"Sign out other devices" still shown');

    // The second browser's session is over: its next call logs it out.
    await page2.click('#whoami');
    await page2.locator('#error', { hasText: 'Your session has ended, please log in again.' }).waitFor();
    check(await page2.locator('#auth').isVisible(), 'the second browser still signed in');
    step('"Sign out other devices": {"revoked":1}, one device left, the second browser asked to log in again');
  } finally {
    await other.close();
  }
}

// The tutorial client (?mode=tutorial) in a fresh browser context: on a 401
// it refreshes with the refresh token from the login and stores only the new
// access token. Rotation off: it stays logged in through TUTORIAL_REFRESHES
// refreshes, then logs out. Rotation on: its second refresh presents the
// token the first one spent, tokend ends the session and the page shows the
// login form.
async function tutorialScenario(browser, name, api, pageOrigin) {
  const { rotate } = TUTORIAL[name];
  const step = (msg) => log(`${name}: ${msg}`);
  const pageUrl = `${pageOrigin}/?api=${encodeURIComponent(api)}&mode=tutorial`;
  const username = `bob-${process.pid}`;
  const password = 'correct horse battery staple';
  const screenshot = screenshotWith(name);

  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (err) => step(`page error: ${err.message}`));
  const answers = recordAnswers(page, api);
  const stored = () => page.evaluate(() =>
    ({ access: localStorage.getItem('tokend.access'), refresh: localStorage.getItem('tokend.refresh') }));
  const refreshed = 'GET /api/user/me/ 401, POST /api/token/refresh/ 200, GET /api/user/me/ 200, GET /api/user/sessions/ 200';
  // Let the access token expire, click "Who am I?" and wait until the page
  // is done (its buttons are disabled meanwhile); the refresh answer.
  const whoAmIAfterExpiry = async () => {
    await sleep((ACCESS_TTL_SECS + 1) * 1000);
    answers.length = 0;
    const [refresh] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${api}/api/token/refresh/` && r.request().method() === 'POST'),
      page.click('#whoami'),
    ]);
    await page.waitForFunction(() => [...document.querySelectorAll('button')].every((b) => !b.disabled));
    return { status: refresh.status(), body: await refresh.json() };
  };
  // Still signed in: the user shown, no error, the login form never shown.
  const checkSignedIn = async (when) => {
    const state = await page.evaluate(() => ({
      who: document.getElementById('who').textContent,
      session: !document.getElementById('session').hidden,
      error: document.getElementById('error').textContent,
      sawLoginForm: window.sawLoginForm === true,
    }));
    check(JSON.stringify(state) === JSON.stringify({ who: username, session: true, error: '', sawLoginForm: false }),
      `not signed in ${when}: ${JSON.stringify(state)}`);
  };

  try {
    await registerAndLogIn(page, pageUrl, 'tutorial', username, password);
    const { refresh: loginRefresh } = await stored();
    check(loginRefresh, 'no refresh token stored after login');
    // Record it if the login form is ever shown again.
    await page.evaluate(() => {
      const auth = document.getElementById('auth');
      new MutationObserver(() => { if (!auth.hidden) window.sawLoginForm = true; })
        .observe(auth, { attributes: true, attributeFilter: ['hidden'] });
    });
    step('registered, logged in');

    if (!rotate) {
      for (let i = 1; i <= TUTORIAL_REFRESHES; i++) {
        const { status, body } = await whoAmIAfterExpiry();
        check(status === 200 && typeof body.access === 'string' && JSON.stringify(Object.keys(body)) === '["access"]',
          `refresh #${i}: expected 200 {"access": …}, got ${status} ${JSON.stringify(body)}`);
        check(answers.join(', ') === refreshed, `refresh #${i}: expected ${refreshed}; the page got: ${answers.join(', ')}`);
        await checkSignedIn(`after refresh #${i}`);
        const tokens = await stored();
        check(tokens.access === body.access && tokens.refresh === loginRefresh,
          `refresh #${i}: the page should hold the new access token and the login's refresh token`);
      }
      step(`${TUTORIAL_REFRESHES} refreshes with the login's refresh token: 200 {"access": …} each, still signed in`);

      // Logout revokes the session: the refresh token is refused from then on.
      await page.click('#logout');
      await page.locator('#status', { hasText: 'Logged out.' }).waitFor();
      const { status, data } = await post(`${api}/api/token/refresh/`, { refresh: loginRefresh });
      check(status === 401 && JSON.stringify(data) === BLACKLISTED,
        `the refresh token after logout: expected 401 ${BLACKLISTED}, got ${status} ${JSON.stringify(data)}`);
      step('logged out, the refresh token refused');
    } else {
      // First refresh: a new pair; the page keeps the access token only.
      const first = await whoAmIAfterExpiry();
      check(first.status === 200 && JSON.stringify(Object.keys(first.body)) === '["access","refresh"]',
        `refresh #1: expected 200 {"access": …, "refresh": …}, got ${first.status} ${JSON.stringify(first.body)}`);
      check(answers.join(', ') === refreshed, `refresh #1: expected ${refreshed}; the page got: ${answers.join(', ')}`);
      await checkSignedIn('after refresh #1');
      const tokens = await stored();
      check(tokens.access === first.body.access && tokens.refresh === loginRefresh,
        'refresh #1: the page should hold the new access token and still the login\'s (now spent) refresh token');
      step('refresh #1: 200 with a new pair, the page kept the spent refresh token');

      // Second refresh: the spent token again, i.e. reuse: the session ends.
      const second = await whoAmIAfterExpiry();
      check(second.status === 401 && JSON.stringify(second.body) === BLACKLISTED,
        `refresh #2: expected 401 ${BLACKLISTED}, got ${second.status} ${JSON.stringify(second.body)}`);
      const expected = 'GET /api/user/me/ 401, POST /api/token/refresh/ 401';
      check(answers.join(', ') === expected, `refresh #2: expected ${expected}; the page got: ${answers.join(', ')}`);
      check(await page.locator('#auth').isVisible(), 'login form not shown after the refused refresh');
      const error = await page.locator('#error').textContent();
      check(error === 'Your session has ended, please log in again.', `error shown: ${JSON.stringify(error)}`);
      const left = await stored();
      check(left.access === null && left.refresh === null, `tokens left in localStorage: ${JSON.stringify(left)}`);
      // The whole session was revoked: the refresh token of refresh #1 too.
      const { status, data } = await post(`${api}/api/token/refresh/`, { refresh: first.body.refresh });
      check(status === 401 && JSON.stringify(data) === BLACKLISTED,
        `the rotated refresh token after the reuse: expected 401 ${BLACKLISTED}, got ${status} ${JSON.stringify(data)}`);
      step(`refresh #2 with the spent token: 401 ${BLACKLISTED}, logged out, session revoked`);
    }
  } catch (err) {
    await saveFailure(page, name, screenshot);
    throw err;
  } finally {
    await context.close();
  }
}

// The SMTP sink (tests/smtp-sink/sink.py) on a free port, writing each
// message it accepts to `dir` as N.json (headers and decoded parts).
async function startSink(tmp) {
  const dir = path.join(tmp, 'mail');
  fs.mkdirSync(dir);
  const child = start('smtp sink', SMTP_SINK_PYTHON, [path.join(repo, 'tests/smtp-sink/sink.py'), '0', dir], {
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
  });
  const url = await until('the SMTP sink to listen', child, async () =>
    child.output.match(/listening on (smtp:\/\/127\.0\.0\.1:\d+)/)?.[1]);
  return { child, dir, url };
}

// The account scenario's tokend: verification mandatory, the mails' links
// pointing at the page (the codes in the fragment), mail to the sink.
const accountsEnv = (pageOrigin, smtpUrl) => (api) => {
  const page = `${pageOrigin}/?api=${encodeURIComponent(api)}`;
  return {
    TOKEND__ACCOUNTS__EMAIL_VERIFICATION: 'mandatory',
    TOKEND__ACCOUNTS__RESET_URL: `${page}#reset={uid}/{token}`,
    TOKEND__ACCOUNTS__VERIFY_URL: `${page}#verify={key}`,
    TOKEND__ACCOUNTS__SITE_NAME: SITE_NAME,
    TOKEND__EMAIL__SMTP_URL: smtpUrl,
    TOKEND__EMAIL__FROM: MAIL_FROM,
  };
};

// Message number n at the sink, once it is there: its envelope and headers
// checked, the one link of its text part returned.
async function mailedLink(sink, n, to, subject) {
  const file = path.join(sink.dir, `${n}.json`);
  const mail = await until(`mail #${n} at the SMTP sink`, sink.child, async () => JSON.parse(fs.readFileSync(file, 'utf8')));
  const got = { mail_from: mail.mail_from, rcpt_tos: mail.rcpt_tos, from: mail.from, to: mail.to, subject: mail.subject };
  const want = { mail_from: 'noreply@example.com', rcpt_tos: [to], from: MAIL_FROM, to, subject };
  check(JSON.stringify(got) === JSON.stringify(want), `mail #${n}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
  const links = mail.text?.match(/https?:\/\/\S+/g) ?? [];
  check(links.length === 1, `mail #${n}: expected one link in the text part, got ${JSON.stringify(mail.text)}`);
  return links[0];
}

// The answer of the API call to `url` that `action` makes the page send:
// { status, body } (the body as text, to compare exactly). Waits until the
// page is done with it (its buttons are disabled meanwhile).
async function answerTo(page, url, action) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === url && r.request().method() === 'POST'),
    action(),
  ]);
  const answer = { status: response.status(), body: await response.text() };
  await page.waitForFunction(() => [...document.querySelectorAll('button')].every((b) => !b.disabled));
  return answer;
}

function expectAnswer(got, status, body, what) {
  check(got.status === status && got.body === body,
    `${what}: expected ${status} ${body}, got ${got.status} ${got.body}`);
}

// Account flows with verification mandatory, in a fresh browser context:
// register with an address, login refused until the mailed link is opened
// (after a resend), then "Forgot password?", the mailed reset link (a
// mismatch first), the new password works and the old one not, and the
// used link is refused. Mailed links are opened in new tabs, as from a mail
// client.
async function accountsScenario(browser, api, pageOrigin, sink) {
  const step = (msg) => log(`accounts: ${msg}`);
  const pageUrl = `${pageOrigin}/?api=${encodeURIComponent(api)}`;
  const username = `carol-${process.pid}`;
  const email = `carol-${process.pid}@example.com`;
  const password = 'correct horse battery staple';
  const newPassword = 'purple monkey dishwasher 42';
  const screenshot = screenshotWith('accounts');
  const NOT_VERIFIED = '{"detail":"E-mail is not verified.","code":"email_not_verified"}';

  const context = await browser.newContext({ viewport: { width: 800, height: 900 } });
  let page; // the tab in use, saved on failure
  const newTab = async (url) => {
    page = await context.newPage();
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (err) => step(`page error: ${err.message}`));
    await page.goto(url);
    return page;
  };
  const logIn = (tab, pass) => answerTo(tab, `${api}/api/token/`, async () => {
    await tab.fill('#username', username);
    await tab.fill('#password', pass);
    await tab.click('#login');
  });

  try {
    // Register: without an address the field error is shown next to it.
    const tab1 = await newTab(pageUrl);
    await tab1.fill('#username', username);
    await tab1.fill('#password', password);
    let answer = await answerTo(tab1, `${api}/api/user/register/`, () => tab1.click('#register'));
    expectAnswer(answer, 400, '{"email":["This field is required."]}', 'registration without an address');
    await expectText(tab1, { '#email-error': 'This field is required.', '#error': 'Please correct the marked fields.' });
    check(await tab1.getAttribute('#email', 'aria-invalid') === 'true', 'the e-mail field is not marked invalid');
    await tab1.fill('#email', email);
    answer = await answerTo(tab1, `${api}/api/user/register/`, () => tab1.click('#register'));
    check(answer.status === 201, `registration: ${answer.status} ${answer.body}`);
    await expectText(tab1, {
      '#status': `Account "${username}" created. If a verification e-mail arrives at ${email}, open its link, then log in.`,
      '#email-error': '',
      '#error': '',
    });
    step('registration: the missing address shown at its field, then registered with one');

    // Login refused until the address is verified; the page offers a resend.
    answer = await logIn(tab1, password);
    expectAnswer(answer, 401, NOT_VERIFIED, 'login before verification');
    await expectText(tab1, { '#error': 'E-mail is not verified. Open the link in the verification e-mail we sent you, or have it sent again below.' });
    check(await tab1.locator('#unverified').isVisible(), 'no resend form after the not-verified login');
    check(await tab1.inputValue('#resend-email') === email, 'the resend form does not hold the address');
    const verifySubject = `Confirm your e-mail address on ${SITE_NAME}`;
    const first = await mailedLink(sink, 1, email, verifySubject);
    check(first.startsWith(`${pageUrl}#verify=`), `verification link: ${first}`);
    step('login refused: E-mail is not verified; verification mail received');

    answer = await answerTo(tab1, `${api}/api/auth/registration/resend-email/`, () => tab1.click('#resend'));
    expectAnswer(answer, 200, '{"detail":"ok"}', 'resend');
    await expectText(tab1, { '#status': `If ${email} belongs to an account that is not verified yet, a new verification e-mail is on its way.`, '#error': '' });
    const verifyLink = await mailedLink(sink, 2, email, verifySubject);
    check(verifyLink.startsWith(`${pageUrl}#verify=`) && verifyLink !== first, `second verification link: ${verifyLink}`);
    step('resent: a second verification mail with a new link');

    // The link opened in a new tab: verified, the code gone from the address bar.
    const tab2 = await context.newPage();
    page = tab2;
    tab2.setDefaultTimeout(15_000);
    answer = await answerTo(tab2, `${api}/api/auth/registration/verify-email/`, () => tab2.goto(verifyLink));
    expectAnswer(answer, 200, '{"detail":"ok"}', 'verification');
    await expectText(tab2, { '#status': 'Your e-mail address is verified. You can log in now.', '#error': '' });
    check(await tab2.locator('#auth').isVisible(), 'no login form after the verification');
    check(tab2.url() === pageUrl, `the verification key is still in the address bar: ${tab2.url()}`);
    answer = await logIn(tab2, password);
    check(answer.status === 200, `login after verification: ${answer.status} ${answer.body}`);
    await tab2.locator('#who', { hasText: username }).waitFor();
    await tab2.click('#logout');
    await tab2.locator('#status', { hasText: 'Logged out.' }).waitFor();
    step('verification link opened: verified, logged in, logged out');

    // Forgot password: the server's answer shown.
    await tab2.click('#forgot');
    check(await tab2.locator('#forgot-form').isVisible() && !await tab2.locator('#auth').isVisible(), 'no reset request form');
    await tab2.fill('#forgot-email', email);
    answer = await answerTo(tab2, `${api}/api/auth/password/reset/`, () => tab2.click('#send-reset'));
    expectAnswer(answer, 200, '{"detail":"Password reset e-mail has been sent."}', 'reset request');
    await expectText(tab2, { '#status': 'Password reset e-mail has been sent.', '#error': '' });
    const resetLink = await mailedLink(sink, 3, email, `Password reset on ${SITE_NAME}`);
    check(resetLink.startsWith(`${pageUrl}#reset=`), `reset link: ${resetLink}`);
    step('"Forgot password?": reset mail received');

    // The reset link: a mismatch first, shown at the second field.
    const tab3 = await newTab(resetLink);
    await tab3.locator('#reset-form').waitFor();
    check(tab3.url() === pageUrl, `the reset token is still in the address bar: ${tab3.url()}`);
    const setPassword = (tab, second) => answerTo(tab, `${api}/api/auth/password/reset/confirm/`, async () => {
      await tab.fill('#new_password1', newPassword);
      await tab.fill('#new_password2', second);
      await tab.click('#set-password');
    });
    answer = await setPassword(tab3, `${newPassword}!`);
    expectAnswer(answer, 400, '{"new_password2":["The two password fields didn’t match."]}', 'mismatched passwords');
    await expectText(tab3, { '#new_password2-error': 'The two password fields didn’t match.', '#error': 'Please correct the marked fields.' });
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await tab3.screenshot({ path: screenshot });
    answer = await setPassword(tab3, newPassword);
    expectAnswer(answer, 200, '{"detail":"Password has been reset with the new password."}', 'reset');
    await expectText(tab3, {
      '#status': 'Password has been reset with the new password. Log in with it now.',
      '#error': '',
      '#new_password2-error': '',
    });
    check(await tab3.locator('#auth').isVisible(), 'no login form after the reset');
    step('reset link: mismatch shown at its field, then the new password set');

    // The old password fails, the new one works.
    answer = await logIn(tab3, password);
    expectAnswer(answer, 401, '{"detail":"No active account found with the given credentials"}', 'login with the old password');
    await expectText(tab3, { '#error': 'No active account found with the given credentials' });
    answer = await logIn(tab3, newPassword);
    check(answer.status === 200, `login with the new password: ${answer.status} ${answer.body}`);
    await tab3.locator('#who', { hasText: username }).waitFor();
    step('the old password refused, the new one logs in');

    // The same link again: used, refused; the page offers a new one.
    const tab4 = await newTab(resetLink);
    answer = await setPassword(tab4, newPassword);
    expectAnswer(answer, 400, '{"token":["Invalid value"]}', 'the used reset link');
    await expectText(tab4, { '#error': 'This reset link does not work any more (token: Invalid value). Ask for a new one:', '#status': '' });
    check(await tab4.locator('#forgot-form').isVisible(), 'no reset request form after the used link');
    const mails = fs.readdirSync(sink.dir).filter((f) => f.endsWith('.json')).length;
    check(mails === 3, `expected 3 mails at the sink, got ${mails}`);
    step('the used reset link refused: token: Invalid value; 3 mails in all');
  } catch (err) {
    if (page) await saveFailure(page, 'accounts', screenshot);
    throw err;
  } finally {
    await context.close();
  }
}

async function main(tmp) {
  check(fs.existsSync(TOKEND_BIN), `tokend binary not found at ${TOKEND_BIN} (build it with cargo build, or set TOKEND_BIN)`);
  check(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);

  // The page's static server, on any free port (it prints the port).
  const server = start('serve.mjs', process.execPath, [path.join(here, 'serve.mjs'), '0'], { cwd: here });
  const pageOrigin = await until('serve.mjs to listen', server, async () =>
    server.output.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/)?.[1]);

  // The account scenario needs the SMTP sink (Python); CI must run it.
  if (!SMTP_SINK_PYTHON) {
    check(process.env.CI === undefined, 'SMTP_SINK_PYTHON (a Python with tests/smtp-sink/requirements.txt) is required in CI');
    log('SKIPPED the account scenario: SMTP_SINK_PYTHON not set');
  }
  const accounts = SMTP_SINK_PYTHON && (async () => {
    const sink = await startSink(tmp);
    return { sink, api: await startTokend('accounts', accountsEnv(pageOrigin, sink.url), pageOrigin, tmp) };
  })();

  // One tokend per scenario, on other ports (cross-origin), started together.
  const modes = Object.keys(MODES);
  const tutorials = Object.keys(TUTORIAL);
  const [account, ...apis] = await Promise.all([
    accounts,
    ...modes.map((mode) => startTokend(mode, MODES[mode].env, pageOrigin, tmp)),
    ...tutorials.map((name) => startTokend(name, TUTORIAL[name].env, pageOrigin, tmp)),
  ]);
  log(`page at ${pageOrigin}; ${[...modes, ...tutorials].map((name, i) => `${name}: tokend at ${apis[i]}`).join(', ')}${account ? `; accounts: tokend at ${account.api}, SMTP sink at ${account.sink.url}` : ''}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    for (const [i, mode] of modes.entries()) await scenario(browser, mode, apis[i], pageOrigin);
    for (const [i, name] of tutorials.entries()) await tutorialScenario(browser, name, apis[modes.length + i], pageOrigin);
    if (account) await accountsScenario(browser, account.api, pageOrigin, account.sink);
  } finally {
    await browser.close();
  }
  const screenshots = [...modes.map((mode) => MODES[mode].screenshot), ...(account ? [screenshotWith('accounts')] : [])];
  console.log(`\ne2e passed in ${((Date.now() - started) / 1000).toFixed(1)} s (screenshots: ${screenshots.join(', ')})`);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tokend-e2e-'));
const deadline = setTimeout(() => {
  console.error(`e2e FAILED: still running after ${DEADLINE_MS / 1000} s`);
  for (const child of children) child.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
  process.exit(1);
}, DEADLINE_MS);
let failed = false;
try {
  await main(tmp);
} catch (err) {
  failed = true;
  console.error(`\ne2e FAILED: ${err instanceof Failure ? err.message : err.stack}`);
  for (const child of children) {
    console.error(`\n--- ${child.name} output ---\n${child.output.trimEnd() || '(none)'}`);
  }
} finally {
  await Promise.all(children.map(stop));
  fs.rmSync(tmp, { recursive: true, force: true });
  clearTimeout(deadline);
}
process.exit(failed ? 1 : 0);
