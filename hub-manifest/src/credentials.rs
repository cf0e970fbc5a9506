//! Registry credentials: docker's `config.json` (`auths`, `credsStore`,
//! `credHelpers`, `registrytoken`) and docker credential helpers.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use docker_credential::{CredentialRetrievalError, DockerCredential};

use crate::{Error, Result};

/// How to authenticate to a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials.
    #[default]
    Anonymous,
    /// HTTP basic credentials (also used to obtain bearer tokens when the
    /// registry asks for them).
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: String,
    },
    /// A registry bearer token, sent as is.
    Bearer(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    /// The user name to show in messages.
    pub fn username(&self) -> Option<&str> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { username, .. } => Some(username),
            Credentials::Bearer(_) => Some("<token>"),
        }
    }
}

/// A docker `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    path: PathBuf,
}

/// The key docker uses for `registry` in `config.json`: Docker Hub is stored
/// under its legacy index URL, every other registry under its host.
pub fn config_key(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    }
}

fn cred_err(e: impl fmt::Display) -> Error {
    Error::Credentials(e.to_string())
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    ///
    /// # Errors
    /// If neither `DOCKER_CONFIG` nor `HOME` is set.
    pub fn default_location() -> Result<Self> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Ok(Self::at(PathBuf::from(dir).join("config.json")));
        }
        let home = std::env::var_os("HOME")
            .ok_or_else(|| cred_err("neither DOCKER_CONFIG nor HOME is set"))?;
        Ok(Self::at(PathBuf::from(home).join(".docker/config.json")))
    }

    /// The config file at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Option<serde_json::Value>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| cred_err(format!("{} is not valid JSON: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The credentials stored for `registry` (a host, e.g. `ghcr.io` or
    /// `127.0.0.1:5000`); [`Credentials::Anonymous`] if there are none.
    ///
    /// # Errors
    /// If the file is unreadable or a credential helper fails.
    pub fn lookup(&self, registry: &str) -> Result<Credentials> {
        let registry = config_key(registry);
        let Some(config) = self.read()? else {
            return Ok(Credentials::Anonymous);
        };
        if let Some(token) = config["auths"][registry]["registrytoken"].as_str() {
            return Ok(Credentials::Bearer(token.to_owned()));
        }
        let bytes = serde_json::to_vec(&config).map_err(cred_err)?;
        match docker_credential::get_credential_from_reader(bytes.as_slice(), registry) {
            Ok(DockerCredential::UsernamePassword(username, password)) => {
                Ok(Credentials::Basic { username, password })
            }
            Ok(DockerCredential::IdentityToken(_)) => Err(cred_err(format!(
                "{} holds an identity token for {registry}; weir needs a user name and \
                 password or a registry token: run `weir login {registry}`",
                self.path.display()
            ))),
            Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(Credentials::Anonymous),
            Err(e) => Err(cred_err(format!("{registry}: {e}"))),
        }
    }

    /// Stores basic credentials for `registry`: through the configured
    /// credential helper (`credHelpers[registry]` or `credsStore`) if there is
    /// one, else base64-encoded in `auths`, as `docker login` does.
    ///
    /// # Errors
    /// If the file cannot be written or the helper fails.
    pub fn store(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        let registry = config_key(registry);
        let mut config = self.read()?.unwrap_or_else(|| serde_json::json!({}));
        if !config.is_object() {
            return Err(cred_err(format!(
                "{} is not a JSON object",
                self.path.display()
            )));
        }
        let helper = config["credHelpers"][registry]
            .as_str()
            .or_else(|| config["credsStore"].as_str())
            .map(str::to_owned);
        if let Some(helper) = helper {
            let input = serde_json::json!({
                "ServerURL": registry, "Username": username, "Secret": password,
            });
            run_helper(&helper, "store", &input.to_string())?;
            // docker keeps an empty entry so `docker logout` knows the registry.
            config["auths"][registry] = serde_json::json!({});
        } else {
            let auth = BASE64.encode(format!("{username}:{password}"));
            config["auths"][registry] = serde_json::json!({ "auth": auth });
        }
        self.write(&config)
    }

    /// Removes the credentials for `registry`. Returns whether there were any.
    ///
    /// # Errors
    /// If the file cannot be written or the helper fails.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let registry = config_key(registry);
        let Some(mut config) = self.read()? else {
            return Ok(false);
        };
        let helper = config["credHelpers"][registry]
            .as_str()
            .or_else(|| config["credsStore"].as_str())
            .map(str::to_owned);
        if let Some(helper) = helper {
            run_helper(&helper, "erase", registry)?;
        }
        let removed = config
            .get_mut("auths")
            .and_then(serde_json::Value::as_object_mut)
            .and_then(|auths| auths.remove(registry))
            .is_some();
        self.write(&config)?;
        Ok(removed)
    }

    fn write(&self, config: &serde_json::Value) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(config).map_err(cred_err)?;
        let tmp = self.path.with_extension("json.weir-tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

fn run_helper(helper: &str, action: &str, input: &str) -> Result<()> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| cred_err(format!("cannot run credential helper {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| cred_err(format!("{program} {action}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| cred_err(format!("{program} {action}: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(cred_err(format!(
            "{program} {action} failed: {}",
            format!("{} {}", msg.trim(), err.trim()).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-hub-cred-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("config.json")
    }

    #[test]
    fn store_lookup_erase_round_trip() {
        let config = DockerConfig::at(temp("round-trip"));
        assert_eq!(
            config.lookup("r.test:5000").expect("no file"),
            Credentials::Anonymous
        );
        config
            .store("r.test:5000", "alice", "s3cret:x")
            .expect("stores");
        let text = std::fs::read_to_string(config.path()).expect("written");
        assert!(text.contains(&BASE64.encode("alice:s3cret:x")), "{text}");
        assert_eq!(
            config.lookup("r.test:5000").expect("found"),
            Credentials::Basic {
                username: "alice".into(),
                password: "s3cret:x".into()
            }
        );
        assert_eq!(
            config.lookup("other.test").expect("none"),
            Credentials::Anonymous
        );
        assert!(config.erase("r.test:5000").expect("erases"));
        assert_eq!(
            config.lookup("r.test:5000").expect("gone"),
            Credentials::Anonymous
        );
    }

    #[test]
    fn docker_hub_uses_the_index_key() {
        let config = DockerConfig::at(temp("hub"));
        config.store("docker.io", "u", "p").expect("stores");
        let text = std::fs::read_to_string(config.path()).expect("written");
        assert!(text.contains("https://index.docker.io/v1/"), "{text}");
        assert!(matches!(
            config.lookup("index.docker.io"),
            Ok(Credentials::Basic { .. })
        ));
    }

    #[test]
    fn registry_token_is_a_bearer() {
        let path = temp("bearer");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        std::fs::write(&path, r#"{"auths":{"r.test":{"registrytoken":"tok"}}}"#).expect("write");
        assert_eq!(
            DockerConfig::at(&path).lookup("r.test").expect("found"),
            Credentials::Bearer("tok".into())
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
