//! Tokens: simplejwt's claim set, signed with the shared HS256 key (or an
//! Ed25519 / RSA key), and the checks simplejwt makes, in its order, with its
//! messages, plus RFC 8725's: algorithm pinned per key, known `kid` only.
//!
//! The clock is a parameter (`now`, unix seconds) so every rule is testable.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::keys::{KeyError, KeyMaterial};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Access,
    Refresh,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Access => "access",
            TokenType::Refresh => "refresh",
        }
    }
}

/// Why a token was refused. `Display` is simplejwt's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("Token is invalid")]
    Invalid,
    #[error("Token is expired")]
    Expired,
    #[error("Token has no 'exp' claim")]
    NoExp,
    #[error("Token has no id")]
    NoId,
    #[error("Token has no type")]
    NoType,
    #[error("Token has wrong type")]
    WrongType,
    #[error("Token is blacklisted")]
    Blacklisted,
}

#[derive(Debug, thiserror::Error)]
#[error("token signing failed")]
pub struct SigningError(#[from] jsonwebtoken::errors::Error);

/// The claims tokend signs, in simplejwt's order (PyJWT keeps insertion order).
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    pub token_type: &'static str,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub user_id: String,
    /// The session (token family); absent in tokens minted elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Claims of `jwt.extra_claims` and the claims hook (access tokens
    /// only), written last.
    #[serde(flatten)]
    pub extra: super::claims::ClaimMap,
}

/// What a service (client) token says.
#[derive(Debug, Clone)]
pub struct ClientClaims {
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    /// Space-separated.
    pub scope: String,
    pub audience: Option<String>,
}

/// The claims of a token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub token_type: TokenType,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// simplejwt writes the id as a string; older versions wrote a number.
    /// `None` when the claim is missing or not an integer id.
    pub user_id: Option<i64>,
    pub sid: Option<String>,
    /// Set for a service (OAuth 2 client) token: one with a `client_id`
    /// claim and neither a user id nor a session.
    pub client: Option<ClientToken>,
}

/// What a service token says beyond the common claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToken {
    pub client_id: String,
    /// Space-separated, as issued.
    pub scope: String,
    pub audience: Option<String>,
}

/// What may arrive: any claim can be missing or of another type, and must be
/// reported the way simplejwt does rather than as a parse failure.
struct IncomingClaims {
    token_type: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
    sid: Option<serde_json::Value>,
    /// Every other claim: the user-id claim's name is configured, so it is
    /// looked up here after decoding.
    others: serde_json::Map<String, serde_json::Value>,
    /// Other claims sent more than once: a repeated user-id claim is refused,
    /// as a repeated named claim is.
    repeated: Vec<String>,
}

impl<'de> Deserialize<'de> for IncomingClaims {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(IncomingClaimsVisitor)
    }
}

struct IncomingClaimsVisitor;

