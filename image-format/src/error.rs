//! Every way reading, verifying or writing an image can fail.

use std::path::PathBuf;

use uuid::Uuid;

/// The sections of an image file, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionName {
    Preamble,
    Data,
    Index,
    Manifest,
    Signatures,
}

impl std::fmt::Display for SectionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SectionName::Preamble => "preamble",
            SectionName::Data => "data region",
            SectionName::Index => "index",
            SectionName::Manifest => "manifest",
            SectionName::Signatures => "signature section",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {section} at offset {offset}: {source}")]
    Read {
        section: SectionName,
        offset: u64,
        source: std::io::Error,
    },
    #[error("cannot write the image at offset {offset}: {source}")]
    Write { offset: u64, source: std::io::Error },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the file is {len} bytes, shorter than the 128-byte preamble: it is truncated or not an image")]
    TooShort { len: u64 },
    #[error("bad magic at offset 0: this is not a Reliquary image")]
    BadMagic,
    #[error(
        "format version {0} is not supported (this reader knows versions 2 and {known}); \
         recapture the disk with this version",
        known = crate::layout::FORMAT_VERSION
    )]
    UnsupportedVersion(u32),
    #[error("preamble header size {0} is out of range")]
    BadHeaderSize(u32),
    #[error("unknown incompatible flags {0:#x}: the image needs a newer reader")]
    UnknownIncompatibleFlags(u64),
    #[error("reserved preamble byte at offset {offset} is not zero")]
    ReservedNonZero { offset: usize },
    #[error("{section} at offset {offset} with length {length} does not fit in the {file_len}-byte file: the file is truncated or damaged")]
    SectionOutOfBounds {
        section: SectionName,
        offset: u64,
        length: u64,
        file_len: u64,
    },
    #[error("{section} is {length} bytes, more than the limit of {max}")]
    SectionTooLarge {
        section: SectionName,
        length: u64,
        max: u64,
    },
    #[error("{section} is misplaced: {reason}")]
    SectionLayout {
        section: SectionName,
        reason: &'static str,
    },
    #[error("the file has {extra} bytes after the signature section: garbage was appended")]
    TrailingBytes { extra: u64 },
    #[error("{section} does not decode: {source}")]
    Decode {
        section: SectionName,
        source: postcard::Error,
    },
    #[error("{section} has {extra} undecoded bytes at its end")]
    SectionTrailingBytes { section: SectionName, extra: usize },
    #[error("the image carries {0} signatures, more than the limit of 32")]
    TooManySignatures(usize),
    #[error("the image carries no signature")]
    NoSignatures,
    #[error("signature {index} by trusted key {key_id} does not match the manifest: the manifest or signature was altered")]
    BadSignature { index: usize, key_id: String },
    #[error("signature policy not met: {valid} of {required} required distinct trusted keys signed{detail}")]
    ThresholdNotMet {
        valid: usize,
        required: usize,
        detail: String,
    },
    #[error("image {0} is revoked by the trust store's policy")]
    RevokedImage(Uuid),
    #[error("the manifest is invalid: {0}")]
    InvalidManifest(String),
    #[error("the index does not match the manifest's digest: the index was altered")]
    IndexDigestMismatch,
    #[error("the index is invalid at {location}: {reason}")]
    InvalidIndex { location: String, reason: String },
    #[error("the index's extent digests do not match the manifest's image digest")]
    ImageDigestMismatch,
    #[error("chunk {chunk} (sectors {start_sector}..{end_sector}) does not decompress: {reason}")]
    ChunkDecode {
        chunk: u32,
        start_sector: u64,
        end_sector: u64,
        reason: String,
    },
    #[error("chunk {chunk} (sectors {start_sector}..{end_sector}, file offset {offset}) fails its SHA-256 check: the data was altered")]
    ChunkDigestMismatch {
        chunk: u32,
        start_sector: u64,
        end_sector: u64,
        offset: u64,
    },
    #[error("sector {sector} is beyond the image's {size_sectors} sectors")]
    SectorOutOfRange { sector: u64, size_sectors: u64 },
    #[error("cannot encode {section}: {source}")]
    Encode {
        section: SectionName,
        source: postcard::Error,
    },
    #[error("cannot compress: {0}")]
    Compress(std::io::Error),
    #[error("invalid writer input: {0}")]
    InvalidInput(String),
}

impl ImageError {
    /// True when the error means the image is damaged or not authentic, as
    /// opposed to an I/O failure or a caller's mistake.
    pub fn is_integrity_failure(&self) -> bool {
        !matches!(
            self,
            ImageError::Read { .. }
                | ImageError::Write { .. }
                | ImageError::Open { .. }
                | ImageError::Encode { .. }
                | ImageError::Compress(_)
                | ImageError::InvalidInput(_)
                | ImageError::SectorOutOfRange { .. }
        )
    }
}
