//! The `weir` binary against a real registry (Debian's docker-registry on
//! loopback): login and credential helpers, push/pull/inspect/tag/logout with
//! text and `--json` output, the apply-ready WasmPlugin, and one-line errors.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use weir_hub::testing::LocalRegistry;

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weir-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("docker")).expect("dir");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs `weir` with this sandbox's docker config, in CI mode.
    fn weir(&self, args: &[&str], stdin: Option<&str>, path: Option<&Path>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.args(args)
            .current_dir(&self.dir)
            .env("DOCKER_CONFIG", self.dir.join("docker"))
            .env("CI", "1")
            .env_remove("WEIR_REGISTRY_PASSWORD")
            .env_remove("WEIR_REGISTRY_TOKEN")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = path {
            let system = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![dir.to_owned()];
            paths.extend(std::env::split_paths(&system));
            cmd.env("PATH", std::env::join_paths(paths).expect("PATH"));
        }
        let mut child = cmd.spawn().expect("weir runs");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("weir finishes")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.weir(args, stdin, None);
        assert!(
            out.status.success(),
            "weir {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn json(&self, args: &[&str], stdin: Option<&str>) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all, stdin);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("weir {args:?}: not JSON ({e}):\n{text}"))
    }

    /// Runs a command that must fail with a one-line `error: …` on stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.weir(args, stdin, None);
        assert!(!out.status.success(), "weir {args:?} should fail");
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "not a one-line error:\n{stderr}");
        assert!(lines[0].starts_with("error: "), "{stderr}");
        lines[0].to_owned()
    }

    fn module(&self, name: &str) -> String {
        let wasm = wat::parse_str(
            r#"(module (memory (export "memory") 1)
                 (func (export "proxy_abi_version_0_2_1"))
                 (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0))"#,
        )
        .expect("wat");
        let path = self.path(name);
        std::fs::write(&path, wasm).expect("write module");
        path.display().to_string()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn password() -> String {
    // Generated per run; nothing secret lives in the repository.
    weir_hub::module::sha256_hex(
        format!("{:?}{}", std::time::Instant::now(), std::process::id()).as_bytes(),
    )[..24]
        .to_owned()
}

#[test]
fn login_push_inspect_pull_tag_logout() {
    let pw = password();
    let reg = LocalRegistry::start_with_auth("alice", &pw).expect("docker-registry starts");
    let host = reg.host();
    let s = Sandbox::new("flow");
    let wasm = s.module("probe_filter.wasm");
    let image = format!("{host}/team/probe-filter:1.0.0");

    // Without credentials, and with a wrong password.
    let err = s.fails(&["push", &image, "--wasm", &wasm, "--insecure"], None);
    assert!(
        err.contains("needs credentials") && err.contains("weir login"),
        "{err}"
    );
    let err = s.fails(
        &[
            "login",
            &host,
            "-u",
            "alice",
            "--password-stdin",
            "--insecure",
        ],
        Some("wrong\n"),
    );
    assert!(
        err.contains("rejected the credentials of user \"alice\""),
        "{err}"
    );
    assert!(
        !s.path("docker/config.json").exists(),
        "a refused login must not be saved"
    );

    let login = s.json(
        &[
            "login",
            &host,
            "-u",
            "alice",
            "--password-stdin",
            "--insecure",
        ],
        Some(&format!("{pw}\n")),
    );
    assert_eq!(login["username"], "alice");
    let config = std::fs::read_to_string(s.path("docker/config.json")).expect("saved");
    assert!(config.contains(&host), "{config}");

    // push uses the stored credentials.
    let pushed = s.json(&["push", &image, "--wasm", &wasm, "--insecure"], None);
    let digest = pushed["digest"].as_str().expect("digest").to_owned();
    assert_eq!(pushed["format"], "compat");
    assert_eq!(pushed["verified"]["istio"]["result"], "loads");
    assert_eq!(pushed["filter"]["name"], "probe-filter");
    assert_eq!(pushed["filter"]["abiVersions"][0], "v0.2.1");
    assert!(
        pushed["snippets"]["wasmPlugin"]
            .as_str()
            .expect("yaml")
            .contains(&digest[7..])
    );

    let inspected = s.json(&["inspect", &image, "--insecure"], None);
    assert_eq!(inspected["digest"], digest.as_str());
    assert_eq!(inspected["layout"], "compat");
    assert_eq!(inspected["abiVersions"][0], "v0.2.1");
    assert_eq!(
        inspected["manifest"]["annotations"]["module.wasm.image/variant"],
        "compat"
    );
    let text = s.ok(&["inspect", &image, "--insecure"], None);
    for line in [
        "digest:    sha256:",
        "layer 0:   application/vnd.oci.image.layer.v1.tar+gzip",
        "istio:     loads",
        "abi:       v0.2.1",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }

    let out = s.path("pulled.wasm");
    let pulled = s.json(
        &[
            "pull",
            &image,
            "--insecure",
            "-o",
            &out.display().to_string(),
        ],
        None,
    );
    assert_eq!(pulled["digest"], digest.as_str());
    assert_eq!(
        std::fs::read(&out).expect("pulled"),
        std::fs::read(&wasm).expect("module")
    );

    let stable = format!("{host}/team/probe-filter:stable");
    let tagged = s.json(&["tag", &image, &stable, "--insecure"], None);
    assert_eq!(tagged["digest"], digest.as_str());
    assert_eq!(
        s.json(&["inspect", &stable, "--insecure"], None)["digest"],
        digest.as_str()
    );

    // --json (and CI) keeps stderr quiet: no progress bars, no summary.
    let out = s.weir(
        &["push", &image, "--wasm", &wasm, "--insecure", "--json"],
        None,
        None,
    );
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A re-push uploads nothing.
    let again = s.json(&["push", &image, "--wasm", &wasm, "--insecure"], None);
    assert_eq!(again["uploadedBlobs"], 0);
    assert_eq!(again["digest"], digest.as_str());

    let catalog = s.json(
        &["hub", "catalog", &host, "--insecure", "-o", "catalog.html"],
        None,
    );
    assert_eq!(
        catalog["repositories"][0]["repository"],
        "team/probe-filter"
    );
    assert!(s.path("catalog.html").is_file());

    let logout = s.json(&["logout", &host], None);
    assert_eq!(logout["removed"], true);
    let err = s.fails(&["pull", &image, "--insecure"], None);
    assert!(err.contains("needs credentials"), "{err}");
}

