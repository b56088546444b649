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
    }
}

diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, refresh_tokens, sessions);
