//! Signing keys over HTTP: the JWKS endpoint, EdDSA and RS256 tokens checked
//! by a verifier built only from the published JWKS, and a key rotation
//! across a rolling restart (old tokens accepted during the overlap, refused
//! once the old key is removed).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;
use tokend::auth::keys::{self, SigningAlgorithm};

use crate::both_backends;
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};

const NOT_VALID: &str = r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is invalid"}]}"#;

fn header(token: &str) -> Value {
    serde_json::to_value(jsonwebtoken::decode_header(token).expect("JWS header"))
        .expect("header as JSON")
}

async fn jwks(app: &TestApp) -> JwkSet {
    let reply = app
        .send(app.client.get(app.url("/.well-known/jwks.json")))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("public, max-age=300"));
    serde_json::from_str(&reply.body).expect("a JWK Set")
}

/// What a downstream service does: pick the JWK by the token's kid, pin the
/// algorithm to the JWK's, require exp.
fn downstream_check(set: &JwkSet, token: &str) -> Result<Value, String> {
    let kid = header(token)["kid"]
        .as_str()
        .map(str::to_owned)
        .ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or("unknown kid")?;
    let algorithm = match jwk.common.key_algorithm {
        Some(jsonwebtoken::jwk::KeyAlgorithm::EdDSA) => jsonwebtoken::Algorithm::EdDSA,
        Some(jsonwebtoken::jwk::KeyAlgorithm::RS256) => jsonwebtoken::Algorithm::RS256,
        other => return Err(format!("unexpected alg {other:?}")),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims = ["exp".to_owned()].into();
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

async fn shared_key_jwks_is_empty(backend: Backend) {
    let app = spawn_app(backend).await;
    assert!(jwks(&app).await.keys.is_empty());
    // Only GET; the body never holds the shared key.
    let reply = app
        .send(app.client.get(app.url("/.well-known/jwks.json")))
        .await;
    assert_eq!(reply.body, r#"{"keys":[]}"#);
}

async fn asymmetric_tokens_verify_with_the_published_keys(backend: Backend) {
    for algorithm in [SigningAlgorithm::EdDsa, SigningAlgorithm::Rs256] {
        let pem = keys::generate(algorithm).unwrap();
        // SQLite: no key configured, the dev profile generates the pair next
        // to the database; PostgreSQL: the key comes from the environment.
        let key = if backend == Backend::Sqlite {
            ""
        } else {
            pem.as_str()
        };
        let app = spawn_app_with(
            backend,
            &[
                ("TOKEND__JWT__ALGORITHM", algorithm.name()),
                ("TOKEND__JWT__SIGNING_KEY", key),
            ],
        )
        .await;
        let (user_id, access, refresh) = app.user_with_tokens("alice", "pw12345").await;
        let set = jwks(&app).await;
        assert_eq!(set.keys.len(), 1);
        let published = serde_json::to_value(&set.keys[0]).unwrap();
        assert!(published.get("d").is_none(), "{published}");
        for token in [&access, &refresh] {
            let h = header(token);
            assert_eq!(h["alg"], algorithm.name());
            assert_eq!(h["kid"], published["kid"]);
            let claims = downstream_check(&set, token).expect("downstream accepts");
            assert_eq!(claims["user_id"], user_id.to_string());
        }
        assert_eq!(
            app.get_me(Some(&format!("Bearer {access}"))).await.status,
            200
        );
        app.verify(&access).await.assert(200, "{}");
        let rotated = app.refresh(&refresh).await;
        assert_eq!(rotated.status, 200, "{}", rotated.body);
        assert_eq!(header(&rotated.token("access"))["kid"], published["kid"]);
        if backend == Backend::Sqlite {
            // Kept: a restart on the same database signs with the same key.
            let again = app.spawn_replica().await;
            assert_eq!(jwks(&again).await, set);
        }
    }
}

async fn rotation_keeps_old_tokens_until_the_key_is_removed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let old = keys::generate(SigningAlgorithm::EdDsa).unwrap();
    let new = keys::generate(SigningAlgorithm::EdDsa).unwrap();
    let old_public = dir.path().join("old.pub.pem");
    let new_public = dir.path().join("new.pub.pem");
    std::fs::write(&old_public, keys::public_pem(&old).unwrap()).unwrap();
    std::fs::write(&new_public, keys::public_pem(&new).unwrap()).unwrap();
    let (old_public, new_public) = (
        old_public.display().to_string(),
        new_public.display().to_string(),
    );

    // 1. Old key signs; the next key is published ahead.
    let app = spawn_app_with(
        backend,
        &[
            ("TOKEND__JWT__ALGORITHM", "EdDSA"),
            ("TOKEND__JWT__SIGNING_KEY", &old),
            ("TOKEND__JWT__VERIFICATION_KEY_FILES", &new_public),
        ],
    )
    .await;
    let (_, old_access, old_refresh) = app.user_with_tokens("alice", "pw12345").await;
    let before = jwks(&app).await;
    assert_eq!(before.keys.len(), 2);
    let old_kid = header(&old_access)["kid"].as_str().unwrap().to_owned();
    assert_eq!(
        before.keys[0].common.key_id.as_deref(),
        Some(old_kid.as_str())
    );

    // 2. Rolling restart: the new key signs, the old one is still accepted.
    let during = app
        .spawn_replica_with(&[
            ("TOKEND__JWT__SIGNING_KEY", &new),
            ("TOKEND__JWT__VERIFICATION_KEY_FILES", &old_public),
        ])
        .await;
    let set = jwks(&during).await;
    let kids: Vec<_> = set
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[1], old_kid);
    assert_eq!(
        during
            .get_me(Some(&format!("Bearer {old_access}")))
            .await
            .status,
        200
    );
    during.verify(&old_access).await.assert(200, "{}");
    let rotated = during.refresh(&old_refresh).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let (new_access, new_refresh) = (rotated.token("access"), rotated.token("refresh"));
    assert_eq!(header(&new_access)["kid"], kids[0].as_str());
    assert_ne!(kids[0], old_kid);
    // The JWKS fetched before the switch already had the new key.
    assert!(downstream_check(&before, &new_access).is_ok());

    // 3. The old key removed: its tokens are refused everywhere.
    let after = app
        .spawn_replica_with(&[
            ("TOKEND__JWT__SIGNING_KEY", &new),
            ("TOKEND__JWT__VERIFICATION_KEY_FILES", ""),
        ])
        .await;
    assert_eq!(jwks(&after).await.keys.len(), 1);
    after
        .get_me(Some(&format!("Bearer {old_access}")))
        .await
        .assert(401, NOT_VALID);
    after.verify(&old_access).await.assert(
        401,
        r#"{"detail":"Token is invalid","code":"token_not_valid"}"#,
    );
    assert_eq!(
        after
            .get_me(Some(&format!("Bearer {new_access}")))
            .await
            .status,
        200
    );
    assert_eq!(after.refresh(&new_refresh).await.status, 200);
}

both_backends!(
    shared_key_jwks_is_empty,
    asymmetric_tokens_verify_with_the_published_keys,
    rotation_keeps_old_tokens_until_the_key_is_removed,
);
