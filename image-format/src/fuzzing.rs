//! Entry points for the fuzz targets in `fuzz/`. Each takes arbitrary bytes
//! and must return without panicking or allocating without bound.

use crate::index::{ChunkEntry, Compression};
use crate::layout::{Section, MAX_CHUNKS, MAX_EXTENTS, PREAMBLE_LEN, READABLE_VERSIONS};
use crate::manifest::decode_manifest;
use crate::read::{self, ChunkDecoder};
use crate::TrustStore;

/// The preamble check, then the whole open-and-decode path without trust,
/// then sector lookups and every chunk's decoding and verification.
pub fn preamble(data: &[u8]) {
    if let Ok(raw) = <&[u8; PREAMBLE_LEN]>::try_from(data.get(..PREAMBLE_LEN).unwrap_or(&[])) {
        let _ = read::check_preamble(raw, data.len() as u64);
    }
    let Ok(image) = read::open(data).and_then(|sealed| sealed.open_unverified()) else {
        return;
    };
    let size = image.manifest().source.size_sectors;
    for sector in [0, size / 2, size.saturating_sub(1), size] {
        let _ = image.extent_at_sector(sector);
    }
    let _ = image.extents().count();
    let mut decoder = ChunkDecoder::new();
    let mut out = Vec::new();
    for chunk in 0..image.index().chunks.len().min(64) as u32 {
        let _ = image.chunk_sectors(chunk);
        let _ = image.read_chunk(chunk, &mut decoder, &mut out);
    }
}

/// Both manifest layouts a reader accepts (versions 2 and 3).
pub fn manifest(data: &[u8]) {
    for version in READABLE_VERSIONS {
        let _ = decode_manifest(data, version);
    }
}

/// The streamed index decoder with the absolute count ceilings: memory stays
/// bounded (run with `-rss_limit_mb=256`) whatever the counts claim.
pub fn index(data: &[u8]) {
    let section = Section {
        offset: 0,
        length: data.len() as u64,
    };
    let _ = read::decode_index(&data, section, MAX_CHUNKS, MAX_EXTENTS);
}

/// Loads a trust store built from `data`: a key file, a `policy` and an
/// `operators` file, split at the first two NUL bytes; then the key file
/// alone as a store.
pub fn trust_store(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (key, policy, operators) = (parts.next(), parts.next(), parts.next());
    let Ok(dir) = tempfile_dir() else {
        return;
    };
    let write = |name: &str, bytes: Option<&[u8]>| match bytes {
        Some(bytes) => std::fs::write(dir.join(name), bytes),
        None => Ok(()),
    };
    if write("k.pub", key).is_ok()
        && write(crate::trust::POLICY_FILE, policy).is_ok()
        && write(crate::trust::OPERATORS_FILE, operators).is_ok()
    {
        let _ = TrustStore::load(&dir);
        let _ = TrustStore::load(&dir.join("k.pub"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory for one fuzz input.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "reliquary-fuzz-trust-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// Decodes arbitrary bytes as a zstd chunk claiming a length from the input.
pub fn chunk(data: &[u8]) {
    let Some((&len_byte, stored)) = data.split_first() else {
        return;
    };
    let entry = ChunkEntry {
        offset: 0,
        stored_len: stored.len() as u32,
        raw_len: (u32::from(len_byte) + 1) * 4096,
        compression: Compression::Zstd,
        sha256: [0; 32],
    };
    let mut out = Vec::new();
    let _ = ChunkDecoder::new().decode(0, &entry, stored, &mut out, (0, 0));
}
