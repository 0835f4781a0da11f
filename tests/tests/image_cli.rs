//! `reliquary keygen|capture|sign|inspect|verify|extract` end to end: the
//! real binary on real files. Round trips, partition summaries, tampering,
//! the signature policy, keys and usage errors.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reliquary_image::layout::{Preamble, PREAMBLE_LEN};
use reliquary_tests::{reliquary_bin, skip_or_fail};

const K64: usize = 64 << 10;

// ---------------------------------------------------------------- helpers

/// A deterministic pseudo-random byte stream (xorshift64*), so failures
/// reproduce.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

/// Compressible, non-zero text.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "controller ",
        "PLC ",
        "setpoint ",
        "valve ",
        "0x1F ",
        "Windows 7 ",
        "\r\n",
    ];
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(words[(rng.next() % words.len() as u64) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Work {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// `reliquary keygen`; returns the private key path (`NAME.pub` beside it).
    fn key(&self, name: &str) -> PathBuf {
        let key = self.path(name);
        if !key.exists() {
            ok(&run(&[
                "keygen",
                "--out",
                s(&key),
                "--name",
                &format!("Signer {name}"),
            ]));
        }
        key
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, bytes).expect("write source");
        p
    }
    /// Captures `source` into `NAME.rimg` with `key` and extra arguments.
    fn capture(&self, source: &Path, name: &str, key: &Path, extra: &[&str]) -> PathBuf {
        let out = self.path(&format!("{name}.rimg"));
        let mut args = vec![
            "capture",
            s(source),
            "-o",
            s(&out),
            "--key",
            s(key),
            "--name",
            name,
        ];
        args.extend_from_slice(extra);
        ok(&run(&args));
        out
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn pub_of(key: &Path) -> PathBuf {
    reliquary_image::keys::public_key_path(key)
}

fn run(args: &[&str]) -> Output {
    Command::new(reliquary_bin())
        .args(args)
        .output()
        .expect("run reliquary")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
}

/// Asserts the exit code and that stderr contains every one of `needles`.
#[track_caller]
fn fails(out: &Output, code: i32, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks `{needle}`\n{}",
            describe(out)
        );
    }
}

fn inspect_json(image: &Path) -> serde_json::Value {
    let out = run(&["inspect", s(image), "--json"]);
    ok(&out);
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

fn verify(image: &Path, trust: &Path) -> Output {
    run(&["verify", s(image), "--trust", s(trust)])
}

/// Extracts `image` and asserts the result equals `source` byte for byte.
#[track_caller]
fn assert_extracts_to(work: &Work, image: &Path, trust: &Path, source: &[u8]) {
    let raw = work.path(&format!(
        "{}.extracted",
        image.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    let _ = fs::remove_file(&raw);
    ok(&run(&[
        "extract",
        s(image),
        "-o",
        s(&raw),
        "--trust",
        s(trust),
    ]));
    let got = fs::read(&raw).expect("read extracted");
    assert_eq!(got.len(), source.len(), "extracted length");
    if let Some(at) = got.iter().zip(source).position(|(a, b)| a != b) {
        panic!("extracted image differs from the source at byte {at}");
    }
}

fn preamble_of(image: &Path) -> Preamble {
    let bytes = fs::read(image).expect("read image");
    let raw: [u8; PREAMBLE_LEN] = bytes[..PREAMBLE_LEN].try_into().expect("preamble");
    Preamble::decode_fields(&raw)
}

fn write_preamble(image: &Path, p: &Preamble) {
    let f = OpenOptions::new()
        .write(true)
        .open(image)
        .expect("open image");
    f.write_all_at(&p.encode(), 0).expect("write preamble");
}

fn flip_bit(image: &Path, offset: u64, bit: u8) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .expect("open image");
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).expect("read byte");
    b[0] ^= 1 << bit;
    f.write_all_at(&b, offset).expect("write byte");
}

/// The chunk table of an image, read without trust.
fn chunks_of(image: &Path) -> Vec<reliquary_image::ChunkEntry> {
    let f = fs::File::open(image).expect("open image");
    let img = reliquary_image::open(f)
        .and_then(|s| s.open_unverified())
        .expect("image opens");
    img.index().chunks.clone()
}

fn key_id(key: &Path) -> String {
    let (k, _) = reliquary_image::keys::PublicKey::load(&pub_of(key)).expect("load .pub");
    k.key_id()
}

/// A trust-store directory holding the `.pub` files of `keys` and `policy`.
fn trust_dir(work: &Work, name: &str, keys: &[&Path], policy: &str) -> PathBuf {
    let dir = work.path(name);
    fs::create_dir_all(&dir).expect("mkdir");
    for key in keys {
        let pubfile = pub_of(key);
        fs::copy(&pubfile, dir.join(pubfile.file_name().expect("name"))).expect("copy .pub");
    }
    if !policy.is_empty() {
        fs::write(dir.join("policy"), policy).expect("write policy");
    }
    dir
}

// ------------------------------------------------------------ round trips

/// 64 KiB chunks: random data, zero holes at 4 KiB grain and a 128 KiB zero
/// run, text, three copies of chunk 0, and a 5-sector tail.
fn mixed_source(seed: u64, repeat: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::new();
    let first = rng.bytes(K64);
    v.extend_from_slice(&first); // chunk 0
    let mut holes = rng.bytes(K64); // chunk 1 with zero holes at 4 KiB grain
    holes[8192..12288].fill(0);
    holes[32768..49152].fill(0);
    v.extend_from_slice(&holes);
    v.resize(v.len() + 2 * K64, 0); // chunks 2-3: a larger zero run
    v.extend_from_slice(&text(K64, seed)); // chunk 4: compressible
    for _ in 0..3 {
        // chunks 5-7: repeats of chunk 0 (or unique data for comparison)
        if repeat {
            v.extend_from_slice(&first);
        } else {
            v.extend_from_slice(&rng.bytes(K64));
        }
    }
    let mut partly = text(K64, seed + 1); // chunk 8: text ending in zeros
    partly[20480..].fill(0);
    v.extend_from_slice(&partly);
    v.extend_from_slice(&rng.bytes(5 * 512)); // a tail shorter than a chunk
    v
}

#[test]
fn a_chunk_size_too_small_for_the_disk_is_refused_before_reading_it() {
    let work = Work::new();
    let key = work.key("author");
    // A sparse 40 GiB disk: 64 KiB chunks would make 655,360 windows, more
    // than the 524,288 an image may span; nothing of it is read.
    let src = work.path("big.raw");
    std::fs::File::create(&src)
        .and_then(|f| f.set_len(40 << 30))
        .expect("sparse source");
    let out = work.path("big.rimg");
    let args = [
        "capture",
        s(&src),
        "-o",
        s(&out),
        "--key",
        s(&key),
        "--name",
        "big",
        "--chunk-size",
        "64K",
    ];
    let result = run(&args);
    assert_eq!(result.status.code(), Some(2), "{result:?}");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("--chunk-size 128K or larger"), "{stderr}");
    assert!(!out.exists(), "an image was written");
}

#[test]
fn round_trip_mixed_content_64k_chunks() {
    let work = Work::new();
    let key = work.key("author");
    let source = mixed_source(1, true);
    let src = work.write("mixed.raw", &source);
    let image = work.capture(&src, "mixed", &key, &["--chunk-size", "64K"]);
    ok(&verify(&image, &pub_of(&key)));
    assert_extracts_to(&work, &image, &pub_of(&key), &source);

    let j = inspect_json(&image);
    assert_eq!(j["trust"], "unverified");
    assert_eq!(j["chunk_size"], 65536);
    assert_eq!(j["logical_bytes"], source.len() as u64);
    assert_eq!(j["source"]["size_sectors"], (source.len() / 512) as u64);
    assert_eq!(j["source"]["logical_sector_size"], 512);
    // Zeros: 4 KiB + 16 KiB holes, 128 KiB run, 44 KiB at the end of chunk 8.
    let zero = 4096 + 16384 + 2 * K64 + (K64 - 20480);
    assert_eq!(j["extents"]["zero_bytes"], zero as u64);
    assert_eq!(j["extents"]["data_bytes"], (source.len() - zero) as u64);
    assert_eq!(j["extents"]["unmapped_bytes"], 0);

    // Dedup: the same disk with unique data in place of the three repeats
    // stores three more (incompressible) chunks.
    let unique = mixed_source(1, false);
    let src_u = work.write("unique.raw", &unique);
    let image_u = work.capture(&src_u, "unique", &key, &["--chunk-size", "64K"]);
    let ju = inspect_json(&image_u);
    let stored = j["stored_bytes"].as_u64().expect("stored_bytes");
    let stored_u = ju["stored_bytes"].as_u64().expect("stored_bytes");
    assert!(
        stored + 3 * K64 as u64 <= stored_u,
        "dedup should save three 64 KiB chunks: {stored} vs {stored_u}"
    );
    assert_eq!(
        j["chunks"].as_u64().expect("chunks") + 3,
        ju["chunks"].as_u64().expect("chunks"),
        "the repeated chunks are stored once"
    );
    assert_extracts_to(&work, &image_u, &pub_of(&key), &unique);
}

#[test]
fn round_trip_4096_byte_sectors() {
    let work = Work::new();
    let key = work.key("author");
    let mut source = mixed_source(2, true);
    source.truncate(source.len() - 5 * 512);
    source.extend_from_slice(&Rng::new(9).bytes(3 * 4096)); // not a chunk multiple
    let src = work.write("4k.raw", &source);
    let image = work.capture(
        &src,
        "fourk",
        &key,
        &["--chunk-size", "64K", "--sector-size", "4096"],
    );
    let j = inspect_json(&image);
    assert_eq!(j["source"]["logical_sector_size"], 4096);
    assert_eq!(j["source"]["size_sectors"], (source.len() / 4096) as u64);
    ok(&verify(&image, &pub_of(&key)));
    assert_extracts_to(&work, &image, &pub_of(&key), &source);

    // A source that is not a whole number of 4096-byte sectors is refused.
    let odd = work.write("odd.raw", &source[..source.len() - 512]);
    let out = run(&[
        "capture",
        s(&odd),
        "-o",
        s(&work.path("odd.rimg")),
        "--key",
        s(&key),
        "--name",
        "odd",
        "--sector-size",
        "4096",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a whole number of 4096-byte sectors")
    );
    assert!(!work.path("odd.rimg").exists());
}

#[test]
fn round_trip_default_chunk_size_and_all_zero_disk() {
    let work = Work::new();
    let key = work.key("author");
    // 9 MiB + 3 sectors with the default 4 MiB chunks.
    let mut source = vec![0u8; (9 << 20) + 3 * 512];
    Rng::new(3).fill(&mut source[..1 << 20]);
    source[(5 << 20)..(5 << 20) + 4096].copy_from_slice(&text(4096, 3));
    let n = source.len();
    Rng::new(4).fill(&mut source[n - 1024..]);
    let src = work.write("big.raw", &source);
    let image = work.capture(&src, "big", &key, &[]);
    assert_eq!(inspect_json(&image)["chunk_size"], 4 << 20);
    ok(&verify(&image, &pub_of(&key)));
    assert_extracts_to(&work, &image, &pub_of(&key), &source);

    let zeros = vec![0u8; 3 << 20];
    let src = work.write("zero.raw", &zeros);
    let image = work.capture(&src, "zero", &key, &["--chunk-size", "64K"]);
    let j = inspect_json(&image);
    assert_eq!(j["chunks"], 0);
    assert_eq!(j["stored_bytes"], 0);
    assert_eq!(j["extents"]["count"], 1);
    ok(&verify(&image, &pub_of(&key)));
    assert_extracts_to(&work, &image, &pub_of(&key), &zeros);
}

// ------------------------------------------------------ partition summaries

fn tool(name: &str) -> bool {
    match Command::new(name).arg("--version").output() {
        Ok(_) => true,
        Err(e) => {
            skip_or_fail(&format!("`{name}` is not available: {e}"));
            false
        }
    }
}

#[test]
fn mbr_partitions_from_sfdisk() {
    if !tool("sfdisk") {
        return;
    }
    let work = Work::new();
    let key = work.key("author");
    let disk = work.path("mbr.raw");
    fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .expect("disk file");
    // Windows 7 layout: a small active "System Reserved" NTFS partition and a large one.
    let script = "label: dos\nlabel-id: 0x1f2e3d4c\nstart=2048, size=16384, type=7, bootable\nstart=18432, type=7\n";
    let mut child = Command::new("sfdisk")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sfdisk");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script");
    let out = child.wait_with_output().expect("sfdisk");
    assert!(
        out.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Some content inside the partitions.
    let f = OpenOptions::new()
        .write(true)
        .open(&disk)
        .expect("open disk");
    f.write_all_at(&text(8192, 5), 2048 * 512).expect("write");
    f.write_all_at(&Rng::new(6).bytes(K64), 18432 * 512)
        .expect("write");

    let image = work.capture(&disk, "win7", &key, &["--chunk-size", "64K"]);
    let j = inspect_json(&image);
    assert_eq!(j["partition_table"]["kind"], "mbr");
    assert_eq!(j["partition_table"]["disk_signature"], "1f2e3d4c");
    let parts = j["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 2, "{j:#}");
    assert_eq!(parts[0]["number"], 1);
    assert_eq!(parts[0]["start_sector"], 2048);
    assert_eq!(parts[0]["sector_count"], 16384);
    assert_eq!(parts[0]["type"], "0x07");
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[0]["name"], serde_json::Value::Null);
    assert_eq!(parts[1]["number"], 2);
    assert_eq!(parts[1]["start_sector"], 18432);
    assert_eq!(parts[1]["sector_count"], (64u64 << 20) / 512 - 18432);
    assert_eq!(parts[1]["type"], "0x07");
    assert_eq!(parts[1]["bootable"], false);

    ok(&verify(&image, &pub_of(&key)));
    let text_out = run(&["inspect", s(&image)]);
    ok(&text_out);
    let stdout = String::from_utf8_lossy(&text_out.stdout);
    assert!(stdout.contains("Partitions   MBR"), "{stdout}");
    assert!(stdout.contains("UNVERIFIED"), "{stdout}");
    assert_extracts_to(
        &work,
        &image,
        &pub_of(&key),
        &fs::read(&disk).expect("disk"),
    );
}

#[test]
fn gpt_partitions_from_sgdisk() {
    if !tool("sgdisk") {
        return;
    }
    let work = Work::new();
    let key = work.key("author");
    let disk = work.path("gpt.raw");
    fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .expect("disk file");
    let out = Command::new("sgdisk")
        .args([
            "-o",
            "-U",
            "6A0C3C2E-5B1D-4F3A-9E8B-0123456789AB",
            "-n",
            "1:2048:+8M",
            "-t",
            "1:ef00",
            "-c",
            "1:EFI system partition",
            "-n",
            "2:0:+16M",
            "-t",
            "2:0c01",
            "-c",
            "2:Microsoft reserved",
            "-n",
            "3:0:0",
            "-t",
            "3:0700",
            "-c",
            "3:Basic data",
            "-A",
            "3:set:2",
        ])
        .arg(&disk)
        .output()
        .expect("run sgdisk");
    assert!(out.status.success(), "sgdisk: {}", describe(&out));

    let image = work.capture(&disk, "gpt", &key, &["--chunk-size", "64K"]);
    let j = inspect_json(&image);
    assert_eq!(j["partition_table"]["kind"], "gpt");
    assert_eq!(
        j["partition_table"]["disk_guid"],
        "6A0C3C2E-5B1D-4F3A-9E8B-0123456789AB"
    );
    let parts = j["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3, "{j:#}");
    let expect = [
        (
            1,
            2048u64,
            16384u64,
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "EFI system partition",
            false,
        ),
        (
            2,
            18432,
            32768,
            "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
            "Microsoft reserved",
            false,
        ),
        (
            3,
            51200,
            0,
            "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
            "Basic data",
            true,
        ),
    ];
    for (p, (number, start, count, ty, name, boot)) in parts.iter().zip(expect) {
        assert_eq!(p["number"], number, "{p}");
        assert_eq!(p["start_sector"], start, "{p}");
        if count != 0 {
            assert_eq!(p["sector_count"], count, "{p}");
        }
        assert_eq!(
            p["type"].as_str().map(str::to_ascii_uppercase).as_deref(),
            Some(ty),
            "{p}"
        );
        assert_eq!(p["name"], name, "{p}");
        assert_eq!(p["bootable"], boot, "{p}");
    }
    // The last partition ends before the backup GPT (33 sectors at the end).
    let last_end = parts[2]["start_sector"].as_u64().unwrap_or(0)
        + parts[2]["sector_count"].as_u64().unwrap_or(0);
    assert!(
        last_end <= (64u64 << 20) / 512 - 33 && last_end > (60u64 << 20) / 512,
        "{last_end}"
    );
    ok(&verify(&image, &pub_of(&key)));
    assert_extracts_to(
        &work,
        &image,
        &pub_of(&key),
        &fs::read(&disk).expect("disk"),
    );
}

// ---------------------------------------------------------------- tampering

/// 512 KiB: chunks 0-2 random (stored raw, 64 KiB each), then text, zeros
/// and more text. Returns the work dir, the key, the source and the image.
fn tamper_fixture() -> (Work, PathBuf, Vec<u8>, PathBuf) {
    let work = Work::new();
    let key = work.key("author");
    let mut rng = Rng::new(42);
    let mut source = rng.bytes(3 * K64);
    source.extend_from_slice(&text(K64, 42));
    source.resize(source.len() + 3 * K64, 0);
    source.extend_from_slice(&text(K64, 43));
    let src = work.write("t.raw", &source);
    let image = work.capture(&src, "tamper", &key, &["--chunk-size", "64K"]);
    ok(&verify(&image, &pub_of(&key)));
    (work, key, source, image)
}

/// Runs verify and extract; both must exit 3 with `needles` in stderr, and
/// extract must leave no output file.
#[track_caller]
fn assert_rejected(work: &Work, image: &Path, trust: &Path, needles: &[&str]) {
    fails(&verify(image, trust), 3, needles);
    let raw = work.path("rejected.raw");
    let out = run(&["extract", s(image), "-o", s(&raw), "--trust", s(trust)]);
    fails(&out, 3, needles);
    assert!(!raw.exists(), "a failed extract left {}", raw.display());
}

#[test]
fn flipped_bit_in_a_data_chunk_names_the_chunk_and_its_sectors() {
    let (work, key, _, image) = tamper_fixture();
    let chunks = chunks_of(&image);
    assert_eq!(chunks[1].compression, reliquary_image::Compression::Raw);
    flip_bit(&image, chunks[1].offset + 1000, 3);
    let expected = format!(
        "chunk 1 (sectors 128..256, file offset {}) fails its SHA-256 check: the data was altered",
        chunks[1].offset
    );
    assert_rejected(&work, &image, &pub_of(&key), &[&expected]);
    // inspect does not read chunks: it still works, and says so.
    let out = run(&["inspect", s(&image)]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNVERIFIED"));
}

/// Verify-and-record (`ops::verify_and_record`, the TUI's too): a pass
/// and a damaged chunk are each one `ImageVerified` record.
#[test]
fn verify_with_an_audit_log_records_the_pass_and_the_failure() {
    let (work, key, _, image) = tamper_fixture();
    let audit = work.path("audit");
    ok(&run(&["audit", "init", "--dir", s(&audit)]));
    let recorded = |image: &Path| {
        let out = run(&[
            "verify",
            s(image),
            "--trust",
            s(&pub_of(&key)),
            "--audit",
            s(&audit),
            "--operator",
            "qa7",
        ]);
        let export = run(&["audit", "export", "--format", "jsonl", "--dir", s(&audit)]);
        ok(&export);
        let last = String::from_utf8_lossy(&export.stdout)
            .lines()
            .last()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("jsonl"))
            .expect("a record");
        (out, last)
    };
    let (out, record) = recorded(&image);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit record"),
        "{}",
        describe(&out)
    );
    assert_eq!(record["record"]["kind"], "ImageVerified", "{record}");
    assert_eq!(record["record"]["payload"]["result"], "Passed", "{record}");
    let chunks = chunks_of(&image);
    flip_bit(&image, chunks[1].offset + 1000, 3);
    let (out, record) = recorded(&image);
    fails(&out, 3, &["chunk 1"]);
    assert_eq!(record["record"]["kind"], "ImageVerified", "{record}");
    let reason = record["record"]["payload"]["result"]["Failed"]["reason"].to_string();
    assert!(reason.contains("chunk 1"), "{record}");
}

/// Check-and-record (`ops::check_and_record`): each disk's verdict is one
/// `DiskChecked` record naming it.
#[test]
fn check_with_an_audit_log_records_each_disk() {
    let (work, key, source, image) = tamper_fixture();
    let audit = work.path("audit");
    ok(&run(&["audit", "init", "--dir", s(&audit)]));
    let same = work.write("same.raw", &source);
    let mut changed_bytes = source.clone();
    changed_bytes[100] ^= 1;
    let changed = work.write("changed.raw", &changed_bytes);
    let out = run(&[
        "check",
        s(&image),
        s(&same),
        s(&changed),
        "--trust",
        s(&pub_of(&key)),
        "--audit",
        s(&audit),
        "--operator",
        "qa7",
    ]);
    fails(&out, 3, &["changed.raw does not match the image"]);
    let export = run(&["audit", "export", "--format", "jsonl", "--dir", s(&audit)]);
    ok(&export);
    let checked: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("jsonl"))
        .filter(|r| r["record"]["kind"] == "DiskChecked")
        .collect();
    assert_eq!(checked.len(), 2, "{checked:?}");
    let payload = |i: usize| &checked[i]["record"]["payload"];
    assert_eq!(payload(0)["target"]["path"], s(&same), "{checked:?}");
    assert_eq!(payload(0)["result"], "Passed", "{checked:?}");
    assert_eq!(payload(1)["target"]["path"], s(&changed), "{checked:?}");
    let reason = payload(1)["result"]["Failed"]["reason"].to_string();
    assert!(reason.contains("1 of"), "{checked:?}");
}

#[test]
fn flipped_bit_in_a_compressed_chunk_is_caught() {
    let (_work, key, _, image) = tamper_fixture();
    let chunks = chunks_of(&image);
    let z = chunks
        .iter()
        .position(|c| c.compression == reliquary_image::Compression::Zstd)
        .expect("a zstd chunk");
    flip_bit(
        &image,
        chunks[z].offset + u64::from(chunks[z].stored_len) / 2,
        0,
    );
    let out = verify(&image, &pub_of(&key));
    fails(&out, 3, &[&format!("chunk {z} (sectors ")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fails its SHA-256 check") || stderr.contains("does not decompress"),
        "{stderr}"
    );
}

#[test]
fn flipped_bit_in_the_index() {
    let (work, key, _, image) = tamper_fixture();
    let p = preamble_of(&image);
    flip_bit(&image, p.index.offset + p.index.length / 2, 5);
    assert_rejected(
        &work,
        &image,
        &pub_of(&key),
        &["the index does not match the manifest's digest: the index was altered"],
    );
}

#[test]
fn flipped_bit_in_the_manifest() {
    let (work, key, _, image) = tamper_fixture();
    let p = preamble_of(&image);
    flip_bit(&image, p.manifest.offset + 20, 1);
    let needle = format!(
        "signature 0 by trusted key {} does not match the manifest: the manifest or signature was altered",
        key_id(&key)
    );
    assert_rejected(&work, &image, &pub_of(&key), &[&needle]);
}

#[test]
fn flipped_bit_in_a_signature() {
    let (work, key, _, image) = tamper_fixture();
    let p = preamble_of(&image);
    // The Ed25519 signature is the last 64 bytes of the only entry.
    flip_bit(&image, p.signatures.offset + p.signatures.length - 10, 7);
    let needle = format!(
        "signature 0 by trusted key {} does not match the manifest",
        key_id(&key)
    );
    assert_rejected(&work, &image, &pub_of(&key), &[&needle]);
}

#[test]
fn flipped_bit_in_a_signature_public_key() {
    let (work, key, _, image) = tamper_fixture();
    let p = preamble_of(&image);
    // Entry layout: count varint (1 byte), then the 32-byte public key.
    flip_bit(&image, p.signatures.offset + 1 + 4, 2);
    assert_rejected(
        &work,
        &image,
        &pub_of(&key),
        &["signature policy not met: 0 of 1 required distinct trusted keys signed; keys not in the trust store signed:"],
    );
}

#[test]
fn flipped_bit_in_the_preamble() {
    let (work, key, _, image) = tamper_fixture();
    // The index length, low byte.
    flip_bit(&image, 32 + 16 + 8, 0);
    assert_rejected(
        &work,
        &image,
        &pub_of(&key),
        &["is misplaced", "not a valid image"],
    );
}

#[test]
fn truncated_file() {
    let (work, key, _, image) = tamper_fixture();
    let len = fs::metadata(&image).expect("meta").len();
    let f = OpenOptions::new().write(true).open(&image).expect("open");
    f.set_len(len - 1).expect("truncate");
    let p = preamble_of(&image);
    let needle = format!(
        "signature section at offset {} with length {} does not fit in the {}-byte file: the file is truncated or damaged",
        p.signatures.offset,
        p.signatures.length,
        len - 1
    );
    assert_rejected(&work, &image, &pub_of(&key), &[&needle]);

    // Cut inside the data region.
    f.set_len(4096 + 1000).expect("truncate");
    assert_rejected(
        &work,
        &image,
        &pub_of(&key),
        &[
            "data region at offset 4096 with length",
            "does not fit in the 5096-byte file",
        ],
    );
    // Shorter than a preamble.
    f.set_len(100).expect("truncate");
    assert_rejected(
        &work,
        &image,
        &pub_of(&key),
        &["the file is 100 bytes, shorter than the 128-byte preamble"],
    );
}

#[test]
fn appended_garbage() {
    let (work, key, _, image) = tamper_fixture();
    let mut f = OpenOptions::new().append(true).open(&image).expect("open");
    use std::io::Write;
    f.write_all(b"JUNK").expect("append");
    drop(f);
    assert_rejected(
        &work,
        &image,
        &pub_of(&key),
        &["the file has 4 bytes after the signature section: garbage was appended"],
    );
}

#[test]
fn two_chunks_swapped() {
    let (work, key, _, image) = tamper_fixture();
    let chunks = chunks_of(&image);
    let (a, b) = (chunks[0], chunks[2]);
    assert_eq!(a.stored_len, b.stored_len, "two equal-length chunks");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .expect("open");
    let mut ba = vec![0u8; a.stored_len as usize];
    let mut bb = vec![0u8; b.stored_len as usize];
    f.read_exact_at(&mut ba, a.offset).expect("read");
    f.read_exact_at(&mut bb, b.offset).expect("read");
    f.write_all_at(&bb, a.offset).expect("write");
    f.write_all_at(&ba, b.offset).expect("write");
    drop(f);
    // The first damaged chunk in sector order is named.
    assert_rejected(
        &work,
        &image,
        &pub_of(&key),
        &["chunk 0 (sectors 0..128, file offset 4096) fails its SHA-256 check"],
    );
}

#[test]
fn signature_from_an_untrusted_key() {
    let (work, _key, _, image) = tamper_fixture();
    let stranger = work.key("stranger");
    let out = verify(&image, &pub_of(&stranger));
    fails(
        &out,
        3,
        &["signature policy not met: 0 of 1 required distinct trusted keys signed; keys not in the trust store signed: "],
    );
    // A stranger's co-signature does not help either.
    ok(&run(&[
        "sign",
        s(&image),
        "--key",
        s(&stranger),
        "--meaning",
        "approved",
    ]));
    let other = work.key("other");
    fails(&verify(&image, &pub_of(&other)), 3, &["0 of 1 required"]);
    ok(&verify(&image, &pub_of(&stranger)));
}

#[test]
fn threshold_of_two_needs_two_distinct_keys() {
    let (work, key, source, image) = tamper_fixture();
    let second = work.key("second");
    let trust = trust_dir(
        &work,
        "trust2",
        &[&key, &second],
        "# two of us\nthreshold 2\n",
    );
    fails(
        &verify(&image, &trust),
        3,
        &["signature policy not met: 1 of 2 required distinct trusted keys signed"],
    );
    // `sign` refuses a key that already signed: it would list the signer
    // twice and count once.
    fails(
        &run(&["sign", s(&image), "--key", s(&key), "--meaning", "approved"]),
        2,
        &["already signed", "a key counts once, so nothing was added"],
    );
    assert_eq!(
        inspect_json(&image)["signers"].as_array().map(Vec::len),
        Some(1)
    );
    // An image signed twice by one key anyway (written with the library, as
    // an attacker could) still counts the key once.
    let signing = reliquary_image::keys::SigningKey::load(&key).expect("key");
    reliquary_image::write::add_signature(
        &image,
        &signing,
        &reliquary_image::manifest::SignerStatement {
            signer_name: "A. Engineer".into(),
            meaning: reliquary_image::manifest::Meaning::Approved,
            signed_unix: 1_767_225_600,
        },
    )
    .expect("a second signature by the same key");
    let j = inspect_json(&image);
    assert_eq!(j["signers"].as_array().map(Vec::len), Some(2));
    assert_eq!(j["signers"][1]["meaning"], "approved");
    fails(
        &verify(&image, &trust),
        3,
        &["1 of 2 required distinct trusted keys signed; the same key signed more than once, which counts once"],
    );
    // A second distinct key meets the policy; co-signing left the data alone.
    let before = preamble_of(&image);
    ok(&run(&[
        "sign",
        s(&image),
        "--key",
        s(&second),
        "--meaning",
        "reviewed",
    ]));
    let after = preamble_of(&image);
    assert_eq!(
        (before.data, before.index, before.manifest),
        (after.data, after.index, after.manifest)
    );
    assert_eq!(before.signatures.offset, after.signatures.offset);
    assert!(after.signatures.length > before.signatures.length);
    let out = run(&["verify", s(&image), "--trust", s(&trust), "--json"]);
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["verified"], true);
    assert_eq!(v["signers"].as_array().map(Vec::len), Some(3));
    assert_extracts_to(&work, &image, &trust, &source);
}

#[test]
fn revoked_key() {
    let (work, key, _, image) = tamper_fixture();
    let id = key_id(&key);
    let trust = trust_dir(&work, "trust-rk", &[&key], &format!("revoke-key {id}\n"));
    assert_rejected(
        &work,
        &image,
        &trust,
        &[&format!(
            "0 of 1 required distinct trusted keys signed; revoked keys signed: {id}"
        )],
    );
    // Another trusted key's signature still counts.
    let second = work.key("second");
    ok(&run(&[
        "sign",
        s(&image),
        "--key",
        s(&second),
        "--meaning",
        "approved",
    ]));
    let trust = trust_dir(
        &work,
        "trust-rk2",
        &[&key, &second],
        &format!("revoke-key {id}\n"),
    );
    let out = run(&["verify", s(&image), "--trust", s(&trust), "--json"]);
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["signers"][0]["status"], "revoked");
    assert_eq!(v["signers"][1]["status"], "trusted");
}

#[test]
fn revoked_image() {
    let (work, key, _, image) = tamper_fixture();
    let uuid = inspect_json(&image)["uuid"]
        .as_str()
        .expect("uuid")
        .to_string();
    let trust = trust_dir(
        &work,
        "trust-ri",
        &[&key],
        &format!("revoke-image {uuid}\n"),
    );
    assert_rejected(
        &work,
        &image,
        &trust,
        &[&format!(
            "image {uuid} is revoked by the trust store's policy"
        )],
    );
}

#[test]
fn valid_signature_copied_from_another_image() {
    let (work, key, source, image_a) = tamper_fixture();
    // Image B: same key, same signer, a different disk.
    let mut other = source.clone();
    other[..16].copy_from_slice(b"another disk....");
    let src_b = work.write("b.raw", &other);
    let image_b = work.capture(&src_b, "tamper-b", &key, &["--chunk-size", "64K"]);
    ok(&verify(&image_b, &pub_of(&key)));

    let pa = preamble_of(&image_a);
    let pb = preamble_of(&image_b);
    let b_bytes = fs::read(&image_b).expect("read b");
    let sig_b = &b_bytes[pb.signatures.offset as usize..][..pb.signatures.length as usize];
    let f = OpenOptions::new()
        .write(true)
        .open(&image_a)
        .expect("open a");
    f.set_len(pa.signatures.offset).expect("cut");
    f.write_all_at(sig_b, pa.signatures.offset).expect("write");
    drop(f);
    let mut fixed = pa;
    fixed.signatures.length = pb.signatures.length;
    write_preamble(&image_a, &fixed);
    let needle = format!(
        "signature 0 by trusted key {} does not match the manifest: the manifest or signature was altered",
        key_id(&key)
    );
    assert_rejected(&work, &image_a, &pub_of(&key), &[&needle]);
}

#[test]
fn manifest_and_signatures_from_another_image_fail_on_the_index() {
    // Transplanting B's whole signed manifest onto A's data and index: the
    // signature is valid, but the index digest binds the manifest to B.
    let (work, key, source, image_a) = tamper_fixture();
    let mut other = source.clone();
    other[..16].copy_from_slice(b"another disk....");
    let src_b = work.write("b.raw", &other);
    let image_b = work.capture(&src_b, "tamper-b", &key, &["--chunk-size", "64K"]);
    let pa = preamble_of(&image_a);
    let pb = preamble_of(&image_b);
    let b_bytes = fs::read(&image_b).expect("read b");
    let tail = &b_bytes[pb.manifest.offset as usize..];
    let f = OpenOptions::new()
        .write(true)
        .open(&image_a)
        .expect("open a");
    f.set_len(pa.manifest.offset).expect("cut");
    f.write_all_at(tail, pa.manifest.offset).expect("write");
    drop(f);
    let mut fixed = pa;
    fixed.manifest.length = pb.manifest.length;
    fixed.signatures.offset = pa.manifest.offset + pb.manifest.length;
    fixed.signatures.length = pb.signatures.length;
    write_preamble(&image_a, &fixed);
    let out = verify(&image_a, &pub_of(&key));
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the index does not match the manifest's digest")
            || stderr.contains("the manifest is invalid"),
        "{stderr}"
    );
}

// --------------------------------------------------------------------- keys

#[test]
fn private_key_is_mode_0600_and_keygen_refuses_to_overwrite() {
    let work = Work::new();
    let key = work.key("k");
    let mode = fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key mode {mode:o}");
    let text = fs::read_to_string(pub_of(&key)).expect(".pub");
    assert!(text.starts_with("reliquary-ed25519 "), "{text}");
    assert!(text.trim_end().ends_with("Signer k"), "{text}");
    let out = run(&["keygen", "--out", s(&key)]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"),
        "{}",
        describe(&out)
    );
}

#[test]
fn small_order_and_malformed_public_keys_are_rejected_on_load() {
    let (work, key, _, image) = tamper_fixture();
    // The identity point (y = 1), a small-order point.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let dir = trust_dir(&work, "trust-bad", &[&key], "");
    fs::write(
        dir.join("evil.pub"),
        format!("reliquary-ed25519 {} Evil\n", hex::encode(identity)),
    )
    .expect("write");
    let out = verify(&image, &dir);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("small-order point"),
        "{}",
        describe(&out)
    );

    // A point of order 8 (y = 0 is not valid; use the canonical order-4 point y = 0... encoded as 0).
    let mut order4 = [0u8; 32];
    order4[31] = 0x80; // x negative, y = 0: a point of order 4
    fs::write(
        dir.join("evil.pub"),
        format!("reliquary-ed25519 {}\n", hex::encode(order4)),
    )
    .expect("write");
    let out = verify(&image, &dir);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("public key"),
        "{}",
        describe(&out)
    );

    fs::write(dir.join("evil.pub"), "reliquary-ed25519 abcd\n").expect("write");
    let out = verify(&image, &dir);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exactly 64 hex digits"),
        "{}",
        describe(&out)
    );

    fs::remove_file(dir.join("evil.pub")).expect("rm");
    ok(&verify(&image, &dir));

    // A malformed policy line is an error, not ignored.
    fs::write(dir.join("policy"), "threshold two\n").expect("write");
    let out = verify(&image, &dir);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("policy:1: threshold `two`"),
        "{}",
        describe(&out)
    );
}

