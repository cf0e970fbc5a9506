//! The auth filter's module in weir-harness (Envoy's filter chain emulated in
//! wasmtime): the scenarios of the mock-host tests again, as Envoy would run
//! them, plus the remote key set through real callouts to a cluster, the
//! plugin's timers on the virtual clock, and bytes a native test cannot send.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use support::*;
use weir_harness::{Chain, Error, Filter, MetricValue, Outcome};
use weir_tests::{engine, filter_wasm};

fn chain_with(config: &Value, idp: Option<Idp>) -> Chain {
    let plugin = engine().load_file(filter_wasm("auth")).expect("loads");
    let mut builder = Chain::builder(engine()).filter(
        Filter::new(plugin)
            .name("auth")
            .vm_id("auth")
            .configuration(config.to_string()),
    );
    if let Some(idp) = idp {
        builder = builder.cluster("idp", move |req: http::Request<Bytes>| idp.answer(&req));
    }
    builder.build().unwrap_or_else(|e| panic!("{e}"))
}

/// A JWKS server whose answers the test changes; counts requests.
#[derive(Clone, Default)]
struct Idp(Arc<Mutex<(u16, Vec<u8>, usize)>>);

impl Idp {
    fn serve(&self, status: u16, body: Vec<u8>) {
        let mut s = self.0.lock().unwrap();
        s.0 = status;
        s.1 = body;
    }
    fn serve_keys(&self, kids: &[&str]) {
        self.serve(200, keys().jwks(kids).to_string().into_bytes());
    }
    fn hits(&self) -> usize {
        self.0.lock().unwrap().2
    }
    fn answer(&self, req: &http::Request<Bytes>) -> http::Response<Bytes> {
        let mut s = self.0.lock().unwrap();
        s.2 += 1;
        assert_eq!(req.uri().path(), "/jwks");
        http::Response::builder()
            .status(s.0)
            .header("content-type", "application/json")
            .body(Bytes::from(s.1.clone()))
            .unwrap()
    }
}

fn get(path: &str, headers: &[(&str, &[u8])]) -> http::Request<Bytes> {
    let mut b = http::Request::get(path).header("host", "api.test");
    for (k, v) in headers {
        b = b.header(*k, http::HeaderValue::from_bytes(v).unwrap());
    }
    b.body(Bytes::new()).unwrap()
}

fn echo(req: http::Request<Bytes>) -> http::Response<Bytes> {
    let user = req
        .headers()
        .get("x-jwt-sub")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    http::Response::builder()
        .status(200)
        .body(Bytes::from(format!("hello {user}")))
        .unwrap()
}

fn send(chain: &mut Chain, path: &str, headers: &[(&str, &[u8])]) -> Outcome {
    chain
        .send(get(path, headers), echo)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

fn counter(chain: &Chain, name: &str) -> u64 {
    match chain.metrics().get(name) {
        Some(MetricValue::Counter(n)) => *n,
        None => 0,
        Some(other) => panic!("{name}: {other:?}"),
    }
}

#[test]
fn valid_tokens_of_every_algorithm_reach_the_upstream_with_their_claims() {
    let mut chain = chain_with(&inline_config(), None);
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
        let out = send(
            &mut chain,
            "/items",
            &[
                ("authorization", &bearer(&token)),
                ("x-jwt-sub", b"spoofed"),
            ],
        );
        assert_eq!(out.response.status(), 200, "{alg}: {:?}", out.logs);
        let up = out.upstream_request.expect("forwarded");
        assert_eq!(
            up.headers().get_all("x-jwt-sub").iter().collect::<Vec<_>>(),
            ["alice"],
            "{alg}"
        );
        assert_eq!(up.headers()["x-jwt-scope"], "read");
        assert!(
            up.headers().contains_key("authorization"),
            "forward_token defaults to true"
        );
        assert!(out.traps.is_empty());
    }
    assert_eq!(
        counter(&chain, "auth_requests.result=allowed.reason=jwt"),
        9
    );
}

