//! End-to-end tests of the audit log (issue 4): tamper detection, crash
//! safety, recovery, checkpoints, the CLI and the on-disk format.
//!
//! The golden files in `tests/fixtures/audit/golden/` are regenerated with
//! `RELIQUARY_REGENERATE_AUDIT_FIXTURES=1 cargo test -p reliquary-tests --test audit golden`.
//! The CLI tests need the binary: `cargo build -p reliquary-appliance` first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use reliquary_appliance::audit::checkpoint::{key_hash, verifier_key};
use reliquary_appliance::audit::layout::{
    encode_frame, record_hash, signature_message, FRAME_ALIGN, FRAME_HEADER_LEN,
};
use reliquary_appliance::audit::{
    verify_bytes, verify_dir, AuditError, AuditLog, Digest, Environment, FixedClock, ImageRef,
    Kind, LogEnd, Operator, OperatorRef, Payload, RestoreFinished, RestoreMode, RestoreOutcome,
    RestoreStarted, SignInFailed, SignerRef, TargetRef, Unmapped, RESTORE_RESERVE_BYTES,
};
use reliquary_image::keys::{PublicKey, SigningKey};
use reliquary_tests::{reliquary_bin, running_as_root, skip_or_fail, trust_without_operators};

/// 2030-01-01T00:00:00Z: later than any build time, so fixtures do not move.
const FIXED_TIME_MS: i64 = 1_893_456_000_000;
/// The build time the tests' environment claims: 2026-01-01T00:00:00Z.
const FIXED_BUILD_MS: i64 = 1_767_225_600_000;
const CHILD_DIR_ENV: &str = "RELIQUARY_AUDIT_CHILD_DIR";
const CHILD_MODE_ENV: &str = "RELIQUARY_AUDIT_CHILD_MODE";

// ---------------------------------------------------------------- helpers

/// A PKCS#8 v1 Ed25519 key from a fixed seed byte, for reproducible logs.
fn test_pkcs8(seed: u8) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[seed; 32]);
    der
}

fn test_key(seed: u8) -> SigningKey {
    SigningKey::from_pkcs8(&test_pkcs8(seed), Path::new("<test>")).expect("test key")
}

fn fixed_env(millis: i64) -> Environment {
    Environment {
        clock: Box::new(FixedClock(millis)),
        boot_id: "00000000-0000-4000-8000-000000000000".into(),
        software_version: "test-1".into(),
        trust_store_digest: Some(Digest([7; 32])),
        // Fixed, so the golden log does not change with each commit's time.
        build_unix_millis: FIXED_BUILD_MS,
    }
}

fn op(id: &str) -> Operator {
    Operator {
        id: id.into(),
        name: Some(format!("Operator {id}")),
    }
}

fn note(text: &str) -> Payload {
    Payload::OperatorNote { text: text.into() }
}

fn image() -> ImageRef {
    ImageRef {
        uuid: "6f1c1e0a-6c53-4a4e-9a43-5b0c8d1f2e11".into(),
        name: "press-line-hmi".into(),
        version: "2024.3".into(),
        manifest_digest: Digest([0xab; 32]),
        signers: vec![
            SignerRef {
                name: "Engineering".into(),
                key_id: "0123456789abcdef".into(),
                meaning: "authored".into(),
                signed_unix: Some(1_767_225_600),
            },
            SignerRef {
                name: "QA".into(),
                key_id: "fedcba9876543210".into(),
                meaning: "approved for production".into(),
                signed_unix: Some(1_767_225_600),
            },
        ],
    }
}

fn target(serial: &str) -> TargetRef {
    TargetRef {
        path: "/dev/sda".into(),
        model: "INTEL SSDSC2KB480G8".into(),
        serial: serial.into(),
        wwn: Some("0x55cd2e414d2f1a2b".into()),
        size_bytes: 480_103_981_056,
        logical_sector_size: 512,
        physical_sector_size: 4096,
    }
}

/// A log in `dir` with LogCreated and `notes` operator notes.
fn make_log(dir: &Path, seed: u8, id: &str, notes: usize) -> AuditLog {
    let mut log =
        AuditLog::init_with_key(dir, Some(id), &test_pkcs8(seed), fixed_env(FIXED_TIME_MS))
            .expect("init");
    for i in 0..notes {
        log.append(&op("op1"), note(&format!("note {}", i + 1)))
            .expect("append");
    }
    log
}

fn log_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("audit.log")).expect("read log")
}

fn frame_offset(i: u64) -> usize {
    ((i + 1) * FRAME_ALIGN) as usize
}

