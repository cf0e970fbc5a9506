//! The auth filter in real Envoy 1.40 with the shipped `envoy/auth.yaml`: the key
//! set fetched by the plugin's start-up timer from the `idp` cluster (once for
//! every VM), tokens, API keys, rules after Envoy's path normalization, bytes
//! only a real codec lets through, metrics, and a configuration Envoy refuses.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use support::*;
use weir_tests::envoy::{Envoy, Rebind};
use weir_tests::net::{self, Upstream};
use weir_tests::{built_filters, envoy_yaml};

fn modules() -> HashMap<String, std::path::PathBuf> {
    built_filters()
        .iter()
        .map(|f| {
            (
                format!("{}.wasm", f.package.replace('-', "_")),
                f.wasm.clone(),
            )
        })
        .collect()
}

fn upstream() -> Upstream {
    Upstream::start(Arc::new(|req: http::Request<Bytes>| {
        let user = req
            .headers()
            .get("x-user")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        http::Response::new(Bytes::from(format!("hello {user}")))
    }))
    .expect("upstream")
}

fn idp() -> Upstream {
    let body = keys().jwks(&["rsa-1", "ec-256", "ed"]).to_string();
    Upstream::start(Arc::new(move |_req: http::Request<Bytes>| {
        http::Response::builder()
            .header("content-type", "application/json")
            .body(Bytes::from(body.clone()))
            .unwrap()
    }))
    .expect("idp")
}

fn rebind(upstream: &Upstream, idp: &Upstream) -> Rebind {
    Rebind {
        clusters: HashMap::from([
            ("upstream".to_owned(), upstream.addr()),
            ("idp".to_owned(), idp.addr()),
        ]),
        modules: modules(),
        loopback: true,
    }
}

fn get(envoy: &Envoy, path: &str, headers: &[(&str, &[u8])]) -> http::Response<Bytes> {
    let mut b = http::Request::get(path).header("host", "api.test");
    for (k, v) in headers {
        b = b.header(*k, http::HeaderValue::from_bytes(v).unwrap());
    }
    net::send(envoy.listener, b.body(Bytes::new()).unwrap()).expect("Envoy answers")
}

fn idp_claims() -> serde_json::Value {
    claims_with(json!({"iss": "https://idp.example.com", "aud": "api"}))
}

