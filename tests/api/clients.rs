//! Service identities: OAuth 2 clients made with `tokend clients …`, the
//! client credentials grant (RFC 6749 §4.4, errors as §5.2 words them), the
//! RFC 8414 metadata, and an off-the-shelf OAuth 2 client library (Authlib)
//! that configures itself from that metadata alone.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};

use crate::both_backends;
use crate::cli::tokend;
use crate::helpers::{claims, python_venv, spawn_app, Backend, Reply, TestApp};

/// `tokend clients create ARGS…` (the name first): (client id, secret).
pub(crate) fn create(app: &TestApp, args: &[&str]) -> (String, String) {
    let mut all = vec!["clients", "create"];
    all.extend_from_slice(args);
    let (ok, out) = tokend(app, &all, "");
    assert!(ok, "{out}");
    let line = out.lines().next().expect("JSON line");
    let v: Value = serde_json::from_str(line).expect("JSON");
    let id = v["client_id"].as_str().expect("client_id").to_owned();
    let secret = v["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_owned();
    (id, secret)
}

async fn grant(app: &TestApp, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> Reply {
    let mut request = app.client.post(app.url("/api/oauth/token/")).form(form);
    if let Some((id, secret)) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request = request.header("Authorization", format!("Basic {encoded}"));
    }
    app.send(request).await
}

const CC: (&str, &str) = ("grant_type", "client_credentials");

/// A client credentials token, with client_secret_basic.
pub(crate) async fn client_token(app: &TestApp, id: &str, secret: &str) -> String {
    let reply = grant(app, Some((id, secret)), &[CC]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}
const INVALID_CLIENT: &str = r#"{"error":"invalid_client"}"#;

async fn client_credentials_grant(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, secret) = create(
        &app,
        &[
            "billing",
            "--scope",
            "orders:read",
            "--scope",
            "orders:write",
            "--audience",
            "orders-api",
        ],
    );
    assert_eq!((id.len(), secret.len()), (32, 43));
    let (ok, out) = tokend(&app, &["clients", "create", "billing", "--scope", "x"], "");
    assert!(
        !ok && out.contains("a client named \"billing\" already exists"),
        "{out}"
    );

    let ok = grant(&app, Some((&id, &secret)), &[CC]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    assert_eq!(ok.header("pragma"), Some("no-cache"));
    let body = ok.json();
    assert_eq!(
        body.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["access_token", "token_type", "expires_in", "scope"]
    );
    assert_eq!(
        (body["token_type"].as_str(), body["expires_in"].as_i64()),
        (Some("Bearer"), Some(1800))
    );
    assert_eq!(body["scope"], "orders:read orders:write");
    let token = body["access_token"].as_str().expect("token");
    let c = claims(token);
    assert_eq!(
        c.as_object().expect("claims").keys().collect::<Vec<_>>(),
        [
            "token_type",
            "exp",
            "iat",
            "jti",
            "client_id",
            "scope",
            "aud"
        ]
    );
    assert_eq!(
        (c["token_type"].as_str(), c["client_id"].as_str()),
        (Some("access"), Some(id.as_str()))
    );
    assert_eq!(c["aud"], "orders-api");
    // Never taken for a user.
    assert_eq!(
        app.get_me(Some(&format!("Bearer {token}"))).await.status,
        401
    );

    // client_secret_post, a narrower scope.
    let narrow = grant(
        &app,
        None,
        &[
            CC,
            ("scope", "orders:read"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(narrow.status, 200, "{}", narrow.body);
    assert_eq!(narrow.json()["scope"], "orders:read");

    // RFC 6749 §5.2.
    grant(
        &app,
        Some((&id, &secret)),
        &[CC, ("scope", "orders:delete")],
    )
    .await
    .assert(400, r#"{"error":"invalid_scope"}"#);
    grant(&app, Some((&id, &secret)), &[])
        .await
        .assert(400, r#"{"error":"invalid_request"}"#);
    grant(&app, Some((&id, &secret)), &[("grant_type", "password")])
        .await
        .assert(400, r#"{"error":"unsupported_grant_type"}"#);
    grant(
        &app,
        Some((&id, &secret)),
        &[CC, ("client_id", &id), ("client_secret", &secret)],
    )
    .await
    .assert(400, r#"{"error":"invalid_request"}"#);
    let wrong = grant(&app, Some((&id, "wrong")), &[CC]).await;
    wrong.assert(401, INVALID_CLIENT);
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Basic realm=\"tokend\"")
    );
    grant(&app, Some(("no-such-client", &secret)), &[CC])
        .await
        .assert(401, INVALID_CLIENT);
    grant(&app, None, &[CC]).await.assert(401, INVALID_CLIENT);

    // Rotation: both secrets during the overlap; without one, only the new.
    let (ok, out) = tokend(
        &app,
        &["clients", "rotate-secret", "billing", "--overlap", "600"],
        "",
    );
    assert!(ok, "{out}");
    let rotated: Value = serde_json::from_str(out.lines().next().expect("line")).expect("JSON");
    let new_secret = rotated["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_eq!(rotated["client_id"], id.as_str());
    assert_eq!(grant(&app, Some((&id, &secret)), &[CC]).await.status, 200);
    assert_eq!(
        grant(&app, Some((&id, &new_secret)), &[CC]).await.status,
        200
    );
    let (ok, out) = tokend(
        &app,
        &["clients", "rotate-secret", &id, "--overlap", "0"],
        "",
    );
    assert!(ok, "{out}");
    let newest: Value = serde_json::from_str(out.lines().next().expect("line")).expect("JSON");
    let newest = newest["client_secret"].as_str().expect("secret").to_owned();
    grant(&app, Some((&id, &new_secret)), &[CC])
        .await
        .assert(401, INVALID_CLIENT);
    assert_eq!(grant(&app, Some((&id, &newest)), &[CC]).await.status, 200);

    // Disable, enable, delete.
    assert!(tokend(&app, &["clients", "disable", "billing"], "").0);
    grant(&app, Some((&id, &newest)), &[CC])
        .await
        .assert(401, INVALID_CLIENT);
    assert!(tokend(&app, &["clients", "enable", "billing"], "").0);
    assert_eq!(grant(&app, Some((&id, &newest)), &[CC]).await.status, 200);
    let (ok, out) = tokend(&app, &["clients", "list"], "");
    assert!(
        ok && out.contains(&format!("{id}\tbilling\torders:read orders:write\tenabled")),
        "{out}"
    );
    assert!(tokend(&app, &["clients", "delete", "billing"], "").0);
    grant(&app, Some((&id, &newest)), &[CC])
        .await
        .assert(401, INVALID_CLIENT);
    let (ok, out) = tokend(&app, &["clients", "delete", "billing"], "");
    assert!(!ok && out.contains("no client \"billing\""), "{out}");
    let (ok, out) = tokend(&app, &["clients", "create", "bad", "--scope", "a\"b"], "");
    assert!(!ok && out.contains("a scope is printable ASCII"), "{out}");
}

/// A client assertion (RFC 7523) signed with `private_pem`.
fn assertion(private_pem: &str, claims: &Value) -> String {
    use tokend::auth::keys::{KeyMaterial, SigningAlgorithm};
    let key = KeyMaterial::signing(SigningAlgorithm::EdDsa, private_pem).expect("key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        claims,
        key.encoding().expect("signing key"),
    )
    .expect("sign")
}

/// A client `signer` (scope `jobs:run`) registered with a new EdDSA public
/// key: its id and the private key (PEM).
fn signer(app: &TestApp) -> (String, String) {
    use tokend::auth::keys::{generate, public_pem, SigningAlgorithm};
    let private = generate(SigningAlgorithm::EdDsa).expect("key");
    let dir = tempfile::tempdir().expect("dir");
    let key_file = dir.path().join("client.pem");
    std::fs::write(&key_file, public_pem(&private).expect("public")).expect("write");
    let key_arg = key_file.display().to_string();
    let (id, _) = create(
        app,
        &[
            "signer",
            "--scope",
            "jobs:run",
            "--public-key-file",
            &key_arg,
        ],
    );
    (id, private)
}

/// private_key_jwt: a service holding no shared secret proves itself with
/// an assertion signed by its registered key; each assertion works once.
async fn private_key_jwt(backend: Backend) {
    use tokend::auth::keys::{generate, SigningAlgorithm};
    let app = spawn_app(backend).await;
    let (id, private) = signer(&app);
    let (plain, plain_secret) = create(&app, &["plain", "--scope", "jobs:run"]);
    let aud = format!("{}/api/oauth/token/", app.address);
    let now = crate::helpers::now();
    let claims = |jti: &str, exp: i64, aud: &str| json!({"iss": id, "sub": id, "aud": aud, "exp": exp, "jti": jti, "iat": now});
    let bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let with = |token: &str| {
        vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_assertion_type".to_owned(), bearer.to_owned()),
            ("client_assertion".to_owned(), token.to_owned()),
        ]
    };
    let good = assertion(&private, &claims("a1", now + 60, &aud));
    let ok = send(&app, with(&good)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(claims_of(&ok)["client_id"], id.as_str());
    // Replayed: refused.
    send(&app, with(&good)).await.assert(401, INVALID_CLIENT);
    // The issuer is an accepted audience too.
    assert_eq!(
        send(
            &app,
            with(&assertion(&private, &claims("a2", now + 60, &app.address)))
        )
        .await
        .status,
        200
    );
    for bad in [
        assertion(
            &private,
            &claims("a3", now + 60, "https://elsewhere.example/"),
        ),
        assertion(&private, &claims("a4", now - 5, &aud)),
        assertion(&private, &claims("a5", now + 3700, &aud)),
        // Issued more than five minutes ago: stale, whatever its exp.
        assertion(
            &private,
            &json!({"iss": id, "sub": id, "aud": aud, "exp": now + 600, "jti": "a8", "iat": now - 301}),
        ),
        assertion(
            &generate(SigningAlgorithm::EdDsa).expect("key"),
            &claims("a6", now + 60, &aud),
        ),
    ] {
        send(&app, with(&bad)).await.assert(401, INVALID_CLIENT);
    }
    // A client without a registered key cannot use assertions.
    let theirs = assertion(
        &private,
        &json!({"iss": plain, "sub": plain, "aud": aud, "exp": now + 60, "jti": "p1"}),
    );
    send(&app, with(&theirs)).await.assert(401, INVALID_CLIENT);
    // An assertion with a secret: two methods.
    let mut both = with(&assertion(&private, &claims("a7", now + 60, &aud)));
    both.push(("client_secret".to_owned(), plain_secret));
    send(&app, both)
        .await
        .assert(400, r#"{"error":"invalid_request"}"#);
    let mut odd = with(&good);
    odd[1].1 = "urn:example:other".to_owned();
    send(&app, odd)
        .await
        .assert(400, r#"{"error":"invalid_request"}"#);
}

async fn send(app: &TestApp, form: Vec<(String, String)>) -> Reply {
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    grant(app, None, &pairs).await
}

fn claims_of(reply: &Reply) -> Value {
    claims(reply.json()["access_token"].as_str().expect("token"))
}

both_backends!(client_credentials_grant, private_key_jwt);

/// RFC 8414 §2: the metadata's required fields, and endpoints that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_names_the_endpoints() {
    let app = spawn_app(Backend::Sqlite).await;
    let meta = app
        .send(
            app.client
                .get(app.url("/.well-known/oauth-authorization-server")),
        )
        .await;
    assert_eq!(meta.status, 200, "{}", meta.body);
    // §3.2: a JSON object, application/json.
    assert_eq!(meta.header("content-type"), Some("application/json"));
    let m = meta.json();
    // REQUIRED: issuer; token_endpoint (but for implicit-only servers);
    // response_types_supported (empty: no authorization endpoint, which is
    // required only when a supported grant uses it).
    let issuer = m["issuer"].as_str().expect("issuer");
    assert_eq!(issuer, app.address);
    assert_eq!(m["token_endpoint"], format!("{issuer}/api/oauth/token/"));
    assert_eq!(m["response_types_supported"], json!([]));
    assert_eq!(m.get("authorization_endpoint"), None);
    assert_eq!(m["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
    assert_eq!(
        m["introspection_endpoint"],
        format!("{issuer}/api/token/introspect/")
    );
    assert_eq!(
        m["revocation_endpoint"],
        format!("{issuer}/api/token/revoke/")
    );
    // Omitted, grant_types_supported would mean authorization_code and
    // implicit.
    assert_eq!(m["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    // MUST be present when private_key_jwt is listed; never "none".
    assert_eq!(
        m["token_endpoint_auth_signing_alg_values_supported"],
        json!(["EdDSA", "RS256"])
    );
    for endpoint in ["jwks_uri"] {
        let url = m[endpoint].as_str().expect("url");
        assert_eq!(
            app.send(app.client.get(url)).await.status,
            200,
            "{endpoint}"
        );
    }
}

/// Authlib, configured from the metadata alone, gets tokens with both
/// secret methods and reports a wrong secret as `invalid_client`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_the_shelf_oauth_client_gets_a_token() {
    if !crate::helpers::have_python("the OAuth 2 client library test") {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let (id, secret) = create(
        &app,
        &[
            "reports",
            "--scope",
            "reports:read",
            "--scope",
            "reports:write",
        ],
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth-client");
    let venv = python_venv("oauth-client-venv", &dir.join("requirements.txt"));
    let base = app.address.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("bin/python"))
            .arg(dir.join("client.py"))
            .args([base.as_str(), id.as_str(), secret.as_str(), "reports:read"])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("run the client")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(r["client_secret_basic"]["token_type"], "Bearer");
    assert_eq!(
        r["client_secret_basic"]["scope"],
        "reports:read reports:write"
    );
    assert_eq!(r["client_secret_basic"]["expires_in"], 1800);
    assert_eq!(r["client_secret_basic"]["has_expires_at"], true);
    assert_eq!(r["client_secret_post"]["scope"], "reports:read");
    assert_eq!(r["wrong_secret"], "invalid_client");
    let token = r["client_secret_post"]["access_token"]
        .as_str()
        .expect("token");
    assert_eq!(claims(token)["scope"], "reports:read");
}

/// Runs `tests/oauth-client/private_key_jwt.py`: keys made by Python's
/// `cryptography`, clients registered with them through the CLI, then
/// Authlib's private_key_jwt against `app`. Gives the script's JSON and the
/// ids of the RSA and the Ed25519 client.
async fn authlib_private_key_jwt(app: &TestApp) -> (Value, [String; 2]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth-client");
    let venv = python_venv("oauth-client-venv", &dir.join("requirements.txt"));
    let keys = tempfile::tempdir().expect("dir");
    let python = |args: Vec<String>| {
        let (venv, dir) = (venv.clone(), dir.clone());
        tokio::task::spawn_blocking(move || {
            let out = Command::new(venv.join("bin/python"))
                .arg(dir.join("private_key_jwt.py"))
                .args(args)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .output()
                .expect("run the client");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        })
    };
    let key_dir = keys.path().display().to_string();
    python(vec!["keys".into(), key_dir.clone()])
        .await
        .expect("join");
    let ids = ["rsa", "ed25519"].map(|kind| {
        let public = keys.path().join(format!("{kind}.pub.pem"));
        create(
            app,
            &[
                &format!("{kind}-signer"),
                "--scope",
                "jobs:read",
                "--scope",
                "jobs:run",
                "--public-key-file",
                &public.display().to_string(),
            ],
        )
        .0
    });
    let out = python(vec![
        "fetch".into(),
        app.address.clone(),
        key_dir,
        ids[0].clone(),
        ids[1].clone(),
    ])
    .await
    .expect("join");
    (serde_json::from_slice(&out).expect("client JSON"), ids)
}

/// Authlib's private_key_jwt as it comes, with RS256 and EdDSA keys it did
/// not get from tokend, the token endpoint from the metadata alone: tokens for the
/// registered keys, with a new `jti` each time; `invalid_client` for another
/// key and for a `jti` used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_the_shelf_client_proves_itself_with_its_key() {
    if !crate::helpers::have_python("the OAuth 2 client library test") {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let (r, ids) = authlib_private_key_jwt(&app).await;
    let endpoint = format!("{}/api/oauth/token/", app.address);
    assert_eq!(r["token_endpoint"], endpoint.as_str());
    for ((kind, alg), id) in [("rsa", "RS256"), ("ed25519", "EdDSA")].iter().zip(&ids) {
        let k = &r[kind];
        let mut tokens = vec![];
        for fetch in ["first", "second"] {
            let t = &k[fetch];
            assert_eq!(
                (&t["token_type"], &t["expires_in"], &t["scope"]),
                (&json!("Bearer"), &json!(1800), &json!("jobs:read jobs:run")),
                "{kind} {fetch}: {t}"
            );
            let token = t["access_token"].as_str().expect("token");
            assert_eq!(claims(token)["client_id"], id.as_str(), "{kind}");
            tokens.push(token.to_owned());
        }
        assert_ne!(tokens[0], tokens[1]);
        // What Authlib sent: RFC 7523 §3 claims, aud the token endpoint.
        let sent = k["sent"].as_array().expect("sent");
        assert_eq!(sent.len(), 2, "{kind}");
        for s in sent {
            assert_eq!(
                s["form"],
                json!(["client_assertion", "client_assertion_type", "grant_type"]),
                "{kind}"
            );
            assert_eq!(s["header"]["alg"], *alg, "{kind}");
            let c = &s["claims"];
            assert_eq!(
                (&c["iss"], &c["sub"], &c["aud"]),
                (&json!(id), &json!(id), &json!(endpoint)),
                "{kind}"
            );
            // Authlib's own lifetime: an hour, accepted while fresh.
            assert_eq!(
                c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"),
                3600
            );
        }
        assert_ne!(sent[0]["claims"]["jti"], sent[1]["claims"]["jti"], "{kind}");
        assert_eq!(k["stray_key"], json!({"error": "invalid_client"}), "{kind}");
        // Given extra claims, Authlib keeps the first jti in them: the
        // second assertion is a replay.
        let fixed = &k["fixed_claims_sent"];
        assert_eq!(fixed[0]["claims"]["jti"], fixed[1]["claims"]["jti"]);
        assert_eq!(k["fixed_claims"][0]["token_type"], "Bearer", "{kind}");
        assert_eq!(
            k["fixed_claims"][1],
            json!({"error": "invalid_client"}),
            "{kind}"
        );
    }
}

/// With the brute-force limits on (the production default), many
/// concurrent grants with valid assertions from one address are all served:
/// a right proof is no guess, whatever the database write after it costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_assertions_are_not_throttled() {
    let app =
        crate::helpers::spawn_app_with(Backend::Sqlite, &[("TOKEND__RATE_LIMIT__ENABLED", "true")])
            .await;
    let (id, private) = signer(&app);
    let aud = format!("{}/api/oauth/token/", app.address);
    let now = crate::helpers::now();
    let requests = (0..48).map(|i| {
        let token = assertion(
            &private,
            &json!({"iss": id, "sub": id, "aud": aud, "exp": now + 60, "iat": now, "jti": format!("c{i}")}),
        );
        let request = app.client.post(app.url("/api/oauth/token/")).form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", token.as_str()),
        ]);
        async move { request.send().await.map(|r| r.status().as_u16()) }
    });
    let statuses: Vec<u16> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.expect("request"))
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}
