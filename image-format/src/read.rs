//! Reading an image: bounds-checked preamble, signatures verified over the
//! exact manifest bytes before the manifest is decoded, then the index.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::de::DeserializeOwned;

use crate::decode::decode_exact;
use crate::digest::{sha256, ImageDigest};
use crate::error::{ImageError, SectionName};
use crate::index::{ChunkEntry, Compression, ExtentKind, Index, PlacedExtent};
use crate::keys::PublicKey;
use crate::layout::*;
use crate::manifest::{decode_manifest, Manifest, SignerStatement};
use crate::signature::SignatureEntry;
use crate::trust::TrustStore;

/// Positional reads from a file or an in-memory buffer.
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    fn size(&self) -> std::io::Result<u64>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).ok().filter(|&s| s <= self.len());
        match start.and_then(|s| self.get(s..s.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> std::io::Result<u64> {
        (**self).size()
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// An image whose framing has been checked but whose manifest has not yet
/// been trusted or decoded.
#[derive(Debug)]
pub struct SealedImage<S> {
    source: S,
    preamble: Preamble,
    manifest_bytes: Vec<u8>,
    signatures: Vec<SignatureEntry>,
}

/// A signature on an image, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub key_id: String,
    /// The trust store's name for the key when trusted, else the statement's.
    pub name: String,
    pub statement: SignerStatement,
    pub status: SignerStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerStatus {
    /// Valid, by a key the trust store trusts.
    Trusted,
    /// Valid, but the key is revoked by policy.
    Revoked,
    /// Valid, by a key the trust store does not hold.
    Untrusted,
    /// Valid over the manifest; no trust store was consulted.
    Unchecked,
    /// The signature does not verify.
    Invalid,
}

impl SignerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SignerStatus::Trusted => "trusted",
            SignerStatus::Revoked => "revoked",
            SignerStatus::Untrusted => "untrusted",
            SignerStatus::Unchecked => "unchecked",
            SignerStatus::Invalid => "invalid",
        }
    }
}

/// Whether an opened image was checked against a trust store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The signature policy of a trust store is met.
    Verified,
    /// Opened without a trust store (`inspect`); nothing is proven.
    Unverified,
}

/// Opens an image: reads and checks the preamble and section bounds, and
/// reads the manifest and signature bytes. Decodes nothing signed.
pub fn open<S: ReadAt>(source: S) -> Result<SealedImage<S>, ImageError> {
    let file_len = source
        .size()
        .map_err(|e| read_err(SectionName::Preamble, 0, e))?;
    if file_len < PREAMBLE_LEN as u64 {
        return Err(ImageError::TooShort { len: file_len });
    }
    let mut raw = [0u8; PREAMBLE_LEN];
    source
        .read_exact_at(&mut raw, 0)
        .map_err(|e| read_err(SectionName::Preamble, 0, e))?;
    let preamble = check_preamble(&raw, file_len)?;
    let manifest_bytes = read_section(&source, SectionName::Manifest, preamble.manifest)?;
    let signature_bytes = read_section(&source, SectionName::Signatures, preamble.signatures)?;
    let signatures: Vec<SignatureEntry> = decode_exact(&signature_bytes, SectionName::Signatures)?;
    if signatures.len() > MAX_SIGNATURES {
        return Err(ImageError::TooManySignatures(signatures.len()));
    }
    Ok(SealedImage {
        source,
        preamble,
        manifest_bytes,
        signatures,
    })
}

