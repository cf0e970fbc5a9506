//! TEST-ONLY keys and tokens for the auth filter's tests.
//!
//! Every key is generated here from a fixed seed, so tokens (and the
//! conformance suite generated from them) are reproducible. None of these keys
//! protects anything: they exist only for tests.

#![allow(dead_code, unreachable_pub, reason = "each test file uses a part")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test support")]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

macro_rules! hmac_with {
    ($digest:ty, $secret:expr, $input:expr) => {{
        use hmac::Mac;
        let mut mac = hmac::Hmac::<$digest>::new_from_slice($secret).unwrap();
        mac.update($input);
        mac.finalize().into_bytes().to_vec()
    }};
}

/// Far in the future: 2100-01-01T00:00:00Z.
pub const FAR_FUTURE: u64 = 4_102_444_800;
/// Long past: 2021-01-01T00:00:00Z.
pub const LONG_AGO: u64 = 1_609_459_200;
/// The harness's virtual clock starts here (2026-01-01T00:00:00Z).
pub const HARNESS_START: u64 = 1_767_225_600;

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "api";

/// TEST-ONLY signing keys.
pub struct TestKeys {
    /// A 64-byte HMAC secret (kid `hs`): HS256, HS384 and HS512.
    pub hmac: Vec<u8>,
    /// RSA 2048 (kid `rsa-1`).
    pub rsa1: rsa::RsaPrivateKey,
    /// RSA 2048 (kid `rsa-2`), for rotation.
    pub rsa2: rsa::RsaPrivateKey,
    /// P-256 (kid `ec-256`).
    pub p256: p256::ecdsa::SigningKey,
    /// P-384 (kid `ec-384`).
    pub p384: p384::ecdsa::SigningKey,
    /// Ed25519 (kid `ed`).
    pub ed: ed25519_dalek::SigningKey,
}

/// The TEST-ONLY keys, generated once per process from a fixed seed.
pub fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(0x7e57_0a17);
        let mut hmac = vec![0u8; 64];
        rng.fill_bytes(&mut hmac);
        let rsa1 = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA keygen");
        let rsa2 = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA keygen");
        let p256 = p256::ecdsa::SigningKey::random(&mut rng);
        let p384 = p384::ecdsa::SigningKey::random(&mut rng);
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let ed = ed25519_dalek::SigningKey::from_bytes(&seed);
        TestKeys {
            hmac,
            rsa1,
            rsa2,
            p256,
            p384,
            ed,
        }
    })
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_jwk(kid: &str, key: &rsa::RsaPrivateKey) -> Value {
    let public = key.to_public_key();
    json!({"kty": "RSA", "kid": kid, "use": "sig",
           "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())})
}

impl TestKeys {
    /// The public JWK (the secret for `hs`) of `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        match kid {
            "hs" => json!({"kty": "oct", "kid": "hs", "k": b64(&self.hmac)}),
            "rsa-1" => rsa_jwk(kid, &self.rsa1),
            "rsa-2" => rsa_jwk(kid, &self.rsa2),
            "ec-256" => {
                let p = self.p256.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "kid": kid, "crv": "P-256",
                       "x": b64(p.x().unwrap()), "y": b64(p.y().unwrap())})
            }
            "ec-384" => {
                let p = self.p384.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "kid": kid, "crv": "P-384",
                       "x": b64(p.x().unwrap()), "y": b64(p.y().unwrap())})
            }
            "ed" => json!({"kty": "OKP", "kid": kid, "crv": "Ed25519",
                           "x": b64(self.ed.verifying_key().as_bytes())}),
            other => panic!("no test key {other}"),
        }
    }

    /// A JWK Set of `kids`.
    pub fn jwks(&self, kids: &[&str]) -> Value {
        json!({"keys": kids.iter().map(|k| self.jwk(k)).collect::<Vec<_>>()})
    }

    /// The signature of `input` with `alg` by the key `kid`.
    pub fn signature(&self, alg: &str, kid: &str, input: &[u8]) -> Vec<u8> {
        use rsa::signature::{SignatureEncoding, Signer};
        match (alg, kid) {
            ("HS256", _) => hmac_with!(sha2::Sha256, &self.hmac, input),
            ("HS384", _) => hmac_with!(sha2::Sha384, &self.hmac, input),
            ("HS512", _) => hmac_with!(sha2::Sha512, &self.hmac, input),
            ("RS256" | "RS384" | "RS512", _) => {
                let key = if kid == "rsa-2" {
                    &self.rsa2
                } else {
                    &self.rsa1
                };
                match alg {
                    "RS256" => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone())
                        .sign(input)
                        .to_vec(),
                    "RS384" => rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(key.clone())
                        .sign(input)
                        .to_vec(),
                    _ => rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(key.clone())
                        .sign(input)
                        .to_vec(),
                }
            }
            ("ES256", _) => {
                let sig: p256::ecdsa::Signature = self.p256.sign(input);
                sig.to_bytes().to_vec()
            }
            ("ES384", _) => {
                let sig: p384::ecdsa::Signature = self.p384.sign(input);
                sig.to_bytes().to_vec()
            }
            ("EdDSA", _) => {
                use ed25519_dalek::Signer as _;
                self.ed.sign(input).to_bytes().to_vec()
            }
            (other, _) => panic!("cannot sign {other}"),
        }
    }

    /// A token with this header and claims, signed as its `alg` and `kid` say.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let alg = header["alg"].as_str().unwrap_or("HS256");
        let kid = header["kid"].as_str().unwrap_or("");
        let sig = self.signature(alg, kid, input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// A token signed with `alg` by `kid` (which is in the header).
    pub fn token(&self, alg: &str, kid: &str, claims: &Value) -> String {
        self.token_with_header(&json!({"alg": alg, "typ": "JWT", "kid": kid}), claims)
    }
}