fn run(args: &[&str]) -> Output {
    Command::new(reliquary_bin())
        .args(args)
        .output()
        .expect("run reliquary")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn verify_cli(dir: &Path, extra: &[&str]) -> Output {
    let d = dir.to_str().expect("utf8");
    let key = dir.join("appliance.pub");
    let mut args = vec![
        "audit",
        "verify",
        "--dir",
        d,
        "--key",
        key.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ------------------------------------------------------ format and vectors

/// Builds the golden log: every record kind, fixed key, fixed times.
fn build_golden(dir: &Path) {
    let mut log = AuditLog::init_with_key(
        dir,
        Some("golden-1"),
        &test_pkcs8(1),
        fixed_env(FIXED_TIME_MS),
    )
    .expect("init");
    log.append(
        &op("qa7"),
        Payload::ImageVerified {
            image: image(),
            result: reliquary_appliance::audit::CheckResult::Passed,
        },
    )
    .expect("append");
    log.append(
        &op("qa7"),
        Payload::DiskChecked {
            target: target("PHYS123"),
            result: reliquary_appliance::audit::CheckResult::Passed,
        },
    )
    .expect("append");
    let started = log
        .append(
            &op("qa7"),
            Payload::RestoreStarted(RestoreStarted {
                image: image(),
                target: target("PHYS123"),
                meaning: Some("performed by".into()),
                reason: Some("WO-2030-0117 press line 3 HMI disk replaced".into()),
                mode: RestoreMode::Resume { interrupted_seq: 2 },
                unmapped: Unmapped::Zeroed,
            }),
        )
        .expect("append");
    log.append(
        &op("qa7"),
        Payload::RestoreFinished(RestoreFinished {
            started_seq: started.seq,
            image: image(),
            target: target("PHYS123"),
            outcome: RestoreOutcome::Success,
            bytes_written: 21_474_836_480,
            bytes_skipped: 4_294_967_296,
            stage_millis: vec![("verify".into(), 61_000), ("write".into(), 402_500)],
            readback_digest: Some(Digest([0xcd; 32])),
        }),
    )
    .expect("append");
    log.append(
        &op("qa7"),
        Payload::SignInFailed(SignInFailed {
            operator_id: "qa9".into(),
            attempt: 3,
            locked: true,
        }),
    )
    .expect("append");
    log.append(
        &op("qa7"),
        Payload::OperatorUnlocked(OperatorRef {
            operator_id: "qa9".into(),
        }),
    )
    .expect("append");
    log.append(
        &op("qa9"),
        Payload::SignedIn(OperatorRef {
            operator_id: "qa9".into(),
        }),
    )
    .expect("append");
    log.append(&op("qa7"), note("line 3 back in production"))
        .expect("append");
}

#[test]
fn golden_log_matches_the_generator_and_the_spec_tables() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit/golden");
    let tmp = tempfile::tempdir().expect("tempdir");
    build_golden(tmp.path());
    let files = ["audit.log", "appliance.pub", "checkpoint"];
    if std::env::var("RELIQUARY_REGENERATE_AUDIT_FIXTURES").as_deref() == Ok("1") {
        std::fs::create_dir_all(&fixtures).expect("mkdir");
        for f in files {
            std::fs::copy(tmp.path().join(f), fixtures.join(f)).expect("copy");
        }
    }
    for f in files {
        let want = std::fs::read(fixtures.join(f)).expect("golden file; see the module docs");
        assert_eq!(
            std::fs::read(tmp.path().join(f)).expect("read"),
            want,
            "{f} differs from the committed golden file: the format changed; update \
             AUDIT-LOG.md and regenerate"
        );
    }

    // Re-derive the layout from AUDIT-LOG.md's tables, independently of the code.
    let log = std::fs::read(fixtures.join("audit.log")).expect("read");
    let key = test_key(1).public_key();
    let sha = |parts: &[&[u8]]| {
        let mut c = ring::digest::Context::new(&ring::digest::SHA256);
        parts.iter().for_each(|p| c.update(p));
        c.finish().as_ref().to_vec()
    };
    assert_eq!(&log[0..8], b"RLQAUDIT");
    assert_eq!(u16::from_le_bytes([log[8], log[9]]), 1, "format version");
    assert_eq!(u16::from_le_bytes([log[10], log[11]]), 64, "header length");
    assert_eq!(u32::from_le_bytes(log[12..16].try_into().unwrap()), 4096);
    assert_eq!(&log[16..24], &[0; 8], "flags");
    assert_eq!(&log[24..56], key.as_bytes());
    assert_eq!(&log[56..64], &sha(&[&log[0..56]])[..8]);
    assert!(log[64..4096].iter().all(|&b| b == 0));
    assert_eq!(log.len() % 4096, 0);

    let mut prev = sha(&[&log[0..64]]);
    let mut off = 4096;
    let mut seq = 0u64;
    while off < log.len() {
        let f = &log[off..];
        assert_eq!(&f[0..4], b"RLQR");
        let len = u32::from_le_bytes(f[4..8].try_into().unwrap()) as usize;
        let body = &f[88..88 + len];
        let hash = sha(&[&[0], body]);
        assert_eq!(&f[8..24], &sha(&[&f[0..8], &hash, &f[24..88]])[..16], "tag");
        let mut msg = b"reliquary audit record v1\0".to_vec();
        msg.extend_from_slice(&hash);
        assert!(key.verify(&msg, &f[24..88]), "signature of record {seq}");
        assert_eq!(u16::from_le_bytes([body[0], body[1]]), 2, "body version");
        assert_eq!(&body[4..8], &[0; 4]);
        assert_eq!(u64::from_le_bytes(body[8..16].try_into().unwrap()), seq);
        assert_eq!(&body[16..48], &prev[..], "prev hash of record {seq}");
        let kind = u16::from_le_bytes([body[2], body[3]]);
        if kind == 9 || kind == 10 {
            // SignedIn, OperatorUnlocked: the payload is the operator id
            // alone, a postcard string (varint length, bytes).
            assert!(body.ends_with(b"\x03qa9"), "payload of record {seq}");
        }
        let framed = (88 + len).div_ceil(4096) * 4096;
        assert!(f[88 + len..framed].iter().all(|&b| b == 0), "padding");
        prev = hash;
        off += framed;
        seq += 1;
    }
    assert_eq!(seq, 9);
    let kinds: Vec<u16> = verify_dir(&fixtures, &key, Some(&fixtures.join("checkpoint")))
        .expect("verify")
        .records
        .iter()
        .map(|r| r.record.as_ref().expect("decoded").kind as u16)
        .collect();
    assert_eq!(kinds, [1, 4, 5, 2, 3, 8, 10, 9, 7]);
}

/// A log written by body version 1 software (the golden log of that
/// release, kept unchanged) still verifies, decodes and shows.
#[test]
fn a_version_1_log_still_verifies_and_shows() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit/golden-v1");
    let key = test_key(1).public_key();
    let report =
        verify_dir(&fixtures, &key, Some(&fixtures.join("checkpoint"))).expect("verify v1");
    assert!(report.is_ok(), "{:?}", report.first_problem());
    let records: Vec<_> = report
        .records
        .iter()
        .map(|r| r.record.as_ref().expect("decoded"))
        .collect();
    assert!(records.iter().all(|r| r.body_version == 1));
    let kinds: Vec<u16> = records.iter().map(|r| r.kind as u16).collect();
    assert_eq!(kinds, [1, 4, 5, 2, 3, 7]);
    let Payload::RestoreFinished(finished) = &records[4].payload else {
        panic!("record 4 is RestoreFinished");
    };
    assert_eq!(finished.bytes_written, 21_474_836_480);
    assert_eq!(finished.readback_digest, Some(Digest([0xcd; 32])));

    let tmp = tempfile::tempdir().expect("tempdir");
    for f in ["audit.log", "appliance.pub", "checkpoint"] {
        std::fs::copy(fixtures.join(f), tmp.path().join(f)).expect("copy");
    }
    let out = run(&["audit", "show", "--dir", &tmp.path().to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RestoreFinished"), "{stdout}");
    assert!(stdout.contains("21474836480 bytes"), "{stdout}");
    // Fields version 1 did not record are not shown with guessed values.
    assert!(!stdout.contains("unmapped"), "{stdout}");

    // This software continues the version 1 chain with version 2 records.
    std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().write(true).create_new(true),
        0o600,
    )
    .open(tmp.path().join("appliance.key"))
    .and_then(|mut f| std::io::Write::write_all(&mut f, &test_pkcs8(1)))
    .expect("write the golden key");
    let mut log = AuditLog::open(tmp.path(), fixed_env(FIXED_TIME_MS)).expect("open v1 log");
    log.append(
        &op("qa7"),
        Payload::SignInFailed(SignInFailed {
            operator_id: "qa9".into(),
            attempt: 1,
            locked: false,
        }),
    )
    .expect("append v2");
    drop(log);
    let report = verify_dir(tmp.path(), &key, Some(&fixtures.join("checkpoint"))).expect("verify");
    assert!(report.is_ok(), "{:?}", report.first_problem());
    let versions: Vec<u16> = report
        .records
        .iter()
        .map(|r| r.record.as_ref().expect("decoded").body_version)
        .collect();
    assert_eq!(versions, [1, 1, 1, 1, 1, 1, 2]);
}

#[test]
fn c2sp_signed_note_reference_vector_key_hash_and_signature() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit/c2sp-note-vector.json"),
        )
        .expect("vector"),
    )
    .expect("json");
    let s = |k: &str| v[k].as_str().expect(k).to_string();
    let (name, vkey, skey, note) = (s("name"), s("verifier_key"), s("signer_key"), s("note"));

    // `+` separates the fields and may also occur inside the base64.
    let material = B64
        .decode(vkey.splitn(3, '+').nth(2).expect("key"))
        .expect("b64");
    assert_eq!(material[0], 0x01, "Ed25519 type byte");
    let pk: [u8; 32] = material[1..].try_into().expect("32 bytes");
    assert_eq!(
        hex::encode(key_hash(&name, &pk)),
        vkey.split('+').nth(1).expect("hash")
    );
    assert_eq!(verifier_key(&name, &pk), vkey);

    // Ed25519 is deterministic: signing the text must reproduce the line.
    let seed = B64
        .decode(skey.splitn(5, '+').nth(4).expect("seed"))
        .expect("b64");
    let mut der = test_pkcs8(0);
    der[16..].copy_from_slice(&seed[1..]);
    let signer = SigningKey::from_pkcs8(&der, Path::new("<vector>")).expect("key");
    assert_eq!(signer.public_key().as_bytes(), &pk);
    let (body, sigs) = note.rsplit_once("\n\n").expect("blank line");
    let body = format!("{body}\n");
    let mut blob = key_hash(&name, &pk).to_vec();
    blob.extend_from_slice(&signer.sign(body.as_bytes()));
    assert_eq!(sigs, format!("\u{2014} {name} {}\n", B64.encode(blob)));
}

