//! JWS compact tokens (RFC 7515, 7519): structure, key selection, signature,
//! claims. Nothing here calls the host, so it runs natively in tests and fuzzing.
//!
//! The order is fixed so that an attacker learns as little as possible: the
//! structure and header are checked, a key is chosen by `kid` and algorithm, the
//! signature is verified over the header and payload as sent, and only then is
//! the payload parsed and its claims checked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{Algorithm, Jwt};
use crate::jwk::{Key, Material};
use crate::reason::Reason;

/// A token whose structure and header are valid; not verified yet.
#[derive(Debug)]
pub(crate) struct Token<'a> {
    /// `header.payload`: what the signature covers.
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// The `alg` header.
    pub(crate) alg: Algorithm,
    /// The `kid` header.
    pub(crate) kid: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Critical extensions (RFC 7515 §4.1.11): none is understood, so a token
    /// that lists any is refused.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

fn b64(segment: &str) -> Result<Vec<u8>, Reason> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Reason::Malformed)
}

/// Parses the structure and header of a compact JWS.
///
/// # Errors
/// [`Reason::Malformed`] for anything but three base64url segments with a JSON
/// header naming a known algorithm; [`Reason::BadAlgorithm`] for `none` and
/// algorithms outside `allowed`.
pub(crate) fn parse<'a>(text: &'a [u8], allowed: &[Algorithm]) -> Result<Token<'a>, Reason> {
    if !text
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(Reason::Malformed);
    }
    // All ASCII, so this cannot fail.
    let text = std::str::from_utf8(text).map_err(|_| Reason::Malformed)?;
    let mut parts = text.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::Malformed);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(Reason::Malformed);
    }
    let header_json = b64(header)?;
    let parsed: Header = serde_json::from_slice(&header_json).map_err(|_| Reason::Malformed)?;
    if parsed.crit.is_some() {
        return Err(Reason::Malformed);
    }
    let Some(alg) = Algorithm::from_name(&parsed.alg) else {
        // `none`, `None`, unknown and unsupported algorithms alike.
        return Err(Reason::BadAlgorithm);
    };
    if !allowed.contains(&alg) || !alg.built_in() {
        return Err(Reason::BadAlgorithm);
    }
    Ok(Token {
        signing_input: &text[..header.len() + 1 + payload.len()],
        payload,
        signature,
        alg,
        kid: parsed.kid,
    })
}

