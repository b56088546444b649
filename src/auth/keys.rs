//! Key material: the HS256 shared key, or an Ed25519 / RSA key pair; parsing
//! from PEM, generation, key ids (RFC 7638 thumbprints) and the public JWK
//! that `/.well-known/jwks.json` publishes.
//!
//! The algorithm of a key is fixed by what the key is (a shared secret, an
//! Ed25519 key, an RSA key), never by a token's header.

use std::fmt;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::LineEnding;
use rsa::traits::PublicKeyParts;

/// RFC 7518 §3.3: RSA keys of at least 2048 bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The signing algorithms tokend offers (`jwt.algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    Hs256,
    EdDsa,
    Rs256,
}

impl SigningAlgorithm {
    pub fn parse(name: &str) -> Result<Self, KeyError> {
        match name.trim().to_ascii_uppercase().as_str() {
            "" | "HS256" => Ok(Self::Hs256),
            "EDDSA" | "ED25519" => Ok(Self::EdDsa),
            "RS256" => Ok(Self::Rs256),
            _ => Err(KeyError(format!(
                "jwt.algorithm must be HS256, EdDSA or RS256, not `{}`",
                name.trim()
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    pub fn jwt_algorithm(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::EdDsa => Algorithm::EdDSA,
            Self::Rs256 => Algorithm::RS256,
        }
    }

    pub fn is_asymmetric(self) -> bool {
        self != Self::Hs256
    }

    /// File name of the development key kept next to the database.
    pub fn dev_key_file_name(self) -> &'static str {
        match self {
            Self::Hs256 => "tokend.signing_key",
            Self::EdDsa => "tokend.eddsa.pem",
            Self::Rs256 => "tokend.rs256.pem",
        }
    }
}

/// A key that cannot be used; the message names what is wrong, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn key_error(message: impl Into<String>) -> KeyError {
    KeyError(message.into())
}

/// One key: what it verifies (always), what it signs (when the private part
/// or the shared secret is known), its id and public JWK (asymmetric only).
#[derive(Clone)]
pub struct KeyMaterial {
    algorithm: SigningAlgorithm,
    kid: Option<String>,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    jwk: Option<Jwk>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("can_sign", &self.encoding.is_some())
            .finish_non_exhaustive()
    }
}

impl KeyMaterial {
    /// The HS256 shared key: the UTF-8 bytes of the string, as simplejwt's
    /// `SIGNING_KEY`. It has no `kid`: tokens keep simplejwt's exact header.
    pub fn shared(secret: &str) -> Self {
        KeyMaterial {
            algorithm: SigningAlgorithm::Hs256,
            kid: None,
            encoding: Some(EncodingKey::from_secret(secret.as_bytes())),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            jwk: None,
        }
    }

    /// A signing key for `algorithm`: the shared string for HS256, a private
    /// key PEM (PKCS#8, or PKCS#1 for RSA) otherwise.
    pub fn signing(algorithm: SigningAlgorithm, text: &str) -> Result<Self, KeyError> {
        let key = match algorithm {
            SigningAlgorithm::Hs256 => {
                if looks_like_pem(text) {
                    return Err(key_error(
                        "jwt.algorithm is HS256 but the signing key is a PEM key; \
                         set TOKEND__JWT__ALGORITHM to EdDSA or RS256, or use a shared secret",
                    ));
                }
                Self::shared(text)
            }
            SigningAlgorithm::EdDsa | SigningAlgorithm::Rs256 => Self::parse_pem(text)?,
        };
        if key.algorithm != algorithm {
            return Err(key_error(format!(
                "jwt.algorithm is {} but the signing key is an {} key",
                algorithm.name(),
                key.algorithm.name()
            )));
        }
        if key.encoding.is_none() {
            return Err(key_error(
                "the signing key is a public key; tokend needs the private key to sign",
            ));
        }
        Ok(key)
    }

    /// A key that is only accepted: a PEM key (public or private) of either
    /// asymmetric kind, or, only when tokend signs with HS256, a shared
    /// secret. Anything that contains a PEM block must parse as one (text
    /// before it, such as openssl's "Bag Attributes", is skipped), so a
    /// public key can never end up used as an HMAC secret (algorithm
    /// confusion through configuration); JSON (a JWK) is refused.
    pub fn verification(text: &str, signing: SigningAlgorithm) -> Result<Self, KeyError> {
        let text = text.trim_start_matches('\u{feff}');
        if let Some(start) = text.find("-----BEGIN") {
            return Ok(Self::parse_pem(&text[start..])?.public_only());
        }
        if text.trim_start().starts_with('{') {
            return Err(key_error(
                "JWK files are not supported as verification keys; give the key as PEM",
            ));
        }
        if signing != SigningAlgorithm::Hs256 {
            return Err(key_error(format!(
                "a shared (HS256) key cannot be a verification key while tokend signs with {}: \
                 give public keys as PEM",
                signing.name()
            )));
        }
        Ok(Self {
            encoding: None,
            ..Self::shared(text)
        })
    }

    fn public_only(mut self) -> Self {
        self.encoding = None;
        self
    }

