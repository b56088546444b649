//! The hot pure functions: signing and checking tokens, per algorithm.
//! `cargo bench --bench tokens` (results in target/criterion/).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tokend::auth::jwt::{ClaimPolicy, Claims, JwtKeys, TokenLifetimes, TokenType};
use tokend::auth::keys::{self, KeyMaterial, SigningAlgorithm};

const NOW: i64 = 1_800_000_000;
const LIFETIMES: TokenLifetimes = TokenLifetimes {
    access_secs: 1800,
    refresh_secs: 86400,
};

fn claims() -> Claims {
    Claims {
        token_type: TokenType::Access.as_str(),
        exp: NOW + 1800,
        iat: NOW,
        jti: "0123456789abcdef0123456789abcdef".to_owned(),
        user_id: "42".to_owned(),
        sid: Some("0123456789abcdef0123456789abcdef".to_owned()),
        extra: Default::default(),
    }
}

fn ring(algorithm: SigningAlgorithm) -> JwtKeys {
    let key = match algorithm {
        SigningAlgorithm::Hs256 => {
            KeyMaterial::shared("bench-key-0123456789abcdef0123456789abcdef")
        }
        other => KeyMaterial::signing(other, &keys::generate(other).expect("key")).expect("key"),
    };
    JwtKeys::new(&key, &[], LIFETIMES, ClaimPolicy::default()).expect("ring")
}

fn tokens(c: &mut Criterion) {
    for algorithm in [
        SigningAlgorithm::Hs256,
        SigningAlgorithm::EdDsa,
        SigningAlgorithm::Rs256,
    ] {
        let keys = ring(algorithm);
        let claims = claims();
        let token = keys.sign(&claims).expect("sign");
        let name = algorithm.name();
        c.bench_function(&format!("{name}/sign"), |b| {
            b.iter(|| keys.sign(black_box(&claims)))
        });
        c.bench_function(&format!("{name}/verify"), |b| {
            b.iter(|| keys.verify(black_box(&token), Some(TokenType::Access), NOW))
        });
        // A refusal must not cost more than an acceptance.
        let tampered = format!("{}x", &token[..token.len() - 1]);
        c.bench_function(&format!("{name}/verify-bad-signature"), |b| {
            b.iter(|| keys.verify(black_box(&tampered), Some(TokenType::Access), NOW))
        });
    }
    // Claim checks only: a token of the wrong type is refused after the
    // signature, so this measures decode + claims.
    let keys = ring(SigningAlgorithm::Hs256);
    let refresh = keys
        .sign(&Claims {
            token_type: TokenType::Refresh.as_str(),
            ..claims()
        })
        .expect("sign");
    c.bench_function("HS256/verify-wrong-type", |b| {
        b.iter(|| keys.verify(black_box(&refresh), Some(TokenType::Access), NOW))
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
