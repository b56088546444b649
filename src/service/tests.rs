//! The use cases run without any HTTP: the command line depends on it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;
use crate::auth::credentials::{NewPassword, NewUsername};
use crate::auth::hashing::HashingPolicy;
use crate::auth::jwt::TokenLifetimes;
use crate::config::{DatabaseSettings, Secret};
use crate::error::ApiError;
use crate::storage::users::CreateUser;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn services(dir: &std::path::Path) -> Services {
    let db = Database::new(&DatabaseSettings {
        url: Secret::new(dir.join("t.db").display().to_string()),
        pool_size: 2,
        pool_timeout_ms: 5_000,
        sqlite_busy_timeout_ms: 5_000,
    })
    .expect("database");
    db.migrate_blocking().expect("migrations");
    let lifetimes = TokenLifetimes {
        access_secs: 300,
        refresh_secs: 3600,
    };
    let metrics = std::sync::Arc::new(Metrics::new(Vec::new()).expect("metrics"));
    Services {
        db,
        keys: JwtKeys::hs256("service-test-key", lifetimes),
        hashing: HashingPool::new(HashingPolicy {
            cost: 4,
            threads: 1,
            nice: 0,
            queue: 8,
            per_client: None,
        }),
        session_max_age_secs: 86_400,
        reuse_grace_secs: 0,
        rotate_refresh_tokens: true,
        accept_sessionless_until: 0,
        update_last_login: false,
        extra_claims: Vec::new(),
        password_policy: Default::default(),
        account_mails: crate::service::account_mails::AccountMails::new(
            crate::config::Settings::load_from(
                std::path::Path::new("/nonexistent"),
                &Default::default(),
            )
            .expect("default settings")
            .accounts,
        ),
        claims_hook: None,
        outbox: crate::mail::Outbox::new(),
        introspection_clients: vec![],
        throttle: None,
        // Long enough that only an invalidation can make a check see a change.
        cache: StateCache::new(Duration::from_secs(600), Duration::ZERO),
        metrics: metrics.clone(),
        audit: crate::service::audit::Audit::new(1000, metrics),
        clock: crate::clock::unix_now,
    }
}

fn credentials(username: &str, password: &str) -> Result<login::Credentials, ApiError> {
    Ok(login::Credentials {
        username: username.into(),
        password: password.into(),
    })
}

#[tokio::test]
async fn account_administration_reaches_cached_token_checks_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = services(dir.path());
    let (name, password) = (
        NewUsername::parse("alice").expect("username"),
        NewPassword::parse("pw one").expect("password"),
    );
    let by = super::actor::Acting::cli();
    let created = accounts::create(
        &svc.accounts(),
        Some(&by),
        &name,
        &password,
        None,
        None,
        (false, false),
        CLIENT,
        svc.now(),
    )
    .await
    .expect("create");
    let CreateUser::Created { id } = created else {
        panic!("not created: {created:?}");
    };
    assert!(matches!(
        login::login(
            &svc,
            &origin::Origin::from_ip(CLIENT),
            credentials("alice", "wrong")
        )
        .await,
        Err(ApiError::BadCredentials)
    ));
    let pair = login::login(
        &svc,
        &origin::Origin::from_ip(CLIENT),
        credentials("alice", "pw one"),
    )
    .await
    .expect("login");
    // Cached as active and live from here on.
    let user = me::current_user(&svc, &pair.access).await.expect("me");
    assert_eq!((user.id, user.username.as_str()), (id, "alice"));

    let revoked = accounts::disable(&svc.accounts(), &by, id, svc.now())
        .await
        .expect("disable");
    assert_eq!(revoked, Some(1));
    assert!(matches!(
        me::current_user(&svc, &pair.access).await,
        Err(ApiError::UserInactive)
    ));
    assert!(accounts::enable(&svc.accounts(), &by, id, svc.now())
        .await
        .expect("enable"));
    assert!(matches!(
        me::current_user(&svc, &pair.access).await,
        Err(ApiError::BearerToken(
            crate::auth::jwt::TokenError::Blacklisted
        ))
    ));

    let second = login::login(
        &svc,
        &origin::Origin::from_ip(CLIENT),
        credentials("alice", "pw one"),
    )
    .await
    .expect("login again");
    me::current_user(&svc, &second.access).await.expect("me");
    let new = NewPassword::parse("pw two").expect("password");
    let revoked = accounts::set_password(&svc.accounts(), &by, id, &new, CLIENT, svc.now())
        .await
        .expect("set password");
    assert_eq!(revoked, 1);
    assert!(matches!(
        me::current_user(&svc, &second.access).await,
        Err(ApiError::BearerToken(
            crate::auth::jwt::TokenError::Blacklisted
        ))
    ));
    login::login(
        &svc,
        &origin::Origin::from_ip(CLIENT),
        credentials("alice", "pw two"),
    )
    .await
    .expect("the new password");
}
