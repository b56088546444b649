//! The example login page (examples/login-page) in headless Chromium against
//! the real tokend binary on another origin: register, log in, refresh on
//! 401 with the rotated token stored, the user's devices (a second browser
//! and a Node login listed, one signed out with DELETE, then "Sign out other
//! devices"), log out (localStorage and cookie modes). Then the page's tutorial mode, a client that stores only the
//! access token of a refresh answer and keeps presenting the login's refresh
//! token: against tokend with `TOKEND__JWT__ROTATE_REFRESH_TOKENS=false` it
//! stays logged in through 4 refreshes (200 `{"access": …}` each); against
//! the default (rotation on, no reuse grace) its second refresh is reuse of
//! a spent token, 401 "Token is blacklisted", and it is logged out. Then the
//! account flows against tokend with verification mandatory and its mail
//! going over SMTP to tests/smtp-sink/sink.py: register with an address,
//! login refused ("E-mail is not verified."), resend, the link read from the
//! mail and opened in the browser, login; "Forgot password?", the mailed
//! reset link, a mismatch shown at its field, the new password set, the old
//! one refused, the used link refused ("Invalid value"). The scenarios live
//! in `examples/login-page/e2e.mjs` (Playwright); this test runs them so that
//! `cargo test` covers them. It needs Node.js and Debian's chromium, and
//! python3 with venv for the SMTP sink (the outbox tests' virtualenv, passed
//! as SMTP_SINK_PYTHON): without them it is skipped (without python3, only
//! the account scenario), except under CI=true where it fails.

use std::path::Path;
use std::process::Command;

use crate::helpers::{python_venv, run};

fn available(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn login_page_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let ready = available("node", "--version") && Path::new(&chromium).exists();
    if !ready {
        assert!(
            std::env::var("CI").is_err(),
            "node and {chromium} are required in CI for the login page e2e test"
        );
        eprintln!("SKIPPED: node or {chromium} not found");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/login-page");
    if !dir.join("node_modules/playwright-core").exists() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir));
    }
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e/login-page.png");
    let mut e2e = Command::new("node");
    e2e.arg("e2e.mjs")
        .current_dir(&dir)
        .env("TOKEND_BIN", env!("CARGO_BIN_EXE_tokend"))
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", &screenshot);
    // The account scenario's SMTP sink runs in the venv the outbox tests
    // use; without python3 e2e.mjs skips that scenario (fails under CI).
    if available("python3", "--version") {
        let requirements =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp-sink/requirements.txt");
        let venv = python_venv("smtp-sink-venv", &requirements);
        e2e.env("SMTP_SINK_PYTHON", venv.join("bin/python"));
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "python3 with venv is required in CI for the login page's account scenario"
        );
        eprintln!("python3 not found: the account scenario is skipped");
    }
    run(&mut e2e);
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    eprintln!("screenshot: {}", screenshot.display());
}