#[test]
fn the_shipped_config_authenticates_in_envoy() {
    let upstream = upstream();
    let idp = idp();
    let envoy = Envoy::start(&envoy_yaml("auth.yaml"), &rebind(&upstream, &idp))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The plugin's start-up timer fetches the key set; the main thread's and the
    // worker's VMs share it, so the IdP is asked once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fetches = Vec::new();
    while !envoy.log().contains("fetched the key set from idp/") && Instant::now() < deadline {
        fetches.extend(idp.take_seen());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    fetches.extend(idp.take_seen());
    assert_eq!(fetches.len(), 1, "{}", envoy.log());
    assert_eq!(fetches[0].uri().path(), "/.well-known/jwks.json");
    assert_eq!(fetches[0].headers()["host"], "idp.example.com");

    let k = keys();
    for (alg, kid) in [("ES256", "ec-256"), ("RS256", "rsa-1"), ("EdDSA", "ed")] {
        let token = k.token(alg, kid, &idp_claims());
        let res = get(
            &envoy,
            "/items",
            &[
                ("authorization", format!("Bearer {token}").as_bytes()),
                ("x-user", b"root"),
            ],
        );
        assert_eq!(res.status(), 200, "{alg}: {}", envoy.log());
        assert_eq!(res.body(), "hello alice", "{alg}");
    }
    let seen = upstream.take_seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].headers()["x-scope"], "read");

    // HS256 is not among the accepted algorithms here.
    let hs = k.token("HS256", "hs", &idp_claims());
    assert_eq!(
        get(
            &envoy,
            "/",
            &[("authorization", format!("Bearer {hs}").as_bytes())]
        )
        .status(),
        401
    );

    let res = get(&envoy, "/items", &[]);
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"api\"");
    assert_eq!(res.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body["error"], "unauthorized");

    // Bytes a real HTTP/1 codec passes: obs-text in the credential.
    let res = get(
        &envoy,
        "/items",
        &[("authorization", b"Bearer caf\xe9.\xff.x")],
    );
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_request\"")
    );

    let res = get(&envoy, "/items", &[("x-api-key", b"weir-demo-key")]);
    assert_eq!(res.status(), 200);
    let seen = upstream.take_seen();
    assert_eq!(seen.last().unwrap().headers()["x-api-key-name"], "demo");
    assert!(seen.last().unwrap().headers().get("x-api-key").is_none());
    assert_eq!(
        get(&envoy, "/items", &[("x-api-key", b"weir-demo-kez")]).status(),
        401
    );

    assert_eq!(get(&envoy, "/healthz", &[]).status(), 200);
    assert_eq!(
        get(&envoy, "/internal/x", &[("x-api-key", b"weir-demo-key")]).status(),
        403
    );
    // Envoy normalizes the path before the filter sees it: no way round a rule.
    assert_eq!(get(&envoy, "/healthz/../internal/x", &[]).status(), 403);
    // `..` removes the empty segment, then slashes merge: the upstream is asked
    // for the very path the rule matched.
    upstream.take_seen();
    assert_eq!(get(&envoy, "/healthz//..//internal", &[]).status(), 200);
    assert_eq!(upstream.take_seen()[0].uri().path(), "/healthz/internal");
    // An escaped slash is refused by Envoy itself (path_with_escaped_slashes_action).
    assert_eq!(get(&envoy, "/healthz%2F..%2Finternal", &[]).status(), 400);
    // Scope: the demo key only has `read`.
    assert_eq!(
        get(&envoy, "/admin", &[("x-api-key", b"weir-demo-key")]).status(),
        403
    );

    let stats = net::admin_get(envoy.admin, "/stats?filter=auth_").expect("stats");
    for (stat, value) in [
        ("auth_requests.result=allowed.reason=jwt", 3),
        ("auth_requests.result=allowed.reason=api_key", 1),
        ("auth_requests.result=allowed.reason=anonymous", 2),
        ("auth_requests.result=denied.reason=missing", 1),
        ("auth_requests.result=denied.reason=bad_algorithm", 1),
        ("auth_requests.result=denied.reason=invalid_request", 1),
        ("auth_requests.result=denied.reason=bad_api_key", 1),
        ("auth_requests.result=denied.reason=denied_by_rule", 2),
        ("auth_requests.result=denied.reason=insufficient_scope", 1),
        ("auth_jwks_fetches.result=ok", 1),
    ] {
        let line = format!("{stat}: {value}");
        assert!(
            stats.lines().any(|l| l.ends_with(&line)),
            "{line} not in:\n{stats}"
        );
    }
    let prometheus = net::admin_get(envoy.admin, "/stats/prometheus").expect("stats");
    assert!(
        prometheus.lines().any(|l| l.contains("auth_requests{")
            && l.contains("result=\"allowed\"")
            && l.contains("reason=\"jwt\"")
            && l.ends_with(" 3")),
        "tags not extracted:\n{}",
        prometheus
            .lines()
            .filter(|l| l.contains("auth_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A configuration error makes Envoy refuse the plugin, and its log names the
/// field.
#[test]
fn envoy_rejects_an_invalid_auth_config() {
    let upstream = upstream();
    let idp = idp();
    for (from, to, field) in [
        (
            r#""prefix": "/internal""#,
            r#""prefix": """#,
            "rules[1].prefix",
        ),
        (
            r#""algorithms": ["RS256", "ES256", "EdDSA"]"#,
            r#""algorithms": ["RS256", "none"]"#,
            "jwt.algorithms[1]",
        ),
        (
            "\"sha256\": \"37a7",
            "\"sha256\": \"zz",
            "api_keys.keys[0].sha256",
        ),
    ] {
        let yaml = envoy_yaml("auth.yaml").replace(from, to);
        assert!(yaml.contains(to), "the shipped config changed: {from}");
        let err = Envoy::start(&yaml, &rebind(&upstream, &idp))
            .expect_err("Envoy must refuse the plugin");
        let log = format!("{err:#}");
        assert!(
            log.contains(&format!("invalid configuration at `{field}`")),
            "{field}:\n{log}"
        );
    }
}
