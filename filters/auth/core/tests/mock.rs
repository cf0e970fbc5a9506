//! The auth filter natively, against weir's mock host: configuration checks,
//! every credential path and denial, the remote key set through callouts, and
//! the plugin's refresh timer with its bounded retry.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use std::time::Duration;

use auth_core::{Auth, AuthPlugin};
use serde_json::{Value, json};
use support::*;
use weir::testing::{Action, MockHost, MockPlugin};

/// A mock host whose clock reads 2026-01-01, like the harness's.
fn host() -> MockHost {
    let host = MockHost::new();
    host.advance(Duration::from_secs(HOST_NOW - 86_400));
    host
}

fn load(host: &MockHost, config: &Value) -> MockPlugin {
    host.load_with_plugin::<Auth, AuthPlugin>(&config.to_string())
        .unwrap_or_else(|e| panic!("config rejected: {e}"))
}

/// Loads `config` on a fresh thread (a fresh mock host and dispatcher) and
/// returns the log of its rejection.
fn reject(config: &Value) -> String {
    let text = config.to_string();
    std::thread::spawn(move || {
        let host = MockHost::new();
        host.load_with_plugin::<Auth, AuthPlugin>(&text).err()
    })
    .join()
    .expect("no panic")
    .unwrap_or_else(|| panic!("accepted: {config}"))
}

