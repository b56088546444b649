//! The downstream examples, run against a live tokend: the Rust actix-web
//! service (examples/downstream_actix.rs) and the Django/DRF service
//! (examples/downstream-django), each with the shared key and with JWKS.
//! Each must accept access tokens and refuse refresh tokens, expired,
//! forged, `alg: none` and algorithm-confusion tokens. Their `/editors`
//! routes authorise by the `groups` claim of tokend's access tokens. Their
//! `/orders` routes take service tokens only (OAuth 2 client credentials,
//! with the audience and a scope), fetched and renewed by service A
//! (examples/service-a, Authlib).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokend::auth::keys::{self, KeyMaterial, SigningAlgorithm};

use crate::helpers::{
    now, python_venv, spawn_app, spawn_app_with, Backend, ChildServer, TestApp, SIGNING_KEY,
};

/// How tokend signs in a scenario, and how the test forges tokens.
struct Signer {
    header: Header,
    key: EncodingKey,
    /// The bytes an attacker would use as an HMAC key in an algorithm
    /// confusion attack (the public key), for asymmetric keys.
    public_pem: Option<String>,
}

impl Signer {
    fn shared() -> Self {
        Signer {
            header: Header::new(Algorithm::HS256),
            key: EncodingKey::from_secret(SIGNING_KEY.as_bytes()),
            public_pem: None,
        }
    }

