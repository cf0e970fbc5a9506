//! `sign` and `verify_signature` as Envoy 1.40 runs them (its crypto utility
//! over BoringSSL's `EVP_DigestSign`/`EVP_DigestVerify`): hash functions
//! `sha1`, `sha224`, `sha256`, `sha384`, `sha512` (any case); keys as DER
//! (PKCS#8 private, SubjectPublicKeyInfo public) or PEM (`PRIVATE KEY`,
//! `RSA PRIVATE KEY`, `EC PRIVATE KEY`; `PUBLIC KEY`); RSA keys sign with
//! PKCS#1 v1.5, EC keys on P-224, P-256, P-384 and P-521 with ECDSA (DER
//! signatures; the digest truncated to the curve order as BoringSSL does).
//! Envoy's error texts are reproduced: a key that does not parse, an Ed25519
//! or X25519 key (BoringSSL parses them but cannot use them with a digest),
//! a bad signature.
//!
//! Not emulated (answered `Unimplemented` with a warning): DSA keys and RSA
//! private keys over 4096 bits, which BoringSSL takes and the RustCrypto
//! crates used here do not. ECDSA signatures here use RFC 6979 nonces, where
//! BoringSSL's are random: both verify, neither is reproducible bit for bit
//! across the two.

use pkcs8::der::asn1::{AnyRef, ObjectIdentifier};
use pkcs8::der::{Decode, SliceReader};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::Digest;

use super::Status;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
const P224: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.33");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Envoy's `getHashFunction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn named(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(Hash::Sha1),
            "sha224" => Some(Hash::Sha224),
            "sha256" => Some(Hash::Sha256),
            "sha384" => Some(Hash::Sha384),
            "sha512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn digest(self, text: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => sha1::Sha1::digest(text).to_vec(),
            Hash::Sha224 => sha2::Sha224::digest(text).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(text).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(text).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(text).to_vec(),
        }
    }

    /// PKCS#1 v1.5 padding with this hash's DigestInfo.
    fn pkcs1v15(self) -> Pkcs1v15Sign {
        match self {
            Hash::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
            Hash::Sha224 => Pkcs1v15Sign::new::<sha2::Sha224>(),
            Hash::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
            Hash::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
            Hash::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
        }
    }
}

/// ECDSA on one of the curves BoringSSL knows.
macro_rules! curve {
    ($name:ident, $krate:ident, $curve:ident, $order_bytes:expr, $signing:ty) => {
        mod $name {
            use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};

            pub(super) type SigningKey = $signing;
            pub(super) type VerifyingKey = ecdsa::VerifyingKey<$krate::$curve>;
            type Signature = ecdsa::Signature<$krate::$curve>;

            /// The digest as BoringSSL's `digest_to_scalar` reads it: its
            /// leftmost order-length bytes, as a field-sized big-endian integer.
            fn prehash(digest: &[u8]) -> Vec<u8> {
                let field = <$krate::FieldBytes>::default().len();
                let digest = &digest[..digest.len().min($order_bytes)];
                let mut out = vec![0; field.saturating_sub(digest.len())];
                out.extend_from_slice(digest);
                out
            }

            pub(super) fn signing_key(sec1: &[u8]) -> Option<SigningKey> {
                let secret = $krate::SecretKey::from_sec1_der(sec1).ok()?;
                Some(SigningKey::from(ecdsa::SigningKey::from(secret)))
            }

            pub(super) fn verifying_key(point: &[u8]) -> Option<VerifyingKey> {
                VerifyingKey::from_sec1_bytes(point).ok()
            }

            pub(super) fn sign(key: &SigningKey, digest: &[u8]) -> Option<Vec<u8>> {
                let signature: Signature = key.sign_prehash(&prehash(digest)).ok()?;
                Some(signature.to_der().as_bytes().to_vec())
            }

            pub(super) fn verify(key: &VerifyingKey, digest: &[u8], signature: &[u8]) -> bool {
                Signature::from_der(signature)
                    .is_ok_and(|s| key.verify_prehash(&prehash(digest), &s).is_ok())
            }
        }
    };
}

curve!(
    ec_p224,
    p224,
    NistP224,
    28,
    ecdsa::SigningKey<p224::NistP224>
);
curve!(
    ec_p256,
    p256,
    NistP256,
    32,
    ecdsa::SigningKey<p256::NistP256>
);
curve!(
    ec_p384,
    p384,
    NistP384,
    48,
    ecdsa::SigningKey<p384::NistP384>
);
// The P-521 order is 521 bits: no digest is longer. Its signing key draws a
// random nonce (as BoringSSL does for every curve).
curve!(ec_p521, p521, NistP521, 66, p521::ecdsa::SigningKey);

/// A private key BoringSSL parsed.
pub(crate) enum PrivateKey {
    Rsa(Box<RsaPrivateKey>),
    P224(ec_p224::SigningKey),
    P256(ec_p256::SigningKey),
    P384(ec_p384::SigningKey),
    P521(ec_p521::SigningKey),
    /// Ed25519 or X25519: parsed, but `EVP_DigestSignInit` with a digest fails.
    NoDigestSigning,
}

