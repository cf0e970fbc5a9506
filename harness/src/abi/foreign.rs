//! `proxy_call_foreign_function`: the functions Envoy 1.40 registers for Wasm
//! modules, by name, with their protobuf arguments and results:
//!
//! - `compress` and `uncompress` (zlib), `clear_route_cache` (one route table,
//!   nothing cached: a no-op);
//! - `declare_property` (`DeclarePropertyArguments`): declares a property's
//!   type, read-only flag and life span in the context running the callback;
//!   a root context's declarations decide how `proxy_set_property` creates the
//!   property in a stream (see [`super::filter_state`]); a stream context's are
//!   kept where nothing reads them, as in Envoy. Declaring a name twice in one
//!   context is `BadArgument`;
//! - `set_envoy_filter_state` (`SetEnvoyFilterStateArguments`): stores an
//!   object built by one of Envoy's registered filter state object factories,
//!   readable as `filter_state.<key>`; an unregistered key is `NotFound`, a
//!   value the factory refuses `BadArgument`;
//! - `sign` and `verify_signature` (`SignArguments`/`SignResult`,
//!   `VerifySignatureArguments`/`VerifySignatureResult`; see
//!   [`super::signature`]): `BadArgument` when the arguments do not parse or
//!   name no key or two, else `Ok` with a result that says whether it worked
//!   and Envoy's error text.
//!
//! `expr_create`, `expr_evaluate` and `expr_delete` are registered in Envoy
//! 1.40 (its CEL support is built in) but not emulated: they answer
//! `Unimplemented` with a warning, so a filter that depends on them fails its
//! test loudly. Emulating them faithfully means cel-cpp's language (functions
//! resolved when an expression is created, its error and absence rules, RE2)
//! over Envoy's whole attribute vocabulary with its exact types (request time
//! and sizes, response flags, connection ids, metadata and node messages, the
//! header maps as CEL maps), most of which the harness does not model; a
//! different interpreter over part of it would answer differently without
//! saying so. Unknown names answer `NotFound`, as in Envoy.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use prost::Message;
use wasmtime::{Caller, Linker};

use super::filter_state::{self, Entry, LifeSpan, Prototype, ValueType};
use super::memory::{self, Fault};
use super::{Status, proxy_fn, signature};
use crate::state::HostState;

/// Registered in Envoy 1.40 but not emulated here.
const NOT_EMULATED: &[&str] = &["expr_create", "expr_evaluate", "expr_delete"];

/// `envoy.source.extensions.common.wasm.DeclarePropertyArguments`.
#[derive(Clone, PartialEq, Message)]
struct DeclarePropertyArguments {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bool, tag = "2")]
    readonly: bool,
    /// `WasmType`, an open enum.
    #[prost(int32, tag = "3")]
    value_type: i32,
    #[prost(bytes = "vec", tag = "4")]
    schema: Vec<u8>,
    /// `LifeSpan`, an open enum.
    #[prost(int32, tag = "5")]
    span: i32,
}

/// `envoy.source.extensions.common.wasm.SetEnvoyFilterStateArguments`.
#[derive(Clone, PartialEq, Message)]
struct SetEnvoyFilterStateArguments {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    value: String,
    #[prost(int32, tag = "3")]
    span: i32,
}

/// `envoy.source.extensions.common.wasm.SignArguments`.
#[derive(Clone, PartialEq, Message)]
struct SignArguments {
    #[prost(string, tag = "1")]
    hash_function: String,
    #[prost(bytes = "vec", tag = "2")]
    private_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    text: Vec<u8>,
    #[prost(string, tag = "4")]
    private_key_pem: String,
}

/// `envoy.source.extensions.common.wasm.SignResult`.
#[derive(Clone, PartialEq, Message)]
struct SignResult {
    #[prost(bool, tag = "1")]
    result: bool,
    #[prost(bytes = "vec", tag = "2")]
    signature: Vec<u8>,
    #[prost(string, tag = "3")]
    error: String,
}