/// HS256 over `input` with an arbitrary secret (for forged tokens).
pub fn hs256_with_secret(secret: &[u8], input: &str) -> String {
    format!(
        "{input}.{}",
        b64(&hmac_with!(sha2::Sha256, secret, input.as_bytes()))
    )
}

/// The usual claims: issuer, audience, subject `alice`, scope `read`, far expiry.
pub fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "read",
           "exp": FAR_FUTURE, "iat": LONG_AGO})
}

/// `claims()` with `changes` merged in (null removes a claim).
pub fn claims_with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// The SHA-256 hex of an API key.
pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every key id of the test keys.
pub const ALL_KIDS: &[&str] = &["hs", "rsa-1", "rsa-2", "ec-256", "ec-384", "ed"];

/// The configuration most tests use: every key inline except `rsa-2`, API keys
/// `ci-key` (scopes read, admin) and `ro-key` (read), rules for `/public`
/// (allow), `/internal` (deny), `/admin` (require scope `admin`).
pub fn inline_config() -> Value {
    json!({
        "realm": "weir-test",
        "jwt": {
            "issuers": [ISSUER],
            "audiences": [AUDIENCE],
            "jwks": keys().jwks(&["hs", "rsa-1", "ec-256", "ec-384", "ed"]),
            "claims_to_headers": [
                {"claim": "sub", "header": "x-jwt-sub"},
                {"claim": "scope", "header": "x-jwt-scope"}
            ],
            "from": [
                {"header": "authorization", "prefix": "Bearer "},
                {"cookie": "session"},
                {"query": "access_token"}
            ],
            "max_token_bytes": 4096
        },
        "api_keys": {
            "from": [{"header": "x-api-key"}, {"query": "api_key"}],
            "keys": [
                {"name": "ci", "sha256": sha256_hex("ci-key-0123456789"), "scopes": ["read", "admin"]},
                {"name": "ro", "sha256": sha256_hex("ro-key-0123456789"), "scopes": ["read"]}
            ],
            "name_header": "x-api-key-name"
        },
        "rules": [
            {"prefix": "/public", "action": "allow"},
            {"prefix": "/internal", "action": "deny"},
            {"prefix": "/admin", "action": "require", "scopes": ["admin"]}
        ]
    })
}
