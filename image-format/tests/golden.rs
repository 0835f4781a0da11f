//! The golden reference image: a small committed `.rimg` that this reader
//! must keep opening, verifying and extracting to the same bytes, so an
//! accidental change to the format fails here.
//!
//! Files in `tests/golden/`:
//! - `golden.rimg`: the image (about 90 KiB), of the current format version;
//! - `golden-v2.rimg` and `expected-v2.txt`: the version 2 image, frozen
//!   (never regenerated): readers keep opening version 2 images;
//! - `golden.pub`: its trusted key; `golden.pk8`: the private key, a test
//!   fixture only, committed so the generator is reproducible;
//! - `expected.txt`: the values the test asserts;
//! - `generate.sh`: regenerates all of it with
//!   `cargo test -p reliquary-image --test golden -- --ignored regenerate_golden`.
//!
//! Regenerate only for an intended format change (with a new format
//! version), and say so in the commit.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use reliquary_image::digest::sha256;
use reliquary_image::keys::SigningKey;
use reliquary_image::layout::{Preamble, PREAMBLE_LEN};
use reliquary_image::signature::SignatureEntry;
use reliquary_image::{
    CaptureMode, ChunkDecoder, Compression, ExtentKind, FileSystemKind, Image, ImageWriter, Index,
    Manifest, ManifestDraft, Meaning, Partition, PartitionCapture, PartitionScheme, PartitionTable,
    PreparedChunk, SignerStatement, SourceDisk, Trust, TrustStore,
};

const CHUNK: usize = 64 << 10;
const SECTOR: usize = 512;
const GRAIN: usize = 4096;
const UUID: &str = "5eed0000-2026-4000-8000-00000000c0de";
const CREATED: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
/// Sectors [UNMAPPED_START, UNMAPPED_END) are declared unmapped (they are
/// zero in the source, so an extraction that writes zeros there matches).
const UNMAPPED: std::ops::Range<usize> = 640..704;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// xorshift64*, so the pattern is defined by this file alone.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn text(len: usize) -> Vec<u8> {
    b"RELIQUARY GOLDEN REFERENCE DISK - setpoint 42 - valve open\r\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// The deterministic source disk: 770 sectors of 512 bytes.
/// - sector 0: an MBR (signature 0x5eedc0de) with an active NTFS partition
///   (sectors 64..320) and a second one (320..770);
/// - sectors 0..128 (chunk 0): the MBR, text, then a 4 KiB zero hole;
/// - 128..256: random bytes (stored raw);
/// - 256..384: text (zstd), 384..512: the same text (deduplicated);
/// - 512..640: zero; 640..704: unmapped (zero); 704..768: text;
/// - 768..770: a two-sector tail of random bytes.
fn golden_source() -> Vec<u8> {
    let mut disk = vec![0u8; 770 * SECTOR];
    let t = text(CHUNK);
    disk[..CHUNK].copy_from_slice(&t);
    disk[8192..12288].fill(0);
    disk[..SECTOR].fill(0);
    disk[440..444].copy_from_slice(&0x5eed_c0deu32.to_le_bytes());
    let entry = |boot: u8, ty: u8, start: u32, count: u32| {
        let mut e = [0u8; 16];
        e[0] = boot;
        e[4] = ty;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&count.to_le_bytes());
        e
    };
    disk[446..462].copy_from_slice(&entry(0x80, 0x07, 64, 256));
    disk[462..478].copy_from_slice(&entry(0x00, 0x07, 320, 450));
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk[CHUNK..2 * CHUNK].copy_from_slice(&pattern(0x5eed, CHUNK));
    disk[2 * CHUNK..3 * CHUNK].copy_from_slice(&t);
    disk[3 * CHUNK..4 * CHUNK].copy_from_slice(&t);
    disk[704 * SECTOR..768 * SECTOR].copy_from_slice(&t[..64 * SECTOR]);
    disk[768 * SECTOR..].copy_from_slice(&pattern(0xc0de, 2 * SECTOR));
    disk
}

fn partition_table() -> PartitionTable {
    let part = |number, start_sector, sector_count, bootable| Partition {
        number,
        start_sector,
        sector_count,
        type_code: "0x07".into(),
        name: None,
        bootable,
    };
    PartitionTable {
        scheme: PartitionScheme::Mbr {
            disk_signature: 0x5eed_c0de,
        },
        partitions: vec![part(1, 64, 256, true), part(2, 320, 450, false)],
    }
}