    fn parse_pem(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if let Ok(private) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
            let der = private
                .to_pkcs8_der()
                .map_err(|_| key_error("cannot encode the Ed25519 key"))?;
            let public = private.verifying_key();
            return Self::ed25519(public, Some(EncodingKey::from_ed_der(der.as_bytes())));
        }
        if let Ok(public) = ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
            return Self::ed25519(public, None);
        }
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(text)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(text));
        if let Ok(private) = private {
            let der = private
                .to_pkcs1_der()
                .map_err(|_| key_error("cannot encode the RSA key"))?;
            let public = private.to_public_key();
            return Self::rsa(&public, Some(EncodingKey::from_rsa_der(der.as_bytes())));
        }
        let public = rsa::RsaPublicKey::from_public_key_pem(text)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(text));
        if let Ok(public) = public {
            return Self::rsa(&public, None);
        }
        Err(key_error(
            "not a usable PEM key: expected an Ed25519 or RSA key, private (PKCS#8, or PKCS#1 \
             for RSA) or public (SubjectPublicKeyInfo)",
        ))
    }

    fn ed25519(
        public: ed25519_dalek::VerifyingKey,
        encoding: Option<EncodingKey>,
    ) -> Result<Self, KeyError> {
        let decoding = DecodingKey::from_ed_der(public.as_bytes());
        Self::asymmetric(SigningAlgorithm::EdDsa, decoding, encoding)
    }

    fn rsa(public: &rsa::RsaPublicKey, encoding: Option<EncodingKey>) -> Result<Self, KeyError> {
        let bits = public.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(key_error(format!(
                "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed"
            )));
        }
        let decoding = DecodingKey::from_rsa_raw_components(
            &public.n().to_bytes_be(),
            &public.e().to_bytes_be(),
        );
        Self::asymmetric(SigningAlgorithm::Rs256, decoding, encoding)
    }

    fn asymmetric(
        algorithm: SigningAlgorithm,
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
    ) -> Result<Self, KeyError> {
        let alg = algorithm.jwt_algorithm();
        let mut jwk = Jwk::from_decoding_key(&decoding, Some(alg))
            .map_err(|_| key_error("cannot describe the public key as a JWK"))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| key_error("cannot compute the key id"))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match algorithm {
            SigningAlgorithm::EdDsa => KeyAlgorithm::EdDSA,
            _ => KeyAlgorithm::RS256,
        });
        Ok(KeyMaterial {
            algorithm,
            kid: Some(kid),
            encoding,
            decoding,
            jwk: Some(jwk),
        })
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// RFC 7638 thumbprint (SHA-256, base64url) of the public key; `None`
    /// for shared keys.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn encoding(&self) -> Option<&EncodingKey> {
        self.encoding.as_ref()
    }

    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public JWK (never for a shared key: it would publish the secret).
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.jwk.as_ref()
    }
}

fn looks_like_pem(text: &str) -> bool {
    text.trim_start().starts_with("-----BEGIN")
}

/// A new key for `algorithm`: 64 hex characters (256 bits) for HS256, a
/// PKCS#8 PEM private key otherwise.
pub fn generate(algorithm: SigningAlgorithm) -> Result<String, KeyError> {
    match algorithm {
        SigningAlgorithm::Hs256 => Ok(super::random_hex::<32>()),
        SigningAlgorithm::EdDsa => {
            let seed = super::random_bytes::<32>();
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|_| key_error("cannot encode the Ed25519 key"))?;
            Ok(pem.to_string())
        }
        SigningAlgorithm::Rs256 => {
            use rsa::pkcs8::EncodePrivateKey as _;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, MIN_RSA_BITS)
                .map_err(|_| key_error("cannot generate an RSA key"))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|_| key_error("cannot encode the RSA key"))?;
            Ok(pem.to_string())
        }
    }
}

