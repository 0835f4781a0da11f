//! The single-bit-flip property, in process: flipping any one bit of an
//! image either makes verification fail with an integrity error, or leaves
//! extraction producing exactly the original bytes. Never wrong data with
//! success.
//!
//! Every bit of the preamble, the index, the manifest and the signatures is
//! flipped; a deterministic sample of bits in the data region and in the
//! unused bytes between the preamble and the data region.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use reliquary_appliance::capture::{capture, CaptureOptions};
use reliquary_appliance::verify::{extract, verify_chunks, ExtractError};
use reliquary_image::keys::SigningKey;
use reliquary_image::layout::{Preamble, PREAMBLE_LEN};
use reliquary_image::{ImageError, Meaning, SignerStatement, TrustStore};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn options(name: &str) -> CaptureOptions {
    CaptureOptions {
        name: name.into(),
        description: "bit flip property".into(),
        version: "1".into(),
        compatible: vec!["S7-1500".into()],
        statement: SignerStatement {
            signer_name: "Author".into(),
            meaning: Meaning::Authored,
            signed_unix: 1_700_000_000,
        },
        chunk_size: 64 << 10,
        level: 3,
        zero_grain: 4096,
        logical_sector_size: 512,
        physical_sector_size: 4096,
        model: Some("model".into()),
        serial: None,
        threads: 2,
        created_unix: 1_700_000_000,
        all_sectors: false,
    }
}

/// A small source: a raw (random) chunk, compressible chunks with zero
/// holes, a repeated chunk, a zero run and a short tail.
fn source() -> Vec<u8> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut v = rng.bytes(64 << 10);
    let mut text: Vec<u8> = b"setpoint 42; valve open; "
        .iter()
        .copied()
        .cycle()
        .take(64 << 10)
        .collect();
    text[4096..8192].fill(0);
    v.extend_from_slice(&text);
    v.resize(v.len() + (128 << 10), 0);
    v.extend_from_slice(&text);
    let mut small = rng.bytes(8192);
    small.extend(std::iter::repeat_n(7u8, 3 * 512));
    v.extend_from_slice(&small);
    v
}

/// Where outputs go: tmpfs when there is one (extract syncs its output).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

enum Outcome {
    Rejected,
    Identical,
}

/// Opens, verifies, checks every chunk and extracts; panics on anything
/// other than a clean integrity failure or an exact extraction.
fn check(image: &Path, trust: &TrustStore, out: &Path, original: &[u8], what: &str) -> Outcome {
    let integrity = |e: &ImageError, stage: &str| {
        assert!(
            e.is_integrity_failure(),
            "{what}: {stage} failed with a non-integrity error: {e}"
        );
    };
    // The unverified path (inspect) must not panic either.
    if let Ok(sealed) = reliquary_image::open(File::open(image).expect("open")) {
        let _ = sealed.open_unverified();
    }
    let opened =
        reliquary_image::open(File::open(image).expect("open")).and_then(|s| s.verify(trust));
    let img = match opened {
        Ok(img) => img,
        Err(e) => {
            integrity(&e, "open/verify");
            return Outcome::Rejected;
        }
    };
    let chunks_ok = match verify_chunks(&img, &|_| {}) {
        Ok(()) => true,
        Err(e) => {
            integrity(&e, "verify_chunks");
            false
        }
    };
    let _ = std::fs::remove_file(out);
    match extract(&img, out, &|_| {}) {
        Ok(()) => {
            assert!(chunks_ok, "{what}: verify failed but extract succeeded");
            let got = std::fs::read(out).expect("read extracted");
            assert!(got == original, "{what}: verified and extracted WRONG DATA");
            Outcome::Identical
        }
        Err(ExtractError::Image(e)) => {
            assert!(!chunks_ok, "{what}: verify passed but extract failed: {e}");
            integrity(&e, "extract");
            assert!(!out.exists(), "{what}: a failed extract left its output");
            Outcome::Rejected
        }
        Err(e) => panic!("{what}: extract failed with a runtime error: {e}"),
    }
}

fn flip(file: &File, offset: u64, bit: u8) {
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= 1 << bit;
    file.write_all_at(&b, offset).expect("write");
}

