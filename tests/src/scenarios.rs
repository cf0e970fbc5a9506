//! Requests and upstream behaviour shared by the harness, Envoy and differential
//! tests of the sample filters.

use std::sync::Arc;

use bytes::Bytes;

use crate::net::Handler;

/// One request to send, with a name for reports.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// What it exercises.
    pub name: &'static str,
    /// The request as the client sends it (origin-form URI, explicit `host`).
    pub request: http::Request<Bytes>,
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &'static [u8],
) -> http::Request<Bytes> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "weir.test");
    for (k, v) in headers {
        b = b.header(
            *k,
            http::HeaderValue::from_bytes(v).unwrap_or_else(|e| panic!("{k}: {e}")),
        );
    }
    if !body.is_empty() {
        b = b.header("content-length", body.len());
    }
    b.body(Bytes::from_static(body))
        .unwrap_or_else(|e| panic!("bad scenario request: {e}"))
}

/// Requests for header-append with the config in `envoy/header-append.yaml`.
pub fn header_append() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "plain GET",
            request: request("GET", "/hello", &[("user-agent", b"weir-tests")], b""),
        },
        Scenario {
            name: "internal header is stripped",
            request: request(
                "GET",
                "/admin?x=1",
                &[("x-internal-secret", b"let-me-in")],
                b"",
            ),
        },
        Scenario {
            name: "set replaces every client value, add appends",
            request: request(
                "GET",
                "/items",
                &[
                    ("x-env", b"prod"),
                    ("x-env", b"staging"),
                    ("x-via-weir", b"client"),
                ],
                b"",
            ),
        },
        Scenario {
            name: "non-UTF-8 header value passes untouched",
            request: request("GET", "/bytes", &[("x-binary", b"caf\xe9 \xff")], b""),
        },
        Scenario {
            name: "POST with a body",
            request: request(
                "POST",
                "/upload",
                &[("content-type", b"application/json")],
                br#"{"k":"v"}"#,
            ),
        },
        Scenario {
            name: "upstream error status",
            request: request("GET", "/status/503", &[], b""),
        },
        Scenario {
            name: "repeated inline headers coalesce, others stay separate",
            request: request(
                "GET",
                "/repeat",
                &[
                    ("accept", b"a/b"),
                    ("accept", b"c/d"),
                    ("user-agent", b"one"),
                    ("user-agent", b"two"),
                    ("x-forwarded-for", b"10.0.0.1"),
                    ("x-forwarded-for", b"10.0.0.2"),
                    ("cookie", b"a=1"),
                    ("cookie", b"b=2"),
                    ("x-multi", b"1"),
                    ("x-multi", b"2"),
                ],
                b"",
            ),
        },
        Scenario {
            name: "Envoy control headers from the client are dropped",
            request: request(
                "GET",
                "/control",
                &[
                    ("x-envoy-retry-on", b"5xx"),
                    ("x-envoy-upstream-rq-timeout-ms", b"1"),
                    ("x-forwarded-client-cert", b"By=spoofed"),
                    ("x-envoy-original-path", b"/kept"),
                ],
                b"",
            ),
        },
        Scenario {
            name: "mixed-case names and repeated headers",
            request: request(
                "GET",
                "/case",
                &[
                    ("X-Mixed-Case", b"1"),
                    ("accept", b"a/b"),
                    ("accept", b"c/d"),
                ],
                b"",
            ),
        },
    ]
}

/// The upstream used with [`header_append`]: answers `/status/N` with status N,
/// everything else with 200; always sends headers the filter removes or sets.
pub fn header_append_upstream() -> Handler {
    Arc::new(|request: http::Request<Bytes>| {
        let status = request
            .uri()
            .path()
            .strip_prefix("/status/")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(200);
        let body = format!("{} {}\n", request.method(), request.uri());
        http::Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .header("x-powered-by", "weir-tests")
            .header("cache-control", "max-age=60")
            .header("x-upstream", "1")
            .header("vary", "accept")
            .header("vary", "origin")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .body(Bytes::from(body))
            .unwrap_or_else(|e| panic!("bad upstream response: {e}"))
    })
}