/// Sends a request; returns the status (200 if it went on) and the reply.
fn send(host: &MockHost, plugin: &mut MockPlugin, headers: &[(&str, &str)]) -> u16 {
    let stream = plugin.stream();
    let mut all = vec![
        (":method", "GET"),
        (":path", "/"),
        (":authority", "api.test"),
    ];
    for (k, v) in headers {
        if let Some(slot) = all.iter_mut().find(|(n, _)| n == k) {
            slot.1 = v;
        } else {
            all.push((k, v));
        }
    }
    host.set_request_headers(&all);
    let action = stream.request_headers(true);
    match host.take_local_reply() {
        Some(reply) => reply.status as u16,
        None => {
            assert_eq!(action, Action::Continue);
            200
        }
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn every_algorithm_verifies() {
    let host = host();
    let mut plugin = load(&host, &inline_config());
    let k = keys();
    for (alg, kid) in [
        ("HS256", "hs"),
        ("HS384", "hs"),
        ("HS512", "hs"),
        ("RS256", "rsa-1"),
        ("RS384", "rsa-1"),
        ("RS512", "rsa-1"),
        ("ES256", "ec-256"),
        ("ES384", "ec-384"),
        ("EdDSA", "ed"),
    ] {
        let token = k.token(alg, kid, &claims());
        assert_eq!(
            send(&host, &mut plugin, &[("authorization", &bearer(&token))]),
            200,
            "{alg}"
        );
        assert_eq!(
            host.request_header("x-jwt-sub").as_deref(),
            Some("alice"),
            "{alg}"
        );
    }
    assert_eq!(
        host.metric("auth_requests.result=allowed.reason=jwt"),
        Some(9)
    );
}

/// Every kind of bad token, and where each is refused: no panic, the documented
/// status every time.
#[test]
fn bad_tokens_get_their_documented_status() {
    let host = host();
    let mut plugin = load(&host, &inline_config());
    let k = keys();
    let good = k.token("RS256", "rsa-1", &claims());
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut flipped = sig.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let forged_sig = format!("{head}.{payload}.{}", String::from_utf8(flipped).unwrap());
    let other_payload = b64(claims_with(json!({"sub": "mallory"}))
        .to_string()
        .as_bytes());
    let forged_payload = format!("{head}.{other_payload}.{sig}");
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string().as_bytes())
    );
    let none_with_sig = format!(
        "{}.{}.{sig}",
        b64(br#"{"alg":"none","kid":"rsa-1"}"#),
        b64(claims().to_string().as_bytes())
    );
    // HS256 with the RSA public key (its JWK modulus, and its JSON) as the secret.
    let confusion_input = |kid: Option<&str>| {
        let header = match kid {
            Some(kid) => json!({"alg": "HS256", "kid": kid}),
            None => json!({"alg": "HS256"}),
        };
        format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        )
    };
    let rsa_public = k.jwk("rsa-1").to_string();
    let confusion = hs256_with_secret(rsa_public.as_bytes(), &confusion_input(Some("rsa-1")));
    let confusion_no_kid = hs256_with_secret(rsa_public.as_bytes(), &confusion_input(None));
    let crit = k.token_with_header(
        &json!({"alg": "ES256", "kid": "ec-256", "crit": ["exp"]}),
        &claims(),
    );
    let no_kid_hs = k.token_with_header(&json!({"alg": "HS256"}), &claims());
    let no_kid_rs = k.token_with_header(&json!({"alg": "RS256"}), &claims());
    let unknown_kid = k.token("RS256", "rsa-2", &claims());
    let wrong_alg_for_kid =
        k.token_with_header(&json!({"alg": "ES384", "kid": "ec-256"}), &claims());
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "not-a-token".into(), "invalid_token"),
        ("two segments", format!("{head}.{payload}"), "invalid_token"),
        ("four segments", format!("{good}.x"), "invalid_token"),
        (
            "empty signature",
            format!("{head}.{payload}."),
            "invalid_token",
        ),
        (
            "padding",
            format!("{head}=.{payload}.{sig}"),
            "invalid_token",
        ),
        (
            "header not JSON",
            format!("{}.{payload}.{sig}", b64(b"{alg")),
            "invalid_token",
        ),
        (
            "header an array",
            format!("{}.{payload}.{sig}", b64(b"[1]")),
            "invalid_token",
        ),
        (
            "duplicate alg",
            format!(
                "{}.{payload}.{sig}",
                b64(br#"{"alg":"RS256","alg":"none"}"#)
            ),
            "invalid_token",
        ),
        ("forged signature", forged_sig, "invalid_token"),
        ("forged payload", forged_payload, "invalid_token"),
        ("alg none", none, "invalid_token"),
        ("alg none with a signature", none_with_sig, "invalid_token"),
        (
            "HS256 signed with the RSA public key, kid rsa-1",
            confusion,
            "invalid_token",
        ),
        (
            "HS256 signed with the RSA public key, no kid",
            confusion_no_kid,
            "invalid_token",
        ),
        ("crit", crit, "invalid_token"),
        ("unknown kid, no remote set", unknown_kid, "invalid_token"),
        (
            "kid of a key of another type",
            wrong_alg_for_kid,
            "invalid_token",
        ),
        ("no kid, RS256 (one RSA key)", no_kid_rs.clone(), "ok"),
        ("no kid, HS256 (one HMAC key)", no_kid_hs, "ok"),
        (
            "expired",
            k.token("ES256", "ec-256", &claims_with(json!({"exp": LONG_AGO}))),
            "invalid_token",
        ),
        (
            "expired within the skew",
            k.token(
                "ES256",
                "ec-256",
                &claims_with(json!({"exp": HOST_NOW - 30})),
            ),
            "ok",
        ),
        (
            "expired past the skew",
            k.token(
                "ES256",
                "ec-256",
                &claims_with(json!({"exp": HOST_NOW - 61})),
            ),
            "invalid_token",
        ),
        (
            "not yet valid",
            k.token("EdDSA", "ed", &claims_with(json!({"nbf": FAR_FUTURE}))),
            "invalid_token",
        ),
        (
            "nbf within the skew",
            k.token("EdDSA", "ed", &claims_with(json!({"nbf": HOST_NOW + 30}))),
            "ok",
        ),
        (
            "no exp",
            k.token("HS256", "hs", &claims_with(json!({"exp": null}))),
            "invalid_token",
        ),
        (
            "exp a string",
            k.token("HS256", "hs", &claims_with(json!({"exp": "2100"}))),
            "invalid_token",
        ),
        (
            "wrong issuer",
            k.token(
                "HS256",
                "hs",
                &claims_with(json!({"iss": "https://evil.test"})),
            ),
            "invalid_token",
        ),
        (
            "no issuer",
            k.token("HS256", "hs", &claims_with(json!({"iss": null}))),
            "invalid_token",
        ),
        (
            "wrong audience",
            k.token("HS256", "hs", &claims_with(json!({"aud": "other"}))),
            "invalid_token",
        ),
        (
            "audience in an array",
            k.token(
                "HS256",
                "hs",
                &claims_with(json!({"aud": ["other", "api"]})),
            ),
            "ok",
        ),
        (
            "payload not an object",
            k.token_with_header(&json!({"alg": "HS256", "kid": "hs"}), &json!([1, 2])),
            "invalid_token",
        ),
        ("oversized", "a".repeat(5000), "invalid_request"),
    ];
    for (name, token, expected) in cases {
        let status = send(&host, &mut plugin, &[("authorization", &bearer(&token))]);
        if expected == "ok" {
            assert_eq!(status, 200, "{name}");
            continue;
        }
        assert_eq!(status, 401, "{name}");
    }
    // The challenges carry the RFC 6750 code.
    let _ = send(
        &host,
        &mut plugin,
        &[("authorization", "Bearer not-a-token")],
    );
    let stream = plugin.stream();
    host.set_request_headers(&[
        (":method", "GET"),
        (":path", "/"),
        ("authorization", "Bearer x.y"),
    ]);
    let _ = stream.request_headers(true);
    let reply = host.take_local_reply().expect("denied");
    let challenge = header(&reply.headers, "www-authenticate");
    assert_eq!(
        challenge,
        r#"Bearer realm="weir-test", error="invalid_token", error_description="The access token is not valid.""#
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(header(&reply.headers, "content-type"), "application/json");
    // Reasons are counted.
    for (reason, at_least) in [
        ("malformed", 8),
        ("bad_algorithm", 3),
        ("bad_signature", 3),
        ("unknown_key", 1),
        ("expired", 2),
        ("not_yet_valid", 1),
        ("missing_claim", 1),
        ("invalid_claims", 1),
        ("bad_issuer", 2),
        ("bad_audience", 1),
        ("invalid_request", 1),
    ] {
        let name = format!("auth_requests.result=denied.reason={reason}");
        let n = host.metric(&name).unwrap_or(0);
        assert!(n >= at_least, "{name} = {n}");
    }
}

