//! The manifest: what the image is, where it came from, and the digests that
//! bind it to the index and data. Encoded with postcard; see `FORMAT.md`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::decode::decode_exact;
use crate::{ImageError, SectionName};

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
    /// How each partition of `partition_table` was captured, in its order.
    pub partition_captures: Vec<PartitionCapture>,
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

/// How one partition was captured: its file system, and whether only the
/// clusters that file system uses were kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCapture {
    /// The `number` of a partition in the manifest's partition table.
    pub partition_number: u32,
    /// The file system found, if one was recognised.
    pub file_system: Option<FileSystemKind>,
    /// The volume serial number as the file system's own tools print it
    /// (NTFS and FAT `XXXX-XXXX`, ext UUID).
    pub volume_serial: Option<String>,
    pub mode: CaptureMode,
    /// Why every sector was kept where the file system was recognised.
    pub fallback_reason: Option<String>,
    /// Version 3: for a `UsedClusters` partition, the cross-checks of its
    /// allocation map that held, in plain words with their counts (why
    /// its free clusters were left out). Empty otherwise, and in images
    /// of version 2.
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileSystemKind {
    Ntfs,
    Fat12,
    Fat16,
    Fat32,
    Ext2,
    Ext3,
    Ext4,
}

impl FileSystemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileSystemKind::Ntfs => "NTFS",
            FileSystemKind::Fat12 => "FAT12",
            FileSystemKind::Fat16 => "FAT16",
            FileSystemKind::Fat32 => "FAT32",
            FileSystemKind::Ext2 => "ext2",
            FileSystemKind::Ext3 => "ext3",
            FileSystemKind::Ext4 => "ext4",
        }
    }
}

/// Which sectors of a partition the image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaptureMode {
    /// The clusters the file system uses and its metadata; free clusters
    /// are `Unmapped` extents.
    UsedClusters,
    /// Every sector.
    AllSectors,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::UsedClusters => "used-clusters",
            CaptureMode::AllSectors => "all-sectors",
        }
    }
}

impl PartitionCapture {
    /// The capture in plain words, e.g. "free space not kept (NTFS used
    /// clusters only)".
    pub fn describe(&self) -> String {
        match (self.mode, self.file_system, &self.fallback_reason) {
            (CaptureMode::UsedClusters, Some(fs), _) => {
                format!("free space not kept ({} used clusters only)", fs.as_str())
            }
            (CaptureMode::UsedClusters, None, _) => "free space not kept".into(),
            (CaptureMode::AllSectors, Some(fs), Some(reason)) => {
                format!("every sector kept ({}: {reason})", fs.as_str())
            }
            (CaptureMode::AllSectors, Some(fs), None) => {
                format!("every sector kept ({})", fs.as_str())
            }
            (CaptureMode::AllSectors, None, Some(reason)) => {
                format!("every sector kept ({reason})")
            }
            (CaptureMode::AllSectors, None, None) => {
                "every sector kept (no recognised file system)".into()
            }
        }
    }
}

/// The manifest as format version 2 encoded it: [`PartitionCapture`]
/// without its `proof`. Decoded only to keep version 2 images readable.
mod v2 {
    use serde::Deserialize;
    use uuid::Uuid;

    use super::{CaptureMode, FileSystemKind, PartitionTable, SourceDisk};

    #[derive(Deserialize)]
    pub(super) struct Manifest {
        image_uuid: Uuid,
        name: String,
        description: String,
        version: String,
        created_unix: i64,
        creator: String,
        source: SourceDisk,
        partition_table: PartitionTable,
        chunk_size: u32,
        index_length: u64,
        index_sha256: [u8; 32],
        image_digest: [u8; 32],
        stored_bytes: u64,
        compatible: Vec<String>,
        partition_captures: Vec<PartitionCapture>,
    }

    #[derive(Deserialize)]
    struct PartitionCapture {
        partition_number: u32,
        file_system: Option<FileSystemKind>,
        volume_serial: Option<String>,
        mode: CaptureMode,
        fallback_reason: Option<String>,
    }

    impl From<Manifest> for super::Manifest {
        fn from(m: Manifest) -> Self {
            super::Manifest {
                image_uuid: m.image_uuid,
                name: m.name,
                description: m.description,
                version: m.version,
                created_unix: m.created_unix,
                creator: m.creator,
                source: m.source,
                partition_table: m.partition_table,
                chunk_size: m.chunk_size,
                index_length: m.index_length,
                index_sha256: m.index_sha256,
                image_digest: m.image_digest,
                stored_bytes: m.stored_bytes,
                compatible: m.compatible,
                partition_captures: m
                    .partition_captures
                    .into_iter()
                    .map(|c| super::PartitionCapture {
                        partition_number: c.partition_number,
                        file_system: c.file_system,
                        volume_serial: c.volume_serial,
                        mode: c.mode,
                        fallback_reason: c.fallback_reason,
                        proof: Vec::new(),
                    })
                    .collect(),
            }
        }
    }
}

/// Decodes the manifest section of an image of format `version` (one of
/// [`READABLE_VERSIONS`](crate::layout::READABLE_VERSIONS)).
pub fn decode_manifest(bytes: &[u8], version: u32) -> Result<Manifest, ImageError> {
    if version == 2 {
        decode_exact::<v2::Manifest>(bytes, SectionName::Manifest).map(Manifest::from)
    } else {
        decode_exact::<Manifest>(bytes, SectionName::Manifest)
    }
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
