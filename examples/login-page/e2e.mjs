// End-to-end test of the login page in its modes (localStorage, cookie:
// tokend's HttpOnly refresh cookie, and tutorial: a client that never stores
// a new refresh token, against tokend with rotation off and on), each against
// its own real tokend, the page served from another origin (so every API call
// is a real cross-origin request with CORS), driven in headless Chromium.
//
//   npm ci && node e2e.mjs
//
// Environment: TOKEND_BIN (default ../../target/debug/tokend), CHROMIUM
// (default /usr/bin/chromium), SCREENSHOT (default <repo>/target/e2e/login-page.png;
// the other scenarios' go next to it with a suffix, e.g. login-page-cookie.png).
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
const DEADLINE_MS = 120_000; // the whole run; a hung step fails instead of blocking CI

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
    afterReload: 'GET /api/user/me/ 401, POST /api/token/refresh/ 200, GET /api/user/me/ 200',
    presentRefresh: (api, token) => post(`${api}/api/token/refresh/`, { refresh: token }),
  },
  cookie: {
    query: '&mode=cookie',
    env: { TOKEND__COOKIE__ENABLED: 'true' },
    screenshot: screenshotWith('cookie'),
    refreshToken: async (page, api) => (await refreshCookie(page, api))?.value ?? null,
    // After a reload the access token (in memory) is gone: refresh first.
    afterReload: 'POST /api/token/refresh/ 200, GET /api/user/me/ 200',
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
// and a 2 s access token lifetime so that the refresh path runs.
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
      ...env,
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
  // and still show the user.
  const afterExpiry = async (action, expected) => {
    await sleep((ACCESS_TTL_SECS + 1) * 1000);
    answers.length = 0;
    await Promise.all([
      page.waitForResponse((r) => r.url() === `${api}/api/user/me/` && r.status() === 200),
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
      'GET /api/user/me/ 401, POST /api/token/refresh/ 200, GET /api/user/me/ 200');
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
    await page2.locator('#error', { hasText: 'username: A user with that username already exists.' }).waitFor();
    await other.close();
    step('wrong password and taken username shown as errors');

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
  const refreshed = 'GET /api/user/me/ 401, POST /api/token/refresh/ 200, GET /api/user/me/ 200';
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

async function main(tmp) {
  check(fs.existsSync(TOKEND_BIN), `tokend binary not found at ${TOKEND_BIN} (build it with cargo build, or set TOKEND_BIN)`);
  check(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);

  // The page's static server, on any free port (it prints the port).
  const server = start('serve.mjs', process.execPath, [path.join(here, 'serve.mjs'), '0'], { cwd: here });
  const pageOrigin = await until('serve.mjs to listen', server, async () =>
    server.output.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/)?.[1]);

  // One tokend per scenario, on other ports (cross-origin), started together.
  const modes = Object.keys(MODES);
  const tutorials = Object.keys(TUTORIAL);
  const apis = await Promise.all([
    ...modes.map((mode) => startTokend(mode, MODES[mode].env, pageOrigin, tmp)),
    ...tutorials.map((name) => startTokend(name, TUTORIAL[name].env, pageOrigin, tmp)),
  ]);
  log(`page at ${pageOrigin}; ${[...modes, ...tutorials].map((name, i) => `${name}: tokend at ${apis[i]}`).join(', ')}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    for (const [i, mode] of modes.entries()) await scenario(browser, mode, apis[i], pageOrigin);
    for (const [i, name] of tutorials.entries()) await tutorialScenario(browser, name, apis[modes.length + i], pageOrigin);
  } finally {
    await browser.close();
  }
  console.log(`\ne2e passed in ${((Date.now() - started) / 1000).toFixed(1)} s (screenshots: ${modes.map((mode) => MODES[mode].screenshot).join(', ')})`);
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
