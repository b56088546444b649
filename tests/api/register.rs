use serde_json::json;

use crate::both_backends;
use crate::helpers::{spawn_app, Backend};

const REQUIRED: &str = r#"["This field is required."]"#;

async fn registers_and_answers_id_and_username(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.register("alice", "pw12345").await;
    assert_eq!(reply.status, 201);
    let id = reply.json()["id"].as_i64().expect("numeric id");
    reply.assert(201, &format!(r#"{{"id":{id},"username":"alice"}}"#));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    app.register("bob", "pw")
        .await
        .assert(201, &format!(r#"{{"id":{},"username":"bob"}}"#, id + 1));
}

async fn duplicate_username_is_400(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice", "pw").await;
    app.register("alice", "other").await.assert(
        400,
        r#"{"username":["A user with that username already exists."]}"#,
    );
    // Reported together with the other field's errors, as DRF does.
    app.register("alice", " ").await.assert(
        400,
        r#"{"username":["A user with that username already exists."],"password":["This field may not be blank."]}"#,
    );
    // Usernames are case-sensitive, as Django's.
    assert_eq!(app.register("Alice", "pw").await.status, 201);
}

async fn field_errors_match_drf(backend: Backend) {
    let app = spawn_app(backend).await;
    let path = "/api/user/register/";
    app.post_json(path, json!({})).await.assert(
        400,
        &format!(r#"{{"username":{REQUIRED},"password":{REQUIRED}}}"#),
    );
    app.post_json(path, json!({"username": " ", "password": null})).await.assert(
        400,
        r#"{"username":["This field may not be blank."],"password":["This field may not be null."]}"#,
    );
    app.post_json(path, json!({"username": "a!b\u{0}", "password": true})).await.assert(
        400,
        r#"{"username":["Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.","Null characters are not allowed."],"password":["Not a valid string."]}"#,
    );
    let long_name = format!("{}!", "x".repeat(150));
    app.post_json(path, json!({"username": long_name, "password": "p".repeat(129)})).await.assert(
        400,
        r#"{"username":["Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.","Ensure this field has no more than 150 characters."],"password":["Ensure this field has no more than 128 characters."]}"#,
    );
    app.post_json(path, json!({"username": ["x"], "password": {"a": 1}}))
        .await
        .assert(
            400,
            r#"{"username":["Not a valid string."],"password":["Not a valid string."]}"#,
        );
    app.post_json(path, json!([1, 2])).await.assert(
        400,
        r#"{"non_field_errors":["Invalid data. Expected a dictionary, but got list."]}"#,
    );
    app.post_raw(path, "application/json", "null")
        .await
        .assert(400, r#"{"non_field_errors":["No data provided"]}"#);
}

async fn numbers_are_accepted_as_strings(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app
        .post_json(
            "/api/user/register/",
            json!({"username": 123, "password": 1.5}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["username"], "123");
    assert_eq!(app.login("123", "1.5").await.status, 200);
}

async fn form_encoded_bodies_work(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app
        .post_raw(
            "/api/user/register/",
            "application/x-www-form-urlencoded",
            "username=bob%2Bsmith&password=s%C3%A9cret",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["username"], "bob+smith");
    let login = app
        .post_raw(
            "/api/token/",
            "application/x-www-form-urlencoded",
            "username=bob%2Bsmith&password=s%C3%A9cret",
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    app.post_raw(
        "/api/user/register/",
        "application/x-www-form-urlencoded",
        "username=&password=x",
    )
    .await
    .assert(400, r#"{"username":["This field may not be blank."]}"#);
}

async fn usernames_are_trimmed_and_nfkc_normalised(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.register("  ｆｏｏ  ", "pw").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["username"], "foo");
    app.register("foo", "pw").await.assert(
        400,
        r#"{"username":["A user with that username already exists."]}"#,
    );
    app.register("ｆｏｏ", "pw").await.assert(
        400,
        r#"{"username":["A user with that username already exists."]}"#,
    );
}

async fn long_passwords_are_not_truncated(backend: Backend) {
    let app = spawn_app(backend).await;
    // 128 characters, 256 bytes: far past bcrypt's 72-byte input.
    let password = "é".repeat(128);
    assert_eq!(app.register("long", &password).await.status, 201);
    assert_eq!(app.login("long", &password).await.status, 200);
    let mut almost = "é".repeat(127);
    almost.push('e');
    assert_eq!(app.login("long", &almost).await.status, 401);
    // Passwords are trimmed, as DRF's CharField does.
    assert_eq!(
        app.login("long", &format!("  {password} ")).await.status,
        200
    );
}

both_backends!(
    registers_and_answers_id_and_username,
    duplicate_username_is_400,
    field_errors_match_drf,
    numbers_are_accepted_as_strings,
    form_encoded_bodies_work,
    usernames_are_trimmed_and_nfkc_normalised,
    long_passwords_are_not_truncated,
);