/// The mock host's clock (see `host`).
const HOST_NOW: u64 = HARNESS_START;

fn header(headers: &[(String, Vec<u8>)], name: &str) -> String {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
}

#[test]
fn expired_token_says_so_and_missing_credentials_get_a_bare_challenge() {
    let host = host();
    let mut plugin = load(&host, &inline_config());
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET"), (":path", "/api")]);
    let _ = stream.request_headers(true);
    let reply = host.take_local_reply().expect("401");
    assert_eq!(reply.status, 401);
    assert_eq!(
        header(&reply.headers, "www-authenticate"),
        r#"Bearer realm="weir-test""#
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"], "unauthorized");

    let expired = keys().token("HS256", "hs", &claims_with(json!({"exp": LONG_AGO})));
    let stream = plugin.stream();
    host.set_request_headers(&[
        (":method", "GET"),
        (":path", "/api"),
        ("authorization", &bearer(&expired)),
    ]);
    let _ = stream.request_headers(true);
    let reply = host.take_local_reply().expect("401");
    assert!(
        header(&reply.headers, "www-authenticate")
            .contains(r#"error_description="The access token expired.""#)
    );
}

#[test]
fn rules_decide_and_scopes_are_checked() {
    let host = host();
    let mut plugin = load(&host, &inline_config());
    let k = keys();
    let read = k.token("ES256", "ec-256", &claims());
    let admin = k.token(
        "ES256",
        "ec-256",
        &claims_with(json!({"scope": "read admin"})),
    );
    let scp = k.token(
        "ES256",
        "ec-256",
        &claims_with(json!({"scope": null, "scp": ["admin"]})),
    );
    // deny wins even with a valid token
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/internal/x"), ("authorization", &bearer(&admin))]
        ),
        403
    );
    // anonymous on /public, claims forwarded when a token is there, invalid tokens refused
    assert_eq!(send(&host, &mut plugin, &[(":path", "/public/a")]), 200);
    assert_eq!(host.request_header("x-jwt-sub"), None);
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/public/a"), ("authorization", &bearer(&read))]
        ),
        200
    );
    assert_eq!(host.request_header("x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/public/a"), ("authorization", "Bearer x.y.z")]
        ),
        401
    );
    // scopes
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/admin"), ("authorization", &bearer(&read))]
        ),
        403
    );
    let reply_scope = {
        let stream = plugin.stream();
        host.set_request_headers(&[
            (":method", "GET"),
            (":path", "/admin"),
            ("authorization", &bearer(&read)),
        ]);
        let _ = stream.request_headers(true);
        host.take_local_reply().expect("403")
    };
    assert_eq!(
        header(&reply_scope.headers, "www-authenticate"),
        r#"Bearer realm="weir-test", error="insufficient_scope", error_description="The credential lacks a required scope.", scope="admin""#
    );
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/admin"), ("authorization", &bearer(&admin))]
        ),
        200
    );
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/admin"), ("authorization", &bearer(&scp))]
        ),
        200
    );
    // the query string is not part of the matched path
    assert_eq!(send(&host, &mut plugin, &[(":path", "/x?/public")]), 401);
    // paths that could escape a prefix
    for path in [
        "/public/../internal",
        "/public/%2e%2e/internal",
        "//internal",
        "/public\\..\\internal",
        "/public/%2Finternal",
        "/public/./x",
    ] {
        assert_eq!(send(&host, &mut plugin, &[(":path", path)]), 403, "{path}");
    }
    assert_eq!(
        host.metric("auth_requests.result=denied.reason=unsafe_path"),
        Some(6)
    );
    assert_eq!(
        host.metric("auth_requests.result=denied.reason=denied_by_rule"),
        Some(1)
    );
    assert_eq!(
        host.metric("auth_requests.result=allowed.reason=anonymous"),
        Some(1)
    );
}