/// `--emit wasmplugin` prints only the WasmPlugin: YAML that `kubectl apply -f -`
/// takes, pinned by the manifest digest, with an explicit failStrategy.
#[test]
fn push_emits_an_apply_ready_wasmplugin() {
    let reg = LocalRegistry::start().expect("docker-registry starts");
    let s = Sandbox::new("emit");
    let wasm = s.module("tiny.wasm");
    let image = format!("{}/filters/tiny:2.0.0", reg.host());
    let yaml = s.ok(
        &[
            "push",
            &image,
            "--wasm",
            &wasm,
            "--insecure",
            "--emit",
            "wasmplugin",
        ],
        None,
    );
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).expect("one YAML document");
    assert_eq!(
        doc["apiVersion"].as_str(),
        Some("extensions.istio.io/v1alpha1")
    );
    assert_eq!(doc["kind"].as_str(), Some("WasmPlugin"));
    assert_eq!(doc["metadata"]["name"].as_str(), Some("tiny"));
    assert_eq!(
        doc["spec"]["url"].as_str(),
        Some(format!("oci://{image}").as_str())
    );
    assert_eq!(doc["spec"]["failStrategy"].as_str(), Some("FAIL_CLOSE"));
    let digest = s.json(&["inspect", &image, "--insecure"], None)["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    assert_eq!(
        doc["spec"]["sha256"].as_str(),
        Some(&digest["sha256:".len()..])
    );
    // inspect prints the same WasmPlugin for an image already in the registry.
    let again = s.ok(
        &["inspect", &image, "--insecure", "--emit", "wasmplugin"],
        None,
    );
    assert_eq!(again, yaml);

    // The default output: summary, then the three snippets.
    let all = s.ok(&["push", &image, "--wasm", &wasm, "--insecure"], None);
    for part in [
        "digest: sha256:",
        "verified on a fresh pull: Istio: loads",
        "kind: WasmPlugin",
        "kind: Gateway",
        "envoy.filters.http.wasm",
    ] {
        assert!(all.contains(part), "{part:?} missing:\n{all}");
    }
    // CNCF artifacts do not load in Istio: asking for a WasmPlugin says so.
    let cncf = format!("{}/filters/tiny:cncf", reg.host());
    let err = s.fails(
        &[
            "push",
            &cncf,
            "--wasm",
            &wasm,
            "--insecure",
            "--format",
            "cncf",
            "--emit",
            "wasmplugin",
        ],
        None,
    );
    assert!(err.contains("Istio does not load"), "{err}");
}

