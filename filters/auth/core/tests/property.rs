//! Property tests of the token parser and verifier, natively (bounded case
//! counts, a few seconds): arbitrary input never panics and never authorizes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use std::time::Duration;

use auth_core::{Auth, AuthPlugin, Config};
use proptest::prelude::*;
use serde_json::json;
use support::*;
use weir::testing::MockHost;

thread_local! {
    /// The configuration is per thread (it holds per-VM state that is not `Sync`).
    static CONFIG: Config = {
        let config: Config =
            weir::parse_config(inline_config().to_string().as_bytes()).expect("valid");
        config.validate().expect("valid");
        config
    };
}

const NOW: f64 = HARNESS_START as f64;

fn refused(token: &[u8]) -> bool {
    CONFIG.with(|config| auth_core::validate_token(config, token, NOW).is_err())
}

fn settings(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn b64url() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| b64(&b))
}

#[test]
fn the_valid_tokens_used_below_are_accepted() {
    for (alg, kid) in [
        ("HS256", "hs"),
        ("RS256", "rsa-1"),
        ("ES256", "ec-256"),
        ("EdDSA", "ed"),
    ] {
        let token = keys().token(alg, kid, &claims());
        let result = CONFIG.with(|c| auth_core::validate_token(c, token.as_bytes(), NOW));
        assert_eq!(result, Ok(()), "{alg}");
    }
}

proptest! {
    #![proptest_config(settings(2000))]

    #[test]
    fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(refused(&bytes));
    }

    #[test]
    fn three_arbitrary_base64url_segments_are_refused(a in b64url(), b in b64url(), c in b64url()) {
        let token = [a, b, c].join(".");
        prop_assert!(refused(token.as_bytes()));
    }
}

proptest! {
    #![proptest_config(settings(400))]

    /// Well-formed headers naming real keys and algorithms, arbitrary claims,
    /// arbitrary signatures: never accepted.
    #[test]
    fn forged_signatures_are_refused(
        alg in prop::sample::select(vec!["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA", "none", "PS256"]),
        kid in prop::option::of(prop::sample::select(vec!["hs", "rsa-1", "ec-256", "ec-384", "ed", "x"])),
        sub in ".{0,40}",
        exp in any::<i64>(),
        signature in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let header = match kid {
            Some(kid) => json!({"alg": alg, "kid": kid}),
            None => json!({"alg": alg}),
        };
        let payload = claims_with(json!({"sub": sub, "exp": exp}));
        let token = format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes()),
            b64(&signature)
        );
        prop_assert!(refused(token.as_bytes()));
    }

    /// Changing any one character of a valid token makes it invalid.
    #[test]
    fn any_one_character_changed_is_refused(
        which in 0usize..4,
        at in any::<prop::sample::Index>(),
        to in prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ".to_vec()),
    ) {
        let (alg, kid) = [("HS256", "hs"), ("RS256", "rsa-1"), ("ES256", "ec-256"), ("EdDSA", "ed")][which];
        let token = keys().token(alg, kid, &claims());
        let mut bytes = token.into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != to);
        bytes[i] = to;
        prop_assert!(refused(&bytes));
    }
}

proptest! {
    #![proptest_config(settings(200))]

    /// Through the filter (mock host): whatever the client sends as
    /// `authorization`, `cookie` and `x-api-key`, the request is not let through
    /// on a `require` path, and nothing panics.
    #[test]
    fn arbitrary_credentials_never_pass_the_filter(
        authorization in "[ -~]{0,300}",
        cookie in "[ -~]{0,200}",
        api_key in "[!-~]{0,100}",
    ) {
        let outcome = std::thread::spawn(move || {
            let host = MockHost::new();
            host.advance(Duration::from_secs(HARNESS_START));
            let mut plugin = host
                .load_with_plugin::<Auth, AuthPlugin>(&inline_config().to_string())
                .expect("loads");
            let stream = plugin.stream();
            host.set_request_headers(&[
                (":method", "GET"), (":path", "/items"), (":authority", "api.test"),
                ("authorization", &authorization), ("cookie", &cookie), ("x-api-key", &api_key),
            ]);
            let _ = stream.request_headers(true);
            host.take_local_reply().map(|r| r.status)
        })
        .join();
        let status = outcome.expect("no panic");
        prop_assert!(matches!(status, Some(401 | 403)), "status {:?}", status);
    }
}