/// Checks every preamble field against the format and the file size.
pub fn check_preamble(raw: &[u8; PREAMBLE_LEN], file_len: u64) -> Result<Preamble, ImageError> {
    if raw[0..8] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    let p = Preamble::decode_fields(raw);
    if !READABLE_VERSIONS.contains(&p.format_version) {
        return Err(ImageError::UnsupportedVersion(p.format_version));
    }
    if p.header_size as usize != PREAMBLE_LEN {
        return Err(ImageError::BadHeaderSize(p.header_size));
    }
    if p.incompatible_flags & !KNOWN_INCOMPATIBLE_FLAGS != 0 {
        return Err(ImageError::UnknownIncompatibleFlags(p.incompatible_flags));
    }
    if let Some(i) = raw[RESERVED_RANGE].iter().position(|&b| b != 0) {
        return Err(ImageError::ReservedNonZero {
            offset: RESERVED_RANGE.start + i,
        });
    }
    let ordered = [
        (SectionName::Data, p.data, u64::MAX),
        (SectionName::Index, p.index, MAX_INDEX_LEN),
        (SectionName::Manifest, p.manifest, MAX_MANIFEST_LEN),
        (SectionName::Signatures, p.signatures, MAX_SIGNATURES_LEN),
    ];
    if p.data.offset != DATA_OFFSET {
        return Err(ImageError::SectionLayout {
            section: SectionName::Data,
            reason: "the data region must start at offset 4096",
        });
    }
    let mut previous_end = DATA_OFFSET;
    for (section, s, max) in ordered {
        if s.length > max {
            return Err(ImageError::SectionTooLarge {
                section,
                length: s.length,
                max,
            });
        }
        let end = s
            .end()
            .filter(|&e| e <= file_len)
            .ok_or(ImageError::SectionOutOfBounds {
                section,
                offset: s.offset,
                length: s.length,
                file_len,
            })?;
        if s.offset != previous_end {
            return Err(ImageError::SectionLayout {
                section,
                reason: "sections must follow each other in the order data, index, manifest, signatures with no gap",
            });
        }
        previous_end = end;
    }
    if previous_end != file_len {
        return Err(ImageError::TrailingBytes {
            extra: file_len - previous_end,
        });
    }
    Ok(p)
}

impl<S: ReadAt> SealedImage<S> {
    pub fn preamble(&self) -> &Preamble {
        &self.preamble
    }

