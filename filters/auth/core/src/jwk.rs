//! JSON Web Keys (RFC 7517, 7518, 8037) as verification keys.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::config::Algorithm;

/// The most keys a set may hold.
pub(crate) const MAX_KEYS: usize = 64;

/// A verification key.
pub(crate) struct Key {
    /// `kid`, if the key has one.
    pub(crate) kid: Option<String>,
    /// `alg`, if the key is restricted to one algorithm.
    pub(crate) alg: Option<Algorithm>,
    pub(crate) material: Material,
}

/// The key itself; which variant decides which algorithms it can verify.
pub(crate) enum Material {
    /// An HMAC secret (`oct`).
    #[cfg(feature = "hmac")]
    Hmac(Vec<u8>),
    /// An RSA public key of 2048 to 4096 bits.
    #[cfg(feature = "rsa")]
    Rsa(rsa::RsaPublicKey),
    /// A P-256 public key.
    #[cfg(feature = "ecdsa")]
    P256(p256::ecdsa::VerifyingKey),
    /// A P-384 public key.
    #[cfg(feature = "ecdsa")]
    P384(p384::ecdsa::VerifyingKey),
    /// An Ed25519 public key.
    #[cfg(feature = "eddsa")]
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material (HMAC secrets).
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg.map(Algorithm::name))
            .field("kty", &self.kty())
            .finish()
    }
}

impl Key {
    /// The key type, e.g. `RSA`.
    pub(crate) fn kty(&self) -> &'static str {
        match self.material {
            #[cfg(feature = "hmac")]
            Material::Hmac(_) => "oct",
            #[cfg(feature = "rsa")]
            Material::Rsa(_) => "RSA",
            #[cfg(feature = "ecdsa")]
            Material::P256(_) | Material::P384(_) => "EC",
            #[cfg(feature = "eddsa")]
            Material::Ed25519(_) => "OKP",
        }
    }

    /// Whether this key verifies `alg`: its type must be the algorithm's (an RSA
    /// key never serves as an HMAC secret), its `alg`, if any, must be `alg`, and
    /// an HMAC secret must be at least as long as the hash.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match (&self.material, alg) {
            #[cfg(feature = "hmac")]
            (Material::Hmac(k), Algorithm::HS256) => k.len() >= 32,
            #[cfg(feature = "hmac")]
            (Material::Hmac(k), Algorithm::HS384) => k.len() >= 48,
            #[cfg(feature = "hmac")]
            (Material::Hmac(k), Algorithm::HS512) => k.len() >= 64,
            #[cfg(feature = "rsa")]
            (Material::Rsa(_), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512) => true,
            #[cfg(feature = "ecdsa")]
            (Material::P256(_), Algorithm::ES256) => true,
            #[cfg(feature = "ecdsa")]
            (Material::P384(_), Algorithm::ES384) => true,
            #[cfg(feature = "eddsa")]
            (Material::Ed25519(_), Algorithm::EdDSA) => true,
            _ => false,
        }
    }
}

/// How unusable keys in a set are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// Inline configuration: any problem rejects the set.
    Config,
    /// A fetched set: keys this filter cannot use (encryption keys, other curves,
    /// malformed members) are skipped; the set needs one usable key.
    Remote,
}

/// Parses a JWK Set document.
///
/// # Errors
/// A message naming the key (index and `kid`) and the problem.
pub(crate) fn parse_set(value: &Value, strictness: Strictness) -> Result<Vec<Key>, String> {
    let Some(keys) = value.get("keys").and_then(Value::as_array) else {
        return Err("a JWK Set is an object with a `keys` array".to_owned());
    };
    if keys.len() > MAX_KEYS {
        return Err(format!(
            "{} keys: at most {MAX_KEYS} are accepted",
            keys.len()
        ));
    }
    let mut out = Vec::with_capacity(keys.len());
    let mut skipped = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let name = describe(i, key);
        let parsed = key
            .as_object()
            .ok_or_else(|| "not an object".to_owned())
            .and_then(parse_key);
        match parsed {
            Ok(k) => {
                if strictness == Strictness::Config
                    && let Some(kid) = &k.kid
                    && out.iter().any(|o: &Key| o.kid.as_ref() == Some(kid))
                {
                    return Err(format!("{name}: the `kid` is used by an earlier key"));
                }
                out.push(k);
            }
            Err(e) if strictness == Strictness::Config => return Err(format!("{name}: {e}")),
            Err(e) => skipped.push(format!("{name}: {e}")),
        }
    }
    if !skipped.is_empty() {
        log::debug!("JWK Set: skipped {}", skipped.join("; "));
    }
    if strictness == Strictness::Remote && out.is_empty() {
        return Err(if skipped.is_empty() {
            "the key set is empty".to_owned()
        } else {
            format!("no usable key ({})", skipped.join("; "))
        });
    }
    Ok(out)
}

fn describe(i: usize, key: &Value) -> String {
    match key.get("kid").and_then(Value::as_str) {
        Some(kid) => format!("key {i} (kid {kid:?})"),
        None => format!("key {i}"),
    }
}

