//! The whole-image digest, defined over the ordered per-extent digests so it
//! can be computed in parallel and recomputed from a read-back of a disk.

use ring::digest::{Context, SHA256};

use crate::index::ExtentKind;
use crate::layout::IMAGE_DIGEST_CONTEXT;

/// SHA-256 of a byte string.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&SHA256, bytes).as_ref());
    out
}

/// Accumulates the whole-image digest extent by extent, in index order.
pub struct ImageDigest(Context);

impl std::fmt::Debug for ImageDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImageDigest")
    }
}

impl Default for ImageDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageDigest {
    pub fn new() -> Self {
        let mut context = Context::new(&SHA256);
        context.update(IMAGE_DIGEST_CONTEXT);
        Self(context)
    }

    /// Adds one extent. `data_sha256` is the SHA-256 of the extent's bytes
    /// and is required for data extents only.
    pub fn add(&mut self, sector_count: u64, kind: ExtentKind, data_sha256: Option<&[u8; 32]>) {
        let tag: u8 = match kind {
            ExtentKind::Data { .. } => 0,
            ExtentKind::Zero => 1,
            ExtentKind::Unmapped => 2,
        };
        self.0.update(&[tag]);
        self.0.update(&sector_count.to_le_bytes());
        if let (ExtentKind::Data { .. }, Some(d)) = (kind, data_sha256) {
            self.0.update(d);
        }
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}
