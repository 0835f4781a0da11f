//! Images that are correctly signed by a trusted key but whose manifest or
//! index breaks a rule of FORMAT.md ("What a reader checks", rules 18–27).
//! A buggy writer or a malicious signer must still not get an inconsistent
//! index past the reader. Each image is built by hand, with correct digests
//! and signature, so exactly one rule fails.

use reliquary_image::digest::{sha256, ImageDigest};
use reliquary_image::keys::SigningKey;
use reliquary_image::layout::{Preamble, Section, FORMAT_VERSION, PREAMBLE_LEN};
use reliquary_image::signature::sign_manifest;
use reliquary_image::{
    CaptureMode, ChunkEntry, Compression, Extent, ExtentKind, ImageError, Index, Manifest, Meaning,
    PartitionCapture, PartitionScheme, PartitionTable, SignerStatement, SourceDisk, TrustStore,
};

const CHUNK: u32 = 64 << 10;

struct Fixture {
    key: SigningKey,
    trust: TrustStore,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, _) = SigningKey::generate().expect("keygen");
    let path = dir.path().join("k.pub");
    std::fs::write(&path, key.public_key().to_text(Some("K"))).expect("write .pub");
    let trust = TrustStore::load(&path).expect("trust");
    Fixture {
        key,
        trust,
        _dir: dir,
    }
}

fn chunk(offset: u64, raw: &[u8]) -> ChunkEntry {
    ChunkEntry {
        offset,
        stored_len: raw.len() as u32,
        raw_len: raw.len() as u32,
        compression: Compression::Raw,
        sha256: sha256(raw),
    }
}

fn data(kind_chunk: u32, sectors: u64) -> Extent {
    Extent {
        sector_count: sectors,
        kind: ExtentKind::Data { chunk: kind_chunk },
    }
}

fn run(sectors: u64, kind: ExtentKind) -> Extent {
    Extent {
        sector_count: sectors,
        kind,
    }
}

/// Lays out an image: `region` is the data region, `index` is encoded as
/// given; the manifest gets the correct index digest and image digest, then
/// `tweak` may change it before it is signed.
fn build(
    f: &Fixture,
    region: &[u8],
    index: &Index,
    size_sectors: u64,
    tweak: impl FnOnce(&mut Manifest),
) -> Vec<u8> {
    let index_bytes = postcard::to_stdvec(index).expect("encode index");
    let mut digest = ImageDigest::new();
    for e in &index.extents {
        let sha = match e.kind {
            ExtentKind::Data { chunk } => index.chunks.get(chunk as usize).map(|c| c.sha256),
            _ => None,
        };
        digest.add(e.sector_count, e.kind, sha.as_ref());
    }
    let mut manifest = Manifest {
        image_uuid: uuid::Uuid::from_u128(0x5eed),
        name: "hand-made".into(),
        description: String::new(),
        version: "1".into(),
        created_unix: 0,
        creator: "test".into(),
        source: SourceDisk {
            size_sectors,
            logical_sector_size: 512,
            physical_sector_size: 4096,
            model: None,
            serial: None,
        },
        partition_table: PartitionTable {
            scheme: PartitionScheme::None,
            partitions: vec![],
        },
        chunk_size: CHUNK,
        index_length: index_bytes.len() as u64,
        index_sha256: sha256(&index_bytes),
        image_digest: digest.finish(),
        stored_bytes: region.len() as u64,
        compatible: vec![],
        partition_captures: vec![],
    };
    tweak(&mut manifest);
    let manifest_bytes = postcard::to_stdvec(&manifest).expect("encode manifest");
    let statement = SignerStatement {
        signer_name: "K".into(),
        meaning: Meaning::Authored,
        signed_unix: 0,
    };
    let entry = sign_manifest(&f.key, &manifest_bytes, &statement).expect("sign");
    let sig_bytes = postcard::to_stdvec(&vec![entry]).expect("encode signatures");

    let mut file = vec![0u8; 4096];
    file.extend_from_slice(region);
    let mut at = 4096u64;
    let mut section = |len: usize| {
        let s = Section {
            offset: at,
            length: len as u64,
        };
        at += len as u64;
        s
    };
    let preamble = Preamble {
        format_version: FORMAT_VERSION,
        header_size: PREAMBLE_LEN as u32,
        compatible_flags: 0,
        incompatible_flags: 0,
        data: section(region.len()),
        index: section(index_bytes.len()),
        manifest: section(manifest_bytes.len()),
        signatures: section(sig_bytes.len()),
    };
    file[..PREAMBLE_LEN].copy_from_slice(&preamble.encode());
    file.extend_from_slice(&index_bytes);
    file.extend_from_slice(&manifest_bytes);
    file.extend_from_slice(&sig_bytes);
    file
}

