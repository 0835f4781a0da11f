//! The sealed, sector-indexed Reliquary image format (`.rimg`).
//!
//! An image is a fixed preamble, a data region of zstd-compressed chunks,
//! a postcard-encoded index and manifest, and Ed25519 signatures over the
//! manifest. `FORMAT.md` beside this crate is the byte-level specification.
//!
//! Reading is staged so nothing signed is decoded before it is verified:
//! [`read::open`] checks the framing, [`read::SealedImage::verify`] checks
//! the signature policy and then decodes the manifest and index, and
//! [`read::ChunkDecoder`] verifies each chunk as it is decoded.
#![forbid(unsafe_code)]

mod decode;
pub mod digest;
pub mod error;
pub mod fuzzing;
pub mod index;
pub mod keys;
pub mod layout;
pub mod manifest;
pub mod read;
pub mod regular_file;
pub mod signature;
pub mod trust;
pub mod write;

pub use error::{ImageError, SectionName};
pub use index::{ChunkEntry, Compression, Extent, ExtentKind, Index, PlacedExtent};
pub use manifest::{
    CaptureMode, FileSystemKind, Manifest, Meaning, Partition, PartitionCapture, PartitionScheme,
    PartitionTable, SignerStatement, SourceDisk,
};
pub use read::{open, ChunkDecoder, Image, ReadAt, SealedImage, Signer, SignerStatus, Trust};
pub use trust::{TrustError, TrustStore};
pub use write::{ImageWriter, ManifestDraft, PreparedChunk};