#[test]
fn denials_answer_json_with_a_challenge() {
    let mut chain = chain_with(&inline_config(), None);
    let k = keys();
    let expired = k.token("RS256", "rsa-1", &claims_with(json!({"exp": LONG_AGO})));
    let future = k.token("RS256", "rsa-1", &claims_with(json!({"nbf": FAR_FUTURE})));
    let good = k.token("ES256", "ec-256", &claims());
    let forged = format!("{}AAAA", &good[..good.len() - 4]);
    let wrong_aud = k.token("EdDSA", "ed", &claims_with(json!({"aud": "other"})));
    let wrong_iss = k.token(
        "EdDSA",
        "ed",
        &claims_with(json!({"iss": "https://evil.test"})),
    );
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims().to_string().as_bytes())
    );
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, Vec<u8>)>,
        u16,
        Option<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        ("missing", "/", vec![], 401, None),
        (
            "expired",
            "/",
            vec![("authorization", bearer(&expired))],
            401,
            Some("invalid_token"),
        ),
        (
            "not yet valid",
            "/",
            vec![("authorization", bearer(&future))],
            401,
            Some("invalid_token"),
        ),
        (
            "forged",
            "/",
            vec![("authorization", bearer(&forged))],
            401,
            Some("invalid_token"),
        ),
        (
            "wrong aud",
            "/",
            vec![("authorization", bearer(&wrong_aud))],
            401,
            Some("invalid_token"),
        ),
        (
            "wrong iss",
            "/",
            vec![("authorization", bearer(&wrong_iss))],
            401,
            Some("invalid_token"),
        ),
        (
            "alg none",
            "/",
            vec![("authorization", bearer(&none))],
            401,
            Some("invalid_token"),
        ),
        (
            "non-UTF-8 token",
            "/",
            vec![("authorization", b"Bearer caf\xe9\xff".to_vec())],
            401,
            Some("invalid_request"),
        ),
        (
            "non-UTF-8 API key",
            "/",
            vec![("x-api-key", b"\xff\xfe-key".to_vec())],
            401,
            Some("invalid_request"),
        ),
        (
            "oversized token",
            "/",
            vec![("authorization", bearer(&"A".repeat(20_000)))],
            401,
            Some("invalid_request"),
        ),
        (
            "bad API key",
            "/",
            vec![("x-api-key", b"nope-nope-nope".to_vec())],
            401,
            Some("invalid_token"),
        ),
        (
            "deny rule",
            "/internal/metrics",
            vec![("authorization", bearer(&good))],
            403,
            None,
        ),
        (
            "insufficient scope",
            "/admin",
            vec![("authorization", bearer(&good))],
            403,
            Some("insufficient_scope"),
        ),
    ];
    for (name, path, headers, status, code) in cases {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let out = send(&mut chain, path, &headers);
        assert_eq!(out.response.status(), status, "{name}");
        assert!(out.upstream_request.is_none(), "{name}");
        assert!(out.traps.is_empty(), "{name}: {:?}", out.traps);
        assert_eq!(
            out.response.headers()["content-type"],
            "application/json",
            "{name}"
        );
        let body: Value = serde_json::from_slice(out.response.body()).expect("JSON body");
        let challenge = out
            .response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        match code {
            Some(code) => {
                assert_eq!(body["error"], code, "{name}");
                let c = challenge.unwrap_or_else(|| panic!("{name}: no challenge"));
                assert!(c.starts_with("Bearer realm=\"weir-test\""), "{name}: {c}");
                assert!(c.contains(&format!("error=\"{code}\"")), "{name}: {c}");
            }
            None if status == 401 => {
                assert_eq!(
                    challenge.as_deref(),
                    Some("Bearer realm=\"weir-test\""),
                    "{name}"
                );
                assert_eq!(body["error"], "unauthorized");
            }
            None => {
                assert_eq!(challenge, None, "{name}");
                assert_eq!(body["error"], "forbidden");
            }
        }
        let local = out.local_reply.expect("a local reply");
        assert!(
            local.details.starts_with("auth_"),
            "{name}: {}",
            local.details
        );
    }
    // A signature failure is not told apart from other token problems.
    let forged_out = send(&mut chain, "/", &[("authorization", &bearer(&forged))]);
    let aud_out = send(&mut chain, "/", &[("authorization", &bearer(&wrong_aud))]);
    assert_eq!(forged_out.response.body(), aud_out.response.body());
    assert_eq!(
        forged_out.response.headers()["www-authenticate"],
        aud_out.response.headers()["www-authenticate"]
    );
    assert_eq!(
        counter(&chain, "auth_requests.result=denied.reason=bad_signature"),
        2
    );
    assert_eq!(
        counter(&chain, "auth_requests.result=denied.reason=invalid_request"),
        3
    );
}