#[test]
fn any_single_bit_flip_is_detected_or_harmless() {
    let dir = scratch();
    let original = source();
    let src_path = dir.path().join("src.raw");
    std::fs::write(&src_path, &original).expect("write source");
    let key_path = dir.path().join("author");
    let key = SigningKey::generate_to_files(&key_path, Some("Author")).expect("keygen");
    let image: PathBuf = dir.path().join("p.rimg");
    let src = File::open(&src_path).expect("open source");
    capture(
        &src,
        original.len() as u64,
        &image,
        &key,
        &options("prop"),
        &|_, _| {},
    )
    .expect("capture");
    // A co-signature by a key the trust store does not hold: flips in it
    // must not matter, and must not break the trusted signature.
    let other = SigningKey::generate().expect("keygen").0;
    let statement = SignerStatement {
        signer_name: "Reviewer".into(),
        meaning: Meaning::Reviewed,
        signed_unix: 1_700_000_100,
    };
    reliquary_image::write::add_signature(&image, &other, &statement).expect("co-sign");
    let trust =
        TrustStore::load(&reliquary_image::keys::public_key_path(&key_path)).expect("trust");
    let out = dir.path().join("out.raw");
    assert!(matches!(
        check(&image, &trust, &out, &original, "pristine"),
        Outcome::Identical
    ));

    let bytes = std::fs::read(&image).expect("read image");
    let p = Preamble::decode_fields(&bytes[..PREAMBLE_LEN].try_into().expect("preamble"));
    let mut targets: Vec<u64> = (0..PREAMBLE_LEN as u64).collect();
    for s in [p.index, p.manifest, p.signatures] {
        targets.extend(s.offset..s.offset + s.length);
    }
    let metadata_bytes = targets.len();
    let mut rng = Rng(0x0bad_5eed);
    // The unused bytes between the preamble and the data region.
    targets
        .extend((0..256).map(|_| PREAMBLE_LEN as u64 + rng.next() % (4096 - PREAMBLE_LEN as u64)));
    // The data region, chunks and padding alike.
    targets.extend((0..3000).map(|_| p.data.offset + rng.next() % p.data.length));

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .expect("open image");
    let started = std::time::Instant::now();
    let (mut rejected, mut harmless) = (0usize, 0usize);
    for (n, &offset) in targets.iter().enumerate() {
        let bits: Vec<u8> = if n < metadata_bytes {
            (0..8).collect()
        } else {
            vec![(rng.next() % 8) as u8]
        };
        for bit in bits {
            flip(&file, offset, bit);
            let what = format!("bit {bit} of byte {offset}");
            match check(&image, &trust, &out, &original, &what) {
                Outcome::Rejected => rejected += 1,
                Outcome::Identical => harmless += 1,
            }
            flip(&file, offset, bit);
        }
    }
    eprintln!(
        "{} flips ({metadata_bytes} metadata bytes exhaustively): {rejected} rejected, {harmless} harmless, {:.1} s",
        rejected + harmless,
        started.elapsed().as_secs_f64()
    );
    assert!(matches!(
        check(&image, &trust, &out, &original, "restored"),
        Outcome::Identical
    ));
    // Flips in the manifest or the trusted signature are always rejected.
    assert!(rejected > 8 * (p.manifest.length as usize), "{rejected}");
}

#[test]
fn every_preamble_field_value_is_checked() {
    // Setting each 8-byte preamble word to a handful of hostile values must
    // never panic, and a change that still verifies must extract exactly.
    let dir = scratch();
    let original = source();
    let src_path = dir.path().join("src.raw");
    std::fs::write(&src_path, &original).expect("write source");
    let key_path = dir.path().join("author");
    let key = SigningKey::generate_to_files(&key_path, Some("Author")).expect("keygen");
    let image = dir.path().join("p.rimg");
    let src = File::open(&src_path).expect("open source");
    capture(
        &src,
        original.len() as u64,
        &image,
        &key,
        &options("words"),
        &|_, _| {},
    )
    .expect("capture");
    let trust =
        TrustStore::load(&reliquary_image::keys::public_key_path(&key_path)).expect("trust");
    let out = dir.path().join("out.raw");
    let pristine = std::fs::read(&image).expect("read");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .expect("open image");
    let len = pristine.len() as u64;
    for word in (8..PREAMBLE_LEN).step_by(8) {
        let old: [u8; 8] = pristine[word..word + 8].try_into().expect("word");
        let v = u64::from_le_bytes(old);
        for value in [
            0,
            1,
            u64::MAX,
            u64::MAX - 4095,
            1 << 63,
            len,
            len - 1,
            len + 1,
            v.wrapping_add(4096),
            v.wrapping_sub(4096),
        ] {
            file.write_all_at(&value.to_le_bytes(), word as u64)
                .expect("write");
            let what = format!("preamble word at {word} = {value:#x}");
            let outcome = check(&image, &trust, &out, &original, &what);
            // Only the compatible flags (offset 16) may change harmlessly.
            if value != v && word != 16 {
                assert!(matches!(outcome, Outcome::Rejected), "{what} was accepted");
            }
            file.write_all_at(&old, word as u64).expect("restore");
        }
    }
}