#[test]
fn checkpoint_text_follows_the_c2sp_structure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = make_log(tmp.path(), 3, "line-3", 2);
    let (cp, note) = log.write_checkpoint().expect("checkpoint");
    let lines: Vec<&str> = note.split('\n').collect();
    assert_eq!(lines[0], "reliquary-audit/line-3", "origin line");
    assert_eq!(lines[1], "3", "tree size");
    assert_eq!(B64.decode(lines[2]).expect("root").len(), 32);
    assert_eq!(lines[3], "", "blank line between text and signatures");
    let (name, blob) = lines[4]
        .strip_prefix("\u{2014} ")
        .and_then(|l| l.split_once(' '))
        .expect("signature line");
    assert_eq!(name, lines[0]);
    let blob = B64.decode(blob).expect("b64");
    assert_eq!(blob.len(), 4 + 64);
    let pk = test_key(3).public_key();
    let mut kh = name.as_bytes().to_vec();
    kh.extend_from_slice(b"\n\x01");
    kh.extend_from_slice(pk.as_bytes());
    assert_eq!(
        &blob[..4],
        &ring::digest::digest(&ring::digest::SHA256, &kh).as_ref()[..4]
    );
    let text: String = note.split_inclusive('\n').take(3).collect();
    assert!(pk.verify(text.as_bytes(), &blob[4..]));
    assert_eq!(lines[5], "", "the note ends with a newline");
    assert_eq!(
        cp.short_form(),
        format!("size 3 root {}", &cp.root.to_hex()[..8])
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("checkpoint")).expect("file"),
        note
    );
}