    /// The exact manifest bytes that signatures cover.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    pub fn signature_entries(&self) -> &[SignatureEntry] {
        &self.signatures
    }

    /// Checks the signature policy over the exact manifest bytes, then
    /// decodes the manifest and the index.
    pub fn verify(self, trust: &TrustStore) -> Result<Image<S>, ImageError> {
        if self.signatures.is_empty() {
            return Err(ImageError::NoSignatures);
        }
        let mut signers = Vec::new();
        let mut trusted_ids = BTreeSet::new();
        let (mut untrusted, mut revoked) = (Vec::new(), Vec::new());
        for (index, entry) in self.signatures.iter().enumerate() {
            let key_id = key_id_of(&entry.public_key);
            let trusted = trust
                .key(&key_id)
                .filter(|t| t.key.as_bytes() == &entry.public_key);
            let Some(trusted) = trusted else {
                untrusted.push(key_id);
                continue;
            };
            if !entry.is_valid_for(&trusted.key, &self.manifest_bytes) {
                return Err(ImageError::BadSignature { index, key_id });
            }
            let statement = decode_statement(entry)?;
            let status = if trust.is_key_revoked(&key_id) {
                revoked.push(key_id.clone());
                SignerStatus::Revoked
            } else {
                trusted_ids.insert(key_id.clone());
                SignerStatus::Trusted
            };
            signers.push(Signer {
                key_id,
                name: trusted.name.clone(),
                statement,
                status,
            });
        }
        if trusted_ids.len() < trust.threshold() {
            let mut detail = String::new();
            if !revoked.is_empty() {
                detail += &format!("; revoked keys signed: {}", revoked.join(", "));
            }
            if !untrusted.is_empty() {
                detail += &format!(
                    "; keys not in the trust store signed: {}",
                    untrusted.join(", ")
                );
            }
            if self.signatures.len() > trusted_ids.len() + revoked.len() + untrusted.len() {
                detail += "; the same key signed more than once, which counts once";
            }
            return Err(ImageError::ThresholdNotMet {
                valid: trusted_ids.len(),
                required: trust.threshold(),
                detail,
            });
        }
        let manifest = decode_manifest(&self.manifest_bytes, self.preamble.format_version)?;
        if trust.is_image_revoked(&manifest.image_uuid) {
            return Err(ImageError::RevokedImage(manifest.image_uuid));
        }
        self.finish(manifest, signers, Trust::Verified)
    }

    /// Decodes the manifest and index without a trust store. Signatures are
    /// checked against their own embedded keys only; nothing is proven.
    pub fn open_unverified(self) -> Result<Image<S>, ImageError> {
        let (manifest, signers) = self.claims()?;
        self.finish(manifest, signers, Trust::Unverified)
    }

    /// What the image claims to be, without a trust store and without
    /// reading the index: the manifest, and each signer with its signature
    /// checked against its own embedded key only. Nothing is proven. Costs
    /// no more memory than the manifest (at most 1 MiB), whatever the index
    /// holds, so listing an image that failed verification stays cheap.
    pub fn claims(&self) -> Result<(Manifest, Vec<Signer>), ImageError> {
        let mut signers = Vec::new();
        for entry in &self.signatures {
            let key_id = key_id_of(&entry.public_key);
            let valid = PublicKey::from_bytes(entry.public_key)
                .map(|k| entry.is_valid_for(&k, &self.manifest_bytes))
                .unwrap_or(false);
            let statement = decode_statement(entry)?;
            signers.push(Signer {
                key_id,
                name: statement.signer_name.clone(),
                statement,
                status: if valid {
                    SignerStatus::Unchecked
                } else {
                    SignerStatus::Invalid
                },
            });
        }
        let manifest = decode_manifest(&self.manifest_bytes, self.preamble.format_version)?;
        Ok((manifest, signers))
    }

    fn finish(
        self,
        manifest: Manifest,
        signers: Vec<Signer>,
        trust: Trust,
    ) -> Result<Image<S>, ImageError> {
        check_manifest(&manifest, &self.preamble)?;
        let index = read_index(&self.source, &self.preamble, &manifest)?;
        let (starts, first_use) = check_index(&index, &manifest, &self.preamble)?;
        let manifest_sha256 = sha256(&self.manifest_bytes);
        Ok(Image {
            source: self.source,
            preamble: self.preamble,
            manifest,
            manifest_sha256,
            index,
            extent_starts: starts,
            first_use,
            signers,
            trust,
        })
    }
}

/// An image whose manifest and index are decoded and internally consistent.
/// Chunk data is verified as each chunk is decoded.
#[derive(Debug)]
pub struct Image<S> {
    source: S,
    preamble: Preamble,
    manifest: Manifest,
    manifest_sha256: [u8; 32],
    index: Index,
    extent_starts: Vec<u64>,
    /// For each chunk, the ordinal of the first extent that uses it.
    first_use: Vec<u32>,
    signers: Vec<Signer>,
    trust: Trust,
}