/// Chooses the key for `token` from `sets` (inline keys first).
///
/// With a `kid`, the key with that `kid`: [`Reason::UnknownKey`] if there is
/// none, [`Reason::BadAlgorithm`] if it cannot verify the token's algorithm
/// (an RSA key offered as an HMAC secret, say). Without a `kid`, the only key
/// that fits the algorithm: [`Reason::UnknownKey`] if none or several do.
///
/// # Errors
/// As above.
pub(crate) fn select_key<'k>(token: &Token<'_>, sets: &[&'k [Key]]) -> Result<&'k Key, Reason> {
    let mut keys = sets.iter().flat_map(|s| s.iter());
    match &token.kid {
        Some(kid) => {
            let key = keys
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or(Reason::UnknownKey)?;
            if key.fits(token.alg) {
                Ok(key)
            } else {
                Err(Reason::BadAlgorithm)
            }
        }
        None => {
            let mut fitting = keys.filter(|k| k.fits(token.alg));
            match (fitting.next(), fitting.next()) {
                (Some(key), None) => Ok(key),
                _ => Err(Reason::UnknownKey),
            }
        }
    }
}

/// Verifies the signature of `token` with `key` (which [`Key::fits`] its
/// algorithm).
///
/// # Errors
/// [`Reason::BadSignature`] whatever went wrong (encoding, length, mismatch).
pub(crate) fn verify_signature(token: &Token<'_>, key: &Key) -> Result<(), Reason> {
    let signature = b64(token.signature).map_err(|_| Reason::BadSignature)?;
    let input = token.signing_input.as_bytes();
    let ok = match (&key.material, token.alg) {
        #[cfg(feature = "hmac")]
        (Material::Hmac(secret), alg) => hmac_ok(alg, secret, input, &signature),
        #[cfg(feature = "rsa")]
        (Material::Rsa(key), Algorithm::RS256) => rsa_ok::<sha2::Sha256>(key, input, &signature),
        #[cfg(feature = "rsa")]
        (Material::Rsa(key), Algorithm::RS384) => rsa_ok::<sha2::Sha384>(key, input, &signature),
        #[cfg(feature = "rsa")]
        (Material::Rsa(key), Algorithm::RS512) => rsa_ok::<sha2::Sha512>(key, input, &signature),
        #[cfg(feature = "ecdsa")]
        (Material::P256(key), Algorithm::ES256) => {
            use p256::ecdsa::signature::Verifier;
            p256::ecdsa::Signature::from_slice(&signature)
                .is_ok_and(|sig| key.verify(input, &sig).is_ok())
        }
        #[cfg(feature = "ecdsa")]
        (Material::P384(key), Algorithm::ES384) => {
            use p384::ecdsa::signature::Verifier;
            p384::ecdsa::Signature::from_slice(&signature)
                .is_ok_and(|sig| key.verify(input, &sig).is_ok())
        }
        #[cfg(feature = "eddsa")]
        (Material::Ed25519(key), Algorithm::EdDSA) => {
            ed25519_dalek::Signature::from_slice(&signature)
                .is_ok_and(|sig| key.verify_strict(input, &sig).is_ok())
        }
        // `select_key` only returns keys that fit; refuse anything else.
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Reason::BadSignature)
    }
}

#[cfg(feature = "hmac")]
fn hmac_ok(alg: Algorithm, secret: &[u8], input: &[u8], signature: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    // `verify_slice` compares in constant time.
    macro_rules! check {
        ($digest:ty) => {
            match Hmac::<$digest>::new_from_slice(secret) {
                Ok(mut mac) => {
                    mac.update(input);
                    mac.verify_slice(signature).is_ok()
                }
                Err(_) => false,
            }
        };
    }
    match alg {
        Algorithm::HS256 => check!(sha2::Sha256),
        Algorithm::HS384 => check!(sha2::Sha384),
        Algorithm::HS512 => check!(sha2::Sha512),
        _ => false,
    }
}

#[cfg(feature = "rsa")]
fn rsa_ok<D>(key: &rsa::RsaPublicKey, input: &[u8], signature: &[u8]) -> bool
where
    D: sha2::Digest + sha2::digest::const_oid::AssociatedOid,
{
    let hashed = D::digest(input);
    key.verify(rsa::Pkcs1v15Sign::new::<D>(), &hashed, signature)
        .is_ok()
}

/// The verified token's claims.
#[derive(Debug, Clone)]
pub(crate) struct Claims(pub(crate) Map<String, Value>);

/// Parses the payload of a token whose signature was verified.
///
/// # Errors
/// [`Reason::Malformed`] unless it is a JSON object.
pub(crate) fn claims(token: &Token<'_>) -> Result<Claims, Reason> {
    let json = b64(token.payload)?;
    serde_json::from_slice::<Map<String, Value>>(&json)
        .map(Claims)
        .map_err(|_| Reason::Malformed)
}

fn numeric_date(claims: &Claims, name: &str) -> Result<Option<f64>, Reason> {
    match claims.0.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(Reason::InvalidClaims),
    }
}

