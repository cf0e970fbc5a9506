//! Talking to an OCI registry: push, pull, tag, list, and checking a login.
//!
//! Built on `oci-client`. Every failure is mapped to an [`Error`] that names
//! its cause (credentials, unknown repository, registry without artifact
//! support, digest mismatch, …).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::credentials::Credentials;
use crate::image::{Blob, Format, Image, ImageManifest, Layout, media_type};
use crate::progress::Progress;
use crate::rules;
use crate::{Error, Result};

/// Manifest media types weir asks registries for.
const ACCEPT: &[&str] = &[
    media_type::OCI_MANIFEST,
    media_type::DOCKER_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_LIST,
];

/// Bytes per chunk handed to the uploader (and per progress step).
const CHUNK: usize = 1024 * 1024;

/// An image reference: `registry/repository[:tag][@sha256:digest]`. A leading
/// `oci://` is accepted and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef(Reference);

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let text = s.strip_prefix("oci://").unwrap_or(s);
        let invalid = |reason: String| Error::InvalidReference {
            reference: s.to_owned(),
            reason,
        };
        let first = text.split('/').next().unwrap_or_default();
        if !text.contains('/')
            || !(first.contains('.') || first.contains(':') || first == "localhost")
        {
            return Err(invalid(
                "name the registry host first, e.g. 127.0.0.1:5000/filters/header-append:0.1.0"
                    .into(),
            ));
        }
        let reference: Reference = text.parse().map_err(|e| invalid(format!("{e}")))?;
        Ok(Self(reference))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.whole())
    }
}

impl ImageRef {
    /// The registry host (and port).
    pub fn registry(&self) -> &str {
        self.0.registry()
    }
    /// The repository path.
    pub fn repository(&self) -> &str {
        self.0.repository()
    }
    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }
    /// The digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }
    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }
    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &str) -> Self {
        Self(Reference::with_digest(
            self.registry().to_owned(),
            self.repository().to_owned(),
            digest.to_owned(),
        ))
    }
    /// The same repository at `tag`.
    pub fn at_tag(&self, tag: &str) -> Self {
        Self(Reference::with_tag(
            self.registry().to_owned(),
            self.repository().to_owned(),
            tag.to_owned(),
        ))
    }
    /// The tag a push writes: the given tag, else `latest` (none when the
    /// reference is only a digest).
    pub fn push_tag(&self) -> Option<&str> {
        match (self.tag(), self.digest()) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some("latest"),
        }
    }
    fn inner(&self) -> &Reference {
        &self.0
    }
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Plain HTTP instead of HTTPS (for registries on loopback or in a lab).
    pub insecure: bool,
    /// The credentials to send.
    pub credentials: Credentials,
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// The reference pushed, e.g. `127.0.0.1:5000/filters/header-append:0.1.0`.
    pub reference: String,
    /// The tag written (none for a digest-only reference).
    pub tag: Option<String>,
    /// `sha256:<hex>` of the manifest: what Istio's `sha256` pins.
    pub digest: String,
    /// The format pushed.
    pub format: Format,
    /// Blobs uploaded.
    pub uploaded_blobs: usize,
    /// Blobs the registry already had (a re-push uploads nothing).
    pub existing_blobs: usize,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Total image size (manifest and blobs).
    pub size: u64,
    /// What the verification pull found.
    pub verified: Verification,
    /// Wall time of the upload (blobs and manifest), in milliseconds.
    pub push_ms: u64,
    /// Wall time of the verification pull, in milliseconds.
    pub verify_ms: u64,
}

/// The consumers that would load an image, as checked on a fresh pull.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// The layout found.
    pub layout: Option<Layout>,
    /// `Ok` or Istio's reason for refusing it.
    pub istio: Check,
    /// `Ok` or Gloo's reason for refusing it.
    pub gloo: Check,
    /// `Ok` or why CNCF artifact consumers refuse it.
    pub cncf: Check,
    /// Hex sha256 of the module as consumers would extract it.
    pub module_sha256: Option<String>,
}

/// One consumer's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result", content = "reason")]
pub enum Check {
    /// Not checked.
    #[default]
    Skipped,
    /// It would load.
    Loads,
    /// It would not load, for this reason.
    Rejected(String),
}

impl Check {
    fn from<T>(r: &std::result::Result<T, String>) -> Self {
        match r {
            Ok(_) => Check::Loads,
            Err(e) => Check::Rejected(e.clone()),
        }
    }
    /// Whether it loads.
    pub fn loads(&self) -> bool {
        matches!(self, Check::Loads)
    }
}