impl<S: ReadAt> Image<S> {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// SHA-256 of the exact manifest bytes.
    pub fn manifest_sha256(&self) -> [u8; 32] {
        self.manifest_sha256
    }
    pub fn index(&self) -> &Index {
        &self.index
    }
    pub fn preamble(&self) -> &Preamble {
        &self.preamble
    }
    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }
    pub fn trust(&self) -> Trust {
        self.trust
    }
    pub fn source(&self) -> &S {
        &self.source
    }
    pub fn sector_size(&self) -> u32 {
        self.manifest.source.logical_sector_size
    }

    /// Extents in order with their start sectors.
    pub fn extents(&self) -> impl Iterator<Item = PlacedExtent> + '_ {
        self.index
            .extents
            .iter()
            .zip(&self.extent_starts)
            .enumerate()
            .map(|(ordinal, (e, &start))| PlacedExtent {
                ordinal,
                start_sector: start,
                sector_count: e.sector_count,
                kind: e.kind,
            })
    }

    pub fn extent(&self, ordinal: usize) -> Option<PlacedExtent> {
        let e = self.index.extents.get(ordinal)?;
        Some(PlacedExtent {
            ordinal,
            start_sector: self.extent_starts[ordinal],
            sector_count: e.sector_count,
            kind: e.kind,
        })
    }

    /// The extent holding `sector`.
    pub fn extent_at_sector(&self, sector: u64) -> Result<PlacedExtent, ImageError> {
        let size_sectors = self.manifest.source.size_sectors;
        if sector >= size_sectors {
            return Err(ImageError::SectorOutOfRange {
                sector,
                size_sectors,
            });
        }
        let ordinal = self.extent_starts.partition_point(|&s| s <= sector) - 1;
        self.extent(ordinal).ok_or(ImageError::SectorOutOfRange {
            sector,
            size_sectors,
        })
    }

    /// The sector range of the first extent using `chunk`, for messages.
    pub fn chunk_sectors(&self, chunk: u32) -> (u64, u64) {
        self.first_use
            .get(chunk as usize)
            .and_then(|&o| self.extent(o as usize))
            .map_or((0, 0), |e| (e.start_sector, e.end_sector()))
    }

    /// Reads the stored bytes of a chunk into `buf` (resized to fit).
    pub fn read_stored(&self, chunk: u32, buf: &mut Vec<u8>) -> Result<ChunkEntry, ImageError> {
        let entry = self.chunk_entry(chunk)?;
        buf.resize(entry.stored_len as usize, 0);
        self.source
            .read_exact_at(buf, entry.offset)
            .map_err(|e| read_err(SectionName::Data, entry.offset, e))?;
        Ok(entry)
    }

    /// Reads, decompresses and verifies a chunk into `out`.
    pub fn read_chunk(
        &self,
        chunk: u32,
        decoder: &mut ChunkDecoder,
        out: &mut Vec<u8>,
    ) -> Result<(), ImageError> {
        let mut stored = Vec::new();
        let entry = self.read_stored(chunk, &mut stored)?;
        let (start, end) = self.chunk_sectors(chunk);
        decoder.decode(chunk, &entry, &stored, out, (start, end))
    }

    /// The index entry of a chunk.
    pub fn chunk_entry(&self, chunk: u32) -> Result<ChunkEntry, ImageError> {
        self.index
            .chunks
            .get(chunk as usize)
            .copied()
            .ok_or_else(|| ImageError::InvalidIndex {
                location: format!("chunk {chunk}"),
                reason: "no such chunk".into(),
            })
    }
}

/// Decompresses and verifies chunks, reusing its zstd context.
pub struct ChunkDecoder(Option<zstd::bulk::Decompressor<'static>>);

impl std::fmt::Debug for ChunkDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkDecoder")
    }
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkDecoder {
    pub fn new() -> Self {
        Self(zstd::bulk::Decompressor::new().ok())
    }

    /// Decodes `stored` into `out` and checks its SHA-256 against the index.
    /// `sectors` is the sector range named in errors.
    pub fn decode(
        &mut self,
        chunk: u32,
        entry: &ChunkEntry,
        stored: &[u8],
        out: &mut Vec<u8>,
        sectors: (u64, u64),
    ) -> Result<(), ImageError> {
        out.resize(entry.raw_len as usize, 0);
        self.decode_into(chunk, entry, stored, out, sectors)
    }

    /// Like [`decode`](Self::decode), into a caller's buffer whose length
    /// must equal the chunk's raw length (e.g. an O_DIRECT buffer).
    pub fn decode_into(
        &mut self,
        chunk: u32,
        entry: &ChunkEntry,
        stored: &[u8],
        out: &mut [u8],
        sectors: (u64, u64),
    ) -> Result<(), ImageError> {
        let decode_err = |reason: String| ImageError::ChunkDecode {
            chunk,
            start_sector: sectors.0,
            end_sector: sectors.1,
            reason,
        };
        let raw_len = entry.raw_len as usize;
        if out.len() != raw_len {
            return Err(decode_err(format!(
                "the output buffer holds {} bytes, the chunk {raw_len}",
                out.len()
            )));
        }
        let written = match entry.compression {
            Compression::Raw if stored.len() == raw_len => {
                out.copy_from_slice(stored);
                raw_len
            }
            Compression::Raw => stored.len(),
            Compression::Zstd => {
                let decompressor = self
                    .0
                    .as_mut()
                    .ok_or_else(|| decode_err("no zstd context could be created".into()))?;
                decompressor
                    .decompress_to_buffer(stored, out)
                    .map_err(|e| decode_err(e.to_string()))?
            }
        };
        if written != raw_len {
            return Err(decode_err(format!(
                "decoded {written} bytes, the index says {raw_len}"
            )));
        }
        if sha256(out) != entry.sha256 {
            return Err(ImageError::ChunkDigestMismatch {
                chunk,
                start_sector: sectors.0,
                end_sector: sectors.1,
                offset: entry.offset,
            });
        }
        Ok(())
    }
}