// ------------------------------------------------------------------- usage

#[test]
fn usage_errors_exit_2() {
    let work = Work::new();
    let key = work.key("k");
    let src = work.write("u.raw", &vec![1u8; K64]);
    let out_img = work.path("u.rimg");
    let base = [
        "capture",
        s(&src),
        "-o",
        s(&out_img),
        "--key",
        s(&key),
        "--name",
        "u",
    ];
    for (extra, needle) in [
        (
            &["--chunk-size", "3M"][..],
            "--chunk-size 3145728 must be a power of two from 64K to 64M",
        ),
        (
            &["--chunk-size", "32K"][..],
            "must be a power of two from 64K to 64M",
        ),
        (
            &["--chunk-size", "128M"][..],
            "must be a power of two from 64K to 64M",
        ),
        (&["--chunk-size", "lots"][..], "is not a size"),
        (&["--sector-size", "1000"][..], "512 or 4096"),
        (&["--level", "30"][..], "30"),
        (&["--meaning", "vibes"][..], "unknown meaning `vibes`"),
        (&["--zero-grain", "1K"][..], "--zero-grain"),
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        fails(&run(&args), 2, &[needle]);
        assert!(!out_img.exists());
    }
    fails(&run(&["verify"]), 2, &["--trust"]);
    fails(&run(&["frobnicate"]), 2, &[]);
    fails(
        &run(&["sign", s(&out_img), "--key", s(&key), "--meaning", "maybe"]),
        2,
        &["unknown meaning"],
    );
}