/// The proof recorded for partition 2 (format version 3).
const PROOF: [&str; 2] = [
    "$LogFile is empty: nothing to replay",
    "the data runs of 40 MFT records in use (52 clusters) all lie in clusters $Bitmap marks used",
];

/// Partition 1 fell back to every sector; partition 2, which holds the
/// unmapped sectors, kept its used clusters only, with its proof from
/// version 3 on.
fn partition_captures(with_proof: bool) -> Vec<PartitionCapture> {
    vec![
        PartitionCapture {
            partition_number: 1,
            file_system: Some(FileSystemKind::Ntfs),
            volume_serial: Some("5EED-0001".into()),
            mode: CaptureMode::AllSectors,
            fallback_reason: Some("the volume is marked dirty".into()),
            proof: Vec::new(),
        },
        PartitionCapture {
            partition_number: 2,
            file_system: Some(FileSystemKind::Ntfs),
            volume_serial: Some("5EED-0002".into()),
            mode: CaptureMode::UsedClusters,
            fallback_reason: None,
            proof: if with_proof {
                PROOF.map(String::from).to_vec()
            } else {
                Vec::new()
            },
        },
    ]
}

/// Writes the golden image with the writer, splitting like `capture` does.
fn write_golden(out: &Path, key: &SigningKey) {
    let source = golden_source();
    let file = fs::File::create(out).expect("create golden image");
    let mut writer = ImageWriter::new(file, CHUNK as u32, SECTOR as u32).expect("writer");
    let mut compressor = zstd::bulk::Compressor::new(3).expect("zstd");
    let unmapped = UNMAPPED.start * SECTOR..UNMAPPED.end * SECTOR;
    for (w, window) in source.chunks(CHUNK).enumerate() {
        let base = w * CHUNK;
        // Runs of (kind, range) at the 4 KiB grain; 0 data, 1 zero, 2 unmapped.
        let mut runs: Vec<(u8, std::ops::Range<usize>)> = Vec::new();
        for (b, block) in window.chunks(GRAIN).enumerate() {
            let at = base + b * GRAIN;
            let kind = if unmapped.contains(&at) {
                2
            } else if block.iter().all(|&x| x == 0) {
                1
            } else {
                0
            };
            match runs.last_mut() {
                Some((k, r)) if *k == kind => r.end = at + block.len(),
                _ => runs.push((kind, at..at + block.len())),
            }
        }
        for (kind, range) in runs {
            let sectors = (range.len() / SECTOR) as u64;
            match kind {
                0 => {
                    let chunk =
                        PreparedChunk::compress(&source[range], &mut compressor).expect("compress");
                    writer.add_data(&chunk).expect("add data");
                }
                1 => writer.add_run(sectors, ExtentKind::Zero).expect("add zero"),
                _ => writer
                    .add_run(sectors, ExtentKind::Unmapped)
                    .expect("add unmapped"),
            }
        }
    }
    let draft = ManifestDraft {
        image_uuid: UUID.parse().expect("uuid"),
        name: "golden".into(),
        description: "Reliquary golden reference image".into(),
        version: "1.0".into(),
        created_unix: CREATED,
        creator: "reliquary golden generator".into(),
        source: SourceDisk {
            size_sectors: (source.len() / SECTOR) as u64,
            logical_sector_size: SECTOR as u32,
            physical_sector_size: 4096,
            model: Some("GOLDEN DISK".into()),
            serial: None,
        },
        partition_table: partition_table(),
        compatible: vec!["SIMATIC IPC427E".into(), "SIMATIC IPC477E".into()],
        partition_captures: partition_captures(true),
    };
    let authored = SignerStatement {
        signer_name: "Golden Signer".into(),
        meaning: Meaning::Authored,
        signed_unix: CREATED + 60,
    };
    writer.finish(draft, key, &authored).expect("finish");
    let approved = SignerStatement {
        signer_name: "Golden Signer".into(),
        meaning: Meaning::Approved,
        signed_unix: CREATED + 120,
    };
    reliquary_image::write::add_signature(out, key, &approved).expect("co-sign");
}

/// Reads every data extent into a buffer of the disk's size; zero and
/// unmapped extents stay zero.
fn extract_in_memory(image: &Image<Vec<u8>>) -> Vec<u8> {
    let sector = u64::from(image.sector_size());
    let mut disk = vec![0u8; image.manifest().logical_bytes() as usize];
    let mut decoder = ChunkDecoder::new();
    let mut raw = Vec::new();
    for e in image.extents() {
        if let ExtentKind::Data { chunk } = e.kind {
            image
                .read_chunk(chunk, &mut decoder, &mut raw)
                .expect("chunk verifies");
            let at = (e.start_sector * sector) as usize;
            disk[at..at + raw.len()].copy_from_slice(&raw);
        }
    }
    disk
}