/// `envoy.source.extensions.common.wasm.VerifySignatureArguments`.
#[derive(Clone, PartialEq, Message)]
struct VerifySignatureArguments {
    #[prost(string, tag = "1")]
    hash_function: String,
    #[prost(bytes = "vec", tag = "2")]
    public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    text: Vec<u8>,
    #[prost(string, tag = "5")]
    public_key_pem: String,
}

/// `envoy.source.extensions.common.wasm.VerifySignatureResult`.
#[derive(Clone, PartialEq, Message)]
struct VerifySignatureResult {
    #[prost(bool, tag = "1")]
    result: bool,
    #[prost(string, tag = "2")]
    error: String,
}

/// Arguments that do not parse as the function's message.
fn parse<M: Message + Default>(args: &[u8]) -> Result<M, Status> {
    M::decode(args).map_err(|_| Status::BadArgument)
}

/// zlib's `compress()`: default level, zlib framing.
fn compress(args: &[u8]) -> Result<Vec<u8>, Status> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(args)
        .and_then(|()| encoder.finish())
        .map_err(|_| Status::SerializationFailure)
}

/// zlib's `uncompress()`: anything but a complete zlib stream is a
/// `SerializationFailure`.
fn uncompress(args: &[u8]) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    let mut decoder = ZlibDecoder::new(args);
    decoder
        .read_to_end(&mut out)
        .map_err(|_| Status::SerializationFailure)?;
    Ok(out)
}

/// `declare_property`, in the context running the callback (Envoy's
/// `current_context_`, not the effective one).
fn declare_property(state: &mut HostState, args: &[u8]) -> Result<(), Status> {
    let args: DeclarePropertyArguments = parse(args)?;
    let name = args.name.into_bytes();
    let prototype = Prototype {
        readonly: args.readonly,
        value_type: ValueType::from_wire(args.value_type),
        schema: args.schema,
        span: LifeSpan::from_wire(args.span),
    };
    let active = state.active_context;
    let root = match state.roots.iter().position(|r| r.root_context_id == active) {
        Some(root) => Some(root),
        // No context yet (start-up): the plugin being started.
        None if active == 0 => Some(state.current.min(state.roots.len() - 1)),
        None => None,
    };
    match root {
        Some(root) => {
            let declared = &mut state.roots[root].declared;
            if declared.contains_key(&name) {
                return Err(Status::BadArgument);
            }
            declared.insert(name, prototype);
        }
        None => {
            let entry = (active, name);
            if state.stream_declared.contains(&entry) {
                return Err(Status::BadArgument);
            }
            state.stream_declared.push(entry);
        }
    }
    Ok(())
}

/// `set_envoy_filter_state`, on the current (or effective) stream.
fn set_envoy_filter_state(state: &mut HostState, args: &[u8]) -> Result<(), Status> {
    let args: SetEnvoyFilterStateArguments = parse(args)?;
    let object = filter_state::create_object(args.path.as_bytes(), args.value.as_bytes())?;
    if !state.in_stream() {
        return Err(Status::NotFound);
    }
    let span = LifeSpan::from_wire(args.span);
    match state
        .maps
        .info
        .filter_state
        .get()
        .entry(args.path.into_bytes())
    {
        std::collections::hash_map::Entry::Occupied(mut e) => match e.get() {
            // Stored again with the same life span: replaced.
            Entry::Object { span: old, .. } if *old == span => {
                e.insert(Entry::Object { object, span });
            }
            // With another life span: Envoy refuses it (an `ENVOY_BUG`
            // logged) and answers Ok.
            _ => tracing::warn!(
                target: "weir_harness::hostcall",
                key = %String::from_utf8_lossy(e.key()),
                "set_envoy_filter_state with a different life span: ignored, as Envoy does"
            ),
        },
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(Entry::Object { object, span });
        }
    }
    Ok(())
}