impl<'de> serde::de::Visitor<'de> for IncomingClaimsVisitor {
    type Value = IncomingClaims;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // `Some(None)` is a claim present as null: seen, so a second one is a
        // duplicate (serde's rule for named fields).
        let mut named: [Option<Option<serde_json::Value>>; 5] = Default::default();
        const NAMES: [&str; 5] = ["token_type", "exp", "iat", "jti", "sid"];
        let mut others = serde_json::Map::new();
        let mut repeated = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value: Option<serde_json::Value> = map.next_value()?;
            if let Some(i) = NAMES.iter().position(|n| *n == key) {
                if named[i].is_some() {
                    return Err(serde::de::Error::duplicate_field(NAMES[i]));
                }
                named[i] = Some(value);
            } else if others.contains_key(&key) {
                if !repeated.contains(&key) {
                    repeated.push(key);
                }
            } else {
                others.insert(key, value.unwrap_or(serde_json::Value::Null));
            }
        }
        let [token_type, exp, iat, jti, sid] = named.map(Option::flatten);
        Ok(IncomingClaims {
            token_type,
            exp,
            iat,
            jti,
            sid,
            others,
            repeated,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TokenLifetimes {
    pub access_secs: i64,
    pub refresh_secs: i64,
}

/// Optional registered claims and clock-skew tolerance (off by default, for
/// simplejwt compatibility). When `issuer`/`audience` are set, tokend writes
/// them into every token and refuses tokens without them.
#[derive(Debug, Clone)]
pub struct ClaimPolicy {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Seconds a token is still accepted after its `exp`.
    pub leeway_secs: i64,
    /// The claim holding the user id, written and read (simplejwt's
    /// `USER_ID_CLAIM`); a token with the id under another name has none.
    pub user_id_claim: String,
}

impl Default for ClaimPolicy {
    fn default() -> Self {
        ClaimPolicy {
            issuer: None,
            audience: None,
            leeway_secs: 0,
            user_id_claim: DEFAULT_USER_ID_CLAIM.to_owned(),
        }
    }
}

/// simplejwt's default `USER_ID_CLAIM`.
pub const DEFAULT_USER_ID_CLAIM: &str = "user_id";

/// Claims tokend writes itself (and `nbf`, which would hold its tokens
/// back, and `client_id`, which marks a service token); the user-id claim
/// and the claims hook may not take their names.
pub const RESERVED_CLAIMS: [&str; 9] = [
    "token_type",
    "exp",
    "iat",
    "jti",
    "sid",
    "iss",
    "aud",
    "nbf",
    "client_id",
];

/// Whether `name` can be the user-id claim: 1-64 letters, digits and `_`,
/// and none of the claims tokend writes itself.
pub fn valid_user_id_claim(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !RESERVED_CLAIMS.contains(&name)
}

/// What is signed: the simplejwt claims in their order, the user id under
/// the configured name, then `iss`/`aud` when configured.
struct SignedClaims<'a> {
    claims: &'a Claims,
    user_id_claim: &'a str,
    iss: Option<&'a str>,
    aud: Option<&'a str>,
}

impl Serialize for SignedClaims<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let c = self.claims;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("token_type", c.token_type)?;
        map.serialize_entry("exp", &c.exp)?;
        map.serialize_entry("iat", &c.iat)?;
        map.serialize_entry("jti", &c.jti)?;
        map.serialize_entry(self.user_id_claim, &c.user_id)?;
        if let Some(sid) = &c.sid {
            map.serialize_entry("sid", sid)?;
        }
        if let Some(iss) = self.iss {
            map.serialize_entry("iss", iss)?;
        }
        if let Some(aud) = self.aud {
            map.serialize_entry("aud", aud)?;
        }
        for (name, value) in &c.extra {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// One key tokens are checked against, with its pinned algorithm.
struct Verifier {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
    validation: Validation,
}

/// The key ring (one signing key, plus older or upcoming keys that are only
/// accepted) with lifetimes and claim policy: everything needed to issue and
/// check tokens.
pub struct JwtKeys {
    encoding: EncodingKey,
    header: Header,
    /// The signing key first.
    verifiers: Vec<Verifier>,
    jwks: String,
    lifetimes: TokenLifetimes,
    policy: ClaimPolicy,
}

impl JwtKeys {
    /// HS256 with a shared key; the key is the UTF-8 bytes of the string, as
    /// simplejwt's `SIGNING_KEY`.
    pub fn hs256(secret: &str, lifetimes: TokenLifetimes) -> Self {
        Self::hs256_with(secret, lifetimes, ClaimPolicy::default())
    }

    pub fn hs256_with(secret: &str, lifetimes: TokenLifetimes, policy: ClaimPolicy) -> Self {
        let key = KeyMaterial::shared(secret);
        let encoding = EncodingKey::from_secret(secret.as_bytes());
        Self::assemble(encoding, &key, &[], lifetimes, policy)
    }

    /// A signing key (which must be able to sign) and keys that are accepted
    /// too. Keys with the signing key's id, or listed twice, are dropped.
    pub fn new(
        signing: &KeyMaterial,
        accepted: &[KeyMaterial],
        lifetimes: TokenLifetimes,
        policy: ClaimPolicy,
    ) -> Result<Self, KeyError> {
        let encoding = signing
            .encoding()
            .cloned()
            .ok_or_else(|| KeyError("the signing key cannot sign".into()))?;
        Ok(Self::assemble(
            encoding, signing, accepted, lifetimes, policy,
        ))
    }

    fn assemble(
        encoding: EncodingKey,
        signing: &KeyMaterial,
        accepted: &[KeyMaterial],
        lifetimes: TokenLifetimes,
        policy: ClaimPolicy,
    ) -> Self {
        let mut header = Header::new(signing.algorithm().jwt_algorithm());
        header.kid = signing.kid().map(str::to_owned);
        let mut verifiers: Vec<Verifier> = Vec::with_capacity(1 + accepted.len());
        let mut jwks = Vec::new();
        for key in std::iter::once(signing).chain(accepted) {
            if key.kid().is_some() && verifiers.iter().any(|v| v.kid.as_deref() == key.kid()) {
                continue;
            }
            let algorithm = key.algorithm().jwt_algorithm();
            verifiers.push(Verifier {
                kid: key.kid().map(str::to_owned),
                algorithm,
                decoding: key.decoding().clone(),
                validation: validation_for(algorithm, &policy),
            });
            if let Some(jwk) = key.public_jwk() {
                jwks.push(jwk.clone());
            }
        }
        let jwks = serde_json::to_string(&JwkSet { keys: jwks })
            .unwrap_or_else(|_| r#"{"keys":[]}"#.to_owned());
        JwtKeys {
            encoding,
            header,
            verifiers,
            jwks,
            lifetimes,
            policy,
        }
    }

    /// The JWK Set of the public verification keys, as JSON (`{"keys":[]}`
    /// with shared keys only: a symmetric key is never published).
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// The `kid` of the signing key (asymmetric keys only).
    pub fn signing_kid(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }

    /// The configured `iss`, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.policy.issuer.as_deref()
    }

    /// Seconds a token is still accepted after its `exp`.
    pub fn leeway_secs(&self) -> i64 {
        self.policy.leeway_secs
    }

    /// The configured `aud` of tokend's tokens (`jwt.audience`).
    pub fn audience(&self) -> Option<&str> {
        self.policy.audience.as_deref()
    }

    pub fn lifetimes(&self) -> TokenLifetimes {
        self.lifetimes
    }

    /// The claim naming the user in every token (`jwt.user_id_claim`).
    pub fn user_id_claim(&self) -> &str {
        &self.policy.user_id_claim
    }

    /// Signs claims. HS256 is deterministic: the same claims always give the
    /// same token, which is what lets a rotation be replayed exactly.
    pub fn sign(&self, claims: &Claims) -> Result<String, SigningError> {
        let signed = SignedClaims {
            claims,
            user_id_claim: &self.policy.user_id_claim,
            iss: self.policy.issuer.as_deref(),
            aud: self.policy.audience.as_deref(),
        };
        Ok(jsonwebtoken::encode(&self.header, &signed, &self.encoding)?)
    }

    /// Signs a service (OAuth 2 client) token: `token_type`, `exp`, `iat`,
    /// `jti`, `client_id`, `scope`, then `aud` (the client's, else the
    /// configured one) and `iss` when set. No user id claim: nothing that
    /// reads users takes it for one.
    pub fn sign_client(&self, claims: &ClientClaims) -> Result<String, SigningError> {
        use serde_json::Value;
        let mut map = serde_json::Map::new();
        map.insert("token_type".into(), Value::from("access"));
        map.insert("exp".into(), Value::from(claims.exp));
        map.insert("iat".into(), Value::from(claims.iat));
        map.insert("jti".into(), Value::from(claims.jti.as_str()));
        map.insert("client_id".into(), Value::from(claims.client_id.as_str()));
        map.insert("scope".into(), Value::from(claims.scope.as_str()));
        if let Some(aud) = claims
            .audience
            .as_deref()
            .or(self.policy.audience.as_deref())
        {
            map.insert("aud".into(), Value::from(aud));
        }
        if let Some(iss) = self.policy.issuer.as_deref() {
            map.insert("iss".into(), Value::from(iss));
        }
        Ok(jsonwebtoken::encode(&self.header, &map, &self.encoding)?)
    }

    /// Checks a token as simplejwt does: signature and algorithm, expiry,
    /// presence of `jti`, then the token type when `expected` is given (the
    /// verify endpoint accepts either type, as simplejwt's `UntypedToken`).
    pub fn verify(
        &self,
        token: &str,
        expected: Option<TokenType>,
        now: i64,
    ) -> Result<VerifiedToken, TokenError> {
        let claims = self.check_signature(token)?;
        let exp = match claims.exp {
            None => return Err(TokenError::NoExp),
            Some(value) => integer_claim(&value).ok_or(TokenError::Invalid)?,
        };
        if exp.saturating_add(self.policy.leeway_secs) <= now {
            return Err(TokenError::Expired);
        }
        let iat = match claims.iat {
            None => 0,
            Some(value) => integer_claim(&value).ok_or(TokenError::Invalid)?,
        };
        let jti = match claims.jti {
            Some(serde_json::Value::String(jti)) if !jti.is_empty() => jti,
            Some(serde_json::Value::Null) | None => return Err(TokenError::NoId),
            Some(_) => return Err(TokenError::Invalid),
        };
        let token_type = match claims.token_type.as_ref().and_then(|v| v.as_str()) {
            Some("access") => Some(TokenType::Access),
            Some("refresh") => Some(TokenType::Refresh),
            Some(_) => None,
            None => return Err(TokenError::NoType),
        };
        let token_type = match (token_type, expected) {
            (Some(actual), Some(wanted)) if actual != wanted => return Err(TokenError::WrongType),
            (Some(actual), _) => actual,
            // A type tokend never issues: wrong wherever a type is expected,
            // and not a tokend token for the verify endpoint either.
            (None, Some(_)) => return Err(TokenError::WrongType),
            (None, None) => return Err(TokenError::Invalid),
        };
        let user_id = claims
            .others
            .get(&self.policy.user_id_claim)
            .and_then(user_id_claim);
        let sid = match claims.sid {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(sid)) => Some(sid),
            Some(_) => return Err(TokenError::Invalid),
        };
        if claims
            .repeated
            .iter()
            .any(|k| matches!(k.as_str(), "client_id" | "scope" | "aud"))
        {
            return Err(TokenError::Invalid);
        }
        let client = client_token(&claims.others)?;
        match &client {
            // tokend's service tokens: access tokens naming no user and no
            // session; their audience is the client's own, checked against
            // the client where the token is used.
            Some(_) => {
                if token_type != TokenType::Access
                    || sid.is_some()
                    || claims.others.contains_key(&self.policy.user_id_claim)
                {
                    return Err(TokenError::Invalid);
                }
            }
            None => {
                if let Some(audience) = &self.policy.audience {
                    if !has_audience(claims.others.get("aud"), audience) {
                        return Err(TokenError::Invalid);
                    }
                }
            }
        }
        Ok(VerifiedToken {
            token_type,
            exp,
            iat,
            jti,
            user_id,
            sid,
            client,
        })
    }
}

/// The library checks signature, algorithm and (when configured) `iss`;
/// `exp`, `token_type`, `jti` and `aud` are checked by `verify`, in
/// simplejwt's order and with its messages (`aud` there because a service
/// token carries its client's audience, not the configured one).
impl JwtKeys {
    /// Picks the key by `kid` when the token names one (an unknown `kid` is
    /// refused), else tries each key; each key checks with its own pinned
    /// algorithm, so a header's `alg` can only be refused, never chosen.
    fn check_signature(&self, token: &str) -> Result<IncomingClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let decode = |v: &Verifier| {
            jsonwebtoken::decode::<IncomingClaims>(token, &v.decoding, &v.validation)
                .map(|data| data.claims)
                .map_err(|_| TokenError::Invalid)
                .and_then(|claims| {
                    if claims.repeated.contains(&self.policy.user_id_claim) {
                        Err(TokenError::Invalid)
                    } else {
                        Ok(claims)
                    }
                })
        };
        match header.kid.as_deref() {
            Some(kid) => self
                .verifiers
                .iter()
                .find(|v| v.kid.as_deref() == Some(kid))
                .ok_or(TokenError::Invalid)
                .and_then(decode),
            None => self
                .verifiers
                .iter()
                .filter(|v| v.algorithm == header.alg)
                .find_map(|v| decode(v).ok())
                .ok_or(TokenError::Invalid),
        }
    }
}

