//! jwt.update_last_login: simplejwt's UPDATE_LAST_LOGIN.

use crate::both_backends;
use crate::helpers::{now, spawn_app, spawn_app_with, Backend, TestApp};

const BAD_CREDENTIALS: &str = r#"{"detail":"No active account found with the given credentials"}"#;
const ON: &[(&str, &str)] = &[("TOKEND__JWT__UPDATE_LAST_LOGIN", "true")];

async fn last_login(app: &TestApp, id: i64) -> Option<i64> {
    use diesel::prelude::*;
    use tokend::storage::schema::users;
    app.db
        .run(move |conn| {
            Ok(users::table
                .filter(users::id.eq(id))
                .select(users::last_login)
                .first::<Option<i64>>(conn)?)
        })
        .await
        .expect("read last_login")
}

/// A value no login writes, so that any write shows.
async fn set_last_login(app: &TestApp, id: i64, value: i64) {
    use diesel::prelude::*;
    use tokend::storage::schema::users;
    app.db
        .run(move |conn| {
            Ok(diesel::update(users::table.filter(users::id.eq(id)))
                .set(users::last_login.eq(Some(value)))
                .execute(conn)?)
        })
        .await
        .expect("set last_login");
}

async fn login_records_last_login_when_enabled(backend: Backend) {
    let app = spawn_app_with(backend, ON).await;
    let created = app.register("alice", "pw12345").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_i64().expect("id");
    assert_eq!(last_login(&app, id).await, None, "registering is no login");

    let before = now();
    let pair = app.login("alice", "pw12345").await;
    assert_eq!(pair.status, 200, "{}", pair.body);
    let after = now();
    let recorded = last_login(&app, id).await.expect("login recorded");
    assert!(
        (before..=after).contains(&recorded),
        "{before} <= {recorded} <= {after}"
    );

    // Neither a failed login nor a refresh is a login.
    set_last_login(&app, id, 1_000).await;
    app.login("alice", "wrong-pw")
        .await
        .assert(401, BAD_CREDENTIALS);
    assert_eq!(last_login(&app, id).await, Some(1_000));
    let refreshed = app.refresh(&pair.token("refresh")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(last_login(&app, id).await, Some(1_000));

    // An inactive user's right password is a failed login too.
    app.set_active(id, false).await;
    app.login("alice", "pw12345")
        .await
        .assert(401, BAD_CREDENTIALS);
    assert_eq!(last_login(&app, id).await, Some(1_000));
}

async fn last_login_stays_null_by_default(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, _, refresh) = app.user_with_tokens("alice", "pw12345").await;
    assert_eq!(app.refresh(&refresh).await.status, 200);
    assert_eq!(app.login("alice", "pw12345").await.status, 200);
    assert_eq!(last_login(&app, id).await, None);
}

both_backends!(
    login_records_last_login_when_enabled,
    last_login_stays_null_by_default,
);
