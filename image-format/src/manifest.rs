//! The manifest: what the image is, where it came from, and the digests that
//! bind it to the index and data. Encoded with postcard; see `FORMAT.md`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The signed description of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub image_uuid: Uuid,
    pub name: String,
    pub description: String,
    pub version: String,
    /// Seconds since the Unix epoch, UTC.
    pub created_unix: i64,
    /// The software that wrote the image, e.g. `reliquary 0.1.0`.
    pub creator: String,
    pub source: SourceDisk,
    pub partition_table: PartitionTable,
    /// Bytes per chunk (a power of two); the last extent may be shorter.
    pub chunk_size: u32,
    /// Length and SHA-256 of the exact index section bytes.
    pub index_length: u64,
    pub index_sha256: [u8; 32],
    /// The whole-image digest over the ordered per-extent digests.
    pub image_digest: [u8; 32],
    /// Bytes in the data region (stored, compressed, deduplicated, padded).
    pub stored_bytes: u64,
    /// Machine models this image is meant for.
    pub compatible: Vec<String>,
}

impl Manifest {
    /// Size of the source disk in bytes.
    pub fn logical_bytes(&self) -> u64 {
        self.source
            .size_sectors
            .saturating_mul(u64::from(self.source.logical_sector_size))
    }
}

/// The disk the image was captured from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDisk {
    pub size_sectors: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub model: Option<String>,
    pub serial: Option<String>,
}

/// A summary of the source disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTable {
    pub scheme: PartitionScheme,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionScheme {
    /// No recognised partition table (e.g. an ISO or a bare filesystem).
    None,
    /// A DOS/MBR table with its 32-bit disk signature.
    Mbr { disk_signature: u32 },
    /// A GPT with its disk GUID (mixed-endian, as on disk).
    Gpt { disk_guid: [u8; 16] },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// 1-based partition number as the kernel names it.
    pub number: u32,
    pub start_sector: u64,
    pub sector_count: u64,
    /// MBR type byte as `0x07`, or the GPT type GUID in canonical text form.
    pub type_code: String,
    /// The GPT partition name; MBR partitions have none.
    pub name: Option<String>,
    pub bootable: bool,
}

/// What a signer declares by signing (21 CFR Part 11 §11.50).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Meaning {
    Authored,
    Reviewed,
    Approved,
}

impl Meaning {
    pub fn as_str(self) -> &'static str {
        match self {
            Meaning::Authored => "authored",
            Meaning::Reviewed => "reviewed",
            Meaning::Approved => "approved",
        }
    }
}

impl std::str::FromStr for Meaning {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "authored" => Ok(Meaning::Authored),
            "reviewed" => Ok(Meaning::Reviewed),
            "approved" => Ok(Meaning::Approved),
            other => Err(format!(
                "unknown meaning `{other}`: use authored, reviewed or approved"
            )),
        }
    }
}

/// The statement a signature covers together with the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerStatement {
    pub signer_name: String,
    pub meaning: Meaning,
    /// Seconds since the Unix epoch, UTC, by the signer's clock.
    pub signed_unix: i64,
}