#[test]
fn anonymous_paths_and_api_keys() {
    let mut chain = chain_with(&inline_config(), None);
    let out = send(&mut chain, "/public/docs", &[]);
    assert_eq!(out.response.status(), 200);
    assert_eq!(out.response.body(), "hello ");
    let out = send(
        &mut chain,
        "/anything",
        &[("x-api-key", b"ci-key-0123456789")],
    );
    assert_eq!(out.response.status(), 200);
    let up = out.upstream_request.unwrap();
    assert_eq!(up.headers()["x-api-key-name"], "ci");
    assert!(!up.headers().contains_key("x-api-key"));
    let out = send(&mut chain, "/admin/x?api_key=ci-key-0123456789", &[]);
    assert_eq!(out.response.status(), 200);
    assert_eq!(
        counter(&chain, "auth_requests.result=allowed.reason=anonymous"),
        1
    );
    assert_eq!(
        counter(&chain, "auth_requests.result=allowed.reason=api_key"),
        2
    );
}

#[test]
fn invalid_config_is_rejected_at_configure_naming_the_field() {
    let mut config = inline_config();
    config["rules"][2]["prefix"] = json!("");
    let plugin = engine().load_file(filter_wasm("auth")).expect("loads");
    let err = Chain::builder(engine())
        .filter(
            Filter::new(plugin)
                .name("auth")
                .configuration(config.to_string()),
        )
        .build()
        .expect_err("must be rejected");
    let Error::ConfigureFailed { logs, .. } = &err else {
        panic!("unexpected error: {err}");
    };
    assert!(
        logs.iter()
            .any(|l| l.contains("invalid configuration at `rules[2].prefix`: empty")),
        "{logs:?}"
    );
    let mut config = inline_config();
    config["jwt"]["jwks"]["keys"][1]["kty"] = json!("DSA");
    let plugin = engine().load_file(filter_wasm("auth")).expect("loads");
    let err = Chain::builder(engine())
        .filter(Filter::new(plugin).configuration(config.to_string()))
        .build()
        .expect_err("must be rejected");
    assert!(
        err.to_string().contains("jwt.jwks")
            && err.to_string().contains("unsupported key type \"DSA\""),
        "{err}"
    );
}

fn remote_config() -> Value {
    json!({
        "jwt": {
            "issuers": [ISSUER], "audiences": [AUDIENCE],
            "remote_jwks": {"cluster": "idp", "path": "/jwks", "refresh_interval_seconds": 300,
                            "min_refresh_interval_seconds": 30, "retries": 2, "retry_backoff_ms": 1000},
            "claims_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]
        }
    })
}

