//! The errors of this crate: each one names its cause in one line.

use std::path::PathBuf;

/// Why publishing, pulling or inspecting a filter failed.
///
/// Every message is one line that names the cause and, where there is one, the
/// fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a WebAssembly module.
    #[error("not a WebAssembly module: {0}")]
    NotWasm(String),
    /// The module exports no `proxy_abi_version_*` function.
    #[error(
        "the module exports no proxy_abi_version_* marker, so Envoy would refuse it: \
         build it with the weir SDK (or another proxy-wasm SDK)"
    )]
    NoAbiMarker,
    /// A manifest field is invalid.
    #[error("invalid filter manifest: {0}")]
    InvalidManifest(String),
    /// A `runtime-config.json` could not be read.
    #[error("invalid runtime-config.json: {0}")]
    InvalidRuntimeConfig(String),
    /// An image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The registry needs credentials and none were given.
    #[error(
        "registry {registry} needs credentials (HTTP 401): run `weir login {registry}` \
         or pass --username"
    )]
    CredentialsRequired {
        /// The registry host.
        registry: String,
    },
    /// The registry rejected the credentials.
    #[error(
        "registry {registry} rejected the credentials of user {username:?} (HTTP 401): \
         check the password, then run `weir login {registry}`"
    )]
    WrongCredentials {
        /// The registry host.
        registry: String,
        /// The user name that was refused (or `<token>` for bearer tokens).
        username: String,
    },
    /// The credentials are valid but do not allow this operation.
    #[error("registry {registry} denied {operation} on {repository} for these credentials")]
    Denied {
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
        /// `push` or `pull`.
        operation: &'static str,
    },
    /// The repository does not exist in the registry.
    #[error("repository {repository} does not exist on {registry} (nothing was ever pushed there)")]
    UnknownRepository {
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
    },
    /// The tag or digest does not exist in the repository.
    #[error("{reference} not found: the repository has no such tag or digest")]
    UnknownReference {
        /// The full reference.
        reference: String,
    },
    /// The registry refused a manifest because of its media types.
    #[error(
        "registry {registry} does not accept {format} images (no OCI artifact support: {detail}); \
         push with --format compat, which uses only standard image media types"
    )]
    ArtifactsUnsupported {
        /// The registry host.
        registry: String,
        /// The image format that was refused.
        format: String,
        /// What the registry answered.
        detail: String,
    },
    /// Content does not match its digest.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (`manifest`, `layer …`, `module`).
        what: String,
        /// The digest that was asked for.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// The image would not load in the named consumer.
    #[error("{consumer} would not load {reference}: {reason}")]
    WouldNotLoad {
        /// `Istio`, `Gloo` or `CNCF wasm artifact consumers`.
        consumer: &'static str,
        /// The reference that was checked.
        reference: String,
        /// The rule that failed, in the consumer's words.
        reason: String,
    },
    /// The registry cannot be reached.
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The transport error, with a hint.
        reason: String,
    },
    /// Any other answer from the registry.
    #[error("registry {registry} refused {operation}: {detail}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What was being done.
        operation: String,
        /// The registry's answer.
        detail: String,
    },
    /// Reading or writing docker credentials failed.
    #[error("credentials: {0}")]
    Credentials(String),
    /// An I/O error on a local file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