/// Credentials through a docker credential helper (`credsStore`).
#[test]
fn credentials_come_from_a_credential_helper() {
    let pw = password();
    let reg = LocalRegistry::start_with_auth("bob", &pw).expect("docker-registry starts");
    let s = Sandbox::new("helper");
    let bin = s.path("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let store = s.path("helper-store.json");
    let helper = bin.join("docker-credential-weirtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n# A docker credential helper keeping one entry in a file.\n\
             case \"$1\" in\n\
             store) cat > '{store}' ;;\n\
             get) cat >/dev/null; if [ -f '{store}' ]; then cat '{store}'; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n\
             erase) cat >/dev/null; rm -f '{store}' ;;\n\
             esac\n",
            store = store.display()
        ),
    )
    .expect("helper");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::write(s.path("docker/config.json"), r#"{"credsStore":"weirtest"}"#).expect("config");
    let host = reg.host();
    let run = |args: &[&str], stdin: Option<&str>| s.weir(args, stdin, Some(&bin));

    let out = run(
        &[
            "login",
            &host,
            "-u",
            "bob",
            "--password-stdin",
            "--insecure",
        ],
        Some(&pw),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = std::fs::read_to_string(&store).expect("the helper stored the secret");
    assert!(stored.contains("\"Username\":\"bob\""), "{stored}");
    let config = std::fs::read_to_string(s.path("docker/config.json")).expect("config");
    assert!(
        !config.contains(&pw),
        "the password must stay in the helper: {config}"
    );

    let wasm = s.module("helper.wasm");
    let image = format!("{host}/team/helper:1.0.0");
    let out = run(
        &["push", &image, "--wasm", &wasm, "--insecure", "--json"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn errors_are_one_line_and_name_the_cause() {
    let reg = LocalRegistry::start().expect("docker-registry starts");
    let s = Sandbox::new("errors");
    let host = reg.host();
    // A module without an ABI marker.
    let plain = wat::parse_str(r#"(module (func (export "run")))"#).expect("wat");
    std::fs::write(s.path("plain.wasm"), plain).expect("write");
    let err = s.fails(
        &[
            "push",
            &format!("{host}/x/plain:1"),
            "--wasm",
            "plain.wasm",
            "--insecure",
        ],
        None,
    );
    assert!(err.contains("no proxy_abi_version_* marker"), "{err}");
    // Not wasm at all.
    std::fs::write(s.path("notes.wasm"), "hello").expect("write");
    let err = s.fails(
        &[
            "push",
            &format!("{host}/x/notes:1"),
            "--wasm",
            "notes.wasm",
            "--insecure",
        ],
        None,
    );
    assert!(err.contains("not a WebAssembly module"), "{err}");
    // Unknown repository and tag.
    let err = s.fails(
        &["pull", &format!("{host}/nobody/here:1"), "--insecure"],
        None,
    );
    assert!(
        err.contains("repository nobody/here does not exist"),
        "{err}"
    );
    let wasm = s.module("ok.wasm");
    s.ok(
        &[
            "push",
            &format!("{host}/x/ok:1"),
            "--wasm",
            &wasm,
            "--insecure",
        ],
        None,
    );
    let err = s.fails(&["inspect", &format!("{host}/x/ok:2"), "--insecure"], None);
    assert!(err.contains("x/ok:2 not found"), "{err}");
    // A digest that is not in the repository.
    let missing = format!("{host}/x/ok@sha256:{}", "0".repeat(64));
    let err = s.fails(&["pull", &missing, "--insecure"], None);
    assert!(err.contains("not found"), "{err}");
    // Plain HTTP registry without --insecure.
    let err = s.fails(&["inspect", &format!("{host}/x/ok:1")], None);
    assert!(err.contains("--insecure"), "{err}");
    // A reference without a registry host.
    let err = s.fails(&["pull", "x/ok:1"], None);
    assert!(err.contains("registry host"), "{err}");
}

#[test]
fn hub_schema_prints_the_published_schema() {
    let s = Sandbox::new("schema");
    let out = s.ok(&["hub", "schema"], None);
    assert_eq!(
        out.trim_end(),
        weir_hub::manifest::PUBLISHED_SCHEMA.trim_end()
    );
}