/// Which one of a DER and a PEM key was given: Envoy wants exactly one.
fn one_key<'a>(der: &'a [u8], pem: &'a str) -> Result<Result<&'a [u8], &'a str>, Status> {
    match (der.is_empty(), pem.is_empty()) {
        (false, true) => Ok(Ok(der)),
        (true, false) => Ok(Err(pem)),
        _ => Err(Status::BadArgument),
    }
}

/// `sign`: a `SignResult`.
fn sign(args: &[u8]) -> Result<Vec<u8>, Status> {
    let args: SignArguments = parse(args)?;
    let key = match one_key(&args.private_key, &args.private_key_pem)? {
        Ok(der) => signature::private_der(der)?,
        Err(pem) => signature::private_pem(pem)?,
    };
    let result = match signature::sign(&args.hash_function, key, &args.text) {
        Ok(signature) => SignResult {
            result: true,
            signature,
            error: String::new(),
        },
        Err(error) => SignResult {
            result: false,
            signature: Vec::new(),
            error,
        },
    };
    Ok(result.encode_to_vec())
}

/// `verify_signature`: a `VerifySignatureResult`.
fn verify_signature(args: &[u8]) -> Result<Vec<u8>, Status> {
    let args: VerifySignatureArguments = parse(args)?;
    let key = match one_key(&args.public_key, &args.public_key_pem)? {
        Ok(der) => signature::public_der(der)?,
        Err(pem) => signature::public_pem(pem)?,
    };
    let verified = signature::verify(&args.hash_function, key, &args.signature, &args.text);
    let result = VerifySignatureResult {
        result: verified.is_ok(),
        error: verified.err().unwrap_or_default(),
    };
    Ok(result.encode_to_vec())
}

/// Runs the function `name`: `Ok(Some(result))` for one that returns data.
fn call(state: &mut HostState, name: &[u8], args: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    match name {
        b"compress" => compress(args).map(Some),
        b"uncompress" => uncompress(args).map(Some),
        // One route table, no caching in the harness: nothing to clear.
        b"clear_route_cache" => Ok(None),
        b"declare_property" => declare_property(state, args).map(|()| None),
        b"set_envoy_filter_state" => set_envoy_filter_state(state, args).map(|()| None),
        b"sign" => sign(args).map(Some),
        b"verify_signature" => verify_signature(args).map(Some),
        _ => {
            let name = String::from_utf8_lossy(name);
            if NOT_EMULATED.contains(&&*name) {
                tracing::warn!(
                    target: "weir_harness::hostcall",
                    function = %name,
                    "foreign function not emulated by weir-harness; answering Unimplemented"
                );
                Err(Status::Unimplemented)
            } else {
                Err(Status::NotFound)
            }
        }
    }
}