fn string<'a>(jwk: &'a Map<String, Value>, member: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{member}` must be a string")),
    }
}

fn required<'a>(jwk: &'a Map<String, Value>, member: &str) -> Result<&'a str, String> {
    string(jwk, member)?.ok_or_else(|| format!("`{member}` is missing"))
}

/// Decodes a base64url member (no padding).
fn bytes(jwk: &Map<String, Value>, member: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(required(jwk, member)?)
        .map_err(|_| format!("`{member}` is not base64url without padding"))
}

/// Parses one JWK.
///
/// # Errors
/// A message naming the problem.
pub(crate) fn parse_key(jwk: &Map<String, Value>) -> Result<Key, String> {
    let kty = required(jwk, "kty")?;
    if let Some(usage) = string(jwk, "use")?
        && usage != "sig"
    {
        return Err(format!("`use` is {usage:?}, not \"sig\""));
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("`key_ops` does not include \"verify\"".to_owned());
        }
    }
    let kid = string(jwk, "kid")?.map(str::to_owned);
    let alg = match string(jwk, "alg")? {
        None => None,
        Some(name) => Some(Algorithm::parse_configured(name)?),
    };
    if kty != "oct"
        && ["d", "p", "q", "dp", "dq", "qi"]
            .iter()
            .any(|m| jwk.contains_key(*m))
    {
        return Err("a private key: give only the public members".to_owned());
    }
    let material = material(kty, jwk)?;
    let key = Key { kid, alg, material };
    if let Some(alg) = alg
        && !key.fits(alg)
    {
        return Err(format!(
            "`alg` {} does not fit a key of type {kty}{}",
            alg.name(),
            if kty == "oct" {
                " of this length (HS256 needs 32 bytes, HS384 48, HS512 64)"
            } else {
                ""
            }
        ));
    }
    Ok(key)
}

#[cfg(not(all(
    feature = "hmac",
    feature = "rsa",
    feature = "ecdsa",
    feature = "eddsa"
)))]
fn not_built(kty: &str, feature: &str) -> String {
    format!("`{kty}` keys are not built into this module (cargo feature `{feature}`)")
}

fn material(kty: &str, jwk: &Map<String, Value>) -> Result<Material, String> {
    match kty {
        "oct" => oct(jwk),
        "RSA" => rsa_key(jwk),
        "EC" => ec(jwk),
        "OKP" => okp(jwk),
        other => Err(format!(
            "unsupported key type {other:?}: expected oct, RSA, EC or OKP"
        )),
    }
}

#[cfg(feature = "hmac")]
fn oct(jwk: &Map<String, Value>) -> Result<Material, String> {
    let k = bytes(jwk, "k")?;
    if k.len() < 32 {
        return Err(format!(
            "an HMAC secret of {} bytes: at least 32 are needed",
            k.len()
        ));
    }
    Ok(Material::Hmac(k))
}

#[cfg(not(feature = "hmac"))]
fn oct(_: &Map<String, Value>) -> Result<Material, String> {
    Err(not_built("oct", "hmac"))
}

#[cfg(feature = "rsa")]
fn rsa_key(jwk: &Map<String, Value>) -> Result<Material, String> {
    let n = bytes(jwk, "n")?;
    let e = bytes(jwk, "e")?;
    let n = rsa::BigUint::from_bytes_be(&n);
    let bits = n.bits();
    if bits < 2048 {
        return Err(format!(
            "an RSA modulus of {bits} bits: at least 2048 are needed"
        ));
    }
    rsa::RsaPublicKey::new(n, rsa::BigUint::from_bytes_be(&e))
        .map(Material::Rsa)
        .map_err(|e| format!("not a valid RSA public key: {e}"))
}

#[cfg(not(feature = "rsa"))]
fn rsa_key(_: &Map<String, Value>) -> Result<Material, String> {
    Err(not_built("RSA", "rsa"))
}

#[cfg(feature = "ecdsa")]
fn ec(jwk: &Map<String, Value>) -> Result<Material, String> {
    let crv = required(jwk, "crv")?;
    let x = bytes(jwk, "x")?;
    let y = bytes(jwk, "y")?;
    let point = |size: usize| -> Result<Vec<u8>, String> {
        if x.len() != size || y.len() != size {
            return Err(format!("`x` and `y` of a {crv} key are {size} bytes each"));
        }
        let mut sec1 = Vec::with_capacity(1 + 2 * size);
        sec1.push(4);
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        Ok(sec1)
    };
    match crv {
        "P-256" => p256::ecdsa::VerifyingKey::from_sec1_bytes(&point(32)?)
            .map(Material::P256)
            .map_err(|_| "the point is not on P-256".to_owned()),
        "P-384" => p384::ecdsa::VerifyingKey::from_sec1_bytes(&point(48)?)
            .map(Material::P384)
            .map_err(|_| "the point is not on P-384".to_owned()),
        other => Err(format!(
            "unsupported curve {other:?}: expected P-256 or P-384"
        )),
    }
}

#[cfg(not(feature = "ecdsa"))]
fn ec(_: &Map<String, Value>) -> Result<Material, String> {
    Err(not_built("EC", "ecdsa"))
}

#[cfg(feature = "eddsa")]
fn okp(jwk: &Map<String, Value>) -> Result<Material, String> {
    let crv = required(jwk, "crv")?;
    if crv != "Ed25519" {
        return Err(format!("unsupported curve {crv:?}: expected Ed25519"));
    }
    let x: [u8; 32] = bytes(jwk, "x")?
        .try_into()
        .map_err(|_| "`x` of an Ed25519 key is 32 bytes".to_owned())?;
    ed25519_dalek::VerifyingKey::from_bytes(&x)
        .map(Material::Ed25519)
        .map_err(|_| "`x` is not an Ed25519 point".to_owned())
}

#[cfg(not(feature = "eddsa"))]
fn okp(_: &Map<String, Value>) -> Result<Material, String> {
    Err(not_built("OKP", "eddsa"))
}