impl Verification {
    /// Runs every consumer's rules on `image`.
    pub fn of(image: &Image) -> Self {
        let istio = rules::istio(image);
        let gloo = rules::gloo(image);
        let cncf = rules::cncf(image);
        let module = istio
            .as_ref()
            .ok()
            .map(|l| &l.module)
            .or(gloo.as_ref().ok().map(|(l, _)| &l.module))
            .or(cncf.as_ref().ok().map(|l| &l.module))
            .map(|m| crate::module::sha256_hex(m));
        Self {
            layout: Some(image.layout()),
            istio: Check::from(&istio),
            gloo: Check::from(&gloo),
            cncf: Check::from(&cncf),
            module_sha256: module,
        }
    }

    /// The consumers `format` is for must load it (Istio for compat, Istio and
    /// Gloo for oci, CNCF consumers for cncf).
    ///
    /// # Errors
    /// [`Error::WouldNotLoad`] naming the first consumer that refuses it.
    pub fn require(&self, format: Format, reference: &str) -> Result<()> {
        let required: &[(&'static str, &Check)] = match format {
            Format::Compat => &[("Istio", &self.istio)],
            Format::Oci => &[("Istio", &self.istio), ("Gloo", &self.gloo)],
            Format::Cncf => &[("CNCF wasm artifact consumers", &self.cncf)],
        };
        for (consumer, check) in required {
            match check {
                Check::Loads => {}
                Check::Rejected(reason) => {
                    return Err(Error::WouldNotLoad {
                        consumer,
                        reference: reference.to_owned(),
                        reason: reason.clone(),
                    });
                }
                Check::Skipped => {
                    return Err(Error::WouldNotLoad {
                        consumer,
                        reference: reference.to_owned(),
                        reason: "not checked".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// What a pull fetched.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image, every digest verified.
    pub image: Image,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// A registry client with one set of credentials.
#[derive(Clone)]
pub struct Client {
    inner: oci_client::Client,
    options: ClientOptions,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.options)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Push,
    Pull,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Push => "push",
            Op::Pull => "pull",
        }
    }
}

/// Installs the TLS crypto provider once per process (reqwest is built
/// without one so that no C toolchain is needed).
fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Client {
    /// A client.
    pub fn new(options: ClientOptions) -> Self {
        tls_provider();
        let config = ClientConfig {
            protocol: if options.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            user_agent: concat!("weir/", env!("CARGO_PKG_VERSION")),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        };
        Self {
            inner: oci_client::Client::new(config),
            options,
        }
    }

    fn auth(&self) -> RegistryAuth {
        match &self.options.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }

    async fn authorize(&self, reference: &ImageRef, op: Op) -> Result<()> {
        let auth = self.auth();
        self.inner
            .store_auth_if_needed(reference.inner().resolve_registry(), &auth)
            .await;
        if matches!(auth, RegistryAuth::Anonymous) {
            return Ok(());
        }
        let operation = match op {
            Op::Push => RegistryOperation::Push,
            Op::Pull => RegistryOperation::Pull,
        };
        self.inner
            .auth(reference.inner(), &auth, operation)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e, reference, op, None))
    }

    /// Maps an `oci-client` error to one that names the cause.
    fn error(
        &self,
        e: OciDistributionError,
        reference: &ImageRef,
        op: Op,
        pushing: Option<Format>,
    ) -> Error {
        let registry = reference.registry().to_owned();
        let unauthorized = || match self.options.credentials.username() {
            None => Error::CredentialsRequired {
                registry: registry.clone(),
            },
            Some(user) => Error::WrongCredentials {
                registry: registry.clone(),
                username: user.to_owned(),
            },
        };
        let generic = |detail: String| Error::Registry {
            registry: registry.clone(),
            operation: format!("{} of {reference}", op.name()),
            detail,
        };
        let by_code = |code: &str, detail: String| -> Option<Error> {
            Some(match code {
                "UNAUTHORIZED" => unauthorized(),
                "DENIED" => Error::Denied {
                    registry: registry.clone(),
                    repository: reference.repository().to_owned(),
                    operation: op.name(),
                },
                "NAME_UNKNOWN" => Error::UnknownRepository {
                    registry: registry.clone(),
                    repository: reference.repository().to_owned(),
                },
                "MANIFEST_UNKNOWN" | "NOT_FOUND" => Error::UnknownReference {
                    reference: reference.to_string(),
                },
                "DIGEST_INVALID" => Error::DigestMismatch {
                    what: format!("an upload to {}", reference.name()),
                    expected: "the digest weir computed".into(),
                    actual: format!("other bytes, says the registry ({})", one_line(&detail)),
                },
                "MANIFEST_INVALID" | "UNSUPPORTED" | "MANIFEST_BLOB_UNKNOWN"
                    if pushing.is_some_and(|f| f != Format::Compat) =>
                {
                    Error::ArtifactsUnsupported {
                        registry: registry.clone(),
                        format: pushing.map(|f| f.to_string()).unwrap_or_default(),
                        detail: one_line(&detail),
                    }
                }
                _ => return None,
            })
        };
        let by_status = |code: u16, body: String| {
            // Registries put an OCI error envelope in the body.
            let envelope: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            let first = envelope.as_ref().map(|e| &e["errors"][0]);
            if let Some(first) = first
                && let Some(c) = first["code"].as_str()
            {
                let detail = format!("{c}: {}", first["message"].as_str().unwrap_or_default());
                if let Some(e) = by_code(c, detail) {
                    return e;
                }
            }
            match code {
                401 => unauthorized(),
                403 => Error::Denied {
                    registry: registry.clone(),
                    repository: reference.repository().to_owned(),
                    operation: op.name(),
                },
                404 => Error::UnknownReference {
                    reference: reference.to_string(),
                },
                400 | 405 | 415 if pushing.is_some_and(|f| f != Format::Compat) => {
                    Error::ArtifactsUnsupported {
                        registry: registry.clone(),
                        format: pushing.map(|f| f.to_string()).unwrap_or_default(),
                        detail: format!("HTTP {code} {}", one_line(&body)),
                    }
                }
                _ => generic(format!("HTTP {code} {}", one_line(&body))),
            }
        };
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
            OciDistributionError::ImageManifestNotFoundError(_) => Error::UnknownReference {
                reference: reference.to_string(),
            },
            OciDistributionError::DigestError(d) => Error::DigestMismatch {
                what: format!("content of {reference}"),
                expected: reference
                    .digest()
                    .unwrap_or("the digest it was asked for")
                    .to_owned(),
                actual: d.to_string(),
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let first = envelope.errors.first();
                let code = first
                    .and_then(|e| serde_json::to_value(&e.code).ok())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let detail = first
                    .map(|e| format!("{code}: {}", e.message))
                    .unwrap_or_default();
                by_code(&code, detail.clone()).unwrap_or_else(|| generic(one_line(&detail)))
            }
            OciDistributionError::ServerError { code, message, .. } => by_status(code, message),
            OciDistributionError::RequestError(re) => match re.status() {
                Some(status) => by_status(status.as_u16(), re.to_string()),
                None => Error::Unreachable {
                    registry: registry.clone(),
                    reason: transport_reason(&re, self.options.insecure),
                },
            },
            other => generic(one_line(&other.to_string())),
        }
    }

    /// Pushes `image` to `reference` and proves it loads.
    ///
    /// Blobs the registry already has are not uploaded. The manifest is first
    /// stored by digest only, pulled back and checked with the rules of the
    /// consumers of `format` ([`Verification::require`]); only then is the tag
    /// moved. A push that fails or is interrupted at any point leaves the tag
    /// where it was.
    ///
    /// # Errors
    /// Registry errors (see [`Error`]), or [`Error::WouldNotLoad`] when the
    /// image pulled back would not load.
    pub async fn push(
        &self,
        reference: &ImageRef,
        image: &Image,
        format: Format,
        progress: Arc<dyn Progress>,
    ) -> Result<PushReport> {
        if let Some(want) = reference.digest()
            && want != image.digest
        {
            return Err(Error::DigestMismatch {
                what: "the image to push".into(),
                expected: want.to_owned(),
                actual: image.digest.clone(),
            });
        }
        let started = Instant::now();
        self.authorize(reference, Op::Push).await?;
        let target = reference.inner();
        let mut report = PushReport {
            reference: reference.to_string(),
            tag: reference.push_tag().map(str::to_owned),
            digest: image.digest.clone(),
            format,
            uploaded_blobs: 0,
            existing_blobs: 0,
            uploaded_bytes: 0,
            size: image.size(),
            verified: Verification::default(),
            push_ms: 0,
            verify_ms: 0,
        };
        for blob in &image.blobs {
            let exists = self
                .inner
                .blob_exists(target, &blob.digest)
                .await
                .map_err(|e| self.error(e, reference, Op::Push, Some(format)))?;
            if exists {
                tracing::debug!(digest = %blob.digest, "blob already in the registry");
                report.existing_blobs += 1;
                continue;
            }
            self.upload(reference, blob, format, &progress).await?;
            report.uploaded_blobs += 1;
            report.uploaded_bytes += blob.data.len() as u64;
        }
        let by_digest = reference.at_digest(&image.digest);
        self.put_manifest(&by_digest, image, format).await?;
        report.push_ms = millis(started.elapsed());

        let verify_started = Instant::now();
        let pulled = self
            .pull(&by_digest, Arc::new(crate::progress::Quiet))
            .await?;
        report.verified = Verification::of(&pulled.image);
        report.verified.require(format, &by_digest.to_string())?;
        if let Some(want) = image.manifest.filter_manifest().map(|m| m.sha256)
            && report.verified.module_sha256.as_deref() != Some(want.as_str())
        {
            return Err(Error::DigestMismatch {
                what: "the module pulled back".into(),
                expected: want,
                actual: report.verified.module_sha256.clone().unwrap_or_default(),
            });
        }
        report.verify_ms = millis(verify_started.elapsed());

        if let Some(tag) = reference.push_tag() {
            let tagged = reference.at_tag(tag);
            self.put_manifest(&tagged, image, format).await?;
        }
        Ok(report)
    }

    async fn upload(
        &self,
        reference: &ImageRef,
        blob: &Blob,
        format: Format,
        progress: &Arc<dyn Progress>,
    ) -> Result<()> {
        progress.start(&short(&blob.digest), blob.data.len() as u64);
        let chunks: Vec<Bytes> = (0..blob.data.len())
            .step_by(CHUNK)
            .map(|start| blob.data.slice(start..(start + CHUNK).min(blob.data.len())))
            .collect();
        let reporter = Arc::clone(progress);
        let stream = futures_util::stream::iter(chunks).map(move |chunk| {
            reporter.advance(chunk.len() as u64);
            Ok(chunk)
        });
        let result = self
            .inner
            .push_blob_stream(
                reference.inner(),
                stream,
                &blob.digest,
                Some(blob.data.len() as u64),
            )
            .await;
        progress.finish();
        result
            .map(|_| ())
            .map_err(|e| self.error(e, reference, Op::Push, Some(format)))
    }

    async fn put_manifest(
        &self,
        reference: &ImageRef,
        image: &Image,
        format: Format,
    ) -> Result<()> {
        let content_type = manifest_content_type(image)?;
        self.inner
            .push_manifest_raw(
                reference.inner(),
                image.manifest_bytes.clone(),
                content_type,
            )
            .await
            .map(|_| ())
            .map_err(|e| self.error(e, reference, Op::Push, Some(format)))
    }

    /// The manifest at `reference` (its bytes and digest, verified against the
    /// reference's digest and the registry's `Docker-Content-Digest`).
    ///
    /// # Errors
    /// Registry errors, or [`Error::DigestMismatch`].
    pub async fn manifest(&self, reference: &ImageRef) -> Result<(Bytes, String)> {
        self.authorize(reference, Op::Pull).await?;
        let answer = self
            .inner
            .pull_manifest_raw(reference.inner(), &self.auth(), ACCEPT)
            .await
            .map_err(|e| self.error(e, reference, Op::Pull, None));
        let (bytes, digest) = match answer {
            Err(Error::UnknownReference { reference: text }) => {
                // Say whether the repository itself is unknown.
                return Err(match self.tags(reference).await {
                    Err(e @ Error::UnknownRepository { .. }) => e,
                    Ok(tags) if tags.is_empty() => Error::UnknownRepository {
                        registry: reference.registry().to_owned(),
                        repository: reference.repository().to_owned(),
                    },
                    _ => Error::UnknownReference { reference: text },
                });
            }
            other => other?,
        };
        let actual = crate::module::oci_digest(&bytes);
        if actual != digest || reference.digest().is_some_and(|d| d != actual) {
            return Err(Error::DigestMismatch {
                what: format!("the manifest of {reference}"),
                expected: reference.digest().unwrap_or(&digest).to_owned(),
                actual,
            });
        }
        Ok((bytes, digest))
    }

    /// Pulls the image at `reference` with every blob, checking each digest
    /// and size. An index is resolved to its `linux/amd64` image, as Istio
    /// does.
    ///
    /// # Errors
    /// Registry errors, or [`Error::DigestMismatch`] when any content does not
    /// match its digest.
    pub async fn pull(&self, reference: &ImageRef, progress: Arc<dyn Progress>) -> Result<Pulled> {
        let started = Instant::now();
        let (mut bytes, mut digest) = self.manifest(reference).await?;
        let mut manifest = ImageManifest::parse(&bytes)?;
        if manifest.is_index() {
            let child = manifest
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .or(manifest.manifests.first())
                .ok_or_else(|| Error::InvalidManifest("the index lists no image".into()))?;
            (bytes, digest) = self.manifest(&reference.at_digest(&child.digest)).await?;
            manifest = ImageManifest::parse(&bytes)?;
        }
        let mut blobs: Vec<Blob> = Vec::new();
        let mut downloaded = bytes.len() as u64;
        for d in manifest.config.iter().chain(&manifest.layers) {
            if blobs.iter().any(|b| b.digest == d.digest) {
                continue;
            }
            let data = self
                .fetch_blob(reference, &d.digest, d.size, &progress)
                .await?;
            downloaded += data.len() as u64;
            blobs.push(Blob {
                media_type: d.media_type.clone(),
                digest: d.digest.clone(),
                data,
            });
        }
        Ok(Pulled {
            image: Image {
                manifest_bytes: bytes,
                manifest,
                digest,
                blobs,
            },
            bytes: downloaded,
            elapsed: started.elapsed(),
        })
    }

    async fn fetch_blob(
        &self,
        reference: &ImageRef,
        digest: &str,
        size: u64,
        progress: &Arc<dyn Progress>,
    ) -> Result<Bytes> {
        let Some(want_hex) = digest.strip_prefix("sha256:") else {
            return Err(Error::InvalidManifest(format!(
                "unsupported digest algorithm in {digest}"
            )));
        };
        progress.start(&short(digest), size);
        let mut stream = self
            .inner
            .pull_blob_stream(reference.inner(), digest)
            .await
            .map_err(|e| self.error(e, reference, Op::Pull, None))?
            .stream;
        let mut hasher = Sha256::new();
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(64 << 20));
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    hasher.update(&chunk);
                    progress.advance(chunk.len() as u64);
                    data.extend_from_slice(&chunk);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        progress.finish();
        let actual: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual != want_hex {
            // A verifying stream reports a mismatch as an error at the end;
            // either way the bytes say what happened.
            if failed.is_none() || data.len() as u64 == size {
                return Err(Error::DigestMismatch {
                    what: format!("blob {digest} of {}", reference.name()),
                    expected: digest.to_owned(),
                    actual: format!("sha256:{actual}"),
                });
            }
        }
        if let Some(e) = failed {
            return Err(Error::Unreachable {
                registry: reference.registry().to_owned(),
                reason: format!("download of {digest} broke off: {e}"),
            });
        }
        if data.len() as u64 != size {
            return Err(Error::DigestMismatch {
                what: format!("blob {digest} (size)"),
                expected: format!("{size} bytes"),
                actual: format!("{} bytes", data.len()),
            });
        }
        Ok(Bytes::from(data))
    }

    /// Points `target` (a tag, in the same or another repository of the same
    /// registry) at the manifest `source` names. Returns the digest.
    ///
    /// # Errors
    /// Registry errors.
    pub async fn tag(&self, source: &ImageRef, target: &ImageRef) -> Result<String> {
        if source.registry() != target.registry() {
            return Err(Error::InvalidReference {
                reference: target.to_string(),
                reason: format!("tag within one registry ({})", source.registry()),
            });
        }
        let pulled = self.pull(source, Arc::new(crate::progress::Quiet)).await?;
        self.authorize(target, Op::Push).await?;
        if source.repository() != target.repository() {
            for blob in &pulled.image.blobs {
                let exists = self
                    .inner
                    .blob_exists(target.inner(), &blob.digest)
                    .await
                    .map_err(|e| self.error(e, target, Op::Push, None))?;
                if !exists {
                    self.upload(
                        target,
                        blob,
                        Format::Compat,
                        &(Arc::new(crate::progress::Quiet) as Arc<dyn Progress>),
                    )
                    .await?;
                }
            }
        }
        let tag = target.push_tag().unwrap_or("latest");
        let content_type = manifest_content_type(&pulled.image)?;
        self.inner
            .push_manifest_raw(
                target.at_tag(tag).inner(),
                pulled.image.manifest_bytes.clone(),
                content_type,
            )
            .await
            .map_err(|e| self.error(e, target, Op::Push, None))?;
        Ok(pulled.image.digest)
    }

    /// The tags of `repository` (any reference in it), sorted.
    ///
    /// # Errors
    /// Registry errors.
    pub async fn tags(&self, repository: &ImageRef) -> Result<Vec<String>> {
        self.authorize(repository, Op::Pull).await?;
        let response = self
            .inner
            .list_tags(repository.inner(), &self.auth(), None, None)
            .await
            .map_err(|e| self.error(e, repository, Op::Pull, None))?;
        let mut tags = response.tags;
        tags.sort();
        Ok(tags)
    }

    /// The repositories of the registry `registry` (`/v2/_catalog`), sorted.
    ///
    /// # Errors
    /// Registry errors.
    pub async fn repositories(&self, registry: &str) -> Result<Vec<String>> {
        let probe: ImageRef = format!("{registry}/catalog:probe").parse()?;
        self.authorize(&probe, Op::Pull).await?;
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self
                .inner
                .catalog(probe.inner(), &self.auth(), Some(100), last.as_deref())
                .await
                .map_err(|e| self.error(e, &probe, Op::Pull, None))?;
            let n = page.repositories.len();
            last = page.repositories.last().cloned();
            all.extend(page.repositories);
            if n < 100 {
                break;
            }
        }
        all.sort();
        Ok(all)
    }
}

