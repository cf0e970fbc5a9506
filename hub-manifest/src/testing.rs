//! A real OCI registry for tests: Debian's `docker-registry` (distribution
//! 2.8) on `127.0.0.1` with an ephemeral port, a temporary storage directory
//! and a generated config, optionally behind htpasswd (bcrypt) basic auth.
//! Stopped by PID when dropped.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Where the registry binary is: `$WEIR_DOCKER_REGISTRY`, else Debian's
/// `/usr/bin/docker-registry` (installed by `scripts/setup`).
pub fn registry_binary() -> PathBuf {
    std::env::var_os("WEIR_DOCKER_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
}

/// A running `docker-registry`.
#[derive(Debug)]
pub struct LocalRegistry {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    config: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

impl LocalRegistry {
    /// Starts a registry that anyone may push to.
    ///
    /// # Errors
    /// If the binary is missing or the registry does not come up in 30 s.
    pub fn start() -> Result<Self> {
        Self::launch(None)
    }

    /// Starts a registry that requires `username` / `password` (htpasswd,
    /// bcrypt) for every request.
    ///
    /// # Errors
    /// As for [`LocalRegistry::start`].
    pub fn start_with_auth(username: &str, password: &str) -> Result<Self> {
        Self::launch(Some((username, password)))
    }

    fn launch(auth: Option<(&str, &str)>) -> Result<Self> {
        let binary = registry_binary();
        if !binary.is_file() {
            return Err(Error::Io {
                path: binary,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "docker-registry is not installed: run scripts/setup \
                     (apt-get install docker-registry) or set WEIR_DOCKER_REGISTRY",
                ),
            });
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weir-registry-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).map_err(io(&dir))?;
        let secret = crate::module::sha256_hex(format!("{dir:?}{:?}", Instant::now()).as_bytes());
        let mut config = format!(
            "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: {secret}
",
            data = dir.join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash_with_result(password, 4)
                .map_err(|e| Error::Credentials(format!("bcrypt: {e}")))?
                .format_for_version(bcrypt::Version::TwoY);
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).map_err(io(&htpasswd))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: weir-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, &config).map_err(io(&config_path))?;
        let log_path = dir.join("registry.log");
        let mut child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(&binary))?;
        let stderr = child.stderr.take();
        let (tx, rx) = mpsc::channel();
        let log_file = log_path.clone();
        std::thread::spawn(move || {
            let Some(stderr) = stderr else { return };
            let mut log = std::fs::File::create(&log_file).ok();
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if let Some(log) = log.as_mut() {
                    use std::io::Write as _;
                    let _ = writeln!(log, "{line}");
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split(['"', ' ']).next().unwrap_or_default().to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let mut registry = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            config: config_path,
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| Error::Unreachable {
                registry: "docker-registry".into(),
                reason: format!("it did not start within 30 s; log: {}", registry.log()),
            })?;
        registry.addr = addr.parse().map_err(|_| Error::Unreachable {
            registry: "docker-registry".into(),
            reason: format!("cannot parse its address {addr:?}"),
        })?;
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Unreachable {
                    registry: self.host(),
                    reason: format!("docker-registry exited ({status}): {}", self.log()),
                });
            }
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unreachable {
                    registry: self.host(),
                    reason: "not accepting connections after 30 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Where the filesystem driver keeps the blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or_default())
            .join(hex)
            .join("data")
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
