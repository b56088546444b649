// End-to-end test of the login page: a real tokend, the page served from
// another origin (so every API call is a real cross-origin request with CORS),
// driven in headless Chromium.
//
//   npm ci && node e2e.mjs
//
// Environment: TOKEND_BIN (default ../../target/debug/tokend), CHROMIUM
// (default /usr/bin/chromium), SCREENSHOT (default <repo>/target/e2e/login-page.png).
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

async function post(url, body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, data: await res.json().catch(() => ({})) };
}

async function main(tmp) {
  check(fs.existsSync(TOKEND_BIN), `tokend binary not found at ${TOKEND_BIN} (build it with cargo build, or set TOKEND_BIN)`);
  check(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);

  // 1. The page's static server, on any free port (it prints the port).
  const server = start('serve.mjs', process.execPath, [path.join(here, 'serve.mjs'), '0'], { cwd: here });
  const pageOrigin = await until('serve.mjs to listen', server, async () =>
    server.output.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/)?.[1]);

  // 2. tokend on another port, with a fresh SQLite database in the temp dir
  //    and a 2 s access token lifetime so that the refresh path runs.
  const apiPort = await freePort();
  const API = `http://127.0.0.1:${apiPort}`;
  const tokend = start('tokend', TOKEND_BIN, [], {
    cwd: tmp, // the dev profile writes its signing key next to the database, in tmp
    env: {
      ...process.env,
      TOKEND_PROFILE: 'dev',
      NO_COLOR: '1', // plain logs when they are printed on failure
      TOKEND__DATABASE__URL: `sqlite://${tmp}/t.sqlite3`,
      TOKEND__SERVER__HOST: '127.0.0.1',
      TOKEND__SERVER__PORT: String(apiPort),
      TOKEND__PASSWORD__BCRYPT_COST: '4',
      TOKEND__RATE_LIMIT__ENABLED: 'false',
      TOKEND__CORS__ALLOWED_ORIGINS: pageOrigin,
      TOKEND__JWT__ACCESS_TTL_SECS: String(ACCESS_TTL_SECS),
    },
  });
  await until(`${API}/healthz`, tokend, async () => (await fetch(`${API}/healthz`)).status === 200);
  log(`tokend at ${API}, page at ${pageOrigin}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  let page;
  try {
    const pageUrl = `${pageOrigin}/?api=${encodeURIComponent(API)}`;
    const username = `alice-${process.pid}`;
    const password = 'correct horse battery staple';

    const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
    page = await context.newPage();
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (err) => log(`page error: ${err.message}`));
    // Every API answer the page gets, to check the 401 -> refresh -> retry sequence.
    const answers = [];
    page.on('response', (r) => {
      if (r.url().startsWith(API) && r.request().method() !== 'OPTIONS') {
        answers.push(`${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`);
      }
    });
    const storedRefresh = () => page.evaluate(() => localStorage.getItem('tokend.refresh'));

    // Register.
    await page.goto(pageUrl);
    await page.locator('#auth').waitFor();
    await page.fill('#username', username);
    await page.fill('#password', password);
    await page.click('#register');
    await page.locator('#status', { hasText: `Account "${username}" created` }).waitFor();
    log('registered');

    // Log in: the page shows who we are.
    await page.click('#login');
    await page.locator('#who', { hasText: username }).waitFor();
    const firstRefresh = await storedRefresh();
    check(firstRefresh, 'no refresh token in localStorage after login');
    log('logged in');

    // Let the access token expire, reload: /me answers 401, the page
    // refreshes (storing the rotated refresh token) and retries /me.
    await sleep((ACCESS_TTL_SECS + 1) * 1000);
    answers.length = 0;
    await Promise.all([
      page.waitForResponse((r) => r.url() === `${API}/api/user/me/` && r.status() === 200),
      page.reload(),
    ]);
    await page.locator('#who', { hasText: username }).waitFor();
    check(answers.join(', ') === 'GET /api/user/me/ 401, POST /api/token/refresh/ 200, GET /api/user/me/ 200',
      `expected /me 401, refresh 200, /me 200 after expiry; the page got: ${answers.join(', ')}`);
    const rotatedRefresh = await storedRefresh();
    check(rotatedRefresh && rotatedRefresh !== firstRefresh, 'the rotated refresh token was not stored in localStorage');
    log('access token expired, refreshed, rotated refresh token stored');

    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });

    // A second browser (own localStorage): wrong password, taken username.
    const other = await browser.newContext();
    const page2 = await other.newPage();
    page2.setDefaultTimeout(15_000);
    await page2.goto(pageUrl);
    await page2.fill('#username', username);
    await page2.fill('#password', 'wrong password');
    await page2.click('#login');
    await page2.locator('#error', { hasText: 'No active account found with the given credentials' }).waitFor();
    await page2.click('#register');
    await page2.locator('#error', { hasText: 'username: A user with that username already exists.' }).waitFor();
    await other.close();
    log('wrong password and taken username shown as errors');

    // Log out: storage is cleared, the login form is back, and the API
    // refuses the session's refresh tokens (current and already-rotated).
    await page.click('#logout');
    await page.locator('#status', { hasText: 'Logged out.' }).waitFor();
    check(await page.locator('#auth').isVisible(), 'login form not shown after logout');
    check(await storedRefresh() === null, 'refresh token still in localStorage after logout');
    for (const [name, token] of [['current', rotatedRefresh], ['first', firstRefresh]]) {
      const { status, data } = await post(`${API}/api/token/refresh/`, { refresh: token });
      check(status === 401, `the ${name} refresh token still works after logout: ${status} ${JSON.stringify(data)}`);
    }
    log('logged out, refresh tokens refused');

    console.log(`\ne2e passed in ${((Date.now() - started) / 1000).toFixed(1)} s (screenshot: ${SCREENSHOT})`);
  } catch (err) {
    // Keep the state of the page at the failure for debugging.
    if (page) {
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT }).catch(() => {});
      console.error(`page at failure: ${SCREENSHOT}; #status=${JSON.stringify(await page.locator('#status').textContent().catch(() => '?'))} #error=${JSON.stringify(await page.locator('#error').textContent().catch(() => '?'))}`);
    }
    throw err;
  } finally {
    await browser.close();
  }
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
