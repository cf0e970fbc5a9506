//! Prints the auth module's size and the wasm fuel (instructions, roughly) the
//! harness measures per request, for each signature algorithm. Figures are
//! printed, not asserted: `cargo test -p auth-core --test numbers -- --show-output`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(clippy::print_stdout, reason = "the test reports its measurements")]

mod support;

use bytes::Bytes;
use support::*;
use weir_harness::{Chain, Filter};
use weir_tests::{engine, filter_wasm};

#[test]
fn fuel_per_request_and_module_size() {
    let wasm = filter_wasm("auth");
    let size = std::fs::metadata(&wasm).expect("built").len();
    println!(
        "auth.wasm ({}): {size} bytes ({} KiB)",
        wasm.display(),
        size / 1024
    );
    let plugin = engine().load_file(&wasm).expect("loads");
    let mut chain = Chain::builder(engine())
        .filter(
            Filter::new(plugin)
                .name("auth")
                .configuration(inline_config().to_string()),
        )
        .build()
        .expect("starts");
    let k = keys();
    let mut rows = Vec::new();
    // Each request is sent twice: the first verifies the signature, the second
    // finds the token among those this VM verified already.
    let mut measure = |what: String, headers: Vec<(&str, String)>, status: u16| {
        let mut fuel = [0; 2];
        for round in &mut fuel {
            let mut b = http::Request::get("/items").header("host", "api.test");
            for (name, value) in &headers {
                b = b.header(*name, value);
            }
            let out = chain
                .send(
                    b.body(Bytes::new()).unwrap(),
                    |_req: http::Request<Bytes>| http::Response::new(Bytes::new()),
                )
                .expect("request");
            assert_eq!(out.response.status(), status, "{what}");
            *round = out.fuel;
        }
        rows.push((what, fuel));
    };
    for (alg, kid) in [
        ("HS256", "hs"),
        ("HS512", "hs"),
        ("RS256", "rsa-1"),
        ("RS512", "rsa-1"),
        ("ES256", "ec-256"),
        ("ES384", "ec-384"),
        ("EdDSA", "ed"),
    ] {
        let token = k.token(alg, kid, &claims());
        measure(
            format!("valid {alg} token (2 claims forwarded)"),
            vec![("authorization", format!("Bearer {token}"))],
            200,
        );
    }
    measure(
        "valid API key".to_owned(),
        vec![("x-api-key", "ci-key-0123456789".to_owned())],
        200,
    );
    measure("no credential (401)".to_owned(), vec![], 401);
    let forged = k.token("RS256", "rsa-1", &claims());
    let forged = format!("{}AAAA", &forged[..forged.len() - 4]);
    measure(
        "forged RS256 token (401)".to_owned(),
        vec![("authorization", format!("Bearer {forged}"))],
        401,
    );
    println!(
        "{:<44} {:>14} {:>14}",
        "request (harness, whole filter chain)", "fuel, first", "fuel, again"
    );
    for (what, [first, again]) in rows {
        println!("{what:<44} {first:>14} {again:>14}");
    }
}
