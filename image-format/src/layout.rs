//! Byte-level layout of a `.rimg` file: the fixed preamble and the limits a
//! reader enforces before it allocates anything. See `FORMAT.md`.

/// The first eight bytes of every image.
pub const MAGIC: [u8; 8] = *b"RELIQIMG";
/// The format version this crate writes. Version 2 added the
/// per-partition capture records to the manifest, version 3 the proof of
/// each record; version 1 images are refused (see FORMAT.md, "Versions").
pub const FORMAT_VERSION: u32 = 3;
/// The format versions this crate reads.
pub const READABLE_VERSIONS: [u32; 2] = [2, 3];
/// Size of the preamble in bytes (unchanged since version 1).
pub const PREAMBLE_LEN: usize = 128;
/// Stored chunks start on multiples of this, so they can be read with O_DIRECT.
pub const DATA_ALIGNMENT: u64 = 4096;
/// Where the data region starts: the preamble padded to the alignment.
pub const DATA_OFFSET: u64 = DATA_ALIGNMENT;

/// Incompatible flags this version knows; any other set bit is refused.
pub const KNOWN_INCOMPATIBLE_FLAGS: u64 = 0;

/// The largest manifest section a reader accepts.
pub const MAX_MANIFEST_LEN: u64 = 1 << 20;
/// The largest signature section a reader accepts.
pub const MAX_SIGNATURES_LEN: u64 = 64 << 10;
/// The most signatures one image may carry.
pub const MAX_SIGNATURES: usize = 32;
/// The largest index section a reader accepts (about 8 million extents).
pub const MAX_INDEX_LEN: u64 = 256 << 20;
/// Absolute ceilings on the index's counts, checked from their length
/// prefixes before anything is allocated. With the per-image bounds (chunks
/// <= data region / 4096, extents <= disk sectors) they keep a decoded
/// index within about 120 MiB, and a capture never exceeds them (see
/// FORMAT.md, "Limits").
pub const MAX_CHUNKS: u64 = 1 << 20;
pub const MAX_EXTENTS: u64 = 1 << 20;

/// Smallest and largest chunk size (both powers of two).
pub const MIN_CHUNK_SIZE: u32 = 64 << 10;
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// The default chunk size.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;

/// Domain-separation prefix of the message an image signature covers.
pub const MANIFEST_SIGNATURE_CONTEXT: &[u8] = b"reliquary image manifest v1\0";
/// Domain-separation prefix of the whole-image digest.
pub const IMAGE_DIGEST_CONTEXT: &[u8] = b"reliquary image digest v1\0";

/// The decoded preamble. Offsets are absolute file offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preamble {
    pub format_version: u32,
    pub header_size: u32,
    pub compatible_flags: u64,
    pub incompatible_flags: u64,
    pub data: Section,
    pub index: Section,
    pub manifest: Section,
    pub signatures: Section,
}

/// An `(offset, length)` pair naming a region of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Section {
    pub offset: u64,
    pub length: u64,
}

impl Section {
    /// One past the last byte, or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.length)
    }
}

impl Preamble {
    /// Encodes the preamble; reserved bytes are zero.
    pub fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut out = [0u8; PREAMBLE_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        out[12..16].copy_from_slice(&self.header_size.to_le_bytes());
        out[16..24].copy_from_slice(&self.compatible_flags.to_le_bytes());
        out[24..32].copy_from_slice(&self.incompatible_flags.to_le_bytes());
        let sections = [self.data, self.index, self.manifest, self.signatures];
        for (i, section) in sections.iter().enumerate() {
            let at = 32 + i * 16;
            out[at..at + 8].copy_from_slice(&section.offset.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&section.length.to_le_bytes());
        }
        out
    }

    /// Decodes the fields without judging them; `read::check_preamble` does that.
    pub fn decode_fields(bytes: &[u8; PREAMBLE_LEN]) -> Self {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let section = |i: usize| Section {
            offset: u64_at(32 + i * 16),
            length: u64_at(40 + i * 16),
        };
        Preamble {
            format_version: u32_at(8),
            header_size: u32_at(12),
            compatible_flags: u64_at(16),
            incompatible_flags: u64_at(24),
            data: section(0),
            index: section(1),
            manifest: section(2),
            signatures: section(3),
        }
    }
}

/// Offset of the reserved bytes in the preamble; they must be zero.
pub const RESERVED_RANGE: std::ops::Range<usize> = 96..PREAMBLE_LEN;

/// Rounds `value` up to the data alignment.
pub fn align_up(value: u64) -> Option<u64> {
    value
        .checked_add(DATA_ALIGNMENT - 1)
        .map(|v| v & !(DATA_ALIGNMENT - 1))
}