// -------------------------------------------------------- tamper detection

#[test]
fn every_bit_flip_is_detected_or_is_a_recoverable_torn_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    drop(make_log(tmp.path(), 4, "flip", 2));
    let clean = log_bytes(tmp.path());
    let key = test_key(4).public_key();
    let last = frame_offset(2);
    assert_eq!(clean.len(), last + FRAME_ALIGN as usize);

    let positions: Vec<usize> = (0..clean.len() * 8).collect();
    let torn: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = positions
            .chunks(positions.len() / 2 + 1)
            .map(|chunk| {
                let clean = &clean;
                s.spawn(move || {
                    let mut buf = clean.clone();
                    let mut torn = Vec::new();
                    for &bit in chunk {
                        buf[bit / 8] ^= 1 << (bit % 8);
                        let r = verify_bytes(&buf, &key, None).expect("verify");
                        if r.is_ok() {
                            // Not an error, so it must be the torn-tail case:
                            // only in the last frame, earlier records intact.
                            assert_eq!(
                                r.end,
                                LogEnd::TornTail {
                                    offset: last as u64,
                                    len: FRAME_ALIGN
                                },
                                "flip of bit {bit} went unnoticed"
                            );
                            assert_eq!(r.size, 2, "bit {bit}");
                            torn.push(bit);
                        } else {
                            assert!(r.first_problem().is_some());
                        }
                        buf[bit / 8] ^= 1 << (bit % 8);
                    }
                    torn
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(
        torn.iter().all(|&b| b / 8 >= last),
        "torn only in the last frame"
    );
    assert_eq!(
        torn.len(),
        FRAME_ALIGN as usize * 8,
        "every flip in the last frame is torn"
    );

    // Recovery does not depend on which bit: exercise it on the frame header
    // and body bits and a spread of padding bits.
    let sample = torn
        .iter()
        .filter(|&&b| b / 8 < last + 160 || b % 97 == 0)
        .copied();
    for bit in sample {
        let dir = tempfile::tempdir_in(shm()).expect("tempdir");
        for f in ["appliance.key", "appliance.pub"] {
            std::fs::copy(tmp.path().join(f), dir.path().join(f)).expect("copy");
        }
        let mut buf = clean.clone();
        buf[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(dir.path().join("audit.log"), &buf).expect("write");
        let log = AuditLog::open(dir.path(), fixed_env(FIXED_TIME_MS)).expect("open recovers");
        let rec = log.recovery().expect("recovered").clone();
        assert_eq!(
            (rec.offset, rec.length, rec.record_seq),
            (last as u64, FRAME_ALIGN, 2)
        );
        assert_eq!(
            std::fs::read(&rec.quarantine).expect("quarantine"),
            &buf[last..]
        );
        drop(log);
        let after = log_bytes(dir.path());
        assert_eq!(
            &after[..last],
            &clean[..last],
            "committed records untouched"
        );
        let r = verify_dir(dir.path(), &key, None).expect("verify");
        assert!(r.is_ok(), "{:?}", r.problems);
    }
}

fn shm() -> PathBuf {
    let p = PathBuf::from("/dev/shm");
    if p.is_dir() {
        p
    } else {
        std::env::temp_dir()
    }
}

#[test]
fn deleted_reordered_duplicated_and_foreign_signed_records_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    drop(make_log(tmp.path(), 5, "line-5", 4));
    let clean = log_bytes(tmp.path());
    let key = test_key(5).public_key();
    let frame = |i: u64| clean[frame_offset(i)..frame_offset(i + 1)].to_vec();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "delete record 2",
            [&clean[..frame_offset(2)], &clean[frame_offset(3)..]].concat(),
            "record 3 at offset 12288: its sequence number is 3 where 2 was expected",
        ),
        (
            "swap records 2 and 3",
            [
                &clean[..frame_offset(2)],
                &frame(3),
                &frame(2),
                &clean[frame_offset(4)..],
            ]
            .concat(),
            "record 3 at offset 12288",
        ),
        (
            "duplicate record 2",
            [
                &clean[..frame_offset(3)],
                &frame(2),
                &clean[frame_offset(3)..],
            ]
            .concat(),
            "record 2 at offset 16384: its sequence number is 2 where 3 was expected",
        ),
        (
            "record 2 signed by another appliance",
            {
                let f = frame(2);
                let len = u32::from_le_bytes(f[4..8].try_into().unwrap()) as usize;
                let body = &f[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
                let sig = test_key(99).sign(&signature_message(&record_hash(body)));
                let forged = encode_frame(body, &sig);
                [
                    &clean[..frame_offset(2)],
                    &forged[..],
                    &clean[frame_offset(3)..],
                ]
                .concat()
            },
            "record 2 at offset 12288: its signature does not verify",
        ),
    ];
    for (name, bytes, want) in cases {
        let r = verify_bytes(&bytes, &key, None).expect("verify");
        let p = r
            .first_problem()
            .unwrap_or_else(|| panic!("{name}: not detected"));
        assert!(p.to_string().starts_with(want), "{name}: got {p}");
        // The CLI exits 3 naming the same record.
        std::fs::write(tmp.path().join("audit.log"), &bytes).expect("write");
        let out = verify_cli(tmp.path(), &[]);
        assert_eq!(out.status.code(), Some(3), "{name}: {}", text(&out));
        assert!(text(&out).contains(want), "{name}: {}", text(&out));
    }
}

#[test]
fn splicing_two_appliances_logs_is_detected() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    // Same appliance id, different keys: only the cryptography tells them apart.
    drop(make_log(a.path(), 6, "line-6", 2));
    drop(make_log(b.path(), 7, "line-6", 4));
    let (la, lb) = (log_bytes(a.path()), log_bytes(b.path()));
    let spliced = [&la[..], &lb[frame_offset(3)..]].concat();
    std::fs::write(a.path().join("audit.log"), &spliced).expect("write");
    let out = verify_cli(a.path(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("record 3 at offset 16384"),
        "{}",
        text(&out)
    );
    // The other appliance's key does not accept it either.
    let r = verify_bytes(&spliced, &test_key(7).public_key(), None).expect("verify");
    assert!(!r.is_ok());
}

#[test]
fn clean_truncation_passes_alone_but_not_against_a_longer_checkpoint_and_forks_are_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let ds = d.to_str().expect("utf8");
    drop(make_log(d, 8, "line-8", 4));
    let cp = d.join("witnessed-5");
    let out = run(&[
        "audit",
        "checkpoint",
        "--dir",
        ds,
        "-o",
        cp.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("short form: size 5 root "),
        "{}",
        text(&out)
    );
    let full = log_bytes(d);

    // Cut two records off at a frame boundary.
    std::fs::write(d.join("audit.log"), &full[..frame_offset(3)]).expect("write");
    let out = verify_cli(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = verify_cli(d, &["--checkpoint", cp.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("the log is shorter than the witnessed size 5"),
        "{}",
        text(&out)
    );

    // Rewrite history: same length, different last record, validly signed.
    std::fs::write(d.join("audit.log"), &full[..frame_offset(4)]).expect("write");
    // The stick's own checkpoint refuses to continue the cut log...
    assert!(matches!(
        AuditLog::open(d, fixed_env(FIXED_TIME_MS)),
        Err(AuditError::Witness { .. })
    ));
    // ...so this attacker deletes the stick's witnesses too; the auditor's
    // copy of the checkpoint still catches the fork.
    for witness in ["checkpoint", "checkpoint.history"] {
        std::fs::remove_file(d.join(witness)).expect("remove the stick's witness");
    }
    let mut log = AuditLog::open(d, fixed_env(FIXED_TIME_MS)).expect("open");
    log.append(&op("mallory"), note("a different history"))
        .expect("append");
    drop(log);
    let out = verify_cli(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = verify_cli(d, &["--checkpoint", cp.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("the log has forked from the witnessed checkpoint"),
        "{}",
        text(&out)
    );

    // An honest log that grew past the checkpoint extends it.
    std::fs::write(d.join("audit.log"), &full).expect("write");
    let mut log = AuditLog::open(d, fixed_env(FIXED_TIME_MS)).expect("open");
    log.append(&op("op1"), note("later")).expect("append");
    drop(log);
    let out = verify_cli(d, &["--checkpoint", cp.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("extends the witnessed checkpoint of size 5"));

    // An edited checkpoint is rejected.
    let forged = std::fs::read_to_string(&cp)
        .expect("read")
        .replacen("\n5\n", "\n9\n", 1);
    std::fs::write(&cp, forged).expect("write");
    let out = verify_cli(d, &["--checkpoint", cp.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

// ------------------------------------------------ crash safety and recovery

/// Entry point of the appending child used by the crash tests. It does
/// nothing unless the parent test started it with `CHILD_DIR_ENV` set.
#[test]
fn audit_child_process() {
    use std::io::Write;
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let mut log = AuditLog::open(Path::new(&dir), Environment::system(None)).expect("open");
    let mut out = std::io::stdout().lock();
    if std::env::var(CHILD_MODE_ENV).as_deref() == Ok("restore") {
        let started = log
            .append(
                &op("tech1"),
                Payload::RestoreStarted(RestoreStarted {
                    image: image(),
                    target: target("KILLME01"),
                    ..Default::default()
                }),
            )
            .expect("append");
        writeln!(out, "acked {}", started.seq).expect("stdout");
        out.flush().expect("flush");
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    for i in 0.. {
        let rec = log
            .append(&op("crash"), note(&format!("crash note {i}")))
            .expect("append");
        writeln!(out, "acked {}", rec.seq).expect("stdout");
        out.flush().expect("flush");
    }
}

/// The sequence number in a child's `acked N` line. The test harness may
/// print its own text before it on the same line.
fn ack(line: &str) -> Option<u64> {
    let at = line.rfind("acked ")?;
    line[at + 6..].trim().parse().ok()
}

fn spawn_child(dir: &Path, mode: &str) -> std::process::Child {
    Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "audit_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

#[test]
fn sigkill_during_appends_loses_at_most_the_in_flight_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    drop(make_log(dir, 9, "crash", 0));
    let key = test_key(9).public_key();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut acked_total = 0u64;
    let mut torn_runs = 0;
    let start = Instant::now();
    for run_no in 0..200 {
        let before = verify_dir(dir, &key, None).expect("verify").size;
        let mut child = spawn_child(dir, "notes");
        let stdout = child.stdout.take().expect("stdout");
        // Kill after the child has acknowledged a random number of records
        // (0..6) plus a random delay, so kills land anywhere in an append.
        let want = rng.below(6);
        let mut lines = BufReader::new(stdout).lines();
        let mut acked: Vec<u64> = Vec::new();
        while (acked.len() as u64) < want {
            match lines.next() {
                Some(Ok(l)) => acked.extend(ack(&l)),
                _ => break,
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        for l in lines.map_while(Result::ok) {
            acked.extend(ack(&l));
        }
        acked_total += acked.len() as u64;

        // Emulate the power cut the kill cannot cause: in every third run,
        // an unacknowledged last frame loses a random part of its bytes.
        let bytes = log_bytes(dir);
        let r = verify_bytes(&bytes, &key, None).expect("verify");
        let last_acked = acked.last().copied();
        let mut cut = false;
        if run_no % 3 == 0 {
            if let Some(last) = r.records.last() {
                if Some(last.seq) > last_acked.or(Some(before - 1)) {
                    let keep = last.offset + 1 + rng.below(FRAME_ALIGN - 1);
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(dir.join("audit.log"))
                        .expect("open");
                    f.set_len(keep).expect("cut");
                    cut = true;
                }
            }
        }

        let log = AuditLog::open(dir, fixed_env(FIXED_TIME_MS)).expect("reopen");
        let recovered = log.recovery().is_some();
        assert_eq!(recovered, cut, "run {run_no}: recovery iff a tail was torn");
        torn_runs += usize::from(recovered);
        drop(log);
        let r = verify_dir(dir, &key, None).expect("verify");
        assert!(r.is_ok(), "run {run_no}: {:?}", r.problems);
        for seq in &acked {
            let rec = r.records[*seq as usize].record.as_ref().expect("decoded");
            assert_eq!(
                rec.kind,
                Kind::OperatorNote,
                "run {run_no}: acked {seq} present"
            );
        }
        let new = r.size - before;
        let acked_n = acked.len() as u64;
        // Acked records, at most one in-flight record, and Recovered.
        assert!(
            new >= acked_n && new <= acked_n + 1 + u64::from(recovered),
            "run {run_no}: {new} new records for {acked_n} acknowledged"
        );
        if recovered {
            let last = r
                .records
                .last()
                .and_then(|v| v.record.as_ref())
                .expect("last");
            assert_eq!(last.kind, Kind::Recovered, "run {run_no}");
        }
    }
    assert!(acked_total > 200, "the children appended ({acked_total})");
    assert!(torn_runs > 20, "torn tails were exercised ({torn_runs})");
    eprintln!("200 kill runs in {:?}", start.elapsed());
}

#[test]
fn the_last_frame_cut_zeroed_or_garbled_at_every_offset_is_a_torn_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    drop(make_log(tmp.path(), 10, "tail", 3));
    let clean = log_bytes(tmp.path());
    let key = test_key(10).public_key();
    let last = frame_offset(3);
    let mut rng = Rng(42);
    for k in 0..FRAME_ALIGN as usize {
        let truncated = &clean[..last + k];
        let mut zeroed = clean.clone();
        zeroed[last + k..].fill(0);
        let mut garbled = clean.clone();
        garbled[last + k..]
            .iter_mut()
            .for_each(|b| *b = rng.next() as u8);
        for (what, bytes) in [
            ("truncated", truncated),
            ("zeroed", &zeroed),
            ("garbled", &garbled),
        ] {
            let r = verify_bytes(bytes, &key, None).expect("verify");
            assert!(r.is_ok(), "{what} at {k}: {:?}", r.problems);
            if what == "truncated" && k == 0 {
                assert_eq!(
                    r.end,
                    LogEnd::Clean {
                        offset: last as u64
                    }
                );
            } else if bytes == clean {
                // Zeroing padding that was already zero changes nothing.
                assert_eq!(r.size, 4, "{what} at {k}");
                continue;
            } else {
                assert_eq!(
                    r.end,
                    LogEnd::TornTail {
                        offset: last as u64,
                        len: bytes.len() as u64 - last as u64
                    },
                    "{what} at {k}"
                );
            }
            assert_eq!(r.size, 3, "{what} at {k}: earlier records intact");
        }
    }
    // And through the CLI: a warning, exit 0; then `note` recovers it.
    let mut bytes = clean.clone();
    bytes.truncate(last + 100);
    std::fs::write(tmp.path().join("audit.log"), &bytes).expect("write");
    let out = verify_cli(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("warning: the log ends with a torn append of 100 bytes"));
    let keys = tempfile::tempdir().expect("tempdir");
    let trust = trust_without_operators(keys.path()).display().to_string();
    let d = tmp.path().to_str().expect("utf8");
    let out = run(&[
        "audit",
        "note",
        "--dir",
        d,
        "--trust",
        &trust,
        "--operator",
        "op9",
        "--text",
        "after",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("recovered a torn append: 100 bytes"),
        "{}",
        text(&out)
    );
    let r = verify_dir(tmp.path(), &key, None).expect("verify");
    assert!(r.is_ok());
    assert_eq!(
        r.records[3].record.as_ref().expect("rec").kind,
        Kind::Recovered
    );
    assert_eq!(
        r.records[4].record.as_ref().expect("rec").kind,
        Kind::OperatorNote
    );
}

#[test]
fn a_corrupted_middle_frame_is_tampering_never_truncated_and_appends_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    drop(make_log(tmp.path(), 11, "mid", 3));
    let mut bytes = log_bytes(tmp.path());
    bytes[frame_offset(1) + FRAME_HEADER_LEN + 60] ^= 0x20;
    std::fs::write(tmp.path().join("audit.log"), &bytes).expect("write");

    match AuditLog::open(tmp.path(), fixed_env(FIXED_TIME_MS)) {
        Err(e @ AuditError::Damaged { .. }) => {
            assert!(e.to_string().contains("record 1 at offset 8192"), "{e}");
        }
        other => panic!("expected Damaged, got {other:?}"),
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let trust = trust_without_operators(keys.path()).display().to_string();
    let d = tmp.path().to_str().expect("utf8");
    let out = run(&[
        "audit",
        "note",
        "--dir",
        d,
        "--trust",
        &trust,
        "--operator",
        "op1",
        "--text",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("new records are refused"),
        "{}",
        text(&out)
    );
    assert_eq!(log_bytes(tmp.path()), bytes, "never truncated or appended");
    assert!(std::fs::read_dir(tmp.path()).expect("ls").all(|e| !e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .contains("torn")));
    let out = verify_cli(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("record 1 at offset 8192"),
        "{}",
        text(&out)
    );
}

// ------------------------------------------------------ time, space, review

#[test]
fn an_rtc_at_1970_is_floored_and_flagged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut log = make_log(tmp.path(), 12, "clock", 1);
    drop(log);
    log = AuditLog::open(tmp.path(), fixed_env(0)).expect("open");
    let rec = log
        .append(&op("op1"), note("clock says 1970"))
        .expect("append");
    assert!(rec.time.clock_anomaly);
    assert_eq!(rec.time.rtc_unix_millis, 0);
    // The floor is the previous record's time, itself above the build time.
    assert_eq!(rec.time.floor_unix_millis, FIXED_TIME_MS);
    assert_eq!(rec.time.unix_millis, FIXED_TIME_MS);
    const { assert!(FIXED_BUILD_MS <= FIXED_TIME_MS) };
    drop(log);

    // A fresh log at 1970 is floored to the build time.
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut log =
        AuditLog::init_with_key(fresh.path(), None, &test_pkcs8(13), fixed_env(0)).expect("init");
    let rec = log.append(&op("op1"), note("first")).expect("append");
    assert_eq!(rec.time.unix_millis, FIXED_BUILD_MS);
    assert!(rec.time.clock_anomaly);
    drop(log);

    let out = verify_cli(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out).contains("record 2: the clock read 0 ms, below the floor"),
        "{}",
        text(&out)
    );
    let d = tmp.path().to_str().expect("utf8");
    let csv = text(&run(&["audit", "export", "--dir", d, "--format", "csv"]));
    assert!(
        csv.lines()
            .nth(3)
            .expect("row")
            .contains(",true,OperatorNote,"),
        "{csv}"
    );
}

#[test]
fn a_restore_killed_after_restore_started_is_interrupted_everywhere() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut log = make_log(dir, 14, "line-14", 0);
    // A completed restore for contrast.
    let s = log
        .append(
            &op("tech1"),
            Payload::RestoreStarted(RestoreStarted {
                image: image(),
                target: target("GOOD0001"),
                ..Default::default()
            }),
        )
        .expect("append");
    log.append(
        &op("tech1"),
        Payload::RestoreFinished(RestoreFinished {
            started_seq: s.seq,
            image: image(),
            target: target("GOOD0001"),
            outcome: RestoreOutcome::Failed {
                chunk: Some(812),
                reason: "write error at sector 1663000".into(),
            },
            bytes_written: 3 << 30,
            bytes_skipped: 0,
            stage_millis: vec![("write".into(), 90_000)],
            readback_digest: None,
        }),
    )
    .expect("append");
    assert!(
        dir.join("checkpoint").exists(),
        "checkpoint after RestoreFinished"
    );
    drop(log);

    let mut child = spawn_child(dir, "restore");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let acked = lines.map_while(Result::ok).find_map(|l| ack(&l));
    assert_eq!(acked, Some(3));
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");

    let d = dir.to_str().expect("utf8");
    let show = run(&["audit", "show", "--dir", d]);
    assert!(show.status.success(), "{}", text(&show));
    let table = String::from_utf8_lossy(&show.stdout).to_string();
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("3 "))
        .expect("row 3");
    assert!(
        row.contains("RestoreStarted") && row.contains("INTERRUPTED"),
        "{table}"
    );
    assert!(table
        .lines()
        .any(|l| l.contains("RestoreFinished") && l.contains("failed")));
    assert!(table.contains("chunk 812"), "{table}");

    let filtered = run(&["audit", "show", "--dir", d, "--result", "interrupted"]);
    let t = String::from_utf8_lossy(&filtered.stdout).to_string();
    assert!(t.contains("KILLME01") && !t.contains("GOOD0001"), "{t}");
    let t = text(&run(&[
        "audit",
        "show",
        "--dir",
        d,
        "--target-serial",
        "GOOD0001",
    ]));
    assert!(t.contains("2 of 4 records shown"), "{t}");
    let t = text(&run(&[
        "audit",
        "show",
        "--dir",
        d,
        "--until",
        "2000-01-01",
    ]));
    assert!(t.contains("0 of 4 records shown"), "{t}");

    let out = verify_cli(dir, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out).contains("record 3: the restore it started is INTERRUPTED"),
        "{}",
        text(&out)
    );
    let jsonl = run(&["audit", "export", "--dir", d, "--format", "jsonl"]);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&jsonl.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3]["result"], "INTERRUPTED");
    assert_eq!(rows[3]["interrupted"], true);
    assert!(rows.iter().all(|r| r["status"] == "verified"));
    let csv = text(&run(&["audit", "export", "--dir", d, "--format", "csv"]));
    assert!(
        csv.lines().nth(4).expect("row").contains(",INTERRUPTED,"),
        "{csv}"
    );
}

/// A loop-mounted ext4 file system, unmounted when dropped.
struct SmallFs {
    mount: tempfile::TempDir,
    _image: tempfile::NamedTempFile,
}

impl SmallFs {
    fn new(bytes: u64) -> Option<Self> {
        if !running_as_root() {
            skip_or_fail("mounting a loop ext4 file system needs root");
            return None;
        }
        let image = tempfile::NamedTempFile::new().expect("image");
        image.as_file().set_len(bytes).expect("size");
        match Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image.path())
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                skip_or_fail(&format!(
                    "mkfs.ext4 failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
                return None;
            }
            Err(e) => {
                skip_or_fail(&format!("cannot run mkfs.ext4: {e}"));
                return None;
            }
        }
        let mount = tempfile::tempdir().expect("mountpoint");
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image.path())
            .arg(mount.path())
            .output()
            .expect("run mount");
        if !out.status.success() {
            skip_or_fail(&format!(
                "mount -o loop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        Some(Self {
            mount,
            _image: image,
        })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount.path()).status();
    }
}

#[test]
fn a_nearly_full_log_file_system_refuses_before_a_restore_and_a_failed_write_degrades() {
    let Some(fs) = SmallFs::new(8 << 20) else {
        return;
    };
    let dir = fs.mount.path().join("audit");
    drop(make_log(&dir, 15, "full", 1));
    // Fill the file system, leaving less than the restore reserve.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(fs.mount.path().join("filler")).expect("filler");
        let block = vec![0x55u8; 4096];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.sync_all();
    }
    let log = AuditLog::open(&dir, fixed_env(FIXED_TIME_MS)).expect("open");
    let err = log
        .ensure_space(RESTORE_RESERVE_BYTES)
        .expect_err("must refuse");
    assert!(matches!(err, AuditError::NoSpace { .. }));
    assert_eq!(
        err.exit_class(),
        reliquary_appliance::exit::ExitClass::Refused
    );
    assert!(
        err.to_string()
            .contains("free space on the stick before restoring"),
        "{err}"
    );

    // The CLI path refuses the same way, before writing anything.
    drop(log);
    let before = log_bytes(&dir);
    let keys = tempfile::tempdir().expect("tempdir");
    let trust = trust_without_operators(keys.path()).display().to_string();
    let d = dir.to_str().expect("utf8");
    let out = run(&[
        "audit",
        "note",
        "--dir",
        d,
        "--trust",
        &trust,
        "--operator",
        "op1",
        "--text",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("bytes free, but 65536 are needed"),
        "{}",
        text(&out)
    );
    assert_eq!(log_bytes(&dir), before);

    // Appending anyway fails on the write; the log turns degraded and
    // refuses everything after, without retrying.
    let mut log = AuditLog::open(&dir, fixed_env(FIXED_TIME_MS)).expect("open");
    let err = log.append(&op("op1"), note("no room")).expect_err("ENOSPC");
    assert!(matches!(err, AuditError::AppendWrite { .. }), "{err}");
    assert!(log.degraded().is_some());
    let err = log.append(&op("op1"), note("again")).expect_err("degraded");
    assert!(matches!(err, AuditError::Degraded { .. }), "{err}");
    assert_eq!(
        err.exit_class(),
        reliquary_appliance::exit::ExitClass::Refused
    );
    drop(log);
    let r = verify_dir(&dir, &test_key(15).public_key(), None).expect("verify");
    assert!(r.is_ok());
    assert_eq!(r.size, 2, "both committed records survive");
}

#[test]
fn init_refuses_to_overwrite_and_prints_the_fingerprint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().join("a");
    let ds = d.to_str().expect("utf8");
    let out = run(&["audit", "init", "--dir", ds, "--appliance-id", "line-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let (key, name) = PublicKey::load(&d.join("appliance.pub")).expect("pub");
    assert_eq!(name.as_deref(), Some("line-1"));
    assert!(text(&out).contains(&format!("key id:        {}", key.key_id())));
    assert!(text(&out).contains(&verifier_key("reliquary-audit/line-1", key.as_bytes())));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("appliance.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = log_bytes(&d);
    let out = run(&["audit", "init", "--dir", ds]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("never overwrites"));
    assert_eq!(log_bytes(&d), log);
    let out = run(&[
        "audit",
        "init",
        "--dir",
        tmp.path().join("b").to_str().expect("utf8"),
        "--appliance-id",
        "bad id",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let r = verify_dir(&d, &key, None).expect("verify");
    assert!(r.is_ok());
    assert_eq!(r.origin.as_deref(), Some("reliquary-audit/line-1"));
}