    fn asymmetric(algorithm: SigningAlgorithm, pem: &str) -> Self {
        let material = KeyMaterial::signing(algorithm, pem).expect("key");
        let mut header = Header::new(algorithm.jwt_algorithm());
        header.kid = material.kid().map(str::to_owned);
        Signer {
            header,
            key: material.encoding().expect("private key").clone(),
            public_pem: Some(keys::public_pem(pem).expect("public key")),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&self.header, claims, &self.key).expect("sign")
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256_with(secret: &[u8], header: &Value, claims: &Value) -> String {
    use hmac::Mac;
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("hmac key");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

async fn call(service: &ChildServer, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", service.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("downstream answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The checks every downstream example must pass. `path` is its protected
/// route.
async fn assert_downstream(app: &TestApp, service: &ChildServer, path: &str, signer: &Signer) {
    let (user_id, access, refresh) = app.user_with_tokens("alice", "pw12345").await;
    let (status, body) = call(service, path, Some(&access)).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body, json!({ "user_id": user_id.to_string() }));

    let claims = |token_type: &str, exp: i64| {
        json!({"token_type": token_type, "exp": exp, "iat": now() - 10,
               "jti": "0123456789abcdef0123456789abcdef", "user_id": user_id.to_string()})
    };
    let expired = signer.sign(&claims("access", now() - 5));
    let other_key = jsonwebtoken::encode(
        &signer.header,
        &claims("access", now() + 60),
        &match signer.public_pem {
            None => EncodingKey::from_secret(b"not-the-key-0123456789abcdef0123456789"),
            Some(_) => {
                let algorithm = match signer.header.alg {
                    Algorithm::RS256 => SigningAlgorithm::Rs256,
                    _ => SigningAlgorithm::EdDsa,
                };
                let pem = keys::generate(algorithm).expect("key");
                KeyMaterial::signing(algorithm, &pem)
                    .expect("key")
                    .encoding()
                    .expect("private")
                    .clone()
            }
        },
    )
    .expect("sign");
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("access", now() + 60).to_string().as_bytes())
    );
    let mut refused = vec![
        ("refresh token", refresh),
        ("expired", expired),
        ("signed by another key", other_key),
        ("alg none", none),
        ("garbage", "garbage".to_owned()),
    ];
    if let Some(public) = &signer.public_pem {
        let mut header = json!({"alg": "HS256", "typ": "JWT"});
        if let Some(kid) = &signer.header.kid {
            header["kid"] = kid.as_str().into();
        }
        refused.push((
            "HS256 keyed with the public key",
            hs256_with(public.as_bytes(), &header, &claims("access", now() + 60)),
        ));
    }
    for (what, token) in &refused {
        let (status, body) = call(service, path, Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
    let (status, _) = call(service, path, None).await;
    assert_eq!(status, 401, "no token");
}

/// `path` requires group `editors` from the `groups` claim
/// (`jwt.extra_claims = groups`): membership reaches the service with the
/// next refresh, in both directions; only signed claims count, and only an
/// array of strings.
async fn assert_group_claim(start: impl Fn(&[(&str, &str)]) -> ChildServer, path: &str) {
    const DENIED: &str = r#"{"detail":"Membership of group 'editors' is required."}"#;
    let app = spawn_app_with(Backend::Sqlite, &[("TOKEND__JWT__EXTRA_CLAIMS", "groups")]).await;
    let service = start(&[("TOKEND_SHARED_KEY", SIGNING_KEY)]);
    let cli = |args: &[&str]| {
        let (ok, out) = crate::cli::tokend(&app, args, "");
        assert!(ok, "tokend {args:?}: {out}");
    };
    let (user_id, access, refresh) = app.user_with_tokens("alice", "pw12345").await;
    let member = format!(r#"{{"user_id":"{user_id}","group":"editors"}}"#);
    assert_eq!(
        call(&service, path, Some(&access)).await,
        (403, DENIED.to_owned())
    );

    cli(&["groups", "create", "editors"]);
    cli(&["users", "add-group", "alice", "editors"]);
    // The token issued before still says no groups.
    assert_eq!(
        call(&service, path, Some(&access)).await,
        (403, DENIED.to_owned())
    );
    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let editor = refreshed.token("access");
    assert_eq!(
        call(&service, path, Some(&editor)).await,
        (200, member.clone())
    );
    // The group is configurable.
    let ops = start(&[
        ("TOKEND_SHARED_KEY", SIGNING_KEY),
        ("TOKEND_REQUIRED_GROUP", "ops"),
    ]);
    assert_eq!(
        call(&ops, path, Some(&editor)).await,
        (
            403,
            r#"{"detail":"Membership of group 'ops' is required."}"#.to_owned()
        )
    );

    cli(&["users", "remove-group", "alice", "editors"]);
    let removed = app.refresh(&refreshed.token("refresh")).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(
        call(&service, path, Some(&removed.token("access"))).await,
        (403, DENIED.to_owned())
    );

    // Forged tokens: a claim counts only under tokend's signature, and only
    // as an array of strings.
    let forged = |groups: Value| {
        json!({"token_type": "access", "exp": now() + 60, "iat": now() - 10,
               "jti": "0123456789abcdef0123456789abcdef",
               "user_id": user_id.to_string(), "groups": groups})
    };
    let shared = Signer::shared();
    assert_eq!(
        call(
            &service,
            path,
            Some(&shared.sign(&forged(json!(["editors"]))))
        )
        .await,
        (200, member),
        "a well-formed claim under the right key"
    );
    let wrong_key = jsonwebtoken::encode(
        &shared.header,
        &forged(json!(["editors"])),
        &EncodingKey::from_secret(b"not-the-key-0123456789abcdef0123456789"),
    )
    .expect("sign");
    let (status, body) = call(&service, path, Some(&wrong_key)).await;
    assert_eq!(status, 401, "{body}");
    for groups in [
        json!("editors"),
        json!(["editors", 1]),
        json!({"editors": true}),
    ] {
        assert_eq!(
            call(&service, path, Some(&shared.sign(&forged(groups.clone())))).await,
            (403, DENIED.to_owned()),
            "groups = {groups}"
        );
    }
    let (status, body) = call(&service, path, None).await;
    assert_eq!(status, 401, "{body}");

    // tokend without the claim: nobody is a member, whatever the database says.
    let plain = spawn_app(Backend::Sqlite).await;
    let (_, access, _) = plain.user_with_tokens("bob", "pw12345").await;
    assert!(crate::helpers::claims(&access).get("groups").is_none());
    assert_eq!(
        call(&service, path, Some(&access)).await,
        (403, DENIED.to_owned())
    );
}

// ---- Rust (actix-web) ----

/// `cargo test` builds the examples next to the test binaries.
fn rust_example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile_dir.join("examples/downstream_actix");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --examples`",
        path.display()
    );
    // `cargo test --test api` does not rebuild examples: refuse to test a
    // binary older than its source.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/downstream_actix.rs");
    assert!(
        modified(&path) >= modified(&source),
        "{} is older than its source: run `cargo build --examples`",
        path.display()
    );
    path
}

fn start_rust(env: &[(&str, &str)]) -> ChildServer {
    let mut command = Command::new(rust_example());
    command.env("PORT", "0").env_remove("TOKEND_SHARED_KEY");
    command.env_remove("TOKEND_JWKS_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    ChildServer::start(&mut command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_service_with_the_shared_key() {
    let app = spawn_app(Backend::Sqlite).await;
    let service = start_rust(&[("TOKEND_SHARED_KEY", SIGNING_KEY)]);
    assert_downstream(&app, &service, "/hello", &Signer::shared()).await;
    // Exact refusal bodies of the example.
    let (_, _, refresh) = app.user_with_tokens("bob", "pw12345").await;
    assert_eq!(
        call(&service, "/hello", Some(&refresh)).await,
        (401, r#"{"detail":"not an access token"}"#.to_owned())
    );
    assert_eq!(
        call(&service, "/hello", None).await,
        (401, r#"{"detail":"missing bearer token"}"#.to_owned())
    );
}

/// tokend with `jwt.user_id_claim = "sub"` and a downstream service told the
/// same name: the user id is read from `sub`; a service left on `user_id`
/// finds no user in the token.
async fn assert_custom_user_id_claim(start: impl Fn(&[(&str, &str)]) -> ChildServer, path: &str) {
    let app = spawn_app_with(Backend::Sqlite, &[("TOKEND__JWT__USER_ID_CLAIM", "sub")]).await;
    let (user_id, access, _) = app.user_with_tokens("alice", "pw12345").await;
    let service = start(&[
        ("TOKEND_SHARED_KEY", SIGNING_KEY),
        ("TOKEND_USER_ID_CLAIM", "sub"),
    ]);
    let (status, body) = call(&service, path, Some(&access)).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).ok()),
        (200, Some(json!({ "user_id": user_id.to_string() }))),
        "{body}"
    );
    let unaware = start(&[("TOKEND_SHARED_KEY", SIGNING_KEY)]);
    let (status, body) = call(&unaware, path, Some(&access)).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_service_with_a_custom_user_id_claim() {
    assert_custom_user_id_claim(start_rust, "/hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_service_with_a_custom_user_id_claim() {
    let Some(python) = django_python() else {
        return;
    };
    assert_custom_user_id_claim(|env| start_django(&python, env), "/hello/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_service_authorises_by_group_claim() {
    assert_group_claim(start_rust, "/editors").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_service_with_jwks() {
    for algorithm in [SigningAlgorithm::EdDsa, SigningAlgorithm::Rs256] {
        let pem = keys::generate(algorithm).unwrap();
        let app = spawn_app_with(
            Backend::Sqlite,
            &[
                ("TOKEND__JWT__ALGORITHM", algorithm.name()),
                ("TOKEND__JWT__SIGNING_KEY", &pem),
            ],
        )
        .await;
        let service = start_rust(&[("TOKEND_JWKS_URL", &app.url("/.well-known/jwks.json"))]);
        assert_downstream(
            &app,
            &service,
            "/hello",
            &Signer::asymmetric(algorithm, &pem),
        )
        .await;
    }
}

// ---- Django REST framework + simplejwt ----

/// The example's virtualenv, or `None` (test skipped) when Python is
/// missing outside CI. In CI (CI=true) a missing Python fails the test.
fn django_python() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/downstream-django");
    if !crate::helpers::have_python("the Django downstream example") {
        return None;
    }
    Some(python_venv("downstream-django-venv", &dir.join("requirements.txt")).join("bin/python"))
}

fn start_django(python: &Path, env: &[(&str, &str)]) -> ChildServer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/downstream-django");
    let mut command = Command::new(python);
    command
        .arg(dir.join("service.py"))
        .env("PORT", "0")
        .env_remove("TOKEND_SHARED_KEY")
        .env_remove("TOKEND_JWKS_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    ChildServer::start(&mut command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_service_with_the_shared_key() {
    let Some(python) = django_python() else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await;
    let service = start_django(&python, &[("TOKEND_SHARED_KEY", SIGNING_KEY)]);
    assert_downstream(&app, &service, "/hello/", &Signer::shared()).await;
    // simplejwt's own refusal of a refresh token.
    let (_, _, refresh) = app.user_with_tokens("bob", "pw12345").await;
    let (status, body) = call(&service, "/hello/", Some(&refresh)).await;
    assert_eq!(status, 401);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["code"], "token_not_valid");
    assert_eq!(body["messages"][0]["message"], "Token has wrong type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_service_authorises_by_group_claim() {
    let Some(python) = django_python() else {
        return;
    };
    assert_group_claim(|env| start_django(&python, env), "/editors/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_service_with_jwks() {
    let Some(python) = django_python() else {
        return;
    };
    for algorithm in [SigningAlgorithm::EdDsa, SigningAlgorithm::Rs256] {
        let pem = keys::generate(algorithm).unwrap();
        let app = spawn_app_with(
            Backend::Sqlite,
            &[
                ("TOKEND__JWT__ALGORITHM", algorithm.name()),
                ("TOKEND__JWT__SIGNING_KEY", &pem),
            ],
        )
        .await;
        let jwks = app.url("/.well-known/jwks.json");
        let service = start_django(
            &python,
            &[
                ("TOKEND_JWKS_URL", &jwks),
                ("TOKEND_ALGORITHM", algorithm.name()),
            ],
        );
        assert_downstream(
            &app,
            &service,
            "/hello/",
            &Signer::asymmetric(algorithm, &pem),
        )
        .await;
    }
}

/// The Django example refuses set-ups that would accept forged tokens:
/// JWKS with an HS algorithm (simplejwt would check HMACs with an empty
/// key), and a missing or short shared key.
#[test]
fn django_service_refuses_unsafe_settings() {
    let Some(python) = django_python() else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/downstream-django");
    for env in [
        vec![(
            "TOKEND_JWKS_URL",
            "http://127.0.0.1:9/.well-known/jwks.json",
        )],
        vec![
            (
                "TOKEND_JWKS_URL",
                "http://127.0.0.1:9/.well-known/jwks.json",
            ),
            ("TOKEND_ALGORITHM", "HS256"),
        ],
        vec![("TOKEND_SHARED_KEY", "short")],
        vec![],
    ] {
        let mut command = Command::new(&python);
        command
            .arg(dir.join("service.py"))
            .env("PORT", "0")
            .env_remove("TOKEND_SHARED_KEY")
            .env_remove("TOKEND_JWKS_URL")
            .env_remove("TOKEND_ALGORITHM");
        for (name, value) in &env {
            command.env(name, value);
        }
        let out = command.output().expect("run the example");
        assert!(!out.status.success(), "{env:?} was accepted");
    }
}

// ---- Service tokens: service A (Authlib) calls B's /orders ----

/// B's own name: the `--audience` of A's clients, B's
/// `TOKEND_SERVICE_AUDIENCE`. Users' tokens carry no audience (tokend's
/// `jwt.audience` unset, the default) and still reach B's user routes.
const AUDIENCE: &str = "orders-api";

/// How a B refuses a token: its exact 401 bodies.
struct Refusals {
    /// A valid client token at the user route.
    no_user: &'static str,
    /// A client token for another audience at `/orders`.
    wrong_audience: &'static str,
    /// Any service token at `/orders` of a B without `TOKEND_SERVICE_AUDIENCE`.
    no_audience: &'static str,
}

const RUST_REFUSALS: Refusals = Refusals {
    no_user: r#"{"detail":"token has no user id"}"#,
    wrong_audience: r#"{"detail":"token is for another audience"}"#,
    no_audience: r#"{"detail":"TOKEND_SERVICE_AUDIENCE is not set: service tokens are refused"}"#,
};

/// simplejwt's own words, but for the audience check the example adds.
const DJANGO_REFUSALS: Refusals = Refusals {
    no_user: r#"{"detail":"Token contained no recognizable user identification","code":"token_not_valid"}"#,
    wrong_audience: r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"ServiceAccessToken","token_type":"access","message":"Token is invalid"}]}"#,
    no_audience: r#"{"detail":"TOKEND_SERVICE_AUDIENCE is not set: service tokens are refused"}"#,
};

/// `tokend clients create NAME ARGS…`: (client id, secret).
fn create_client(app: &TestApp, name: &str, args: &[&str]) -> (String, String) {
    let mut all = vec![name];
    all.extend_from_slice(args);
    crate::clients::create(app, &all)
}

/// A client credentials token straight from the token endpoint.
async fn client_token(app: &TestApp, (id, secret): &(String, String)) -> String {
    crate::clients::client_token(app, id, secret).await
}

/// Service A's virtualenv, or `None` (test skipped) when Python is missing
/// outside CI.
fn service_a_python() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/service-a");
    if !crate::helpers::have_python("the service A example") {
        return None;
    }
    Some(python_venv("service-a-venv", &dir.join("requirements.txt")).join("bin/python"))
}

/// Runs service A to completion against tokend and `orders_url`; its JSON
/// summary.
async fn run_service_a(
    python: &Path,
    app: &TestApp,
    (id, secret): &(String, String),
    orders_url: String,
    env: &[(&str, &str)],
) -> Value {
    let mut command = Command::new(python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/service-a/service_a.py"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("TOKEND_URL", &app.address)
        .env("CLIENT_ID", id)
        .env("CLIENT_SECRET", secret)
        .env("ORDERS_URL", orders_url)
        .envs(env.iter().copied());
    // tokend serves from this process: wait for A off the runtime's threads.
    let out = tokio::task::spawn_blocking(move || command.output().expect("run service A"))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&out.stdout)))
}

/// B's `orders` route takes service tokens for its audience with the
/// scope, from service A (which fetches one token and renews it shortly
/// before it expires); B's `hello` route takes none.
async fn assert_service_tokens(
    start: impl Fn(&[(&str, &str)]) -> ChildServer,
    orders: &str,
    hello: &str,
    refusals: &Refusals,
) {
    let Some(python) = service_a_python() else {
        return;
    };
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let read = ["--scope", "orders:read", "--audience", AUDIENCE];
    let a = create_client(
        &app,
        "service-a",
        &[&read[..], &["--scope", "orders:write"]].concat(),
    );
    let short = create_client(&app, "short-lived", &[&read[..], &["--ttl", "64"]].concat());
    let elsewhere = create_client(
        &app,
        "elsewhere",
        &["--scope", "orders:read", "--audience", "billing-api"],
    );
    let writer = create_client(
        &app,
        "writer",
        &["--scope", "orders:write", "--audience", AUDIENCE],
    );
    let service = start(&[
        ("TOKEND_SHARED_KEY", SIGNING_KEY),
        ("TOKEND_SERVICE_AUDIENCE", AUDIENCE),
    ]);
    let orders_url = format!("{}{orders}", service.url);
    let granted = |id: &str| json!({"client_id": id, "scope": "orders:read"});

    // One token, reused for every call.
    let summary = run_service_a(&python, &app, &a, orders_url.clone(), &[("CALLS", "3")]).await;
    assert_eq!(
        summary,
        json!({"statuses": [200, 200, 200], "bodies": [granted(&a.0), granted(&a.0), granted(&a.0)],
               "tokens_fetched": 1, "tokens_used": 1})
    );
    // A 64 s token is renewed 60 s before it expires (Authlib truncates
    // the fetch time: 3-4 s after the fetch): the first call keeps it, the
    // second, 5 s later, fetches the next one through the session itself.
    let summary = run_service_a(
        &python,
        &app,
        &short,
        orders_url.clone(),
        &[("CALLS", "2"), ("INTERVAL", "5"), ("LEEWAY", "60")],
    )
    .await;
    assert_eq!(
        summary,
        json!({"statuses": [200, 200], "bodies": [granted(&short.0), granted(&short.0)],
               "tokens_fetched": 2, "tokens_used": 2})
    );
    // A asking for a scope B does not take is refused.
    let summary = run_service_a(
        &python,
        &app,
        &a,
        orders_url.clone(),
        &[("SCOPE", "orders:write")],
    )
    .await;
    assert_eq!(
        summary,
        json!({"statuses": [403], "bodies": [{"detail": "Scope 'orders:read' is required."}],
               "tokens_fetched": 1, "tokens_used": 1})
    );

    // A user's access token reaches the user routes, not /orders: it is
    // not for B's service audience.
    let (user_id, access, _) = app.user_with_tokens("alice", "pw12345").await;
    assert_eq!(
        call(&service, hello, Some(&access)).await,
        (200, format!(r#"{{"user_id":"{user_id}"}}"#))
    );
    assert_eq!(
        call(&service, orders, Some(&access)).await,
        (401, refusals.wrong_audience.to_owned())
    );
    // Even for B's audience (tokend's jwt.audience the same name), a user's
    // token is no service's.
    let users = Signer::shared().sign(&json!({
        "token_type": "access", "exp": now() + 60, "iat": now() - 10,
        "jti": "0123456789abcdef0123456789abcdee", "aud": AUDIENCE,
        "user_id": user_id.to_string()}));
    assert_eq!(
        call(&service, orders, Some(&users)).await,
        (
            403,
            r#"{"detail":"A service token is required."}"#.to_owned()
        )
    );
    // Nor is a token with both ids (tokend issues none; signed here).
    let both = Signer::shared().sign(&json!({
        "token_type": "access", "exp": now() + 60, "iat": now() - 10,
        "jti": "0123456789abcdef0123456789abcdef", "aud": AUDIENCE,
        "user_id": user_id.to_string(), "client_id": a.0, "scope": "orders:read"}));
    assert_eq!(
        call(&service, orders, Some(&both)).await,
        (
            403,
            r#"{"detail":"A service token is required."}"#.to_owned()
        )
    );
    // A service token is no user's.
    let token = client_token(&app, &a).await;
    assert_eq!(
        call(&service, hello, Some(&token)).await,
        (401, refusals.no_user.to_owned())
    );
    // A token tokend issued for another service.
    assert_eq!(
        call(
            &service,
            orders,
            Some(&client_token(&app, &elsewhere).await)
        )
        .await,
        (401, refusals.wrong_audience.to_owned())
    );
    // The right audience without the scope: RFC 6750's insufficient_scope.
    let response = reqwest::Client::new()
        .get(&orders_url)
        .bearer_auth(client_token(&app, &writer).await)
        .send()
        .await
        .expect("B answers");
    assert_eq!(response.status(), 403);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer error="insufficient_scope", scope="orders:read""#)
    );
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"detail":"Scope 'orders:read' is required."}"#
    );
    // The scope is configurable.
    let writes = start(&[
        ("TOKEND_SHARED_KEY", SIGNING_KEY),
        ("TOKEND_SERVICE_AUDIENCE", AUDIENCE),
        ("TOKEND_REQUIRED_SCOPE", "orders:write"),
    ]);
    let writer_token = client_token(&app, &writer).await;
    assert_eq!(
        call(&writes, orders, Some(&writer_token)).await,
        (
            200,
            format!(r#"{{"client_id":"{}","scope":"orders:write"}}"#, writer.0)
        )
    );
    let (status, body) = call(&service, orders, None).await;
    assert_eq!(status, 401, "{body}");

    // A B that cannot check the audience takes no service token at all.
    let unaware = start(&[("TOKEND_SHARED_KEY", SIGNING_KEY)]);
    assert_eq!(
        call(&unaware, orders, Some(&token)).await,
        (401, refusals.no_audience.to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_service_takes_service_tokens_from_service_a() {
    assert_service_tokens(start_rust, "/orders", "/hello", &RUST_REFUSALS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_service_takes_service_tokens_from_service_a() {
    let Some(python) = django_python() else {
        return;
    };
    assert_service_tokens(
        |env| start_django(&python, env),
        "/orders/",
        "/hello/",
        &DJANGO_REFUSALS,
    )
    .await;
}