/// Checks `credentials` against `registry` the way `docker login` does: an
/// anonymous `GET /v2/`, then basic auth or a token request to the realm the
/// registry names.
///
/// # Errors
/// [`Error::WrongCredentials`] if the registry refuses them, or transport
/// errors.
pub async fn check_login(registry: &str, credentials: &Credentials, insecure: bool) -> Result<()> {
    tls_provider();
    let scheme = if insecure { "http" } else { "https" };
    let url = format!("{scheme}://{registry}/v2/");
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Unreachable {
            registry: registry.to_owned(),
            reason: e.to_string(),
        })?;
    let unreachable = |e: reqwest::Error| Error::Unreachable {
        registry: registry.to_owned(),
        reason: transport_reason(&e, insecure),
    };
    let wrong = || Error::WrongCredentials {
        registry: registry.to_owned(),
        username: credentials.username().unwrap_or("").to_owned(),
    };
    let first = client.get(&url).send().await.map_err(unreachable)?;
    if first.status().is_success() {
        return Ok(());
    }
    if first.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Err(Error::Registry {
            registry: registry.to_owned(),
            operation: "GET /v2/".into(),
            detail: format!("HTTP {}", first.status()),
        });
    }
    let challenge = first
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request = if let Some(params) = challenge.strip_prefix("Bearer ") {
        let param = |name: &str| {
            params.split(',').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_owned())
            })
        };
        let Some(realm) = param("realm") else {
            return Err(wrong());
        };
        let mut req = client.get(realm);
        if let Some(service) = param("service") {
            req = req.query(&[("service", service)]);
        }
        req
    } else {
        client.get(&url)
    };
    let request = match credentials {
        Credentials::Anonymous => {
            return Err(Error::CredentialsRequired {
                registry: registry.to_owned(),
            });
        }
        Credentials::Basic { username, password } => request.basic_auth(username, Some(password)),
        Credentials::Bearer(token) => request.bearer_auth(token),
    };
    let answer = request.send().await.map_err(unreachable)?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(wrong())
    }
}

fn transport_reason(e: &reqwest::Error, insecure: bool) -> String {
    // reqwest's own message repeats the URL; the causes say what happened.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let mut reason = if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    };
    if !insecure && (reason.contains("InvalidContentType") || reason.contains("corrupt message")) {
        reason.push_str(" (the registry speaks plain HTTP: pass --insecure)");
    }
    one_line(&reason)
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

fn short(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .map(|h| h.chars().take(12).collect())
        .unwrap_or_else(|| digest.to_owned())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The `Content-Type` a manifest is pushed with: its own media type (OCI image
/// manifest when it names none).
fn manifest_content_type<T: FromStr>(image: &Image) -> Result<T> {
    image
        .manifest
        .media_type
        .as_deref()
        .unwrap_or(media_type::OCI_MANIFEST)
        .parse()
        .map_err(|_| Error::InvalidManifest("manifest media type is not a header value".into()))
}
