//! Transfer progress, reported by pushes and pulls.

/// Receives transfer progress. Implementations must be cheap: `advance` is
/// called for every chunk.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes starts; `label` names the blob.
    fn start(&self, label: &str, total: u64);
    /// `bytes` more were transferred.
    fn advance(&self, bytes: u64);
    /// The transfer ended.
    fn finish(&self);
}

/// Reports nothing (CI, `--json`, libraries).
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