#[test]
fn methods_narrow_a_rule() {
    let host = host();
    let mut config = inline_config();
    config["rules"] = json!([{"prefix": "/docs", "methods": ["GET", "HEAD"], "action": "allow"}]);
    let mut plugin = load(&host, &config);
    assert_eq!(send(&host, &mut plugin, &[(":path", "/docs/a")]), 200);
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/docs/a"), (":method", "HEAD")]
        ),
        200
    );
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/docs/a"), (":method", "POST")]
        ),
        401
    );
}

#[test]
fn tokens_from_cookies_and_query_strings() {
    let host = host();
    let mut plugin = load(&host, &inline_config());
    let token = keys().token("EdDSA", "ed", &claims());
    let cookie = format!("theme=dark; session={token}; other=1");
    assert_eq!(send(&host, &mut plugin, &[("cookie", &cookie)]), 200);
    assert_eq!(host.request_header("x-jwt-sub").as_deref(), Some("alice"));
    let path = format!("/items?x=1&access_token={token}");
    assert_eq!(send(&host, &mut plugin, &[(":path", &path)]), 200);
    // the header comes first
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[("authorization", "Bearer bad"), ("cookie", &cookie)]
        ),
        401
    );
    // another scheme is not a bearer token: the cookie is used
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[("authorization", "Basic dXNlcjpwYXNz"), ("cookie", &cookie)]
        ),
        200
    );
    // "Bearer" without a token, or with only spaces
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", "Bearer")]),
        401
    );
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", "Bearer    ")]),
        401
    );
    assert_eq!(
        host.metric("auth_requests.result=denied.reason=invalid_request"),
        Some(2)
    );
    // case-insensitive scheme
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[("authorization", &format!("bearer {token}"))]
        ),
        200
    );
}

#[test]
fn spoofed_identity_headers_are_removed() {
    let host = host();
    let mut plugin = load(&host, &inline_config());
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[
                (":path", "/public"),
                ("x-jwt-sub", "admin"),
                ("x-api-key-name", "ci")
            ]
        ),
        200
    );
    assert_eq!(host.request_header("x-jwt-sub"), None);
    assert_eq!(host.request_header("x-api-key-name"), None);
}

#[test]
fn claims_become_headers_safely() {
    let host = host();
    let mut config = inline_config();
    config["jwt"]["claims_to_headers"] = json!([
        {"claim": "sub", "header": "x-sub"},
        {"claim": "groups", "header": "x-groups"},
        {"claim": "n", "header": "x-n"},
        {"claim": "evil", "header": "x-evil"},
        {"claim": "absent", "header": "x-absent"}
    ]);
    let mut plugin = load(&host, &config);
    let token = keys().token(
        "HS256",
        "hs",
        &claims_with(json!({
            "groups": ["a", "b"], "n": 7, "evil": "x\r\nx-injected: 1"
        })),
    );
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", &bearer(&token))]),
        200
    );
    assert_eq!(host.request_header("x-sub").as_deref(), Some("alice"));
    assert_eq!(
        host.request_header("x-groups").as_deref(),
        Some(r#"["a","b"]"#)
    );
    assert_eq!(host.request_header("x-n").as_deref(), Some("7"));
    assert_eq!(host.request_header("x-evil"), None);
    assert_eq!(host.request_header("x-injected"), None);
    assert_eq!(host.request_header("x-absent"), None);
}