fn expected(file: &str) -> BTreeMap<String, String> {
    let text = fs::read_to_string(dir().join(file)).expect("read the expected values");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key = value");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

#[test]
fn golden_image_opens_verifies_and_extracts() {
    let bytes = fs::read(dir().join("golden.rimg")).expect("read golden.rimg");
    let want = expected("expected.txt");
    let get = |k: &str| {
        want.get(k)
            .unwrap_or_else(|| panic!("expected.txt lacks {k}"))
            .as_str()
    };
    assert_eq!(bytes.len().to_string(), get("file_bytes"));
    assert_eq!(
        hex::encode(sha256(&bytes)),
        get("file_sha256"),
        "golden.rimg itself changed"
    );

    // The fixed preamble, byte by byte.
    assert_eq!(&bytes[0..8], b"RELIQIMG");
    assert_eq!(bytes[8..12], 3u32.to_le_bytes(), "format version");
    assert_eq!(bytes[12..16], 128u32.to_le_bytes(), "header size");
    assert_eq!(bytes[16..32], [0u8; 16], "flags");
    assert_eq!(bytes[32..40], 4096u64.to_le_bytes(), "data offset");
    assert!(
        bytes[96..4096].iter().all(|&b| b == 0),
        "reserved bytes and padding"
    );

    let trust = TrustStore::load(&dir().join("golden.pub")).expect("load golden.pub");
    let image = reliquary_image::open(bytes.clone())
        .and_then(|s| s.verify(&trust))
        .expect("the golden image verifies with golden.pub");
    assert_eq!(image.trust(), Trust::Verified);
    let m = image.manifest();
    assert_eq!(m.image_uuid.to_string(), UUID);
    assert_eq!(m.name, get("name"));
    assert_eq!(m.description, "Reliquary golden reference image");
    assert_eq!(m.version, "1.0");
    assert_eq!(m.created_unix, CREATED);
    assert_eq!(m.creator, "reliquary golden generator");
    assert_eq!(m.chunk_size.to_string(), get("chunk_size"));
    assert_eq!(m.source.size_sectors.to_string(), get("size_sectors"));
    assert_eq!(m.logical_bytes().to_string(), get("logical_bytes"));
    assert_eq!(m.source.logical_sector_size, 512);
    assert_eq!(m.source.physical_sector_size, 4096);
    assert_eq!(m.source.model.as_deref(), Some("GOLDEN DISK"));
    assert_eq!(m.source.serial, None);
    assert_eq!(m.partition_table, partition_table());
    assert_eq!(m.compatible, ["SIMATIC IPC427E", "SIMATIC IPC477E"]);
    assert_eq!(m.partition_captures, partition_captures(true));
    assert_eq!(m.stored_bytes.to_string(), get("stored_bytes"));
    assert_eq!(image.index().chunks.len().to_string(), get("chunks"));
    assert_eq!(image.index().extents.len().to_string(), get("extents"));
    assert_eq!(hex::encode(m.image_digest), get("image_digest"));
    assert_eq!(hex::encode(m.index_sha256), get("index_sha256"));
    assert_eq!(hex::encode(image.manifest_sha256()), get("manifest_sha256"));

    // Every extent kind and both compressions are present.
    let kinds: Vec<ExtentKind> = image.extents().map(|e| e.kind).collect();
    assert!(kinds.contains(&ExtentKind::Zero) && kinds.contains(&ExtentKind::Unmapped));
    let chunks = &image.index().chunks;
    assert!(chunks.iter().any(|c| c.compression == Compression::Raw));
    assert!(chunks.iter().any(|c| c.compression == Compression::Zstd));
    let data_extents = kinds
        .iter()
        .filter(|k| matches!(k, ExtentKind::Data { .. }))
        .count();
    assert!(
        data_extents > chunks.len(),
        "a deduplicated chunk is used twice"
    );

    let signers = image.signers();
    assert_eq!(signers.len(), 2);
    assert_eq!(signers[0].key_id, get("key_id"));
    assert_eq!(signers[0].statement.meaning, Meaning::Authored);
    assert_eq!(signers[1].statement.meaning, Meaning::Approved);
    assert_eq!(signers[1].statement.signed_unix, CREATED + 120);

    // Extraction reproduces the generator's pattern.
    let disk = extract_in_memory(&image);
    assert_eq!(hex::encode(sha256(&disk)), get("source_sha256"));
    assert!(
        disk == golden_source(),
        "extraction differs from golden_source()"
    );

    // Re-encoding what was decoded gives back the exact committed bytes.
    let p = *image.preamble();
    assert_eq!(p.encode().as_slice(), &bytes[..PREAMBLE_LEN]);
    let section = |s: reliquary_image::layout::Section| {
        &bytes[s.offset as usize..(s.offset + s.length) as usize]
    };
    assert_eq!(
        postcard::to_stdvec(m).expect("encode").as_slice(),
        section(p.manifest)
    );
    assert_eq!(
        postcard::to_stdvec(image.index())
            .expect("encode")
            .as_slice(),
        section(p.index)
    );
    let sigs: Vec<SignatureEntry> =
        postcard::from_bytes(section(p.signatures)).expect("signatures");
    assert_eq!(
        postcard::to_stdvec(&sigs).expect("encode").as_slice(),
        section(p.signatures)
    );
    let _: Manifest = postcard::from_bytes(section(p.manifest)).expect("manifest");
    let _: Index = postcard::from_bytes(section(p.index)).expect("index");
}

/// The version 2 image, written before capture recorded its proofs, still
/// opens, verifies and extracts; its records read with an empty proof.
#[test]
fn version_2_golden_image_still_opens_verifies_and_extracts() {
    let bytes = fs::read(dir().join("golden-v2.rimg")).expect("read golden-v2.rimg");
    let want = expected("expected-v2.txt");
    let get = |k: &str| want[k].as_str();
    assert_eq!(
        hex::encode(sha256(&bytes)),
        get("file_sha256"),
        "golden-v2.rimg itself changed"
    );
    assert_eq!(bytes[8..12], 2u32.to_le_bytes(), "format version");
    let trust = TrustStore::load(&dir().join("golden.pub")).expect("load golden.pub");
    let image = reliquary_image::open(bytes.clone())
        .and_then(|s| s.verify(&trust))
        .expect("the version 2 golden image verifies with golden.pub");
    let m = image.manifest();
    assert_eq!(m.partition_table, partition_table());
    assert_eq!(m.partition_captures, partition_captures(false));
    assert_eq!(hex::encode(image.manifest_sha256()), get("manifest_sha256"));
    assert_eq!(image.signers().len(), 2);
    let disk = extract_in_memory(&image);
    assert!(
        disk == golden_source(),
        "extraction differs from golden_source()"
    );
    // Co-signing keeps its version and its manifest bytes.
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("v2.rimg");
    fs::write(&copy, &bytes).expect("copy");
    let key = SigningKey::load(&dir().join("golden.pk8")).expect("golden.pk8");
    let reviewed = SignerStatement {
        signer_name: "Golden Signer".into(),
        meaning: Meaning::Reviewed,
        signed_unix: CREATED + 180,
    };
    reliquary_image::write::add_signature(&copy, &key, &reviewed).expect("co-sign v2");
    let cosigned = fs::read(&copy).expect("read co-signed");
    assert_eq!(cosigned[8..12], 2u32.to_le_bytes());
    let image = reliquary_image::open(cosigned)
        .and_then(|s| s.verify(&trust))
        .expect("the co-signed version 2 image verifies");
    assert_eq!(image.signers().len(), 3);
    assert_eq!(
        image.manifest().partition_captures,
        partition_captures(false)
    );
}

/// FORMAT.md: a version 3 `PartitionCapture` ends with its proof, a
/// `Vec<String>`; the golden manifest's last record ends with the count
/// and the two strings of [`PROOF`].
#[test]
fn golden_manifest_ends_with_the_documented_proof() {
    let bytes = fs::read(dir().join("golden.rimg")).expect("read golden.rimg");
    let p = Preamble::decode_fields(&bytes[..PREAMBLE_LEN].try_into().expect("preamble"));
    let m = &bytes[p.manifest.offset as usize..(p.manifest.offset + p.manifest.length) as usize];
    let mut tail = vec![2u8];
    for line in PROOF {
        tail.push(line.len() as u8);
        tail.extend_from_slice(line.as_bytes());
    }
    assert!(
        m.ends_with(&tail),
        "the manifest does not end with the proof"
    );
    // Before it: mode UsedClusters (0), fallback_reason None (0).
    assert_eq!(m[m.len() - tail.len() - 2..m.len() - tail.len()], [0, 0]);
}

#[test]
fn golden_manifest_starts_with_the_documented_encoding() {
    // FORMAT.md walks through these first bytes of the manifest.
    let bytes = fs::read(dir().join("golden.rimg")).expect("read golden.rimg");
    let p = Preamble::decode_fields(&bytes[..PREAMBLE_LEN].try_into().expect("preamble"));
    let m = &bytes[p.manifest.offset as usize..];
    // image_uuid: a 16-byte byte string, length prefix 0x10.
    assert_eq!(m[0], 16);
    assert_eq!(hex::encode(&m[1..17]), UUID.replace('-', ""));
    // name: varint length 6, then "golden".
    assert_eq!(m[17], 6);
    assert_eq!(&m[18..24], b"golden");
}

#[test]
fn golden_image_is_rejected_by_another_key_and_when_altered() {
    let bytes = fs::read(dir().join("golden.rimg")).expect("read golden.rimg");
    let (other, _) = SigningKey::generate().expect("keygen");
    let tmp = tempfile::tempdir().expect("tempdir");
    let pubfile = tmp.path().join("other.pub");
    fs::write(&pubfile, other.public_key().to_text(None)).expect("write");
    let trust = TrustStore::load(&pubfile).expect("trust");
    let err = reliquary_image::open(bytes.clone())
        .and_then(|s| s.verify(&trust))
        .expect_err("untrusted");
    assert!(err.to_string().contains("0 of 1 required"), "{err}");

    let golden = TrustStore::load(&dir().join("golden.pub")).expect("trust");
    let mut altered = bytes;
    altered[4096 + 100] ^= 1;
    let image = reliquary_image::open(altered)
        .and_then(|s| s.verify(&golden))
        .expect("metadata intact");
    let mut decoder = ChunkDecoder::new();
    let err = image
        .read_chunk(0, &mut decoder, &mut Vec::new())
        .expect_err("chunk 0 altered");
    assert!(
        err.to_string().starts_with("chunk 0 (sectors 0..16"),
        "{err}"
    );
}

/// Regenerates `tests/golden/`. Run through `tests/golden/generate.sh`.
#[test]
#[ignore = "rewrites the committed golden image; run tests/golden/generate.sh"]
fn regenerate_golden() {
    let dir = dir();
    fs::create_dir_all(&dir).expect("mkdir golden");
    let pk8 = dir.join("golden.pk8");
    let key = if pk8.exists() {
        SigningKey::load(&pk8).expect("load golden.pk8")
    } else {
        let (key, der) = SigningKey::generate().expect("keygen");
        fs::write(&pk8, der).expect("write golden.pk8");
        key
    };
    fs::write(
        dir.join("golden.pub"),
        key.public_key().to_text(Some("Golden Signer")),
    )
    .expect("write .pub");
    let image_path = dir.join("golden.rimg");
    let _ = fs::remove_file(&image_path);
    write_golden(&image_path, &key);

    let bytes = fs::read(&image_path).expect("read back");
    let trust = TrustStore::load(&dir.join("golden.pub")).expect("trust");
    let image = reliquary_image::open(bytes.clone())
        .and_then(|s| s.verify(&trust))
        .expect("verifies");
    let m = image.manifest();
    let disk = extract_in_memory(&image);
    assert!(disk == golden_source());
    let expected = format!(
        "# Values the golden test asserts; written by generate.sh.\n\
         file_bytes = {}\nfile_sha256 = {}\nname = {}\nchunk_size = {}\nsize_sectors = {}\n\
         logical_bytes = {}\nstored_bytes = {}\nchunks = {}\nextents = {}\nimage_digest = {}\n\
         index_sha256 = {}\nmanifest_sha256 = {}\nkey_id = {}\nsource_sha256 = {}\n",
        bytes.len(),
        hex::encode(sha256(&bytes)),
        m.name,
        m.chunk_size,
        m.source.size_sectors,
        m.logical_bytes(),
        m.stored_bytes,
        image.index().chunks.len(),
        image.index().extents.len(),
        hex::encode(m.image_digest),
        hex::encode(m.index_sha256),
        hex::encode(image.manifest_sha256()),
        key.public_key().key_id(),
        hex::encode(sha256(&disk)),
    );
    fs::write(dir.join("expected.txt"), expected).expect("write expected.txt");
}
