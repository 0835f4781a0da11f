//! Entry points for the fuzz targets in `fuzz/`. Each takes arbitrary bytes
//! and must return without panicking or allocating without bound.

use crate::index::{ChunkEntry, Compression, Index};
use crate::layout::PREAMBLE_LEN;
use crate::manifest::Manifest;
use crate::read::{self, ChunkDecoder};
use crate::SectionName;

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

pub fn manifest(data: &[u8]) {
    let _ = read::decode_exact::<Manifest>(data, SectionName::Manifest);
}

pub fn index(data: &[u8]) {
    let _ = read::decode_exact::<Index>(data, SectionName::Index);
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
