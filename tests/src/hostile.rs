//! Generators for the hostile images of issue 9, for the tests of
//! `inspect`, `verify`, `check`, restore and the TUI's vault scan. Each
//! image is validly signed by the caller's key, so it passes the signature
//! policy and reaches the index, and each is written as a stream: building
//! one costs little memory, whatever it describes.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use reliquary_image::digest::ImageDigest;
use reliquary_image::keys::SigningKey;
use reliquary_image::layout::{Preamble, Section, DATA_OFFSET, FORMAT_VERSION, PREAMBLE_LEN};
use reliquary_image::signature::sign_manifest;
use reliquary_image::{
    Extent, ExtentKind, ImageWriter, Manifest, ManifestDraft, Meaning, PartitionScheme,
    PartitionTable, SignerStatement, SourceDisk,
};

const SECTOR: u32 = 512;
const HOSTILE_UUID: &str = "9a0c7a7e-5d0e-4f43-8b1e-6f6f7374696c";

fn statement() -> SignerStatement {
    SignerStatement {
        signer_name: "Hostile Generator".into(),
        meaning: Meaning::Approved,
        signed_unix: 1_893_456_000,
    }
}

fn draft(size_sectors: u64) -> ManifestDraft {
    ManifestDraft {
        image_uuid: HOSTILE_UUID.parse().expect("uuid"),
        name: "hostile".into(),
        description: "issue 9 hostile image".into(),
        version: "1".into(),
        created_unix: 1_893_456_000,
        creator: "reliquary-tests hostile generator".into(),
        source: SourceDisk {
            size_sectors,
            logical_sector_size: SECTOR,
            physical_sector_size: 4096,
            model: None,
            serial: None,
        },
        partition_table: PartitionTable {
            scheme: PartitionScheme::None,
            partitions: Vec::new(),
        },
        compatible: Vec::new(),
        partition_captures: Vec::new(),
    }
}

/// A signed image of a disk of `extents` sectors in which every sector is
/// its own extent (zero and unmapped alternating) and nothing is stored:
/// the 134 M-extent index (`extents` = 134_217_725 fills the 256 MiB index
/// limit exactly) or the 30 M-extent image of issue 9. With `image_digest` false
/// the manifest's image digest is left zero, which saves hashing every
/// extent: a reader must refuse the index before it gets that far.
pub fn one_sector_extents(
    path: &Path,
    key: &SigningKey,
    extents: u64,
    image_digest: bool,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    out.write_all(&[0u8; DATA_OFFSET as usize])?;
    let encoded = |kind| {
        postcard::to_stdvec(&Extent {
            sector_count: 1,
            kind,
        })
        .expect("encode")
    };
    let (zero, unmapped) = (encoded(ExtentKind::Zero), encoded(ExtentKind::Unmapped));
    let mut index_hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut digest = ImageDigest::new();
    let mut index_len = 0u64;
    let mut emit = |out: &mut BufWriter<File>, bytes: &[u8]| -> std::io::Result<()> {
        index_hash.update(bytes);
        index_len += bytes.len() as u64;
        out.write_all(bytes)
    };
    // Postcard: the chunk count (0), the extent count, the extents.
    emit(&mut out, &postcard::to_stdvec(&0u64).expect("encode"))?;
    emit(&mut out, &postcard::to_stdvec(&extents).expect("encode"))?;
    // Whole blocks of (zero, unmapped) pairs, then the odd one out.
    let pair = [zero.as_slice(), unmapped.as_slice()].concat();
    let block = pair.repeat(64 << 10);
    let pairs_per_block = (64 << 10) as u64;
    let mut pairs = extents / 2;
    while pairs > 0 {
        let n = pairs.min(pairs_per_block);
        emit(&mut out, &block[..n as usize * pair.len()])?;
        pairs -= n;
    }
    if extents % 2 == 1 {
        emit(&mut out, &zero)?;
    }
    if image_digest {
        for i in 0..extents {
            let kind = if i % 2 == 0 {
                ExtentKind::Zero
            } else {
                ExtentKind::Unmapped
            };
            digest.add(1, kind, None);
        }
    }
    let draft = draft(extents);
    let manifest = Manifest {
        image_uuid: draft.image_uuid,
        name: draft.name,
        description: draft.description,
        version: draft.version,
        created_unix: draft.created_unix,
        creator: draft.creator,
        source: draft.source,
        partition_table: draft.partition_table,
        chunk_size: 64 << 10,
        index_length: index_len,
        index_sha256: index_hash.finish().as_ref().try_into().expect("32 bytes"),
        image_digest: if image_digest {
            digest.finish()
        } else {
            [0; 32]
        },
        stored_bytes: 0,
        compatible: draft.compatible,
        partition_captures: draft.partition_captures,
    };
    let manifest_bytes = postcard::to_stdvec(&manifest).expect("encode");
    out.write_all(&manifest_bytes)?;
    let signature = sign_manifest(key, &manifest_bytes, &statement()).expect("sign");
    let signatures = postcard::to_stdvec(&vec![signature]).expect("encode");
    out.write_all(&signatures)?;
    let index = Section {
        offset: DATA_OFFSET,
        length: index_len,
    };
    let manifest_section = Section {
        offset: index.offset + index_len,
        length: manifest_bytes.len() as u64,
    };
    let preamble = Preamble {
        format_version: FORMAT_VERSION,
        header_size: PREAMBLE_LEN as u32,
        compatible_flags: 0,
        incompatible_flags: 0,
        data: Section {
            offset: DATA_OFFSET,
            length: 0,
        },
        index,
        manifest: manifest_section,
        signatures: Section {
            offset: manifest_section.offset + manifest_section.length,
            length: signatures.len() as u64,
        },
    };
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&preamble.encode())?;
    file.sync_all()
}

/// A signed image of an all-zero disk of `size_bytes` with `chunk_size`
/// chunks: a few kilobytes that describe, for example, 2 TiB.
pub fn zero_disk(
    path: &Path,
    key: &SigningKey,
    size_bytes: u64,
    chunk_size: u32,
) -> Result<(), reliquary_image::ImageError> {
    let file = reliquary_image::write::create_image_file(path)?;
    let mut writer = ImageWriter::new(file, chunk_size, SECTOR)?;
    let sectors = size_bytes / u64::from(SECTOR);
    writer.add_run(sectors, ExtentKind::Zero)?;
    writer.finish(draft(sectors), key, &statement())?;
    Ok(())
}
