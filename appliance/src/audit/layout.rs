//! Byte-level layout of `audit.log`: the file header and the frame that
//! wraps each record. `AUDIT-LOG.md` beside this crate is the normative
//! description; the golden test in `tests/tests/audit.rs` keeps them equal.
//!
//! Everything here is pure: it encodes and checks bytes and never does I/O
//! beyond the `Source` trait, so the verifier can run over a file or over a
//! buffer (the every-bit test) through the same code.

use std::io;

use super::Digest;

/// Bytes 0..8 of the file.
pub const FILE_MAGIC: [u8; 8] = *b"RLQAUDIT";
/// The only format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the fixed file header; the rest of the first block is zero.
pub const HEADER_LEN: usize = 64;
/// Every frame (and the header) starts at a multiple of this. It is the page
/// size and the block size of the ext4/vfat file systems the log lives on,
/// so an append never rewrites a block that holds an earlier record.
pub const FRAME_ALIGN: u64 = 4096;
/// Bytes 0..4 of a frame.
pub const FRAME_MAGIC: [u8; 4] = *b"RLQR";
/// Fixed frame header: magic, body length, tag, signature.
pub const FRAME_HEADER_LEN: usize = 88;
/// Fixed part of a record body: version, kind, reserved, seq, prev hash.
pub const BODY_PREAMBLE_LEN: usize = 48;
/// The record body version this code writes.
pub const BODY_VERSION: u16 = 2;
/// The oldest record body version this code reads.
pub const OLDEST_BODY_VERSION: u16 = 1;
/// Upper bound on a record body. Real records are below 2 KiB; the cap keeps
/// a hostile length field from causing a large allocation.
pub const MAX_BODY_LEN: usize = 32 * 1024;
/// Domain-separation prefix of the message each record signature covers.
/// It differs from the image manifest's "reliquary image manifest v1".
pub const RECORD_SIGNATURE_CONTEXT: &[u8] = b"reliquary audit record v1\0";

/// The decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// The appliance's Ed25519 public key, as written by `audit init`.
    pub public_key: [u8; 32],
}

impl FileHeader {
    /// The 64 header bytes (the caller pads to `FRAME_ALIGN` with zeros).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&FILE_MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out[12..16].copy_from_slice(&(FRAME_ALIGN as u32).to_le_bytes());
        // 16..20 compatible flags, 20..24 incompatible flags: none defined.
        out[24..56].copy_from_slice(&self.public_key);
        let check = sha256(&[&out[0..56]]);
        out[56..64].copy_from_slice(&check.0[..8]);
        out
    }

    /// Checks a whole first block (`FRAME_ALIGN` bytes).
    pub fn decode(block: &[u8]) -> Result<Self, HeaderDefect> {
        if block.len() < FRAME_ALIGN as usize {
            return Err(HeaderDefect::Short);
        }
        if block[0..8] != FILE_MAGIC {
            return Err(HeaderDefect::Magic);
        }
        let version = u16_at(block, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderDefect::Version(version));
        }
        if u16_at(block, 10) as usize != HEADER_LEN || u32_at(block, 12) as u64 != FRAME_ALIGN {
            return Err(HeaderDefect::Geometry);
        }
        let incompatible = u32_at(block, 20);
        if incompatible != 0 {
            return Err(HeaderDefect::IncompatibleFlags(incompatible));
        }
        if sha256(&[&block[0..56]]).0[..8] != block[56..64] {
            return Err(HeaderDefect::Check);
        }
        if block[HEADER_LEN..FRAME_ALIGN as usize]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(HeaderDefect::Padding);
        }
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(&block[24..56]);
        Ok(Self { public_key })
    }
}

/// The `prev_hash` of record 0: SHA-256 of the 64 header bytes, which binds
/// the header (and its key) into the chain.
pub fn genesis_hash(header: &[u8; HEADER_LEN]) -> Digest {
    sha256(&[header])
}

/// Why the file header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderDefect {
    #[error("the file is shorter than its {FRAME_ALIGN}-byte header block")]
    Short,
    #[error("the file does not start with the audit log magic `RLQAUDIT`")]
    Magic,
    #[error("the format version is {0}, this software reads version {FORMAT_VERSION}")]
    Version(u16),
    #[error("the header length or frame alignment is not the one version 1 defines")]
    Geometry,
    #[error("the header sets incompatible feature flags {0:#x} this software does not know")]
    IncompatibleFlags(u32),
    #[error("the header check value does not match its contents")]
    Check,
    #[error("the padding after the header is not zero")]
    Padding,
}