fn check_manifest(m: &Manifest, p: &Preamble) -> Result<(), ImageError> {
    let bad = |s: &str| Err(ImageError::InvalidManifest(s.to_string()));
    let sector = m.source.logical_sector_size;
    if sector != 512 && sector != 4096 {
        return bad("the logical sector size must be 512 or 4096");
    }
    let physical = m.source.physical_sector_size;
    if !physical.is_power_of_two() || physical < sector || physical > 65536 {
        return bad("the physical sector size must be a power of two, at least the logical size");
    }
    if !m.chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&m.chunk_size)
    {
        return bad("the chunk size must be a power of two from 64 KiB to 64 MiB");
    }
    if m.source
        .size_sectors
        .checked_mul(u64::from(sector))
        .is_none()
    {
        return bad("the disk size overflows");
    }
    if m.index_length != p.index.length {
        return bad("the index length differs from the preamble's index section");
    }
    if m.stored_bytes != p.data.length {
        return bad("the stored size differs from the preamble's data region");
    }
    let numbers: Vec<u32> = m
        .partition_table
        .partitions
        .iter()
        .map(|p| p.number)
        .collect();
    let recorded: Vec<u32> = m
        .partition_captures
        .iter()
        .map(|c| c.partition_number)
        .collect();
    if recorded != numbers {
        return bad("the partition capture records must follow the partition table, one each");
    }
    Ok(())
}