/// Returns a foreign function's result as Envoy does: allocated in the guest and
/// its address written to `ret_ptr` unless that is 0, its size to `ret_len`
/// unless that is 0.
fn write_result(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> Result<(), Fault> {
    if ret_ptr != 0 {
        let address = if data.is_empty() {
            0
        } else {
            let ptr = memory::allocate(caller, data.len())?;
            memory::write(caller, ptr, data)?;
            ptr
        };
        memory::write_u32(caller, ret_ptr, address as u32)?;
    }
    if ret_len != 0 {
        memory::write_u32(caller, ret_len, data.len() as u32)?;
    }
    Ok(())
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_call_foreign_function",
        |caller,
         name_ptr: i32,
         name_len: i32,
         args_ptr: i32,
         args_len: i32,
         ret_ptr: i32,
         ret_len: i32| {
            let result = memory::read(&mut caller, name_ptr, name_len).and_then(|name| {
                let args = memory::read(&mut caller, args_ptr, args_len)?;
                match call(caller.data_mut(), &name, &args).map_err(Fault::Status)? {
                    Some(data) => write_result(&mut caller, &data, ret_ptr, ret_len),
                    None => Ok(()),
                }
            });
            memory::status(result)?
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {

    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    use rsa::pkcs1::EncodeRsaPrivateKey;

    use super::*;

    /// A VM with one plugin whose root context is 1, running `context`.
    fn state(context: u32) -> HostState {
        let mut state = HostState::for_tests();
        state.contexts = vec![(1, 0), (2, 0)];
        state.active_context = context;
        state
    }

    fn bytes(field: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::bytes::encode(field, &data.to_vec(), &mut out);
        out
    }

    fn declare(name: &str, readonly: bool, value_type: i32, span: i32) -> Vec<u8> {
        DeclarePropertyArguments {
            name: name.to_owned(),
            readonly,
            value_type,
            schema: Vec::new(),
            span,
        }
        .encode_to_vec()
    }

    #[test]
    fn zlib_round_trip_and_errors() {
        let mut state = state(2);
        let mut call = |name: &[u8], args: &[u8]| call(&mut state, name, args);
        let text = b"hello hello hello hello";
        let packed = call(b"compress", text).expect("compress").expect("data");
        assert_eq!(packed[0], 0x78, "zlib framing");
        let unpacked = call(b"uncompress", &packed).expect("uncompress");
        assert_eq!(unpacked.as_deref(), Some(&text[..]));
        assert_eq!(
            call(b"uncompress", b"not zlib"),
            Err(Status::SerializationFailure)
        );
        assert_eq!(
            call(b"uncompress", &packed[..packed.len() - 3]),
            Err(Status::SerializationFailure),
            "a truncated stream"
        );
        assert_eq!(call(b"no_such_function", b""), Err(Status::NotFound));
        assert_eq!(call(b"expr_create", b"1 + 1"), Err(Status::Unimplemented));
        assert_eq!(call(b"clear_route_cache", b""), Ok(None));
    }

    #[test]
    fn declared_properties_shape_what_streams_write() {
        let mut state = state(1);
        let ro = declare("ro", true, 1, 2);
        assert_eq!(call(&mut state, b"declare_property", &ro), Ok(None));
        assert_eq!(
            call(&mut state, b"declare_property", &declare("ro", false, 0, 0)),
            Err(Status::BadArgument),
            "declared twice in the root context"
        );
        // Unknown enum numbers: bytes, filter chain.
        let odd = declare("odd", false, 7, 9);
        assert_eq!(call(&mut state, b"declare_property", &odd), Ok(None));
        assert_eq!(
            state.roots[0].declared.get(&b"odd"[..]),
            Some(&Prototype::default())
        );
        assert_eq!(
            state.roots[0].declared.get(&b"ro"[..]),
            Some(&Prototype {
                readonly: true,
                value_type: ValueType::String,
                schema: Vec::new(),
                span: LifeSpan::Connection,
            })
        );
        for bad in [&[0xff][..], &bytes(1, &[0xff])] {
            assert_eq!(
                call(&mut state, b"declare_property", bad),
                Err(Status::BadArgument),
                "{bad:?}: not a message, or a name that is not UTF-8"
            );
        }
        // Empty arguments are a message with every field at its default.
        assert_eq!(call(&mut state, b"declare_property", b""), Ok(None));

        // In a stream: its own declarations, which set_property does not use.
        state.active_context = 2;
        let st = declare("st", true, 0, 0);
        assert_eq!(call(&mut state, b"declare_property", &st), Ok(None));
        assert_eq!(
            call(&mut state, b"declare_property", &st),
            Err(Status::BadArgument)
        );
        assert_eq!(call(&mut state, b"declare_property", &ro), Ok(None));
        assert!(!state.roots[0].declared.contains_key(&b"st"[..]));
        state.remove_context(2);
        assert!(state.stream_declared.is_empty());
    }

    fn filter_state_args(path: &str, value: &str, span: i32) -> Vec<u8> {
        SetEnvoyFilterStateArguments {
            path: path.to_owned(),
            value: value.to_owned(),
            span,
        }
        .encode_to_vec()
    }

    #[test]
    fn envoy_filter_state_objects() {
        let mut state = state(1);
        let set = |state: &mut HostState, path: &str, value: &str, span: i32| {
            call(
                state,
                b"set_envoy_filter_state",
                &filter_state_args(path, value, span),
            )
        };
        // The root context has no stream: only the key and value are checked.
        assert_eq!(
            set(&mut state, "envoy.string", "x", 0),
            Err(Status::NotFound)
        );
        assert_eq!(
            set(&mut state, "envoy.bool", "x", 0),
            Err(Status::BadArgument)
        );
        assert_eq!(
            set(&mut state, "no.such.key", "x", 0),
            Err(Status::NotFound)
        );
        state.active_context = 2;
        assert_eq!(set(&mut state, "envoy.string", "a", 0), Ok(None));
        let read = |state: &HostState, key: &[u8]| {
            filter_state::read_entry(&state.maps.info.filter_state.get(), &[key])
        };
        let text = |t: &str| Ok(filter_state::Read::Bytes(t.as_bytes().to_vec()));
        assert_eq!(read(&state, b"envoy.string"), text("a"));
        assert_eq!(set(&mut state, "envoy.string", "b", 0), Ok(None));
        assert_eq!(read(&state, b"envoy.string"), text("b"));
        // Another life span for the same key is refused, quietly.
        assert_eq!(set(&mut state, "envoy.string", "c", 2), Ok(None));
        assert_eq!(read(&state, b"envoy.string"), text("b"));
        assert_eq!(set(&mut state, "envoy.bool", "YES", 1), Ok(None));
        assert_eq!(read(&state, b"envoy.bool"), text("true"));
        assert_eq!(
            call(&mut state, b"set_envoy_filter_state", &bytes(2, &[0xff])),
            Err(Status::BadArgument),
            "a value that is not UTF-8"
        );
        assert_eq!(
            set(&mut state, "envoy.router.debug_config", "", 0),
            Err(Status::Unimplemented)
        );
    }

    fn sign_args(hash: &str, der: &[u8], pem: &str, text: &[u8]) -> Vec<u8> {
        SignArguments {
            hash_function: hash.to_owned(),
            private_key: der.to_vec(),
            text: text.to_vec(),
            private_key_pem: pem.to_owned(),
        }
        .encode_to_vec()
    }

    fn verify_args(hash: &str, der: &[u8], pem: &str, signature: &[u8], text: &[u8]) -> Vec<u8> {
        VerifySignatureArguments {
            hash_function: hash.to_owned(),
            public_key: der.to_vec(),
            signature: signature.to_vec(),
            text: text.to_vec(),
            public_key_pem: pem.to_owned(),
        }
        .encode_to_vec()
    }

    fn signed(args: &[u8]) -> SignResult {
        let out = sign(args).expect("status Ok");
        SignResult::decode(out.as_slice()).expect("a SignResult")
    }

    fn verified(args: &[u8]) -> VerifySignatureResult {
        let out = verify_signature(args).expect("status Ok");
        VerifySignatureResult::decode(out.as_slice()).expect("a VerifySignatureResult")
    }

    fn ok_verify() -> VerifySignatureResult {
        VerifySignatureResult {
            result: true,
            error: String::new(),
        }
    }

    fn failed_verify(error: &str) -> VerifySignatureResult {
        VerifySignatureResult {
            result: false,
            error: error.to_owned(),
        }
    }

    #[test]
    fn rsa_signatures_match_pkcs1v15_and_every_key_form() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let key = rsa::RsaPrivateKey::new(&mut rng, 1024).expect("test key");
        let public = key.to_public_key();
        let der = key.to_pkcs8_der().expect("pkcs8").as_bytes().to_vec();
        let pem = key
            .to_pkcs8_pem(Default::default())
            .expect("pem")
            .to_string();
        let pkcs1_pem = key
            .to_pkcs1_pem(Default::default())
            .expect("pem")
            .to_string();
        let public_der = public
            .to_public_key_der()
            .expect("spki")
            .as_bytes()
            .to_vec();
        let public_pem = public.to_public_key_pem(Default::default()).expect("pem");

        let one = signed(&sign_args("SHA256", &der, "", b"hello"));
        assert!(one.result, "{}", one.error);
        // The same bytes as an independent PKCS#1 v1.5 signer's.
        let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
        let expected: Box<[u8]> = rsa::signature::Signer::sign(&signer, b"hello").into();
        assert_eq!(one.signature, expected.to_vec());
        // PKCS#8 PEM (after other text and another block) and PKCS#1 PEM too.
        let noisy = format!("comment\n{public_pem}{pem}");
        assert_eq!(signed(&sign_args("sha256", &[], &noisy, b"hello")), one);
        assert_eq!(signed(&sign_args("sha256", &[], &pkcs1_pem, b"hello")), one);

        for (der, pem) in [(&public_der[..], ""), (&[][..], public_pem.as_str())] {
            let ok = verified(&verify_args("sha256", der, pem, &one.signature, b"hello"));
            assert_eq!(ok, ok_verify());
            let bad = verified(&verify_args("sha256", der, pem, &one.signature, b"hellO"));
            assert_eq!(bad, failed_verify("Failed to verify digest. Error code: 0"));
        }
        for hash in ["sha1", "sha224", "sha384", "sha512"] {
            let s = signed(&sign_args(hash, &der, "", b"x"));
            assert!(s.result, "{hash}: {}", s.error);
            let v = verified(&verify_args(hash, &public_der, "", &s.signature, b"x"));
            assert_eq!(v, ok_verify(), "{hash}");
        }
    }

    #[test]
    fn ecdsa_on_every_nist_curve_with_every_hash() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let p256 = p256::SecretKey::random(&mut rng);
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            pair(p224::SecretKey::random(&mut rng)),
            pair(p256.clone()),
            pair(p384::SecretKey::random(&mut rng)),
            pair(p521::SecretKey::random(&mut rng)),
        ];
        for (private, public) in &cases {
            for hash in ["sha1", "sha224", "sha256", "sha384", "sha512"] {
                let s = signed(&sign_args(hash, private, "", b"text"));
                assert!(s.result, "{hash}: {}", s.error);
                let v = verified(&verify_args(hash, public, "", &s.signature, b"text"));
                assert_eq!(v, ok_verify(), "{hash}");
                let v = verified(&verify_args(hash, public, "", &s.signature, b"other"));
                assert!(!v.result, "{hash}");
            }
        }
        // P-256 with SHA-256 is standard ECDSA: an independent verifier agrees.
        let s = signed(&sign_args("sha256", &cases[1].0, "", b"text"));
        let signature = p256::ecdsa::DerSignature::try_from(s.signature.as_slice()).expect("DER");
        let verifying = p256::ecdsa::VerifyingKey::from(p256.public_key());
        assert!(rsa::signature::Verifier::verify(&verifying, b"text", &signature).is_ok());
        // SEC1 `EC PRIVATE KEY` PEM names its curve, or BoringSSL refuses it.
        let bare = p256.to_sec1_pem(Default::default()).expect("pem");
        let s = signed(&sign_args("sha256", &[], &bare, b"x"));
        assert_eq!(
            s.error,
            "Invalid key type: private key required for signing operation."
        );
        let scalar = p256.to_bytes();
        let named = sec1::EcPrivateKey {
            private_key: &scalar,
            parameters: Some(sec1::EcParameters::NamedCurve(
                pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"),
            )),
            public_key: None,
        };
        let der = pkcs8::der::Encode::to_der(&named).expect("sec1");
        let pem =
            pem_rfc7468::encode_string("EC PRIVATE KEY", Default::default(), &der).expect("pem");
        assert!(signed(&sign_args("sha256", &[], &pem, b"x")).result);
    }

    /// A key's PKCS#8 and SPKI DER.
    fn pair<C>(key: elliptic_curve::SecretKey<C>) -> (Vec<u8>, Vec<u8>)
    where
        C: elliptic_curve::CurveArithmetic + pkcs8::AssociatedOid,
        elliptic_curve::AffinePoint<C>:
            elliptic_curve::sec1::FromEncodedPoint<C> + elliptic_curve::sec1::ToEncodedPoint<C>,
        elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
    {
        let private = key.to_pkcs8_der().expect("pkcs8").as_bytes().to_vec();
        let public = key
            .public_key()
            .to_public_key_der()
            .expect("spki")
            .as_bytes()
            .to_vec();
        (private, public)
    }

    #[test]
    fn key_and_argument_errors_as_envoy_reports_them() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (ec, ec_public) = pair(p256::SecretKey::random(&mut rng));
        let ec_pem =
            pem_rfc7468::encode_string("PRIVATE KEY", Default::default(), &ec).expect("pem");
        // Exactly one key form.
        assert_eq!(
            sign(&sign_args("sha256", &[], "", b"x")),
            Err(Status::BadArgument)
        );
        assert_eq!(
            sign(&sign_args("sha256", &ec, &ec_pem, b"x")),
            Err(Status::BadArgument)
        );
        assert_eq!(
            verify_signature(&verify_args("sha256", &[], "", b"", b"x")),
            Err(Status::BadArgument)
        );
        assert_eq!(sign(&[0xff]), Err(Status::BadArgument));
        assert_eq!(verify_signature(&[0xff]), Err(Status::BadArgument));
        // The hash is checked first.
        let md5 = signed(&sign_args("md5", &[0], "", b"x"));
        assert_eq!(
            (md5.result, md5.error.as_str()),
            (false, "md5 is not supported.")
        );
        let md5 = verified(&verify_args("md5", &[0], "", b"", b"x"));
        assert_eq!(md5, failed_verify("md5 is not supported."));
        // Keys that do not parse: garbage, a public key to sign, a private
        // one to verify, an encrypted PEM block.
        let no_key = "Invalid key type: private key required for signing operation.";
        for der in [&[0][..], &ec_public] {
            let s = signed(&sign_args("sha256", der, "", b"x"));
            assert_eq!((s.result, s.error.as_str()), (false, no_key));
        }
        let encrypted = ec_pem.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
        let s = signed(&sign_args("sha256", &[], &encrypted, b"x"));
        assert_eq!(s.error, no_key);
        let v = verified(&verify_args("sha256", &ec, "", b"", b"x"));
        assert_eq!(v, failed_verify("Failed to initialize digest verify."));
        let v = verified(&verify_args("sha256", &[], &ec_pem, b"", b"x"));
        assert_eq!(v, failed_verify("Failed to initialize digest verify."));
        // Ed25519 parses but cannot be used with a digest.
        let mut ed = hex("302e020100300506032b657004220420");
        ed.extend([7; 32]);
        let mut ed_public = hex("302a300506032b6570032100");
        ed_public.extend([9; 32]);
        let s = signed(&sign_args("sha256", &ed, "", b"x"));
        assert_eq!(
            s.error,
            "Invalid private key: key data is corrupted or malformed."
        );
        let v = verified(&verify_args("sha512", &ed_public, "", b"", b"x"));
        assert_eq!(v, failed_verify("Failed to initialize digest verify."));
        // Trailing bytes after the DER key are ignored, as BoringSSL's parser does.
        let mut trailing = ec.clone();
        trailing.extend(b"junk");
        assert!(signed(&sign_args("sha256", &trailing, "", b"x")).result);
        // A malformed signature does not verify.
        let v = verified(&verify_args("sha256", &ec_public, "", b"\x30\x00", b"x"));
        assert_eq!(v, failed_verify("Failed to verify digest. Error code: 0"));
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
            .collect()
    }
}
