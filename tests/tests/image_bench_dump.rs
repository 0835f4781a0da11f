//! A helper for `benches/capture_verify.sh`, not a test: it splits an
//! image's stored chunks into standalone files so the benchmark can time
//! the mandatory work of a verify (decompress every stored chunk, hash every
//! data byte) with the standard tools, outside reliquary.
//!
//! ```text
//! BENCH_IMAGE=disk.rimg BENCH_OUT=dir cargo test --release -p reliquary-tests \
//!     --test image_bench_dump -- --ignored --nocapture
//! ```
//!
//! writes `dir/chunks.zst` (the zstd chunks' frames, concatenated: one valid
//! zstd stream) and `dir/chunks.raw` (the raw-stored chunks' bytes).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use reliquary_image::Compression;

#[test]
#[ignore = "a benchmark helper; run by benches/capture_verify.sh"]
fn dump_stored_chunks() {
    let (Some(image), Some(out)) = (
        std::env::var_os("BENCH_IMAGE"),
        std::env::var_os("BENCH_OUT"),
    ) else {
        eprintln!("set BENCH_IMAGE and BENCH_OUT");
        return;
    };
    let out = PathBuf::from(out);
    let file = File::open(&image).expect("open image");
    let image = reliquary_image::open(file)
        .and_then(|s| s.open_unverified())
        .expect("image opens");
    let mut zst = BufWriter::new(File::create(out.join("chunks.zst")).expect("create chunks.zst"));
    let mut raw = BufWriter::new(File::create(out.join("chunks.raw")).expect("create chunks.raw"));
    let mut buf = Vec::new();
    let (mut zstd_chunks, mut raw_chunks, mut raw_bytes) = (0u64, 0u64, 0u64);
    for chunk in 0..image.index().chunks.len() as u32 {
        let entry = image.read_stored(chunk, &mut buf).expect("read chunk");
        raw_bytes += u64::from(entry.raw_len);
        match entry.compression {
            Compression::Zstd => {
                zstd_chunks += 1;
                zst.write_all(&buf).expect("write");
            }
            Compression::Raw => {
                raw_chunks += 1;
                raw.write_all(&buf).expect("write");
            }
        }
    }
    zst.flush().expect("flush");
    raw.flush().expect("flush");
    println!("chunks zstd={zstd_chunks} raw={raw_chunks} raw_bytes={raw_bytes}");
}
