//! Writing an image: the data region streams out chunk by chunk, then the
//! index, manifest and signatures follow and the preamble is written last.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use uuid::Uuid;

use crate::digest::{sha256, ImageDigest};
use crate::error::{ImageError, SectionName};
use crate::index::{ChunkEntry, Compression, Extent, ExtentKind, Index};
use crate::keys::SigningKey;
use crate::layout::*;
use crate::manifest::{
    decode_manifest, Manifest, PartitionCapture, PartitionTable, SignerStatement, SourceDisk,
};
use crate::read;
use crate::signature::{sign_manifest, SignatureEntry};

/// The manifest fields a capturer chooses; the writer fills in the digests.
#[derive(Debug, Clone)]
pub struct ManifestDraft {
    pub image_uuid: Uuid,
    pub name: String,
    pub description: String,
    pub version: String,
    pub created_unix: i64,
    pub creator: String,
    pub source: SourceDisk,
    pub partition_table: PartitionTable,
    pub compatible: Vec<String>,
    pub partition_captures: Vec<PartitionCapture>,
}

/// A chunk ready to store: its raw length and digest, and the bytes to store.
#[derive(Debug, Clone)]
pub struct PreparedChunk {
    pub raw_len: u32,
    pub sha256: [u8; 32],
    pub compression: Compression,
    pub stored: Vec<u8>,
}

impl PreparedChunk {
    /// Hashes `raw` and compresses it with zstd at `level`, keeping the raw
    /// bytes when compression does not make them smaller.
    pub fn compress(
        raw: &[u8],
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<Self, ImageError> {
        let raw_len = u32::try_from(raw.len())
            .map_err(|_| ImageError::InvalidInput("a chunk is longer than 4 GiB".into()))?;
        let compressed = compressor.compress(raw).map_err(ImageError::Compress)?;
        let (compression, stored) = if compressed.len() < raw.len() {
            (Compression::Zstd, compressed)
        } else {
            (Compression::Raw, raw.to_vec())
        };
        Ok(Self {
            raw_len,
            sha256: sha256(raw),
            compression,
            stored,
        })
    }
}

/// Streams an image out. Extents must be added in sector order.
#[derive(Debug)]
pub struct ImageWriter<W: Write + Seek> {
    out: W,
    position: u64,
    chunk_size: u32,
    sector_size: u32,
    index: Index,
    known_chunks: HashMap<[u8; 32], u32>,
    sectors: u64,
}

impl<W: Write + Seek> ImageWriter<W> {
    /// Starts an image; the preamble is reserved and written by `finish`.
    pub fn new(mut out: W, chunk_size: u32, sector_size: u32) -> Result<Self, ImageError> {
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
        {
            return Err(ImageError::InvalidInput(format!(
                "chunk size {chunk_size} must be a power of two from 64 KiB to 64 MiB"
            )));
        }
        if sector_size != 512 && sector_size != 4096 {
            return Err(ImageError::InvalidInput(format!(
                "sector size {sector_size} must be 512 or 4096"
            )));
        }
        out.write_all(&[0u8; DATA_OFFSET as usize])
            .map_err(|source| ImageError::Write { offset: 0, source })?;
        Ok(Self {
            out,
            position: DATA_OFFSET,
            chunk_size,
            sector_size,
            index: Index::default(),
            known_chunks: HashMap::new(),
            sectors: 0,
        })
    }

    /// Adds a data extent. A chunk identical to one already stored is
    /// referenced again instead of stored twice.
    pub fn add_data(&mut self, chunk: &PreparedChunk) -> Result<(), ImageError> {
        if chunk.raw_len == 0
            || chunk.raw_len > self.chunk_size
            || chunk.raw_len % self.sector_size != 0
        {
            return Err(ImageError::InvalidInput(format!(
                "a data extent of {} bytes is not a whole number of sectors up to the chunk size",
                chunk.raw_len
            )));
        }
        let id = match self.known_chunks.get(&chunk.sha256) {
            Some(&id) => id,
            None => self.store(chunk)?,
        };
        let sector_count = u64::from(chunk.raw_len / self.sector_size);
        self.check_extent_room()?;
        self.index.extents.push(Extent {
            sector_count,
            kind: ExtentKind::Data { chunk: id },
        });
        self.sectors += sector_count;
        Ok(())
    }