/// Checks that the index covers every sector exactly once and that every
/// chunk lies inside the data region, aligned, without overlap. Returns the
/// start sector of each extent and the first extent using each chunk.
fn check_index(
    index: &Index,
    m: &Manifest,
    p: &Preamble,
) -> Result<(Vec<u64>, Vec<u32>), ImageError> {
    let bad = |location: String, reason: &str| ImageError::InvalidIndex {
        location,
        reason: reason.to_string(),
    };
    let sector_size = u64::from(m.source.logical_sector_size);
    let chunk_count = index.chunks.len();
    if chunk_count > u32::MAX as usize || index.extents.len() > u32::MAX as usize {
        return Err(bad("the index".into(), "too many entries"));
    }
    let data_end = p.data.end().unwrap_or(0);
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(chunk_count);
    for (i, c) in index.chunks.iter().enumerate() {
        let at = || format!("chunk {i}");
        if c.raw_len == 0 || c.raw_len > m.chunk_size || u64::from(c.raw_len) % sector_size != 0 {
            return Err(bad(
                at(),
                "its length must be a whole number of sectors, at most the chunk size",
            ));
        }
        let stored_ok = match c.compression {
            Compression::Raw => c.stored_len == c.raw_len,
            Compression::Zstd => c.stored_len > 0 && c.stored_len < c.raw_len,
        };
        if !stored_ok {
            return Err(bad(at(), "its stored length does not fit its compression"));
        }
        let end = c.offset.checked_add(u64::from(c.stored_len));
        if c.offset % DATA_ALIGNMENT != 0
            || c.offset < p.data.offset
            || end.is_none_or(|e| e > data_end)
        {
            return Err(bad(
                at(),
                "it lies outside the data region or is not 4096-aligned",
            ));
        }
        spans.push((c.offset, u64::from(c.stored_len), i));
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if pair[0].0 + pair[0].1 > pair[1].0 {
            return Err(bad(
                format!("chunk {}", pair[1].2),
                "it overlaps another chunk",
            ));
        }
    }
    drop(spans);

    let mut starts = Vec::with_capacity(index.extents.len());
    let mut first_use = vec![u32::MAX; chunk_count];
    let mut digest = ImageDigest::new();
    let mut next = 0u64;
    let mut previous_kind = None;
    for (i, e) in index.extents.iter().enumerate() {
        let at = || format!("extent {i} (sector {next})");
        if e.sector_count == 0 {
            return Err(bad(at(), "it is empty"));
        }
        match e.kind {
            ExtentKind::Data { chunk } => {
                let c = index
                    .chunks
                    .get(chunk as usize)
                    .ok_or_else(|| bad(at(), "it names a chunk that does not exist"))?;
                if e.sector_count.checked_mul(sector_size) != Some(u64::from(c.raw_len)) {
                    return Err(bad(at(), "its length differs from its chunk's length"));
                }
                if first_use[chunk as usize] == u32::MAX {
                    first_use[chunk as usize] = i as u32;
                }
                digest.add(e.sector_count, e.kind, Some(&c.sha256));
            }
            ExtentKind::Zero | ExtentKind::Unmapped => {
                if previous_kind == Some(e.kind) {
                    return Err(bad(
                        at(),
                        "it should have been merged with the extent before it",
                    ));
                }
                digest.add(e.sector_count, e.kind, None);
            }
        }
        previous_kind = Some(e.kind);
        starts.push(next);
        next = next
            .checked_add(e.sector_count)
            .filter(|&n| n <= m.source.size_sectors)
            .ok_or_else(|| bad(at(), "it runs past the end of the disk"))?;
    }
    if next != m.source.size_sectors {
        return Err(bad(
            format!("the end (sector {next})"),
            "the extents do not cover the whole disk",
        ));
    }
    if let Some(unused) = first_use.iter().position(|&u| u == u32::MAX) {
        return Err(bad(format!("chunk {unused}"), "no extent uses it"));
    }
    if digest.finish() != m.image_digest {
        return Err(ImageError::ImageDigestMismatch);
    }
    Ok((starts, first_use))
}

fn decode_statement(entry: &SignatureEntry) -> Result<SignerStatement, ImageError> {
    decode_exact(&entry.statement, SectionName::Signatures)
}

fn key_id_of(bytes: &[u8; 32]) -> String {
    hex::encode(&sha256(bytes)[..8])
}

/// Reads the index in two streamed passes, never holding its bytes: first
/// its SHA-256 against the signed manifest (nothing is decoded before it
/// matches), then the decode, where each count is checked against its
/// bounds before anything is allocated for it.
fn read_index<S: ReadAt>(source: &S, p: &Preamble, m: &Manifest) -> Result<Index, ImageError> {
    let mut stream = SectionStream::new(source, p.index);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    while let Some(block) = stream.next_block()? {
        ctx.update(block);
    }
    if ctx.finish().as_ref() != m.index_sha256 {
        return Err(ImageError::IndexDigestMismatch);
    }
    // Every chunk takes at least one aligned 4096-byte block of the data
    // region and at least one sector of the disk; every extent a sector.
    let max_chunks = MAX_CHUNKS
        .min(p.data.length / DATA_ALIGNMENT)
        .min(m.source.size_sectors);
    let max_extents = MAX_EXTENTS.min(m.source.size_sectors);
    decode_index(source, p.index, max_chunks, max_extents)
}