fn verify(f: &Fixture, file: Vec<u8>) -> Result<(), ImageError> {
    reliquary_image::open(file)
        .and_then(|s| s.verify(&f.trust))
        .map(|_| ())
}

#[track_caller]
fn rejected(result: Result<(), ImageError>, needle: &str) {
    match result {
        Ok(()) => panic!("accepted; expected an error containing `{needle}`"),
        Err(e) => {
            assert!(e.is_integrity_failure(), "{e}");
            assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`");
        }
    }
}

/// Two 8 KiB raw chunks at 4096 and 12288, and a 16-sector zero run.
fn good() -> (Vec<u8>, Index) {
    let a = vec![0xaau8; 8192];
    let b = vec![0xbbu8; 8192];
    let mut region = a.clone();
    region.extend_from_slice(&b);
    let index = Index {
        chunks: vec![chunk(4096, &a), chunk(4096 + 8192, &b)],
        extents: vec![data(0, 16), run(16, ExtentKind::Zero), data(1, 16)],
    };
    (region, index)
}

#[test]
fn the_hand_made_image_is_valid() {
    let f = fixture();
    let (region, index) = good();
    verify(&f, build(&f, &region, &index, 48, |_| {})).expect("valid");
}

#[test]
fn manifest_rules() {
    let f = fixture();
    let (region, index) = good();
    type Case = (Box<dyn FnOnce(&mut Manifest)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            Box::new(|m| m.source.logical_sector_size = 1024),
            "the logical sector size must be 512 or 4096",
        ),
        (
            Box::new(|m| m.source.physical_sector_size = 256),
            "the physical sector size must be a power of two",
        ),
        (
            Box::new(|m| m.source.physical_sector_size = 1 << 17),
            "the physical sector size",
        ),
        (
            Box::new(|m| m.chunk_size = 3 << 20),
            "the chunk size must be a power of two",
        ),
        (Box::new(|m| m.chunk_size = 32 << 10), "the chunk size"),
        (
            Box::new(|m| m.source.size_sectors = u64::MAX / 2),
            "the disk size overflows",
        ),
        (
            Box::new(|m| m.index_length += 1),
            "the index length differs from the preamble's",
        ),
        (
            Box::new(|m| m.stored_bytes -= 4096),
            "the stored size differs from the preamble's data region",
        ),
        (
            Box::new(|m| {
                m.partition_captures.push(PartitionCapture {
                    partition_number: 1,
                    file_system: None,
                    volume_serial: None,
                    mode: CaptureMode::AllSectors,
                    fallback_reason: None,
                    proof: Vec::new(),
                })
            }),
            "the partition capture records must follow the partition table",
        ),
        (
            Box::new(|m| m.index_sha256[0] ^= 1),
            "the index does not match the manifest's digest",
        ),
        (
            Box::new(|m| m.image_digest[31] ^= 1),
            "the index's extent digests do not match the manifest's image digest",
        ),
    ];
    for (tweak, needle) in cases {
        rejected(verify(&f, build(&f, &region, &index, 48, tweak)), needle);
    }
}

#[test]
fn index_rules() {
    let f = fixture();
    let (region, good_index) = good();
    type Case = (Box<dyn Fn(&mut Index, &mut u64)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            Box::new(|i, _| i.extents[1].sector_count = 0),
            "extent 1 (sector 16): it is empty",
        ),
        (
            Box::new(|i, _| i.extents[2] = data(7, 16)),
            "it names a chunk that does not exist",
        ),
        (
            Box::new(|i, _| i.extents[2] = data(1, 8)),
            "its length differs from its chunk's length",
        ),
        (
            Box::new(|i, _| i.extents.insert(2, run(4, ExtentKind::Zero))),
            "extent 2 (sector 32): it should have been merged",
        ),
        (
            Box::new(|i, _| i.extents.push(run(8, ExtentKind::Unmapped))),
            "runs past the end of the disk",
        ),
        (
            Box::new(|_, size| *size += 8),
            "the extents do not cover the whole disk",
        ),
        (
            Box::new(|i, _| i.extents[2] = data(0, 16)),
            "chunk 1: no extent uses it",
        ),
        (
            Box::new(|i, _| i.chunks[1].offset = 4096 + 4096),
            "chunk 1: it overlaps another chunk",
        ),
        (
            Box::new(|i, _| i.chunks[1].offset = 4096 + 8192 + 512),
            "chunk 1: it lies outside the data region or is not 4096-aligned",
        ),
        (
            Box::new(|i, _| i.chunks[1].offset = 0),
            "it lies outside the data region",
        ),
        (
            Box::new(|i, _| i.chunks[1].offset = 4096 + 16384),
            "it lies outside the data region",
        ),
        (
            Box::new(|i, _| i.chunks[0].compression = Compression::Zstd),
            "chunk 0: its stored length does not fit its compression",
        ),
        (
            Box::new(|i, _| i.chunks[0].stored_len = 4096),
            "its stored length does not fit its compression",
        ),
        (
            Box::new(|i, _| i.chunks[0].raw_len = 8000),
            "its length must be a whole number of sectors",
        ),
        (
            Box::new(|i, _| {
                i.chunks[0].raw_len = 2 * CHUNK;
                i.chunks[0].stored_len = 2 * CHUNK;
            }),
            "at most the chunk size",
        ),
    ];
    for (n, (change, needle)) in cases.into_iter().enumerate() {
        let mut index = good_index.clone();
        let mut size = 48;
        change(&mut index, &mut size);
        let result = verify(&f, build(&f, &region, &index, size, |_| {}));
        match result {
            Ok(()) => panic!("case {n} accepted; expected `{needle}`"),
            Err(e) => assert!(
                e.to_string().contains(needle),
                "case {n}: `{e}` lacks `{needle}`"
            ),
        }
    }
}

#[test]
fn a_chunk_whose_bytes_do_not_match_is_named_when_read() {
    let f = fixture();
    let (mut region, index) = good();
    region[8192 + 5] ^= 0x40; // chunk 1's stored bytes
    let file = build(&f, &region, &index, 48, |_| {});
    let image = reliquary_image::open(file)
        .and_then(|s| s.verify(&f.trust))
        .expect("metadata verifies");
    let mut decoder = reliquary_image::ChunkDecoder::new();
    let mut out = Vec::new();
    image
        .read_chunk(0, &mut decoder, &mut out)
        .expect("chunk 0 is intact");
    let err = image
        .read_chunk(1, &mut decoder, &mut out)
        .expect_err("chunk 1 altered");
    assert_eq!(
        err.to_string(),
        "chunk 1 (sectors 32..48, file offset 12288) fails its SHA-256 check: the data was altered"
    );
    // Random access by sector.
    assert_eq!(
        image.extent_at_sector(20).expect("sector 20").kind,
        ExtentKind::Zero
    );
    assert!(image.extent_at_sector(48).is_err());
}