    /// Adds a run of zero or unmapped sectors, merged with a preceding run
    /// of the same kind.
    pub fn add_run(&mut self, sector_count: u64, kind: ExtentKind) -> Result<(), ImageError> {
        if matches!(kind, ExtentKind::Data { .. }) {
            return Err(ImageError::InvalidInput(
                "use add_data for data extents".into(),
            ));
        }
        if sector_count == 0 {
            return Ok(());
        }
        match self.index.extents.last_mut() {
            Some(last) if last.kind == kind => last.sector_count += sector_count,
            _ => {
                self.check_extent_room()?;
                self.index.extents.push(Extent { sector_count, kind });
            }
        }
        self.sectors += sector_count;
        Ok(())
    }

    /// Refuses an extent past the count every reader accepts.
    fn check_extent_room(&self) -> Result<(), ImageError> {
        if self.index.extents.len() as u64 >= MAX_EXTENTS {
            return Err(ImageError::InvalidInput(format!(
                "the image would hold more than {MAX_EXTENTS} extents, more than a reader accepts"
            )));
        }
        Ok(())
    }

    fn store(&mut self, chunk: &PreparedChunk) -> Result<u32, ImageError> {
        if self.index.chunks.len() as u64 >= MAX_CHUNKS {
            return Err(ImageError::InvalidInput(format!(
                "the image would hold more than {MAX_CHUNKS} chunks, more than a reader \
                 accepts; capture with a larger chunk size"
            )));
        }
        let id = u32::try_from(self.index.chunks.len())
            .map_err(|_| ImageError::InvalidInput("too many chunks".into()))?;
        let offset = self.position;
        self.write(&chunk.stored)?;
        self.pad_to_alignment()?;
        self.index.chunks.push(ChunkEntry {
            offset,
            stored_len: chunk.stored.len() as u32,
            raw_len: chunk.raw_len,
            compression: chunk.compression,
            sha256: chunk.sha256,
        });
        self.known_chunks.insert(chunk.sha256, id);
        Ok(id)
    }