/// A public key BoringSSL parsed.
pub(crate) enum PublicKey {
    Rsa(RsaPublicKey),
    P224(ec_p224::VerifyingKey),
    P256(ec_p256::VerifyingKey),
    P384(ec_p384::VerifyingKey),
    P521(ec_p521::VerifyingKey),
    /// Ed25519 or X25519: parsed, but `EVP_DigestVerifyInit` with a digest fails.
    NoDigestVerifying,
}

/// A key the harness does not model.
fn not_emulated(what: &str) -> Status {
    tracing::warn!(
        target: "weir_harness::hostcall",
        key = what,
        "this key is not emulated by weir-harness's sign/verify_signature; answering Unimplemented"
    );
    Status::Unimplemented
}

/// `Ok(None)`: BoringSSL would not parse it (Envoy's null key).
type Parsed<K> = Result<Option<K>, Status>;

/// An AlgorithmIdentifier's NULL parameters (required for RSA).
fn null_params(params: Option<AnyRef<'_>>) -> bool {
    params.is_some_and(|p| p.is_null())
}

/// The named curve of an EC AlgorithmIdentifier.
fn curve_of(params: Option<AnyRef<'_>>) -> Option<ObjectIdentifier> {
    params.and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
}

/// Ed25519/X25519 key bytes: 32 of them.
fn is_25519_private(key: &[u8]) -> bool {
    pkcs8::der::asn1::OctetStringRef::from_der(key).is_ok_and(|k| k.as_bytes().len() == 32)
}

/// An RSA private key in PKCS#1 DER.
fn rsa_private(der: &[u8]) -> Parsed<PrivateKey> {
    let Ok(parts) = rsa::pkcs1::RsaPrivateKey::from_der(der) else {
        return Ok(None);
    };
    if parts.modulus.as_bytes().len() > 512 {
        return Err(not_emulated("an RSA private key over 4096 bits"));
    }
    Ok(RsaPrivateKey::from_pkcs1_der(der)
        .ok()
        .map(|k| PrivateKey::Rsa(Box::new(k))))
}

/// An EC private key in SEC1 DER on `curve`.
fn ec_private(curve: ObjectIdentifier, sec1: &[u8]) -> Option<PrivateKey> {
    match curve {
        P224 => ec_p224::signing_key(sec1).map(PrivateKey::P224),
        P256 => ec_p256::signing_key(sec1).map(PrivateKey::P256),
        P384 => ec_p384::signing_key(sec1).map(PrivateKey::P384),
        P521 => ec_p521::signing_key(sec1).map(PrivateKey::P521),
        _ => None,
    }
}

/// `EVP_parse_private_key`: PKCS#8 `PrivateKeyInfo` DER (the first element;
/// anything after it is ignored).
pub(crate) fn private_der(der: &[u8]) -> Parsed<PrivateKey> {
    let mut reader = match SliceReader::new(der) {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    let Ok(info) = pkcs8::PrivateKeyInfo::decode(&mut reader) else {
        return Ok(None);
    };
    let algorithm = info.algorithm;
    match algorithm.oid {
        RSA_ENCRYPTION if null_params(algorithm.parameters) => rsa_private(info.private_key),
        EC_PUBLIC_KEY => Ok(
            curve_of(algorithm.parameters).and_then(|curve| ec_private(curve, info.private_key))
        ),
        ED25519 | X25519 if algorithm.parameters.is_none() => {
            Ok(is_25519_private(info.private_key).then_some(PrivateKey::NoDigestSigning))
        }
        DSA => Err(not_emulated("DSA")),
        _ => Ok(None),
    }
}

/// `EVP_parse_public_key`: `SubjectPublicKeyInfo` DER (the first element).
pub(crate) fn public_der(der: &[u8]) -> Parsed<PublicKey> {
    let mut reader = match SliceReader::new(der) {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    let Ok(info) = pkcs8::spki::SubjectPublicKeyInfoRef::decode(&mut reader) else {
        return Ok(None);
    };
    let algorithm = info.algorithm;
    let Some(key) = info.subject_public_key.as_bytes() else {
        return Ok(None);
    };
    Ok(match algorithm.oid {
        RSA_ENCRYPTION if null_params(algorithm.parameters) => {
            rsa::pkcs1::RsaPublicKey::from_der(key)
                .ok()
                .and_then(|k| {
                    RsaPublicKey::new_with_max_size(
                        BigUint::from_bytes_be(k.modulus.as_bytes()),
                        BigUint::from_bytes_be(k.public_exponent.as_bytes()),
                        16384,
                    )
                    .ok()
                })
                .map(PublicKey::Rsa)
        }
        EC_PUBLIC_KEY => match curve_of(algorithm.parameters) {
            Some(P224) => ec_p224::verifying_key(key).map(PublicKey::P224),
            Some(P256) => ec_p256::verifying_key(key).map(PublicKey::P256),
            Some(P384) => ec_p384::verifying_key(key).map(PublicKey::P384),
            Some(P521) => ec_p521::verifying_key(key).map(PublicKey::P521),
            _ => None,
        },
        ED25519 | X25519 if algorithm.parameters.is_none() && key.len() == 32 => {
            Some(PublicKey::NoDigestVerifying)
        }
        DSA => return Err(not_emulated("DSA")),
        _ => None,
    })
}

/// The PEM blocks of `text`, in order: (label, whole block text).
fn pem_blocks(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let begin = rest.find("-----BEGIN ")?;
        let block = &rest[begin..];
        let label_end = block["-----BEGIN ".len()..].find("-----")? + "-----BEGIN ".len();
        let label = &block["-----BEGIN ".len()..label_end];
        let end_marker = format!("-----END {label}-----");
        let end = block.find(&end_marker)? + end_marker.len();
        rest = &block[end..];
        Some((label, &block[..end]))
    })
}