#[test]
fn not_an_image_and_missing_files() {
    let work = Work::new();
    let key = work.key("k");
    let junk = work.write("junk.rimg", &[0x55u8; 8192]);
    fails(
        &verify(&junk, &pub_of(&key)),
        3,
        &["bad magic at offset 0: this is not a Reliquary image"],
    );
    fails(
        &verify(&work.path("missing.rimg"), &pub_of(&key)),
        1,
        &["cannot open image"],
    );
    // Capture refuses to overwrite an existing image.
    let src = work.write("s.raw", &vec![7u8; K64]);
    let img = work.capture(&src, "s", &key, &["--chunk-size", "64K"]);
    let out = run(&[
        "capture",
        s(&src),
        "-o",
        s(&img),
        "--key",
        s(&key),
        "--name",
        "s",
    ]);
    fails(&out, 4, &[s(&img), "exists"]);
    ok(&verify(&img, &pub_of(&key)));
    assert!(!work.path("s.rimg.partial").exists());
}

#[test]
fn a_long_policy_is_read_whole_and_an_oversized_one_refused() {
    // A revocation after 70 KiB of comments still applies...
    let (work, key, _, image) = tamper_fixture();
    let uuid = inspect_json(&image)["uuid"]
        .as_str()
        .expect("uuid")
        .to_string();
    let line = "# padding padding padding padding padding padding padding padding\n";
    let policy = format!("{}revoke-image {uuid}\n", line.repeat(1100));
    let trust = trust_dir(&work, "trust-long", &[&key], &policy);
    fails(
        &verify(&image, &trust),
        3,
        &[&format!("image {uuid} is revoked")],
    );
    // ...and a policy over the 256 KiB cap is refused, never read in part.
    let policy = format!("{}revoke-image {uuid}\n", line.repeat(4000));
    let trust = trust_dir(&work, "trust-huge", &[&key], &policy);
    let out = verify(&image, &trust);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is larger than 262144 bytes"),
        "{}",
        describe(&out)
    );
}

