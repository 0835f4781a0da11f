//! The sector index: every logical sector of the source disk exactly once,
//! as ordered, contiguous extents, plus the table of stored chunks.

use serde::{Deserialize, Serialize};

/// The decoded index section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Index {
    pub chunks: Vec<ChunkEntry>,
    pub extents: Vec<Extent>,
}

/// One stored chunk in the data region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// Absolute file offset; a multiple of 4096 inside the data region.
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub compression: Compression,
    /// SHA-256 of the uncompressed bytes.
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    Raw,
    Zstd,
}

/// A run of sectors. The first extent starts at sector 0 and each one starts
/// where the previous one ended, so starts are implicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub sector_count: u64,
    pub kind: ExtentKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExtentKind {
    /// The sectors hold the uncompressed bytes of this chunk.
    Data { chunk: u32 },
    /// The sectors are known to be zero; nothing is stored.
    Zero,
    /// The content was not captured; a restore decides what to write.
    Unmapped,
}

/// An extent with its position, as iterated by a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedExtent {
    /// Position of this extent in the index, from 0.
    pub ordinal: usize,
    pub start_sector: u64,
    pub sector_count: u64,
    pub kind: ExtentKind,
}

impl PlacedExtent {
    pub fn end_sector(&self) -> u64 {
        self.start_sector + self.sector_count
    }
}