fn pem_body(block: &str) -> Option<Vec<u8>> {
    pem_rfc7468::decode_vec(block.as_bytes())
        .ok()
        .map(|(_, der)| der)
}

/// `PEM_read_bio_PrivateKey` without a password: the first private key block.
pub(crate) fn private_pem(text: &str) -> Parsed<PrivateKey> {
    for (label, block) in pem_blocks(text) {
        let kind = match label {
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => label,
            "DSA PRIVATE KEY" => return Err(not_emulated("DSA")),
            _ => continue,
        };
        let Some(der) = pem_body(block) else {
            return Ok(None);
        };
        return match kind {
            "PRIVATE KEY" => private_der(&der),
            "RSA PRIVATE KEY" => rsa_private(&der),
            "EC PRIVATE KEY" => {
                Ok(sec1_named_curve(&der).and_then(|curve| ec_private(curve, &der)))
            }
            // Encrypted: no password to decrypt it with.
            _ => Ok(None),
        };
    }
    Ok(None)
}

/// The named curve a SEC1 `ECPrivateKey` carries in its parameters.
fn sec1_named_curve(der: &[u8]) -> Option<ObjectIdentifier> {
    let key = sec1::EcPrivateKey::from_der(der).ok()?;
    key.parameters?.named_curve()
}

/// `PEM_read_bio_PUBKEY`: the first `PUBLIC KEY` block.
pub(crate) fn public_pem(text: &str) -> Parsed<PublicKey> {
    for (label, block) in pem_blocks(text) {
        if label == "PUBLIC KEY" {
            return match pem_body(block) {
                Some(der) => public_der(&der),
                None => Ok(None),
            };
        }
    }
    Ok(None)
}

/// Envoy's `sign`: the signature, or the error text `SignResult` carries.
pub(crate) fn sign(hash: &str, key: Option<PrivateKey>, text: &[u8]) -> Result<Vec<u8>, String> {
    let hash = Hash::named(hash).ok_or_else(|| format!("{hash} is not supported."))?;
    let key = key.ok_or_else(|| {
        "Invalid key type: private key required for signing operation.".to_owned()
    })?;
    let digest = hash.digest(text);
    let signature = match key {
        PrivateKey::NoDigestSigning => {
            return Err("Invalid private key: key data is corrupted or malformed.".to_owned());
        }
        PrivateKey::Rsa(k) => k.sign(hash.pkcs1v15(), &digest).ok(),
        PrivateKey::P224(k) => ec_p224::sign(&k, &digest),
        PrivateKey::P256(k) => ec_p256::sign(&k, &digest),
        PrivateKey::P384(k) => ec_p384::sign(&k, &digest),
        PrivateKey::P521(k) => ec_p521::sign(&k, &digest),
    };
    signature.ok_or_else(|| "Failed to create signature.".to_owned())
}

/// Envoy's `verifySignature`: `Ok` for a good signature, else the error text.
pub(crate) fn verify(
    hash: &str,
    key: Option<PublicKey>,
    signature: &[u8],
    text: &[u8],
) -> Result<(), String> {
    let hash = Hash::named(hash).ok_or_else(|| format!("{hash} is not supported."))?;
    let init_failed = || "Failed to initialize digest verify.".to_owned();
    let key = key.ok_or_else(init_failed)?;
    let digest = hash.digest(text);
    let good = match key {
        PublicKey::NoDigestVerifying => return Err(init_failed()),
        PublicKey::Rsa(k) => k.verify(hash.pkcs1v15(), &digest, signature).is_ok(),
        PublicKey::P224(k) => ec_p224::verify(&k, &digest, signature),
        PublicKey::P256(k) => ec_p256::verify(&k, &digest, signature),
        PublicKey::P384(k) => ec_p384::verify(&k, &digest, signature),
        PublicKey::P521(k) => ec_p521::verify(&k, &digest, signature),
    };
    if good {
        Ok(())
    } else {
        // `EVP_DigestVerify` returns 0 for a signature that does not verify.
        Err("Failed to verify digest. Error code: 0".to_owned())
    }
}