/// Checks the registered and required claims at `now` (Unix seconds).
///
/// # Errors
/// The first failed check, in the order `exp`, `nbf`, `iss`, `aud`, required
/// claims.
pub(crate) fn check_claims(claims: &Claims, config: &Jwt, now: f64) -> Result<(), Reason> {
    let skew = f64::from(config.clock_skew_seconds);
    match numeric_date(claims, "exp")? {
        Some(exp) if now >= exp + skew => return Err(Reason::Expired),
        None if config.require_exp => return Err(Reason::MissingClaim),
        _ => {}
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now + skew < nbf
    {
        return Err(Reason::NotYetValid);
    }
    if !config.issuers.is_empty() {
        let iss = claims.0.get("iss").and_then(Value::as_str);
        if !iss.is_some_and(|iss| config.issuers.iter().any(|i| i == iss)) {
            return Err(Reason::BadIssuer);
        }
    }
    if !config.audiences.is_empty() {
        let accepted = |aud: &str| config.audiences.iter().any(|a| a == aud);
        let ok = match claims.0.get("aud") {
            Some(Value::String(aud)) => accepted(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
            _ => false,
        };
        if !ok {
            return Err(Reason::BadAudience);
        }
    }
    if config
        .required_claims
        .iter()
        .any(|name| claims.0.get(name).is_none_or(Value::is_null))
    {
        return Err(Reason::MissingClaim);
    }
    Ok(())
}

impl Claims {
    /// The token's scopes: the space-separated `scope` claim, or `scp` (an array
    /// or a space-separated string).
    pub(crate) fn scopes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for name in ["scope", "scp"] {
            match self.0.get(name) {
                Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
                Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
        out
    }

    /// A claim as a header value: strings as they are, other values as compact
    /// JSON; `None` if absent, null, or not a valid header value (CR, LF, NUL or
    /// other control characters).
    pub(crate) fn header_value(&self, name: &str) -> Option<String> {
        let text = match self.0.get(name)? {
            Value::Null => return None,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let valid = text.chars().all(|c| c == '\t' || !c.is_control());
        valid.then_some(text)
    }
}

/// Verifies `text` against `sets`: structure, key, signature; returns the
/// claims, not checked yet.
///
/// # Errors
/// Why the token is refused.
pub(crate) fn verify(text: &[u8], config: &Jwt, sets: &[&[Key]]) -> Result<Claims, Reason> {
    let token = parse(text, &config.algorithms)?;
    let key = select_key(&token, sets)?;
    verify_signature(&token, key)?;
    claims(&token)
}

/// Validates `text` completely against `sets` at `now`: the pure part of the
/// filter's JWT check.
///
/// # Errors
/// Why the token is refused.
pub(crate) fn validate(
    text: &[u8],
    config: &Jwt,
    sets: &[&[Key]],
    now: f64,
) -> Result<Claims, Reason> {
    let claims = verify(text, config, sets)?;
    check_claims(&claims, config, now)?;
    Ok(claims)
}

/// Tokens whose signature this VM verified, by SHA-256 of the token, with the
/// remote key-set version they were verified against: a token seen again skips
/// the signature (the costly part) but not the claims checks, which depend on
/// the time. Bounded; the oldest entry goes first. A new key-set version
/// empties it, so a key removed from the set stops verifying at once.
#[derive(Debug, Default)]
pub(crate) struct VerifiedCache {
    version: u64,
    entries: std::collections::BTreeMap<[u8; 32], Rc<Claims>>,
    order: std::collections::VecDeque<[u8; 32]>,
}

use std::rc::Rc;

/// How many verified tokens a VM remembers.
pub(crate) const VERIFIED_CACHE_SIZE: usize = 256;

impl VerifiedCache {
    /// The claims of a token verified against key-set `version`.
    pub(crate) fn get(&mut self, digest: &[u8; 32], version: u64) -> Option<Rc<Claims>> {
        if version != self.version {
            self.entries.clear();
            self.order.clear();
            self.version = version;
            return None;
        }
        self.entries.get(digest).cloned()
    }

    /// Remembers a verified token.
    pub(crate) fn insert(&mut self, digest: [u8; 32], version: u64, claims: Rc<Claims>) {
        if version != self.version {
            self.entries.clear();
            self.order.clear();
            self.version = version;
        }
        if self.entries.insert(digest, claims).is_none() {
            self.order.push_back(digest);
        }
        while self.order.len() > VERIFIED_CACHE_SIZE {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}
