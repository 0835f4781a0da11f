//! A small captured disk and its image, for the restore module's tests.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use reliquary_image::keys::SigningKey;
use reliquary_image::{Image, Meaning, SignerStatement};

use crate::capture::{capture, CaptureOptions};

pub const CHUNK: u64 = 64 << 10;
/// 256 chunks of data: more than an estimate samples.
pub const DISK: u64 = 256 * CHUNK;

/// A disk of distinct, non-zero chunks and its image.
pub fn disk_and_image(dir: &Path) -> (Vec<u8>, Image<File>) {
    let bytes: Vec<u8> = (0..DISK)
        .map(|i| ((i / 4096) as u8).wrapping_mul(31).wrapping_add(i as u8) | 1)
        .collect();
    let source_path = dir.join("source.raw");
    File::create(&source_path)
        .and_then(|mut f| f.write_all(&bytes))
        .expect("writes the source");
    let (key, _) = SigningKey::generate().expect("key");
    let opts = CaptureOptions {
        name: "estimate".into(),
        description: String::new(),
        version: "1".into(),
        compatible: Vec::new(),
        statement: SignerStatement {
            signer_name: "test".into(),
            meaning: Meaning::Authored,
            signed_unix: 0,
        },
        chunk_size: CHUNK as u32,
        level: 1,
        zero_grain: 4096,
        logical_sector_size: 512,
        physical_sector_size: 4096,
        model: None,
        serial: None,
        threads: 2,
        created_unix: 0,
        all_sectors: true,
    };
    let image_path = dir.join("image.rimg");
    let source = File::open(&source_path).expect("opens the source");
    capture(&source, DISK, &image_path, &key, &opts, &|_, _| {}).expect("captures");
    let image = reliquary_image::open(File::open(&image_path).expect("opens the image"))
        .and_then(|sealed| sealed.open_unverified())
        .expect("reads the image");
    (bytes, image)
}