fn validation_for(algorithm: Algorithm, policy: &ClaimPolicy) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    if let Some(issuer) = &policy.issuer {
        validation.set_issuer(&[issuer]);
        validation.required_spec_claims.insert("iss".to_owned());
    }
    validation
}

/// The service-token claims, when `client_id` is present: a string
/// `client_id`, a string `scope` (empty when absent) and at most one
/// audience, as tokend writes them; anything else is not tokend's.
fn client_token(
    others: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<ClientToken>, TokenError> {
    use serde_json::Value;
    let client_id = match others.get("client_id") {
        None => return Ok(None),
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(_) => return Err(TokenError::Invalid),
    };
    let scope = match others.get("scope") {
        None => String::new(),
        Some(Value::String(scope)) => scope.clone(),
        Some(_) => return Err(TokenError::Invalid),
    };
    let audience = match others.get("aud") {
        None => None,
        Some(Value::String(aud)) => Some(aud.clone()),
        Some(_) => return Err(TokenError::Invalid),
    };
    Ok(Some(ClientToken {
        client_id,
        scope,
        audience,
    }))
}

/// RFC 7519 §4.1.3: `aud` is one string or an array of them.
fn has_audience(aud: Option<&serde_json::Value>, wanted: &str) -> bool {
    match aud {
        Some(serde_json::Value::String(aud)) => aud == wanted,
        Some(serde_json::Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(wanted)),
        _ => false,
    }
}

fn integer_claim(value: &serde_json::Value) -> Option<i64> {
    value.as_i64()
}

fn user_id_claim(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// 32 lowercase hex characters, as simplejwt's `uuid4().hex`, but a
/// UUIDv7 (RFC 9562): the first 48 bits are the instant in milliseconds,
/// 74 of the rest random. Ids made together sit together in every index
/// that holds them, so storing, finding and purging recent rows touches a
/// few hot pages however many rows the tables hold; random ids sent every
/// insert and every purged row to a random page of an index as big as the
/// table.
pub fn new_jti() -> String {
    uuid_v7(crate::clock::unix_now_ms())
}

/// The UUIDv7 of `unix_ms`, as 32 lowercase hex characters.
pub fn uuid_v7(unix_ms: u64) -> String {
    let mut bytes = super::random_bytes::<16>();
    bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{self, SigningAlgorithm};
    use base64::Engine;

    #[test]
    fn jtis_are_uuid_v7_in_time_order() {
        // RFC 9562 §5.7's example instant: 0x017F22E279B0.
        let id = uuid_v7(0x017F_22E2_79B0);
        assert_eq!(id.len(), 32);
        assert!(id.starts_with("017f22e279b07"), "{id}");
        assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"), "{id}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(uuid_v7(1), uuid_v7(1), "74 random bits");
        assert!(uuid_v7(1_000) < uuid_v7(1_001));
        let before = crate::clock::unix_now_ms();
        assert!(new_jti() > uuid_v7(before - 1));
    }

    const NOW: i64 = 1_800_000_000;

    fn keys() -> JwtKeys {
        JwtKeys::hs256(
            "test-key-0123456789abcdef0123456789abcdef",
            TokenLifetimes {
                access_secs: 1800,
                refresh_secs: 86400,
            },
        )
    }

    fn sign(claims: serde_json::Value, key: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    fn payload(token: &str) -> serde_json::Value {
        let part = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn claims(token_type: TokenType, user_id: i64, sid: Option<&str>) -> Claims {
        let ttl = match token_type {
            TokenType::Access => 1800,
            TokenType::Refresh => 86400,
        };
        Claims {
            token_type: token_type.as_str(),
            exp: NOW + ttl,
            iat: NOW,
            jti: new_jti(),
            user_id: user_id.to_string(),
            sid: sid.map(str::to_owned),
            extra: Default::default(),
        }
    }

    fn issue(k: &JwtKeys, token_type: TokenType, user_id: i64) -> String {
        k.sign(&claims(token_type, user_id, None)).unwrap()
    }

    #[test]
    fn signs_simplejwt_claims_in_order() {
        let t = keys().sign(&claims(TokenType::Access, 42, None)).unwrap();
        let p = payload(&t);
        let names: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(names, ["token_type", "exp", "iat", "jti", "user_id"]);
        assert_eq!(p["token_type"], "access");
        assert_eq!(p["exp"], NOW + 1800);
        assert_eq!(p["iat"], NOW);
        assert_eq!(p["user_id"], "42");
        let jti = p["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 32);
        assert!(jti
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let with_sid = keys()
            .sign(&claims(TokenType::Refresh, 42, Some("s1")))
            .unwrap();
        let p = payload(&with_sid);
        let names: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(names, ["token_type", "exp", "iat", "jti", "user_id", "sid"]);
    }

    #[test]
    fn round_trip_and_types_are_not_interchangeable() {
        let k = keys();
        let access = issue(&k, TokenType::Access, 7);
        let refresh = issue(&k, TokenType::Refresh, 7);
        let v = k.verify(&access, Some(TokenType::Access), NOW).unwrap();
        assert_eq!(
            (v.token_type, v.user_id, v.iat),
            (TokenType::Access, Some(7), NOW)
        );
        assert_eq!(
            k.verify(&refresh, Some(TokenType::Access), NOW),
            Err(TokenError::WrongType)
        );
        assert_eq!(
            k.verify(&access, Some(TokenType::Refresh), NOW),
            Err(TokenError::WrongType)
        );
        assert_eq!(
            k.verify(&refresh, None, NOW).unwrap().token_type,
            TokenType::Refresh
        );
    }

    #[test]
    fn expiry_is_exclusive_and_without_leeway() {
        let k = keys();
        let access = issue(&k, TokenType::Access, 7);
        assert!(k.verify(&access, None, NOW + 1799).is_ok());
        assert_eq!(
            k.verify(&access, None, NOW + 1800),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn rejects_garbage_wrong_keys_and_algorithms() {
        let k = keys();
        for garbage in ["", "garbage", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30."] {
            assert_eq!(
                k.verify(garbage, None, NOW),
                Err(TokenError::Invalid),
                "{garbage:?}"
            );
        }
        let other = sign(
            serde_json::json!({"token_type":"access","exp":NOW+60,"jti":"a","user_id":"1"}),
            "another key",
        );
        assert_eq!(k.verify(&other, None, NOW), Err(TokenError::Invalid));
        // alg "none" with an empty signature.
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(
                r#"{{"token_type":"access","exp":{},"jti":"a","user_id":"1"}}"#,
                NOW + 60
            ))
        );
        assert_eq!(k.verify(&none, None, NOW), Err(TokenError::Invalid));
        // A tampered payload with the original signature.
        let good = issue(&k, TokenType::Access, 1);
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(r#"{"token_type":"access","exp":9999999999,"jti":"a","user_id":"2"}"#),
            parts[2]
        );
        assert_eq!(k.verify(&forged, None, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn missing_claims_give_simplejwt_messages() {
        let k = keys();
        let key = "test-key-0123456789abcdef0123456789abcdef";
        let no_exp = sign(
            serde_json::json!({"token_type":"access","jti":"a","user_id":"1"}),
            key,
        );
        assert_eq!(k.verify(&no_exp, None, NOW), Err(TokenError::NoExp));
        let no_jti = sign(
            serde_json::json!({"token_type":"access","exp":NOW+60,"user_id":"1"}),
            key,
        );
        assert_eq!(k.verify(&no_jti, None, NOW), Err(TokenError::NoId));
        let no_type = sign(
            serde_json::json!({"exp":NOW+60,"jti":"a","user_id":"1"}),
            key,
        );
        assert_eq!(
            k.verify(&no_type, Some(TokenType::Access), NOW),
            Err(TokenError::NoType)
        );
        let odd_type = sign(
            serde_json::json!({"token_type":"sliding","exp":NOW+60,"jti":"a"}),
            key,
        );
        assert_eq!(
            k.verify(&odd_type, Some(TokenType::Refresh), NOW),
            Err(TokenError::WrongType)
        );
        let string_exp = sign(
            serde_json::json!({"token_type":"access","exp":"soon","jti":"a"}),
            key,
        );
        assert_eq!(k.verify(&string_exp, None, NOW), Err(TokenError::Invalid));
        let numeric_user = sign(
            serde_json::json!({"token_type":"access","exp":NOW+60,"jti":"a","user_id":5}),
            key,
        );
        assert_eq!(k.verify(&numeric_user, None, NOW).unwrap().user_id, Some(5));
        let no_user = sign(
            serde_json::json!({"token_type":"access","exp":NOW+60,"jti":"a"}),
            key,
        );
        assert_eq!(k.verify(&no_user, None, NOW).unwrap().user_id, None);
    }

    #[test]
    fn issuer_and_audience_are_written_and_required_when_configured() {
        let policy = ClaimPolicy {
            issuer: Some("https://auth.example".into()),
            audience: Some("api".into()),
            ..ClaimPolicy::default()
        };
        let strict = JwtKeys::hs256_with(
            "test-key-0123456789abcdef0123456789abcdef",
            keys().lifetimes(),
            policy,
        );
        let token = issue(&strict, TokenType::Access, 1);
        let p = payload(&token);
        assert_eq!(
            (p["iss"].as_str(), p["aud"].as_str()),
            (Some("https://auth.example"), Some("api"))
        );
        assert!(strict.verify(&token, Some(TokenType::Access), NOW).is_ok());
        // A token of the same key without them (e.g. from simplejwt) is refused.
        let plain = issue(&keys(), TokenType::Access, 1);
        assert_eq!(strict.verify(&plain, None, NOW), Err(TokenError::Invalid));
        let key = "test-key-0123456789abcdef0123456789abcdef";
        for (iss, aud) in [
            ("https://evil.example", "api"),
            ("https://auth.example", "other"),
        ] {
            let forged = sign(
                serde_json::json!({"token_type":"access","exp":NOW+60,"jti":"a","user_id":"1","iss":iss,"aud":aud}),
                key,
            );
            assert_eq!(
                strict.verify(&forged, None, NOW),
                Err(TokenError::Invalid),
                "{iss} {aud}"
            );
        }
        // The lenient default ignores iss/aud.
        assert!(keys().verify(&token, None, NOW).is_ok());
    }

    fn keys_with_user_id_claim(name: &str) -> JwtKeys {
        JwtKeys::hs256_with(
            "test-key-0123456789abcdef0123456789abcdef",
            keys().lifetimes(),
            ClaimPolicy {
                user_id_claim: name.into(),
                ..ClaimPolicy::default()
            },
        )
    }

    fn fixed_claims() -> Claims {
        Claims {
            token_type: "access",
            exp: NOW + 1800,
            iat: NOW,
            jti: "0123456789abcdef0123456789abcdef".into(),
            user_id: "42".into(),
            sid: Some("s1".into()),
            extra: Default::default(),
        }
    }

    #[test]
    fn extra_claims_come_last_in_their_order() {
        let key = "test-key-0123456789abcdef0123456789abcdef";
        let mut claims = fixed_claims();
        claims.extra.insert("username".into(), "alice".into());
        claims
            .extra
            .insert("groups".into(), serde_json::json!(["a", "b"]));
        let expected = sign(
            serde_json::json!({"token_type":"access","exp":NOW+1800,"iat":NOW,
                "jti":"0123456789abcdef0123456789abcdef","user_id":"42","sid":"s1",
                "username":"alice","groups":["a","b"]}),
            key,
        );
        assert_eq!(keys().sign(&claims).unwrap(), expected);
    }

    #[test]
    fn default_user_id_claim_signs_the_same_bytes_as_simplejwt() {
        let key = "test-key-0123456789abcdef0123456789abcdef";
        // Built by hand in simplejwt's order: any change of name, order or
        // encoding changes the bytes (and the HS256 replay of a rotation).
        let expected = sign(
            serde_json::json!({"token_type":"access","exp":NOW+1800,"iat":NOW,
                "jti":"0123456789abcdef0123456789abcdef","user_id":"42","sid":"s1"}),
            key,
        );
        assert_eq!(keys().sign(&fixed_claims()).unwrap(), expected);
        assert_eq!(
            keys_with_user_id_claim("user_id")
                .sign(&fixed_claims())
                .unwrap(),
            expected
        );
    }

    #[test]
    fn custom_user_id_claim_round_trips_in_place_of_user_id() {
        let key = "test-key-0123456789abcdef0123456789abcdef";
        let k = keys_with_user_id_claim("sub");
        let token = k.sign(&fixed_claims()).unwrap();
        let expected = sign(
            serde_json::json!({"token_type":"access","exp":NOW+1800,"iat":NOW,
                "jti":"0123456789abcdef0123456789abcdef","sub":"42","sid":"s1"}),
            key,
        );
        assert_eq!(token, expected);
        let v = k.verify(&token, Some(TokenType::Access), NOW).unwrap();
        assert_eq!((v.user_id, v.sid.as_deref()), (Some(42), Some("s1")));
        // Numeric ids (older simplejwt) are read under the custom name too.
        let numeric = sign(
            serde_json::json!({"token_type":"access","exp":NOW+60,"jti":"a","sub":7}),
            key,
        );
        assert_eq!(k.verify(&numeric, None, NOW).unwrap().user_id, Some(7));
    }

    #[test]
    fn a_token_with_the_id_under_another_name_has_no_user_id() {
        let custom = keys_with_user_id_claim("sub");
        // A default token carries `user_id`: no user for a `sub` ring...
        let default_token = keys().sign(&fixed_claims()).unwrap();
        assert_eq!(
            custom.verify(&default_token, None, NOW).unwrap().user_id,
            None
        );
        // ...and the reverse, as a token without `user_id` is today.
        let sub_token = custom.sign(&fixed_claims()).unwrap();
        assert_eq!(keys().verify(&sub_token, None, NOW).unwrap().user_id, None);
    }

    #[test]
    fn a_repeated_user_id_claim_is_invalid() {
        let key = "test-key-0123456789abcdef0123456789abcdef";
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let forge = |payload: &str| {
            let head = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
            let body = b64(payload);
            let signing_input = format!("{head}.{body}");
            let sig = jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &EncodingKey::from_secret(key.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{signing_input}.{sig}")
        };
        let exp = NOW + 60;
        for (k, name) in [(keys(), "user_id"), (keys_with_user_id_claim("sub"), "sub")] {
            let twice = forge(&format!(
                r#"{{"token_type":"access","exp":{exp},"jti":"a","{name}":"1","{name}":"2"}}"#
            ));
            assert_eq!(
                k.verify(&twice, None, NOW),
                Err(TokenError::Invalid),
                "{name}"
            );
            let once = forge(&format!(
                r#"{{"token_type":"access","exp":{exp},"jti":"a","{name}":"1","other":1,"other":2}}"#
            ));
            assert_eq!(
                k.verify(&once, None, NOW).unwrap().user_id,
                Some(1),
                "{name}"
            );
        }
    }

    #[test]
    fn user_id_claim_names_are_checked() {
        for ok in ["user_id", "sub", "uid", "A_1", &"x".repeat(64)] {
            assert!(valid_user_id_claim(ok), "{ok}");
        }
        for bad in [
            "",
            "user-id",
            "user id",
            "ü",
            &"x".repeat(65),
            "token_type",
            "exp",
            "iat",
            "jti",
            "sid",
            "iss",
            "aud",
        ] {
            assert!(!valid_user_id_claim(bad), "{bad}");
        }
    }

    #[test]
    fn leeway_tolerates_clock_skew() {
        let lenient = JwtKeys::hs256_with(
            "test-key-0123456789abcdef0123456789abcdef",
            keys().lifetimes(),
            ClaimPolicy {
                leeway_secs: 30,
                ..ClaimPolicy::default()
            },
        );
        let token = issue(&lenient, TokenType::Access, 1);
        assert!(lenient.verify(&token, None, NOW + 1800 + 29).is_ok());
        assert_eq!(
            lenient.verify(&token, None, NOW + 1800 + 30),
            Err(TokenError::Expired)
        );
    }

    fn lifetimes() -> TokenLifetimes {
        keys().lifetimes()
    }

    fn ring(signing: &KeyMaterial, accepted: &[KeyMaterial]) -> JwtKeys {
        JwtKeys::new(signing, accepted, lifetimes(), ClaimPolicy::default()).unwrap()
    }

    fn header(token: &str) -> serde_json::Value {
        let part = token.split('.').next().unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn hmac_token(header: &serde_json::Value, claims: &serde_json::Value, key: &[u8]) -> String {
        use hmac::Mac;
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
    }

    fn access_claims() -> serde_json::Value {
        serde_json::json!({"token_type":"access","exp":NOW+60,"iat":NOW,"jti":"a","user_id":"1"})
    }

    fn asymmetric_keys() -> Vec<(SigningAlgorithm, String)> {
        vec![
            (
                SigningAlgorithm::EdDsa,
                keys::generate(SigningAlgorithm::EdDsa).unwrap(),
            ),
            (
                SigningAlgorithm::Rs256,
                crate::auth::keys::tests::rsa_pem().to_owned(),
            ),
        ]
    }

    #[test]
    fn shared_key_tokens_keep_simplejwts_header() {
        let t = issue(&keys(), TokenType::Access, 1);
        assert_eq!(header(&t), serde_json::json!({"typ":"JWT","alg":"HS256"}));
        assert_eq!(keys().jwks_json(), r#"{"keys":[]}"#);
        assert_eq!(keys().signing_kid(), None);
    }

    #[test]
    fn asymmetric_tokens_carry_alg_and_kid_and_verify() {
        for (alg, pem) in asymmetric_keys() {
            let key = KeyMaterial::signing(alg, &pem).unwrap();
            let k = ring(&key, &[]);
            let t = issue(&k, TokenType::Access, 9);
            let h = header(&t);
            assert_eq!(h["alg"], alg.name());
            assert_eq!(h["kid"], key.kid().unwrap());
            let v = k.verify(&t, Some(TokenType::Access), NOW).unwrap();
            assert_eq!(v.user_id, Some(9));
            // Deterministic signatures: a replayed rotation is byte-identical.
            let c = claims(TokenType::Refresh, 9, Some("s"));
            assert_eq!(k.sign(&c).unwrap(), k.sign(&c).unwrap());
            // The JWKS lists the public key; a verifier built from it alone
            // (what a downstream service does) accepts the token.
            let jwks: JwkSet = serde_json::from_str(k.jwks_json()).unwrap();
            assert_eq!(jwks.keys.len(), 1);
            let jwk = jwks.find(key.kid().unwrap()).unwrap();
            let downstream = DecodingKey::from_jwk(jwk).unwrap();
            let mut validation = Validation::new(alg.jwt_algorithm());
            validation.required_spec_claims = ["exp".to_owned()].into();
            jsonwebtoken::decode::<serde_json::Value>(&t, &downstream, &validation).unwrap();
            // Wrong type and expiry still apply.
            assert_eq!(
                k.verify(&t, Some(TokenType::Refresh), NOW),
                Err(TokenError::WrongType)
            );
            assert_eq!(k.verify(&t, None, NOW + 1800), Err(TokenError::Expired));
        }
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // The classic attack: an HS256 token whose HMAC key is the server's
        // public key (PEM text, DER or raw bytes), with and without the kid.
        for (alg, pem) in asymmetric_keys() {
            let key = KeyMaterial::signing(alg, &pem).unwrap();
            let k = ring(&key, &[]);
            let public = keys::public_pem(&pem).unwrap();
            let jwk = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
            let raw_x = jwk["x"].as_str().map(|x| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(x)
                    .unwrap()
            });
            let mut candidates = vec![
                public.as_bytes().to_vec(),
                public.trim().as_bytes().to_vec(),
            ];
            candidates.extend(raw_x);
            for secret in candidates {
                for kid in [None, key.kid()] {
                    let mut h = serde_json::json!({"alg":"HS256","typ":"JWT"});
                    if let Some(kid) = kid {
                        h["kid"] = kid.into();
                    }
                    let forged = hmac_token(&h, &access_claims(), &secret);
                    assert_eq!(
                        k.verify(&forged, None, NOW),
                        Err(TokenError::Invalid),
                        "{alg:?} kid={kid:?}"
                    );
                }
            }
            // A genuine token with its header's alg swapped is refused too.
            let t = issue(&k, TokenType::Access, 1);
            let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            let mut h = header(&t);
            h["alg"] = "HS256".into();
            parts[0] = b64(h.to_string().as_bytes());
            assert_eq!(
                k.verify(&parts.join("."), None, NOW),
                Err(TokenError::Invalid)
            );
        }
        // And a shared-key ring refuses asymmetric tokens signed by anyone.
        let (alg, pem) = asymmetric_keys().remove(0);
        let other = ring(&KeyMaterial::signing(alg, &pem).unwrap(), &[]);
        let t = issue(&other, TokenType::Access, 1);
        assert_eq!(keys().verify(&t, None, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn alg_none_unknown_kid_and_missing_exp_are_refused() {
        for (alg, pem) in asymmetric_keys() {
            let key = KeyMaterial::signing(alg, &pem).unwrap();
            let k = ring(&key, &[]);
            for h in [
                serde_json::json!({"alg":"none"}),
                serde_json::json!({"alg":"none","kid":key.kid()}),
            ] {
                let none = format!(
                    "{}.{}.",
                    b64(h.to_string().as_bytes()),
                    b64(access_claims().to_string().as_bytes())
                );
                assert_eq!(k.verify(&none, None, NOW), Err(TokenError::Invalid));
            }
            // A genuine signature under an unknown kid.
            let t = issue(&k, TokenType::Access, 1);
            let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            let mut h = header(&t);
            h["kid"] = "someone-elses-key".into();
            parts[0] = b64(h.to_string().as_bytes());
            assert_eq!(
                k.verify(&parts.join("."), None, NOW),
                Err(TokenError::Invalid)
            );
            // Missing exp, properly signed.
            let signer = key.encoding().unwrap();
            let mut hdr = Header::new(alg.jwt_algorithm());
            hdr.kid = key.kid().map(str::to_owned);
            let no_exp = jsonwebtoken::encode(
                &hdr,
                &serde_json::json!({"token_type":"access","jti":"a","user_id":"1"}),
                signer,
            )
            .unwrap();
            assert_eq!(k.verify(&no_exp, None, NOW), Err(TokenError::NoExp));
        }
        // A shared-key token that names a kid tokend does not have.
        let h = serde_json::json!({"alg":"HS256","typ":"JWT","kid":"x"});
        let t = hmac_token(
            &h,
            &access_claims(),
            b"test-key-0123456789abcdef0123456789abcdef",
        );
        assert_eq!(keys().verify(&t, None, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn rotation_accepts_old_keys_until_they_are_removed() {
        for (alg, old_pem) in asymmetric_keys() {
            let old = KeyMaterial::signing(alg, &old_pem).unwrap();
            let new_pem = match alg {
                SigningAlgorithm::Rs256 => keys::generate(SigningAlgorithm::EdDsa).unwrap(),
                _ => keys::generate(alg).unwrap(),
            };
            let new_alg = if alg == SigningAlgorithm::Rs256 {
                SigningAlgorithm::EdDsa
            } else {
                alg
            };
            let new = KeyMaterial::signing(new_alg, &new_pem).unwrap();
            let before = ring(&old, &[]);
            let old_token = issue(&before, TokenType::Refresh, 3);
            // Overlap: new key signs, the old one (public part only) verifies.
            let public_old =
                KeyMaterial::verification(&keys::public_pem(&old_pem).unwrap(), new_alg).unwrap();
            let during = ring(&new, &[public_old]);
            assert!(during.verify(&old_token, None, NOW).is_ok());
            let new_token = issue(&during, TokenType::Refresh, 3);
            assert_eq!(header(&new_token)["kid"], new.kid().unwrap());
            let jwks: JwkSet = serde_json::from_str(during.jwks_json()).unwrap();
            let kids: Vec<_> = jwks
                .keys
                .iter()
                .map(|k| k.common.key_id.clone().unwrap())
                .collect();
            assert_eq!(kids, [new.kid().unwrap(), old.kid().unwrap()]);
            // The old key removed: its tokens are refused, new ones pass.
            let after = ring(&new, &[]);
            assert_eq!(
                after.verify(&old_token, None, NOW),
                Err(TokenError::Invalid)
            );
            assert!(after.verify(&new_token, None, NOW).is_ok());
        }
        // Shared keys rotate the same way, by trying each (no kid).
        let old = keys();
        let t = issue(&old, TokenType::Access, 1);
        let during = ring(
            &KeyMaterial::shared("new-key-0123456789abcdef0123456789abcdef"),
            &[KeyMaterial::verification(
                "test-key-0123456789abcdef0123456789abcdef",
                SigningAlgorithm::Hs256,
            )
            .unwrap()],
        );
        assert!(during.verify(&t, None, NOW).is_ok());
        assert_eq!(during.jwks_json(), r#"{"keys":[]}"#);
        let after = ring(
            &KeyMaterial::shared("new-key-0123456789abcdef0123456789abcdef"),
            &[],
        );
        assert_eq!(after.verify(&t, None, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn a_verification_only_key_cannot_sign() {
        let pem = keys::generate(SigningAlgorithm::EdDsa).unwrap();
        let public =
            KeyMaterial::verification(&keys::public_pem(&pem).unwrap(), SigningAlgorithm::EdDsa)
                .unwrap();
        assert!(JwtKeys::new(&public, &[], lifetimes(), ClaimPolicy::default()).is_err());
    }
}