/// Decodes the index section, refusing a count above its bound before
/// allocating for it.
pub(crate) fn decode_index<S: ReadAt>(
    source: &S,
    section: Section,
    max_chunks: u64,
    max_extents: u64,
) -> Result<Index, ImageError> {
    let mut stream = SectionStream::new(source, section);
    let chunk_count = stream.take_count(max_chunks, "chunks")?;
    let mut chunks = Vec::with_capacity(chunk_count);
    for _ in 0..chunk_count {
        chunks.push(stream.take::<ChunkEntry>()?);
    }
    let extent_count = stream.take_count(max_extents, "extents")?;
    let mut extents = Vec::with_capacity(extent_count);
    for _ in 0..extent_count {
        extents.push(stream.take()?);
    }
    stream.finish()?;
    Ok(Index { chunks, extents })
}

/// A section read through a bounded buffer.
struct SectionStream<'a, S> {
    source: &'a S,
    section: Section,
    /// Offset in the section of the first byte not yet in `buf`.
    next: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a, S: ReadAt> SectionStream<'a, S> {
    const BUFFER: usize = 1 << 20;
    /// More than any one encoded chunk entry or extent.
    const LONGEST_ITEM: usize = 64;

    fn new(source: &'a S, section: Section) -> Self {
        Self {
            source,
            section,
            next: 0,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The next block of the section, for hashing.
    fn next_block(&mut self) -> Result<Option<&[u8]>, ImageError> {
        self.buf.clear();
        self.pos = 0;
        self.read_more()?;
        Ok((!self.buf.is_empty()).then_some(&self.buf[..]))
    }

    /// Appends up to the buffer size of the section's next bytes to `buf`.
    fn read_more(&mut self) -> Result<(), ImageError> {
        let want = (Self::BUFFER - self.buf.len()).min((self.section.length - self.next) as usize);
        let at = self.section.offset + self.next;
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        self.source
            .read_exact_at(&mut self.buf[start..], at)
            .map_err(|e| read_err(SectionName::Index, at, e))?;
        self.next += want as u64;
        Ok(())
    }

    fn take<T: DeserializeOwned>(&mut self) -> Result<T, ImageError> {
        if self.buf.len() - self.pos < Self::LONGEST_ITEM && self.next < self.section.length {
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.read_more()?;
        }
        let (value, rest) = postcard::take_from_bytes(&self.buf[self.pos..]).map_err(|source| {
            ImageError::Decode {
                section: SectionName::Index,
                source,
            }
        })?;
        self.pos = self.buf.len() - rest.len();
        Ok(value)
    }

    /// A sequence's length prefix, refused above `max`.
    fn take_count(&mut self, max: u64, what: &str) -> Result<usize, ImageError> {
        let count: u64 = self.take()?;
        if count > max {
            return Err(ImageError::InvalidIndex {
                location: "the index".into(),
                reason: format!(
                    "it holds {count} {what}, more than the {max} this image's disk and data \
                     region allow (at most {MAX_CHUNKS} chunks and {MAX_EXTENTS} extents in any image)"
                ),
            });
        }
        Ok(count as usize)
    }

    fn finish(self) -> Result<(), ImageError> {
        let extra = (self.buf.len() - self.pos) as u64 + (self.section.length - self.next);
        if extra > 0 {
            return Err(ImageError::SectionTrailingBytes {
                section: SectionName::Index,
                extra: extra as usize,
            });
        }
        Ok(())
    }
}

fn read_section<S: ReadAt>(
    source: &S,
    section: SectionName,
    s: Section,
) -> Result<Vec<u8>, ImageError> {
    // Lengths were bounded by `check_preamble`.
    let mut buf = vec![0u8; s.length as usize];
    source
        .read_exact_at(&mut buf, s.offset)
        .map_err(|e| read_err(section, s.offset, e))?;
    Ok(buf)
}

fn read_err(section: SectionName, offset: u64, source: std::io::Error) -> ImageError {
    ImageError::Read {
        section,
        offset,
        source,
    }
}