/// The fixed preamble at the start of every record body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPreamble {
    /// `OLDEST_BODY_VERSION..=BODY_VERSION`.
    pub version: u16,
    pub kind: u16,
    pub seq: u64,
    pub prev_hash: Digest,
}

impl BodyPreamble {
    pub fn encode(&self) -> [u8; BODY_PREAMBLE_LEN] {
        let mut out = [0u8; BODY_PREAMBLE_LEN];
        out[0..2].copy_from_slice(&self.version.to_le_bytes());
        out[2..4].copy_from_slice(&self.kind.to_le_bytes());
        // 4..8 reserved, zero.
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..48].copy_from_slice(&self.prev_hash.0);
        out
    }

    /// Reads the preamble of a body whose length the frame already checked.
    pub fn decode(body: &[u8]) -> Result<Self, FrameDefect> {
        if body.len() < BODY_PREAMBLE_LEN {
            return Err(FrameDefect::Length(body.len() as u64));
        }
        let version = u16_at(body, 0);
        if !(OLDEST_BODY_VERSION..=BODY_VERSION).contains(&version) {
            return Err(FrameDefect::BodyVersion(version));
        }
        if u32_at(body, 4) != 0 {
            return Err(FrameDefect::Reserved);
        }
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&body[16..48]);
        Ok(Self {
            version,
            kind: u16_at(body, 2),
            seq: u64::from_le_bytes(body[8..16].try_into().unwrap_or_default()),
            prev_hash: Digest(prev),
        })
    }
}

/// The record hash: the RFC 6962 leaf hash of the body, SHA-256(0x00 || body).
/// It links the chain, is the Merkle leaf, and is what the signature covers.
pub fn record_hash(body: &[u8]) -> Digest {
    sha256(&[&[0u8], body])
}

/// The exact message an appliance signs for a record.
pub fn signature_message(record_hash: &Digest) -> Vec<u8> {
    let mut msg = Vec::with_capacity(RECORD_SIGNATURE_CONTEXT.len() + 32);
    msg.extend_from_slice(RECORD_SIGNATURE_CONTEXT);
    msg.extend_from_slice(&record_hash.0);
    msg
}

/// The 16-byte integrity tag: SHA-256(frame bytes 0..8 || record hash ||
/// signature), truncated. It tells a complete frame from a torn one without
/// the public key.
pub fn frame_tag(head: &[u8; 8], record_hash: &Digest, signature: &[u8; 64]) -> [u8; 16] {
    let d = sha256(&[head, &record_hash.0, signature]);
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&d.0[..16]);
    tag
}

/// A complete frame, header plus body plus zero padding, ready to write.
pub fn encode_frame(body: &[u8], signature: &[u8; 64]) -> Vec<u8> {
    let hash = record_hash(body);
    let mut head = [0u8; 8];
    head[0..4].copy_from_slice(&FRAME_MAGIC);
    head[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let mut out = Vec::with_capacity(aligned_frame_len(body.len()) as usize);
    out.extend_from_slice(&head);
    out.extend_from_slice(&frame_tag(&head, &hash, signature));
    out.extend_from_slice(signature);
    out.extend_from_slice(body);
    out.resize(aligned_frame_len(body.len()) as usize, 0);
    out
}

/// On-disk length of a frame with a body of `body_len` bytes.
pub fn aligned_frame_len(body_len: usize) -> u64 {
    let raw = (FRAME_HEADER_LEN + body_len) as u64;
    raw.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// A frame that passed its structural checks.
#[derive(Debug, Clone)]
pub struct Frame {
    pub offset: u64,
    /// Aligned on-disk length.
    pub len: u64,
    pub preamble: BodyPreamble,
    pub record_hash: Digest,
    pub signature: [u8; 64],
    pub body: Vec<u8>,
}

/// Why the bytes at a frame offset are not a complete frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameDefect {
    #[error("the file ends inside the frame")]
    Truncated,
    #[error("the frame does not start with the magic `RLQR`")]
    Magic,
    #[error("the body length {0} is outside 48..={MAX_BODY_LEN}")]
    Length(u64),
    #[error("the integrity tag does not match the frame")]
    Tag,
    #[error("the padding after the record is not zero")]
    Padding,
    #[error("the record body version is {0}, this software reads versions {OLDEST_BODY_VERSION} to {BODY_VERSION}")]
    BodyVersion(u16),
    #[error("reserved bytes in the record body are not zero")]
    Reserved,
    #[error("reading the frame failed: {0}")]
    Io(String),
}

/// Random access to the log bytes: a file or, in tests, a buffer.
pub trait Source {
    fn byte_len(&self) -> u64;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Source for [u8] {
    fn byte_len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A file with its length taken once, when the scan starts.
#[derive(Debug)]
pub struct FileSource<'a> {
    pub file: &'a std::fs::File,
    pub len: u64,
}

impl Source for FileSource<'_> {
    fn byte_len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self.file, buf, offset)
    }
}