#[test]
fn the_remote_key_set_is_fetched_at_start_refreshed_and_retried() {
    let idp = Idp::default();
    idp.serve_keys(&["rsa-1"]);
    let mut chain = chain_with(&remote_config(), Some(idp.clone()));
    assert_eq!(idp.hits(), 0);
    let bg = chain.advance(Duration::from_millis(1));
    assert_eq!(bg.callouts.len(), 1);
    assert_eq!(bg.callouts[0].cluster, "idp");
    assert!(
        bg.logs
            .iter()
            .any(|l| l.message == "fetched the key set from idp/jwks: 1 usable key(s)"),
        "{:?}",
        bg.logs
    );
    let token = keys().token("RS256", "rsa-1", &claims());
    let out = send(&mut chain, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(out.response.body(), "hello alice");
    assert!(out.callouts.is_empty());
    assert!(
        chain
            .shared_data("auth", "weir.auth.jwks|idp|idp|/jwks|keys")
            .is_some()
    );

    // The IdP fails: the timed refresh retries twice with backoff, then waits.
    idp.serve(500, Vec::new());
    let bg = chain.advance(Duration::from_secs(300));
    assert_eq!(bg.callouts.len(), 1);
    let bg = chain.advance(Duration::from_secs(4));
    assert_eq!(bg.callouts.len(), 2, "retries after 1 s and 2 s");
    assert!(bg.logs.iter().any(|l| {
        l.message
            .contains("giving up on the key set after 2 retries")
    }));
    // The old set stays in use.
    let out = send(&mut chain, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(out.response.status(), 200);
    // The IdP is back, with a rotated key: the next period picks it up.
    idp.serve_keys(&["rsa-2"]);
    let bg = chain.advance(Duration::from_secs(300));
    assert_eq!(bg.callouts.len(), 1);
    let rotated = keys().token("RS256", "rsa-2", &claims_with(json!({"sub": "bob"})));
    let out = send(&mut chain, "/", &[("authorization", &bearer(&rotated))]);
    assert_eq!(out.response.body(), "hello bob");
    assert!(out.callouts.is_empty());
    // The key that left the set no longer verifies, though its token was verified
    // (and remembered) before.
    let out = send(&mut chain, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(out.response.status(), 401);
    assert_eq!(counter(&chain, "auth_jwks_fetches.result=ok"), 2);
    assert_eq!(
        counter(&chain, "auth_requests.result=denied.reason=unknown_key"),
        1
    );
    assert_eq!(counter(&chain, "auth_jwks_fetches.result=failed"), 3);
}

#[test]
fn an_unknown_kid_waits_for_one_refresh() {
    let idp = Idp::default();
    idp.serve_keys(&["rsa-1"]);
    let mut config = remote_config();
    config["jwt"]["remote_jwks"]["fetch_at_start"] = json!(false);
    let mut chain = chain_with(&config, Some(idp.clone()));
    // The first request fetches the set and waits for it.
    let token = keys().token("RS256", "rsa-1", &claims());
    let out = send(&mut chain, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(out.response.body(), "hello alice", "{:?}", out.logs);
    assert_eq!(out.callouts.len(), 1);
    // A new key 40 s later: one refresh, then through.
    chain.advance(Duration::from_secs(40));
    idp.serve_keys(&["rsa-1", "ed"]);
    let ed = keys().token("EdDSA", "ed", &claims_with(json!({"sub": "eddie"})));
    let out = send(&mut chain, "/", &[("authorization", &bearer(&ed))]);
    assert_eq!(out.response.body(), "hello eddie");
    assert_eq!(out.callouts.len(), 1);
    // Unknown kids right after: refused without a fetch.
    let unknown = keys().token("RS256", "rsa-2", &claims());
    let out = send(&mut chain, "/", &[("authorization", &bearer(&unknown))]);
    assert_eq!(out.response.status(), 401);
    assert!(out.callouts.is_empty());
    assert_eq!(idp.hits(), 2);
}

#[test]
fn a_dead_idp_means_503_not_a_hang() {
    let idp = Idp::default();
    idp.serve(503, b"unavailable".to_vec());
    let mut config = remote_config();
    config["jwt"]["remote_jwks"]["fetch_at_start"] = json!(false);
    let mut chain = chain_with(&config, Some(idp.clone()));
    let token = keys().token("RS256", "rsa-1", &claims());
    let out = send(&mut chain, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(out.response.status(), 503);
    let body: Value = serde_json::from_slice(out.response.body()).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    let out = send(&mut chain, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(out.response.status(), 503);
    assert_eq!(idp.hits(), 1, "rate-limited");
}

/// A token seen before skips the signature check, not the time checks.
#[test]
fn a_remembered_token_still_expires() {
    let mut chain = chain_with(&inline_config(), None);
    let token = keys().token(
        "RS256",
        "rsa-1",
        &claims_with(json!({"exp": HARNESS_START + 100})),
    );
    let first = send(&mut chain, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(first.response.status(), 200);
    let again = send(&mut chain, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(again.response.status(), 200);
    assert!(again.fuel < first.fuel, "the second check is cheaper");
    chain.advance(Duration::from_secs(100 + 61));
    let late = send(&mut chain, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(late.response.status(), 401);
    assert!(
        late.response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("expired")
    );
}