#[test]
fn api_keys_are_checked_against_their_hashes() {
    let host = host();
    let mut plugin = load(&host, &inline_config());
    assert_eq!(
        send(&host, &mut plugin, &[("x-api-key", "ci-key-0123456789")]),
        200
    );
    assert_eq!(host.request_header("x-api-key-name").as_deref(), Some("ci"));
    // not forwarded by default
    assert_eq!(host.request_header("x-api-key"), None);
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/x?api_key=ro-key-0123456789")]
        ),
        200
    );
    assert_eq!(host.request_header("x-api-key-name").as_deref(), Some("ro"));
    assert_eq!(
        send(&host, &mut plugin, &[("x-api-key", "ci-key-0123456788")]),
        401
    );
    assert_eq!(send(&host, &mut plugin, &[("x-api-key", "")]), 401);
    assert_eq!(
        send(&host, &mut plugin, &[("x-api-key", &"k".repeat(2000))]),
        401
    );
    // scopes from the key
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/admin"), ("x-api-key", "ro-key-0123456789")]
        ),
        403
    );
    assert_eq!(
        send(
            &host,
            &mut plugin,
            &[(":path", "/admin"), ("x-api-key", "ci-key-0123456789")]
        ),
        200
    );
    assert_eq!(
        host.metric("auth_requests.result=allowed.reason=api_key"),
        Some(3)
    );
    assert_eq!(
        host.metric("auth_requests.result=denied.reason=bad_api_key"),
        Some(1)
    );
    assert_eq!(
        host.metric("auth_requests.result=denied.reason=invalid_request"),
        Some(2)
    );
}

#[test]
fn api_keys_alone_challenge_with_their_scheme() {
    let host = host();
    let mut config = inline_config();
    config.as_object_mut().unwrap().remove("jwt");
    config["api_keys"]["forward_key"] = json!(true);
    let mut plugin = load(&host, &config);
    assert_eq!(
        send(&host, &mut plugin, &[("x-api-key", "ci-key-0123456789")]),
        200
    );
    assert_eq!(
        host.request_header("x-api-key").as_deref(),
        Some("ci-key-0123456789")
    );
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET"), (":path", "/")]);
    let _ = stream.request_headers(true);
    let reply = host.take_local_reply().expect("401");
    assert_eq!(
        header(&reply.headers, "www-authenticate"),
        r#"ApiKey realm="weir-test""#
    );
}