/// The public half of a private PEM key, as a SubjectPublicKeyInfo PEM, for
/// `tokend keys public` and for handing to downstream services.
pub fn public_pem(text: &str) -> Result<String, KeyError> {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let text = text.trim();
    if let Ok(private) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
        return private
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| key_error("cannot encode the public key"));
    }
    if let Ok(public) = ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
        return public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| key_error("cannot encode the public key"));
    }
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(text)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(text));
    let public = match private {
        Ok(private) => private.to_public_key(),
        Err(_) => rsa::RsaPublicKey::from_public_key_pem(text)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(text))
            .map_err(|_| key_error("not an Ed25519 or RSA PEM key"))?,
    };
    rsa::pkcs8::EncodePublicKey::to_public_key_pem(&public, LineEnding::LF)
        .map_err(|_| key_error("cannot encode the public key"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// RSA generation is slow; one key per test run.
    pub(crate) fn rsa_pem() -> &'static str {
        static KEY: OnceLock<String> = OnceLock::new();
        KEY.get_or_init(|| generate(SigningAlgorithm::Rs256).unwrap())
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(
            SigningAlgorithm::parse("").unwrap(),
            SigningAlgorithm::Hs256
        );
        assert_eq!(
            SigningAlgorithm::parse("eddsa").unwrap(),
            SigningAlgorithm::EdDsa
        );
        assert_eq!(
            SigningAlgorithm::parse("RS256").unwrap(),
            SigningAlgorithm::Rs256
        );
        for bad in ["none", "HS512", "ES256", "RS384"] {
            assert!(SigningAlgorithm::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ed25519_keys_have_a_thumbprint_kid_and_a_public_jwk() {
        let pem = generate(SigningAlgorithm::EdDsa).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = KeyMaterial::signing(SigningAlgorithm::EdDsa, &pem).unwrap();
        let kid = key.kid().unwrap().to_owned();
        assert_eq!(kid.len(), 43, "base64url SHA-256");
        let jwk = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], kid.as_str());
        assert!(jwk.get("d").is_none(), "no private part: {jwk}");
        // The public key alone has the same id, and cannot sign.
        let public = public_pem(&pem).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        let verify_only = KeyMaterial::verification(&public, SigningAlgorithm::EdDsa).unwrap();
        assert_eq!(verify_only.kid(), Some(kid.as_str()));
        assert!(verify_only.encoding().is_none());
        assert!(KeyMaterial::signing(SigningAlgorithm::EdDsa, &public).is_err());
        // A private key listed for verification is used for verification only.
        assert!(KeyMaterial::verification(&pem, SigningAlgorithm::EdDsa)
            .unwrap()
            .encoding()
            .is_none());
    }

    #[test]
    fn rsa_keys_are_2048_bits_with_n_and_e() {
        let key = KeyMaterial::signing(SigningAlgorithm::Rs256, rsa_pem()).unwrap();
        let jwk = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["n"].as_str().unwrap().len(), 342, "2048-bit modulus");
        assert!(jwk.get("d").is_none() && jwk.get("p").is_none());
        let public = public_pem(rsa_pem()).unwrap();
        assert_eq!(
            KeyMaterial::verification(&public, SigningAlgorithm::EdDsa)
                .unwrap()
                .kid(),
            key.kid()
        );
    }

    #[test]
    fn the_configured_algorithm_must_match_the_key() {
        let ed = generate(SigningAlgorithm::EdDsa).unwrap();
        let err = KeyMaterial::signing(SigningAlgorithm::Rs256, &ed).unwrap_err();
        assert_eq!(
            err.0,
            "jwt.algorithm is RS256 but the signing key is an EdDSA key"
        );
        assert!(KeyMaterial::signing(SigningAlgorithm::Hs256, &ed).is_err());
        assert!(KeyMaterial::signing(SigningAlgorithm::EdDsa, "not a pem").is_err());
        assert!(KeyMaterial::signing(SigningAlgorithm::EdDsa, "-----BEGIN junk").is_err());
        // Errors never quote the key.
        let err = KeyMaterial::signing(SigningAlgorithm::EdDsa, "secret-ish text").unwrap_err();
        assert!(!err.0.contains("secret-ish"));
    }

    #[test]
    fn verification_keys_never_turn_public_keys_into_secrets() {
        let pem = generate(SigningAlgorithm::EdDsa).unwrap();
        let public = public_pem(&pem).unwrap();
        let kid = KeyMaterial::verification(&public, SigningAlgorithm::Hs256)
            .unwrap()
            .kid()
            .map(str::to_owned);
        // A BOM, or openssl's attribute lines before the block: still the
        // public key, never a shared secret.
        for variant in [
            format!("\u{feff}{public}"),
            format!("Bag Attributes\n    friendlyName: x\n{public}"),
        ] {
            let key = KeyMaterial::verification(&variant, SigningAlgorithm::Hs256).unwrap();
            assert_eq!(key.algorithm(), SigningAlgorithm::EdDsa);
            assert_eq!(key.kid().map(str::to_owned), kid);
        }
        // A broken PEM is an error, not a secret.
        assert!(KeyMaterial::verification(
            "x -----BEGIN PUBLIC KEY----- junk",
            SigningAlgorithm::Hs256
        )
        .is_err());
        // JWK JSON is refused; shared secrets only when signing with HS256.
        assert!(KeyMaterial::verification(r#"{"kty":"OKP"}"#, SigningAlgorithm::Hs256).is_err());
        assert!(KeyMaterial::verification("old-shared-secret", SigningAlgorithm::EdDsa).is_err());
        let shared =
            KeyMaterial::verification("old-shared-secret", SigningAlgorithm::Hs256).unwrap();
        assert_eq!(shared.algorithm(), SigningAlgorithm::Hs256);
        assert!(shared.encoding().is_none());
    }

    #[test]
    fn shared_keys_have_no_kid_and_no_jwk() {
        let key = KeyMaterial::shared("k");
        assert_eq!(key.kid(), None);
        assert!(key.public_jwk().is_none());
        let hs = generate(SigningAlgorithm::Hs256).unwrap();
        assert_eq!(hs.len(), 64);
        assert_ne!(hs, generate(SigningAlgorithm::Hs256).unwrap());
    }
}
