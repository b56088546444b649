// Tables of migrations/{sqlite,postgres}. Only types both backends share
// (BigInt, Text, Bool) so that one set of queries serves both.

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        password_hash -> Text,
        is_active -> Bool,
        created_at -> BigInt,
        // Unused since sessions carry revocation (kept by migration 1).
        tokens_valid_after -> BigInt,
        // Imported with the legacy service's id for the same user.
        kept_legacy_id -> Bool,
        // Unix seconds; set at login when jwt.update_last_login is on.
        last_login -> Nullable<BigInt>,
        /// NULL when the user has none.
        email -> Nullable<Text>,
        is_staff -> Bool,
        is_superuser -> Bool,
        /// The address lowercased: unique.
        email_key -> Nullable<Text>,
        email_verified -> Bool,
        first_name -> Text,
        last_name -> Text,
    }
}

diesel::table! {
    account_tokens (digest) {
        digest -> Text,
        user_id -> BigInt,
        purpose -> Text,
        email -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    refresh_tokens (jti) {
        jti -> Text,
        user_id -> BigInt,
        issued_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        replaced_by -> Nullable<Text>,
        session_id -> Nullable<Text>,
        access_jti -> Nullable<Text>,
        access_expires_at -> Nullable<BigInt>,
        /// The access token's extra claims (JSON object), for replays.
        access_claims -> Nullable<Text>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> BigInt,
        created_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        revoke_reason -> Nullable<Text>,
        /// The `User-Agent` of the login (cut; NULL when none was sent).
        user_agent -> Nullable<Text>,
        /// The client address of the login, as text.
        ip -> Nullable<Text>,
        /// Unix seconds: the login, then each refresh rotation.
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    groups (id) {
        id -> BigInt,
        name -> Text,
    }
}

diesel::table! {
    user_groups (user_id, group_id) {
        user_id -> BigInt,
        group_id -> BigInt,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        kind -> Text,
        payload -> Text,
        created_at -> BigInt,
        next_attempt_at -> BigInt,
        attempts -> Integer,
        claimed_until -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        sent_at -> Nullable<BigInt>,
        dead_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    clients (id) {
        id -> Text,
        name -> Text,
        secret_digest -> Nullable<Text>,
        previous_secret_digest -> Nullable<Text>,
        previous_valid_until -> Nullable<BigInt>,
        scopes -> Text,
        audience -> Nullable<Text>,
        ttl_secs -> Nullable<BigInt>,
        public_key_pem -> Nullable<Text>,
        disabled -> Bool,
        created_at -> BigInt,
        tokens_revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    revoked_client_tokens (client_id, jti) {
        client_id -> Text,
        jti -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    client_assertions (client_id, jti) {
        client_id -> Text,
        jti -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    /// Security events; no foreign keys (events outlive what they name).
    audit_events (id) {
        id -> BigInt,
        /// Unix seconds.
        at -> BigInt,
        event -> Text,
        user_id -> Nullable<BigInt>,
        username -> Nullable<Text>,
        session_id -> Nullable<Text>,
        client_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        request_id -> Nullable<Text>,
        /// A JSON object.
        detail -> Nullable<Text>,
    }
}

diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(user_groups -> users (user_id));
diesel::joinable!(account_tokens -> users (user_id));
diesel::joinable!(user_groups -> groups (group_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    refresh_tokens,
    sessions,
    groups,
    user_groups,
    outbox,
    account_tokens,
    clients,
    client_assertions,
    revoked_client_tokens
);