#[test]
fn invalid_configuration_is_rejected_naming_the_field() {
    let base = inline_config();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let mut weak_rsa = keys().jwk("rsa-1");
    // A 1024-bit modulus.
    weak_rsa["n"] = json!(b64(&[0xc5; 128]));
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({}),
            "invalid configuration at `.`",
            "neither `jwt` nor `api_keys`",
        ),
        (
            with(&|c| c["rules"][0]["prefix"] = json!("")),
            "rules[0].prefix",
            "empty",
        ),
        (
            with(&|c| c["rules"][1]["prefix"] = json!("internal")),
            "rules[1].prefix",
            "must start with '/'",
        ),
        (
            with(&|c| c["rules"][0]["scopes"] = json!(["x"])),
            "rules[0].scopes",
            "only a `require` rule",
        ),
        (
            with(&|c| c["rules"][0]["action"] = json!("permit")),
            "rules[0].action",
            "unknown variant `permit`",
        ),
        (
            with(&|c| c["rules"][0]["methods"] = json!(["get"])),
            "rules[0].methods[0]",
            "upper-case",
        ),
        (
            with(&|c| c["jwt"]["algorithms"] = json!(["RS256", "none"])),
            "jwt.algorithms[1]",
            "`none` algorithm is never accepted",
        ),
        (
            with(&|c| c["jwt"]["algorithms"] = json!(["PS256"])),
            "jwt.algorithms[0]",
            "unknown algorithm \"PS256\"",
        ),
        (
            with(&|c| c["jwt"]["algorithms"] = json!([])),
            "jwt.algorithms",
            "must not be empty",
        ),
        (
            with(&|c| {
                c["jwt"]["jwks"] = json!({"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB"}]})
            }),
            "jwt.jwks",
            "`e` is missing",
        ),
        (
            with(&|c| c["jwt"]["jwks"] = json!({"keys": [weak_rsa.clone()]})),
            "jwt.jwks",
            "at least 2048",
        ),
        (
            with(&|c| c["jwt"]["jwks"] = json!({"keys": [{"kty": "oct", "k": b64(b"short")}]})),
            "jwt.jwks",
            "at least 32",
        ),
        (
            with(&|c| {
                c["jwt"]["jwks"] =
                    json!({"keys": [{"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}]})
            }),
            "jwt.jwks",
            "unsupported curve",
        ),
        (
            with(
                &|c| c["jwt"]["jwks"] = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])}]}),
            ),
            "jwt.jwks",
            "not on P-256",
        ),
        (
            with(&|c| c["jwt"]["jwks"] = json!({"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]})),
            "jwt.jwks",
            "not base64url",
        ),
        (
            with(&|c| c["jwt"]["jwks"] = json!({"keys": [keys().jwk("hs"), keys().jwk("hs")]})),
            "jwt.jwks",
            "`kid` is used by an earlier key",
        ),
        (
            with(&|c| {
                c["jwt"]["jwks"] =
                    json!({"keys": [{"kty": "oct", "k": b64(&[7; 32]), "alg": "HS512"}]})
            }),
            "jwt.jwks",
            "does not fit",
        ),
        (
            with(&|c| {
                let mut k = keys().jwk("ec-256");
                k["d"] = json!("AAAA");
                c["jwt"]["jwks"] = json!({"keys": [k]});
            }),
            "jwt.jwks",
            "a private key",
        ),
        (
            with(&|c| {
                c["jwt"]["jwks"] =
                    json!({"keys": [{"kty": "oct", "k": b64(&[7; 32]), "use": "enc"}]})
            }),
            "jwt.jwks",
            "`use` is \"enc\"",
        ),
        (
            with(&|c| c["jwt"]["jwks"] = json!({"nokeys": []})),
            "jwt.jwks",
            "a `keys` array",
        ),
        (
            with(&|c| {
                c["jwt"].as_object_mut().unwrap().remove("jwks");
            }),
            "jwt",
            "give `jwks`, `remote_jwks` or both",
        ),
        (
            with(&|c| c["jwt"]["clock_skew_seconds"] = json!(7200)),
            "jwt.clock_skew_seconds",
            "at most 3600",
        ),
        (
            with(&|c| c["jwt"]["clock_skew_seconds"] = json!(-1)),
            "jwt.clock_skew_seconds",
            "invalid value",
        ),
        (
            with(&|c| c["jwt"]["from"] = json!([{"header": "authorization", "cookie": "s"}])),
            "jwt.from[0]",
            "exactly one of",
        ),
        (
            with(&|c| c["jwt"]["from"] = json!([{"cookie": "a b"}])),
            "jwt.from[0]",
            "invalid cookie name",
        ),
        (
            with(&|c| c["jwt"]["from"] = json!([])),
            "jwt.from",
            "must not be empty",
        ),
        (
            with(&|c| c["jwt"]["claims_to_headers"][0]["header"] = json!("x user")),
            "jwt.claims_to_headers[0].header",
            "' ' is not allowed",
        ),
        (
            with(&|c| c["jwt"]["remote_jwks"] = json!({"cluster": "http://idp", "path": "/jwks"})),
            "jwt.remote_jwks.cluster",
            "not a URL",
        ),
        (
            with(&|c| c["jwt"]["remote_jwks"] = json!({"cluster": "idp", "path": "jwks"})),
            "jwt.remote_jwks.path",
            "must start with '/'",
        ),
        (
            with(&|c| {
                c["jwt"]["remote_jwks"] = json!({"cluster": "idp", "path": "/j", "retries": 50})
            }),
            "jwt.remote_jwks.retries",
            "at most 10",
        ),
        (
            with(
                &|c| c["jwt"]["remote_jwks"] = json!({"cluster": "idp", "path": "/j", "refresh_interval_seconds": 10, "min_refresh_interval_seconds": 60}),
            ),
            "jwt.remote_jwks.min_refresh_interval_seconds",
            "must not exceed",
        ),
        (
            with(&|c| c["api_keys"]["keys"][0]["sha256"] = json!("abc")),
            "api_keys.keys[0].sha256",
            "64 hex digits",
        ),
        (
            with(&|c| {
                c["api_keys"]["keys"][1]["sha256"] = c["api_keys"]["keys"][0]["sha256"].clone()
            }),
            "api_keys.keys[1].sha256",
            "the same key as keys[0]",
        ),
        (
            with(&|c| c["api_keys"]["keys"][1]["name"] = json!("ci")),
            "api_keys.keys[1].name",
            "the same name",
        ),
        (
            with(&|c| c["api_keys"]["keys"] = json!([])),
            "api_keys.keys",
            "no keys",
        ),
        (
            with(&|c| c["realm"] = json!("a\"b")),
            "realm",
            "invalid realm",
        ),
        (
            with(&|c| c["stat_prefix"] = json!("auth.x")),
            "stat_prefix",
            "invalid stat prefix",
        ),
        (
            with(&|c| c["surprise"] = json!(1)),
            "invalid configuration",
            "unknown field `surprise`",
        ),
        (
            json!("not an object"),
            "invalid configuration",
            "expected struct Config",
        ),
    ];
    for (config, path, reason) in cases {
        let log = reject(&config);
        assert!(log.contains(path), "{config}\nexpected `{path}` in: {log}");
        assert!(
            log.contains(reason),
            "{config}\nexpected `{reason}` in: {log}"
        );
    }
}

fn remote_config(fetch_at_start: bool) -> Value {
    json!({
        "jwt": {
            "issuers": [ISSUER],
            "audiences": [AUDIENCE],
            "remote_jwks": {
                "cluster": "idp", "path": "/jwks", "authority": "idp.test",
                "fetch_at_start": fetch_at_start, "refresh_interval_seconds": 300,
                "min_refresh_interval_seconds": 30, "retries": 2, "retry_backoff_ms": 1000
            },
            "claims_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]
        }
    })
}

fn jwks_body(kids: &[&str]) -> Vec<u8> {
    keys().jwks(kids).to_string().into_bytes()
}

fn call_header(call: &weir::testing::MockCall, name: &str) -> String {
    header(&call.headers, name)
}

#[test]
fn the_plugin_fetches_at_start_and_requests_use_the_shared_set() {
    let host = host();
    let mut plugin = load(&host, &remote_config(true));
    assert!(host.calls().is_empty());
    host.advance(Duration::from_millis(1));
    plugin.tick();
    let calls = host.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster, "idp");
    assert_eq!(call_header(&calls[0], ":path"), "/jwks");
    assert_eq!(call_header(&calls[0], ":authority"), "idp.test");
    assert_eq!(calls[0].timeout_ms, 5000);
    plugin.callout_response(
        calls[0].token,
        Some((200, &[], &jwks_body(&["rsa-1", "ec-256"]))),
    );
    assert!(
        host.shared_data("weir.auth.jwks|idp|idp.test|/jwks|keys")
            .is_some()
    );
    assert_eq!(host.metric("auth_jwks_fetches.result=ok"), Some(1));
    let token = keys().token("RS256", "rsa-1", &claims());
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", &bearer(&token))]),
        200
    );
    assert_eq!(host.calls().len(), 1, "no fetch for a known key");
    let token = keys().token("ES256", "ec-256", &claims());
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", &bearer(&token))]),
        200
    );
    assert_eq!(host.calls().len(), 1);
}