#[test]
fn refusing_to_overwrite_an_existing_file_exits_4_for_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(reliquary_tests::reliquary_bin())
            .args(args)
            .output()
            .expect("run reliquary")
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let key = path("k");
    assert!(run(&[
        &os("keygen"),
        &os("--out"),
        key.as_os_str(),
        &os("--name"),
        &os("x")
    ])
    .status
    .success());
    let raw = path("d.raw");
    std::fs::write(&raw, vec![7u8; 1 << 20]).expect("raw");
    let image = path("d.rimg");
    let capture = [
        os("capture"),
        raw.clone().into_os_string(),
        os("-o"),
        image.clone().into_os_string(),
        os("--key"),
        key.clone().into_os_string(),
        os("--name"),
        os("t"),
    ];
    let capture: Vec<&std::ffi::OsStr> = capture.iter().map(|s| s.as_os_str()).collect();
    assert!(run(&capture).status.success());
    let extracted = path("out.raw");
    let pubkey = path("k.pub");
    let extract = [
        os("extract"),
        image.clone().into_os_string(),
        os("-o"),
        extracted.clone().into_os_string(),
        os("--trust"),
        pubkey.into_os_string(),
    ];
    let extract: Vec<&std::ffi::OsStr> = extract.iter().map(|s| s.as_os_str()).collect();
    assert!(run(&extract).status.success());
    for (what, args) in [
        (
            "keygen",
            vec![
                os("keygen"),
                os("--out"),
                key.clone().into_os_string(),
                os("--name"),
                os("x"),
            ],
        ),
        (
            "capture",
            capture.iter().map(|s| s.to_os_string()).collect(),
        ),
        (
            "extract",
            extract.iter().map(|s| s.to_os_string()).collect(),
        ),
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{what} over an existing file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `reliquary inspect IMG | head` ends the way `cat` does when the reader
/// has gone: by SIGPIPE, with nothing on stderr (a print into the closed
/// pipe used to panic).
#[test]
fn inspect_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../image-format/tests/golden/golden.rimg");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(reliquary_bin())
        .args(["inspect", s(&golden)])
        .stdout(writer)
        .output()
        .expect("reliquary runs");
    assert_eq!(
        out.status.signal(),
        Some(nix::sys::signal::Signal::SIGPIPE as i32),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