/// Reads and checks the frame at `offset`: magic, length, integrity tag and
/// zero padding. `scratch` is reused between calls to avoid reallocating.
pub fn read_frame<S: Source + ?Sized>(
    src: &S,
    offset: u64,
    scratch: &mut Vec<u8>,
) -> Result<Frame, FrameDefect> {
    let end = src.byte_len();
    let mut head = [0u8; FRAME_HEADER_LEN];
    if offset + FRAME_HEADER_LEN as u64 > end {
        return Err(FrameDefect::Truncated);
    }
    src.read_exact_at(&mut head, offset)
        .map_err(|e| FrameDefect::Io(e.to_string()))?;
    if head[0..4] != FRAME_MAGIC {
        return Err(FrameDefect::Magic);
    }
    let body_len = u32_at(&head, 4) as usize;
    if !(BODY_PREAMBLE_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Err(FrameDefect::Length(body_len as u64));
    }
    let len = aligned_frame_len(body_len);
    if offset + len > end {
        return Err(FrameDefect::Truncated);
    }
    scratch.clear();
    scratch.resize((len as usize) - FRAME_HEADER_LEN, 0);
    src.read_exact_at(scratch, offset + FRAME_HEADER_LEN as u64)
        .map_err(|e| FrameDefect::Io(e.to_string()))?;
    let (body, padding) = scratch.split_at(body_len);
    let hash = record_hash(body);
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&head[24..88]);
    let mut head8 = [0u8; 8];
    head8.copy_from_slice(&head[0..8]);
    if frame_tag(&head8, &hash, &signature)[..] != head[8..24] {
        return Err(FrameDefect::Tag);
    }
    if padding.iter().any(|&b| b != 0) {
        return Err(FrameDefect::Padding);
    }
    let preamble = BodyPreamble::decode(body)?;
    Ok(Frame {
        offset,
        len,
        preamble,
        record_hash: hash,
        signature,
        body: body.to_vec(),
    })
}

pub(crate) fn sha256(parts: &[&[u8]]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Digest(out)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_each_defect_is_named() {
        let mut block = FileHeader {
            public_key: [9; 32],
        }
        .encode()
        .to_vec();
        block.resize(FRAME_ALIGN as usize, 0);
        assert_eq!(
            FileHeader::decode(&block).map(|h| h.public_key),
            Ok([9; 32])
        );
        let broken = |at: usize| {
            let mut b = block.clone();
            b[at] ^= 1;
            FileHeader::decode(&b)
        };
        assert_eq!(broken(0), Err(HeaderDefect::Magic));
        assert_eq!(broken(8), Err(HeaderDefect::Version(0)));
        assert_eq!(broken(20), Err(HeaderDefect::IncompatibleFlags(1)));
        assert_eq!(broken(30), Err(HeaderDefect::Check));
        assert_eq!(broken(100), Err(HeaderDefect::Padding));
        assert_eq!(FileHeader::decode(&block[..100]), Err(HeaderDefect::Short));
    }

    #[test]
    fn a_frame_reads_back_and_a_hostile_length_is_refused_before_allocating() {
        let body = BodyPreamble {
            version: BODY_VERSION,
            kind: 7,
            seq: 3,
            prev_hash: Digest([1; 32]),
        }
        .encode();
        let frame = encode_frame(&body, &[5; 64]);
        assert_eq!(frame.len() as u64, FRAME_ALIGN);
        let mut scratch = Vec::new();
        let f = read_frame(&frame[..], 0, &mut scratch).expect("frame");
        assert_eq!((f.preamble.seq, f.preamble.kind, f.body.len()), (3, 7, 48));
        let mut hostile = frame.clone();
        hostile[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            read_frame(&hostile[..], 0, &mut scratch).map(|_| ()),
            Err(FrameDefect::Length(u32::MAX as u64))
        );
        let mut padded = frame;
        padded[4000] = 1;
        assert_eq!(
            read_frame(&padded[..], 0, &mut scratch).map(|_| ()),
            Err(FrameDefect::Padding)
        );
    }
}