#[test]
fn an_unknown_kid_waits_for_one_refresh_then_is_rate_limited() {
    let host = host();
    let mut plugin = load(&host, &remote_config(false));
    // Cold: the first request fetches and waits.
    let stream = plugin.stream();
    let token = keys().token("RS256", "rsa-1", &claims());
    host.set_request_headers(&[
        (":method", "GET"),
        (":path", "/"),
        ("authorization", &bearer(&token)),
    ]);
    assert_eq!(stream.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a fetch");
    stream.callout_response(call.token, Some((200, &[], &jwks_body(&["rsa-1"]))));
    assert_eq!(host.resumed_requests(), 1);
    assert!(host.take_local_reply().is_none());
    assert_eq!(host.request_header("x-jwt-sub").as_deref(), Some("alice"));
    drop(stream);

    // A rotated key 40 s later: one refresh, the request waits and passes.
    host.advance(Duration::from_secs(40));
    let rotated = keys().token("RS256", "rsa-2", &claims_with(json!({"sub": "bob"})));
    let stream = plugin.stream();
    host.set_request_headers(&[
        (":method", "GET"),
        (":path", "/"),
        ("authorization", &bearer(&rotated)),
    ]);
    assert_eq!(stream.request_headers(true), Action::Pause);
    assert_eq!(host.calls().len(), 2);
    let call = host.calls().pop().expect("a refresh");
    stream.callout_response(
        call.token,
        Some((200, &[], &jwks_body(&["rsa-1", "rsa-2"]))),
    );
    assert_eq!(host.resumed_requests(), 2);
    assert_eq!(host.request_header("x-jwt-sub").as_deref(), Some("bob"));
    drop(stream);

    // Another unknown kid within 30 s: refused at once, no fetch.
    host.advance(Duration::from_secs(10));
    let unknown = keys().token_with_header(&json!({"alg": "RS256", "kid": "rsa-9"}), &claims());
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", &bearer(&unknown))]),
        401
    );
    assert_eq!(host.calls().len(), 2);
    // Later: it refreshes, the key is still unknown, one refresh only.
    host.advance(Duration::from_secs(30));
    let stream = plugin.stream();
    host.set_request_headers(&[
        (":method", "GET"),
        (":path", "/"),
        ("authorization", &bearer(&unknown)),
    ]);
    assert_eq!(stream.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a refresh");
    stream.callout_response(
        call.token,
        Some((200, &[], &jwks_body(&["rsa-1", "rsa-2"]))),
    );
    assert_eq!(host.take_local_reply().map(|r| r.status), Some(401));
    assert_eq!(host.calls().len(), 3);
    assert_eq!(
        host.metric("auth_requests.result=denied.reason=unknown_key"),
        Some(2)
    );
    assert_eq!(host.metric("auth_jwks_fetches.result=ok"), Some(3));
}

#[test]
fn without_any_key_set_requests_get_503_and_do_not_hammer_the_idp() {
    let host = host();
    let mut plugin = load(&host, &remote_config(false));
    let token = keys().token("RS256", "rsa-1", &claims());
    let stream = plugin.stream();
    host.set_request_headers(&[
        (":method", "GET"),
        (":path", "/"),
        ("authorization", &bearer(&token)),
    ]);
    assert_eq!(stream.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a fetch");
    stream.callout_response(call.token, Some((503, &[], b"down")));
    let reply = host.take_local_reply().expect("503");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.details, "auth_jwks_unavailable");
    drop(stream);
    assert!(
        host.logs()
            .iter()
            .any(|(_, l)| l.contains("fetching the key set from idp/jwks failed: status 503"))
    );
    // Within the rate limit: 503 at once.
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", &bearer(&token))]),
        503
    );
    assert_eq!(host.calls().len(), 1);
    // Malformed tokens never fetch.
    host.advance(Duration::from_secs(60));
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", "Bearer x.y.z")]),
        401
    );
    assert_eq!(host.calls().len(), 1);
    // A failure without response (timeout), then garbage, then a set without usable keys.
    for answer in [
        None,
        Some((200u16, &[][..], &b"{not json"[..])),
        Some((
            200,
            &[][..],
            &br#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}"#[..],
        )),
    ] {
        host.advance(Duration::from_secs(31));
        let stream = plugin.stream();
        host.set_request_headers(&[
            (":method", "GET"),
            (":path", "/"),
            ("authorization", &bearer(&token)),
        ]);
        assert_eq!(stream.request_headers(true), Action::Pause);
        let call = host.calls().pop().expect("a fetch");
        stream.callout_response(call.token, answer);
        assert_eq!(host.take_local_reply().map(|r| r.status), Some(503));
    }
    assert_eq!(host.metric("auth_jwks_fetches.result=failed"), Some(4));
}