    /// Writes the index, the manifest and the first signature, then the
    /// preamble. Returns the output and the manifest.
    pub fn finish(
        mut self,
        draft: ManifestDraft,
        key: &SigningKey,
        statement: &SignerStatement,
    ) -> Result<(W, Manifest), ImageError> {
        if self.sectors != draft.source.size_sectors {
            return Err(ImageError::InvalidInput(format!(
                "the extents cover {} sectors but the source disk has {}",
                self.sectors, draft.source.size_sectors
            )));
        }
        let data = Section {
            offset: DATA_OFFSET,
            length: self.position - DATA_OFFSET,
        };
        let index_bytes =
            postcard::to_stdvec(&self.index).map_err(|source| ImageError::Encode {
                section: SectionName::Index,
                source,
            })?;
        let mut digest = ImageDigest::new();
        for e in &self.index.extents {
            let data_sha = match e.kind {
                ExtentKind::Data { chunk } => Some(&self.index.chunks[chunk as usize].sha256),
                _ => None,
            };
            digest.add(e.sector_count, e.kind, data_sha);
        }
        let manifest = Manifest {
            image_uuid: draft.image_uuid,
            name: draft.name,
            description: draft.description,
            version: draft.version,
            created_unix: draft.created_unix,
            creator: draft.creator,
            source: draft.source,
            partition_table: draft.partition_table,
            chunk_size: self.chunk_size,
            index_length: index_bytes.len() as u64,
            index_sha256: sha256(&index_bytes),
            image_digest: digest.finish(),
            stored_bytes: data.length,
            compatible: draft.compatible,
            partition_captures: draft.partition_captures,
        };
        let manifest_bytes =
            postcard::to_stdvec(&manifest).map_err(|source| ImageError::Encode {
                section: SectionName::Manifest,
                source,
            })?;
        let signature = sign_manifest(key, &manifest_bytes, statement).map_err(|source| {
            ImageError::Encode {
                section: SectionName::Signatures,
                source,
            }
        })?;
        let index = Section {
            offset: self.position,
            length: index_bytes.len() as u64,
        };
        self.write(&index_bytes)?;
        let manifest_section = Section {
            offset: self.position,
            length: manifest_bytes.len() as u64,
        };
        self.write(&manifest_bytes)?;
        let signatures_bytes = encode_signatures(&[signature])?;
        let signatures = Section {
            offset: self.position,
            length: signatures_bytes.len() as u64,
        };
        self.write(&signatures_bytes)?;
        let preamble = Preamble {
            format_version: FORMAT_VERSION,
            header_size: PREAMBLE_LEN as u32,
            compatible_flags: 0,
            incompatible_flags: 0,
            data,
            index,
            manifest: manifest_section,
            signatures,
        };
        write_preamble(&mut self.out, &preamble)?;
        self.out
            .flush()
            .map_err(|source| ImageError::Write { offset: 0, source })?;
        Ok((self.out, manifest))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.out
            .write_all(bytes)
            .map_err(|source| ImageError::Write {
                offset: self.position,
                source,
            })?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn pad_to_alignment(&mut self) -> Result<(), ImageError> {
        let aligned = align_up(self.position).unwrap_or(self.position);
        let padding = (aligned - self.position) as usize;
        self.write(&[0u8; DATA_ALIGNMENT as usize][..padding])
    }
}

/// Adds a co-signature to an existing image file. Only the signature
/// section and the preamble are rewritten; the data region is not touched.
pub fn add_signature(
    path: &Path,
    key: &SigningKey,
    statement: &SignerStatement,
) -> Result<(), ImageError> {
    let open_err = |source| ImageError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(open_err)?;
    let sealed = read::open(&file)?;
    // The new signature must cover a manifest that decodes; refuse to sign junk.
    decode_manifest(sealed.manifest_bytes(), sealed.preamble().format_version)?;
    let mut entries = sealed.signature_entries().to_vec();
    if entries.len() >= MAX_SIGNATURES {
        return Err(ImageError::TooManySignatures(entries.len() + 1));
    }
    let entry = sign_manifest(key, sealed.manifest_bytes(), statement).map_err(|source| {
        ImageError::Encode {
            section: SectionName::Signatures,
            source,
        }
    })?;
    entries.push(entry);
    let bytes = encode_signatures(&entries)?;
    let mut preamble = *sealed.preamble();
    preamble.signatures.length = bytes.len() as u64;
    let at = preamble.signatures.offset;
    let write_err = |source| ImageError::Write { offset: at, source };
    file.seek(SeekFrom::Start(at)).map_err(write_err)?;
    file.write_all(&bytes).map_err(write_err)?;
    file.set_len(at + bytes.len() as u64).map_err(write_err)?;
    write_preamble(&mut file, &preamble)?;
    file.sync_all().map_err(write_err)
}

fn encode_signatures(entries: &[SignatureEntry]) -> Result<Vec<u8>, ImageError> {
    postcard::to_stdvec(entries).map_err(|source| ImageError::Encode {
        section: SectionName::Signatures,
        source,
    })
}

fn write_preamble<W: Write + Seek>(out: &mut W, preamble: &Preamble) -> Result<(), ImageError> {
    let write_err = |source| ImageError::Write { offset: 0, source };
    out.seek(SeekFrom::Start(0)).map_err(write_err)?;
    out.write_all(&preamble.encode()).map_err(write_err)?;
    Ok(())
}

/// Creates `path` for a new image, refusing to overwrite an existing file.
pub fn create_image_file(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        })
}