#[test]
fn timed_refresh_retries_with_backoff_then_gives_up_until_the_next_period() {
    let host = host();
    let mut plugin = load(&host, &remote_config(true));
    host.advance(Duration::from_millis(1));
    plugin.tick();
    let fail = |plugin: &MockPlugin| {
        let call = host.calls().pop().expect("a fetch");
        plugin.callout_response(call.token, Some((500, &[], b"")));
    };
    fail(&plugin);
    // Retry 1 after 1 s, retry 2 after 2 s more.
    host.advance(Duration::from_millis(999));
    plugin.tick();
    assert_eq!(host.calls().len(), 1);
    host.advance(Duration::from_millis(1));
    plugin.tick();
    assert_eq!(host.calls().len(), 2);
    fail(&plugin);
    host.advance(Duration::from_millis(2000));
    plugin.tick();
    assert_eq!(host.calls().len(), 3);
    fail(&plugin);
    assert!(
        host.logs()
            .iter()
            .any(|(_, l)| l.contains("giving up on the key set after 2 retries"))
    );
    host.advance(Duration::from_secs(60));
    plugin.tick();
    assert_eq!(host.calls().len(), 3, "no more retries");
    // The next period fetches again, and succeeds.
    host.advance(Duration::from_secs(300));
    plugin.tick();
    assert_eq!(host.calls().len(), 4);
    let call = host.calls().pop().expect("a fetch");
    plugin.callout_response(call.token, Some((200, &[], &jwks_body(&["ed"]))));
    let token = keys().token("EdDSA", "ed", &claims());
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", &bearer(&token))]),
        200
    );
    // A fresh set is not fetched again before 90% of the period.
    host.advance(Duration::from_secs(200));
    plugin.tick();
    assert_eq!(host.calls().len(), 4);
}

#[test]
fn a_refused_fetch_is_a_failure_not_a_crash() {
    let host = host();
    let mut config = remote_config(false);
    // The mock host refuses clusters named `unknown*`, as Envoy refuses undefined ones.
    config["jwt"]["remote_jwks"]["cluster"] = json!("unknown-idp");
    let mut plugin = load(&host, &config);
    let token = keys().token("RS256", "rsa-1", &claims());
    assert_eq!(
        send(&host, &mut plugin, &[("authorization", &bearer(&token))]),
        503
    );
    assert_eq!(host.metric("auth_jwks_fetches.result=failed"), Some(1));
}
