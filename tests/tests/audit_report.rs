//! `reliquary audit report` (issue 12): the restore certificate and the
//! period review, rendered with poppler's `pdftoppm` and read back with
//! `pdftotext`, compared with the records they print.
//!
//! Needs the binary (`cargo build -p reliquary-appliance`), poppler-utils
//! and zbar-tools (to scan the QR code back).

use std::path::Path;
use std::process::{Command, Output};

use reliquary_appliance::audit::layout::read_frame;
use reliquary_appliance::audit::query::format_time;
use reliquary_appliance::audit::{
    verify_dir, AuditLog, Digest, Environment, FixedClock, ImageRef, Operator, Payload,
    RestoreFinished, RestoreMode, RestoreOutcome, RestoreStarted, SignInFailed, SignerRef,
    TargetRef, Unmapped,
};
use reliquary_image::keys::PublicKey;
use reliquary_tests::{reliquary_bin, scan_qr, skip_or_fail};

/// 2030-01-01T00:00:00Z.
const T0: i64 = 1_893_456_000_000;

fn pkcs8(seed: u8) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[seed; 32]);
    der
}

fn env(millis: i64) -> Environment {
    Environment {
        clock: Box::new(FixedClock(millis)),
        boot_id: "5b7c0d8e-1111-4222-8333-944455556666".into(),
        software_version: "reliquary-test-7.1".into(),
        trust_store_digest: Some(Digest([7; 32])),
        build_unix_millis: T0 - 86_400_000,
    }
}

fn operator() -> Operator {
    Operator {
        id: "jdoe".into(),
        name: Some("Jane Doe".into()),
    }
}

fn image() -> ImageRef {
    ImageRef {
        uuid: "6f1c1e0a-6c53-4a4e-9a43-5b0c8d1f2e11".into(),
        name: "press-line-hmi".into(),
        version: "2024.3-sp1".into(),
        manifest_digest: Digest([0xab; 32]),
        signers: vec![
            SignerRef {
                name: "Engineering".into(),
                key_id: "0123456789abcdef".into(),
                meaning: "authored".into(),
                signed_unix: Some(1_767_225_600),
            },
            SignerRef {
                name: "Quality".into(),
                key_id: "fedcba9876543210".into(),
                meaning: "approved".into(),
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

fn started(serial: &str) -> Payload {
    Payload::RestoreStarted(RestoreStarted {
        image: image(),
        target: target(serial),
        meaning: Some("replacement after disk failure".into()),
        reason: Some(format!("WO-4711 {serial}")),
        mode: RestoreMode::Full,
        unmapped: Unmapped::Zeroed,
    })
}

fn finished(started_seq: u64, serial: &str, outcome: RestoreOutcome) -> Payload {
    Payload::RestoreFinished(RestoreFinished {
        started_seq,
        image: image(),
        target: target(serial),
        outcome,
        bytes_written: 123_456_789,
        bytes_skipped: 4_096,
        stage_millis: vec![
            ("wiping".into(), 1_200),
            ("writing".into(), 45_000),
            ("reading back".into(), 15_300),
        ],
        readback_digest: Some(Digest([0xcd; 32])),
    })
}

/// Appends one record at `millis`, reopening the log with that clock.
fn append_at(dir: &Path, millis: i64, payload: Payload) -> u64 {
    let mut log = AuditLog::open(dir, env(millis)).expect("open");
    log.append(&operator(), payload).expect("append").seq
}

/// 0 LogCreated, 1 note, 2-3 a good restore, 4 an interrupted restore, 5-6 a failed one, then `notes` notes.
fn build_log(dir: &Path, notes: usize) {
    drop(AuditLog::init_with_key(dir, Some("line-7"), &pkcs8(3), env(T0)).expect("init"));
    append_at(
        dir,
        T0 + 1_000,
        Payload::OperatorNote {
            text: "shift start".into(),
        },
    );
    assert_eq!(append_at(dir, T0 + 2_000, started("SER-OK-01")), 2);
    assert_eq!(
        append_at(
            dir,
            T0 + 63_500,
            finished(2, "SER-OK-01", RestoreOutcome::Success)
        ),
        3
    );
    assert_eq!(append_at(dir, T0 + 100_000, started("SER-INT-02")), 4);
    assert_eq!(append_at(dir, T0 + 200_000, started("SER-BAD-03")), 5);
    let failed = RestoreOutcome::Failed {
        chunk: Some(812),
        reason: "chunk 812 does not match its digest".into(),
    };
    assert_eq!(
        append_at(dir, T0 + 210_000, finished(5, "SER-BAD-03", failed)),
        6
    );
    let mut log = AuditLog::open(dir, env(T0 + 300_000)).expect("open");
    for attempt in 1..=5 {
        log.append(
            &Operator {
                id: "mallory".into(),
                name: None,
            },
            Payload::SignInFailed(SignInFailed {
                operator_id: "mallory".into(),
                attempt,
                locked: attempt == 5,
            }),
        )
        .expect("sign-in failure");
    }
    for i in 0..notes {
        log.append(
            &operator(),
            Payload::OperatorNote {
                text: format!("routine check {i} of the line 7 controllers"),
            },
        )
        .expect("note");
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(reliquary_bin())
        .args(args)
        .output()
        .expect("run reliquary")
}

fn poppler_available() -> bool {
    ["pdftotext", "pdftoppm", "pdfinfo", "zbarimg"]
        .iter()
        .all(|tool| {
            Command::new(tool)
                .arg("-v")
                .output()
                .is_ok_and(|o| o.status.success() || !o.stderr.is_empty())
        })
}

/// Renders every page to PNG and checks each is a real image.
fn renders(pdf: &Path) -> usize {
    let prefix = pdf.with_extension("render");
    let out = Command::new("pdftoppm")
        .args(["-r", "50", "-png"])
        .arg(pdf)
        .arg(&prefix)
        .output()
        .expect("pdftoppm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = pdf.parent().expect("dir");
    let stem = prefix
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let mut pages = 0;
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if name.starts_with(&stem) && name.ends_with(".png") {
            let png = std::fs::read(&path).expect("png");
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}");
            assert!(png.len() > 2_000, "{name} is nearly empty");
            pages += 1;
        }
    }
    pages
}

fn pdf_text(pdf: &Path) -> String {
    let out = Command::new("pdftotext")
        .args(["-layout"])
        .arg(pdf)
        .arg("-")
        .output()
        .expect("pdftotext");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 text")
}

fn page_count(pdf: &Path) -> usize {
    let out = Command::new("pdfinfo").arg(pdf).output().expect("pdfinfo");
    let info = String::from_utf8_lossy(&out.stdout).to_string();
    info.lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("page count")
}

fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn the_certificate_renders_and_holds_every_field_of_the_record() {
    if !poppler_available() {
        skip_or_fail(
            "poppler-utils (pdftotext, pdftoppm, pdfinfo) or zbar-tools (zbarimg) is not installed",
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("audit");
    build_log(&dir, 0);
    let pdf = tmp.path().join("certificate.pdf");
    let d = dir.to_str().expect("utf8");
    let out = run(&[
        "audit",
        "report",
        "--dir",
        d,
        "--seq",
        "3",
        "-o",
        pdf.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(page_count(&pdf), 1, "a certificate is one page");
    assert_eq!(renders(&pdf), 1);
    let text = pdf_text(&pdf);
    let flat = squeeze(&text);

    let (key, _) = PublicKey::load(&dir.join("appliance.pub")).expect("key");
    let report = verify_dir(&dir, &key, None).expect("verify");
    let log = std::fs::read(dir.join("audit.log")).expect("log");
    let mut expected: Vec<String> = Vec::new();
    for seq in [2u64, 3] {
        let vr = &report.records[seq as usize];
        let frame = read_frame(&log[..], vr.offset, &mut Vec::new()).expect("frame");
        expected.push(frame.record_hash.to_hex());
        let signature = hex::encode(frame.signature);
        expected.push(signature[..64].to_string());
        expected.push(signature[64..].to_string());
        expected.push(format!("Sequence {seq}"));
        let rec = vr.record.as_ref().expect("record");
        expected.push(format_time(rec.meta.time.unix_millis));
    }
    let img = image();
    let tgt = target("SER-OK-01");
    expected.extend([
        img.name.clone(),
        img.version.clone(),
        img.uuid.clone(),
        img.manifest_digest.to_hex(),
        tgt.path.clone(),
        tgt.model.clone(),
        tgt.serial.clone(),
        tgt.size_bytes.to_string(),
        "logical 512 B, physical 4096 B".into(),
        "Jane Doe".into(),
        "jdoe".into(),
        "replacement after disk failure".into(),
        "WO-4711 SER-OK-01".into(),
        "full, unmapped extents zeroed".into(),
        "4096".into(),
        "real-time clock".into(),
        "success".into(),
        "123456789".into(),
        "wiping 1.2 s, writing 45.0 s, reading back 15.3 s".into(),
        Digest([0xcd; 32]).to_hex(),
        "line-7".into(),
        "reliquary-test-7.1".into(),
        "5b7c0d8e-1111-4222-8333-944455556666".into(),
        key.key_id(),
        "reliquary audit verify".into(),
        "signed by the appliance".into(),
    ]);
    for s in &img.signers {
        let signed = format_time(s.signed_unix.expect("a signing time") * 1000);
        expected.push(format!(
            "{}: {}, signed {signed} (key {})",
            s.name, s.meaning, s.key_id
        ));
    }
    for want in &expected {
        assert!(
            text.contains(want.as_str()),
            "the certificate lacks {want:?}:\n{text}"
        );
    }
    // The checkpoint is the signed note the log keeps beside it.
    let note = std::fs::read_to_string(dir.join("checkpoint")).expect("checkpoint");
    assert!(note.starts_with("reliquary-audit/line-7\n7\n"), "{note}");
    for line in note.lines() {
        assert!(
            flat.contains(&squeeze(line)),
            "the certificate lacks {line:?}:\n{text}"
        );
    }
    // The QR code scans back to the very same signed note.
    let scanned = scan_qr(&pdf).expect("a QR code on the certificate");
    assert_eq!(scanned.trim_end(), note.trim_end());
}

/// The text of the QR code on page 1, read by zbar from a 150 dpi render.
#[test]
fn a_certificate_of_an_interrupted_restore_says_so_and_other_records_are_refused() {
    if !poppler_available() {
        skip_or_fail(
            "poppler-utils (pdftotext, pdftoppm, pdfinfo) or zbar-tools (zbarimg) is not installed",
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("audit");
    build_log(&dir, 0);
    let d = dir.to_str().expect("utf8");
    let pdf = tmp.path().join("interrupted.pdf");
    let out = run(&[
        "audit",
        "report",
        "--dir",
        d,
        "--seq",
        "4",
        "-o",
        pdf.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = pdf_text(&pdf);
    assert!(
        text.contains("INTERRUPTED") && text.contains("SER-INT-02"),
        "{text}"
    );
    assert!(text.contains("signed by the appliance"), "{text}");

    // Without a signed note beside the log, the checkpoint is computed from
    // the verified log and marked unsigned.
    std::fs::remove_file(dir.join("checkpoint")).expect("remove checkpoint");
    // `audit report` never writes over a file.
    std::fs::remove_file(&pdf).expect("remove the first certificate");
    let out = run(&[
        "audit",
        "report",
        "--dir",
        d,
        "--seq",
        "4",
        "-o",
        pdf.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = pdf_text(&pdf);
    assert!(
        text.contains("unsigned: computed from the verified log"),
        "{text}"
    );
    assert!(text.contains("reliquary-audit/line-7\n12\n"), "{text}");

    let note = tmp.path().join("note.pdf");
    let out = run(&[
        "audit",
        "report",
        "--dir",
        d,
        "--seq",
        "1",
        "-o",
        note.to_str().expect("utf8"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["error"]["class"], "usage");
    assert!(!note.exists(), "no file for a refused report");
}

#[test]
fn the_review_lists_exceptions_first_and_flows_onto_pages() {
    if !poppler_available() {
        skip_or_fail(
            "poppler-utils (pdftotext, pdftoppm, pdfinfo) or zbar-tools (zbarimg) is not installed",
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("audit");
    build_log(&dir, 120);
    let d = dir.to_str().expect("utf8");
    let pdf = tmp.path().join("review.pdf");
    let out = run(&[
        "audit",
        "report",
        "--dir",
        d,
        "--since",
        "2030-01-01",
        "--until",
        "2030-01-01",
        "-o",
        pdf.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages = page_count(&pdf);
    assert!(pages >= 2, "132 records fit on {pages} page");
    assert_eq!(renders(&pdf), pages);
    let text = pdf_text(&pdf);
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("the review lacks {needle:?}:\n{text}"))
    };
    let exceptions = at("Exceptions (3)");
    let interrupted = at("INTERRUPTED restore of press-line-hmi 2024.3-sp1 onto /dev/sda");
    let failed = at("FAILED restore of press-line-hmi");
    let locked = at("LOCKED: operator mallory was locked out after 5 failed sign-ins");
    let all = at("All records");
    assert!(exceptions < interrupted && interrupted < failed && failed < locked && locked < all);
    assert!(
        text.contains("failed sign-in of mallory (attempt 1)"),
        "{text}"
    );
    assert!(text.contains("Record 4") && text.contains("SER-INT-02"));
    assert!(text.contains("132 in the period, 132 in the log"), "{text}");
    assert!(text.contains("routine check 119 of the line 7 controllers"));
    assert!(text.contains(&format!("page {pages} of {pages}")));

    // A period with nothing in it.
    let empty = tmp.path().join("empty.pdf");
    let out = run(&[
        "audit",
        "report",
        "--dir",
        d,
        "--since",
        "2031-01-01",
        "-o",
        empty.to_str().expect("utf8"),
    ]);
    assert!(out.status.success());
    let text = pdf_text(&empty);
    assert!(
        text.contains("0 in the period") && text.contains("Exceptions (0)"),
        "{text}"
    );
}

/// The papers as an auditor sees them: a good certificate, a failed one
/// and a review of the same deterministic log, as `pdftotext -layout`
/// reads them, held by golden files next to page pictures in
/// `tests/fixtures/papers/`. Regenerate both with
/// `RELIQUARY_UPDATE_PAPERS=1 cargo test -p reliquary-tests --test audit_report reference`.
#[test]
fn reference_papers_of_a_good_certificate_a_failed_one_and_a_review() {
    if !poppler_available() {
        skip_or_fail(
            "poppler-utils (pdftotext, pdftoppm, pdfinfo) or zbar-tools (zbarimg) is not installed",
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    build_log(&tmp.path().join("audit"), 0);
    let papers = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/papers");
    let update = std::env::var("RELIQUARY_UPDATE_PAPERS").as_deref() == Ok("1");
    let good = tmp.path().join("certificate.pdf");
    let failed = tmp.path().join("certificate-failed.pdf");
    let review = tmp.path().join("review.pdf");
    // Run in the temp dir with `--dir audit`, so the papers name the same
    // path every run (a proportional font wraps other paths elsewhere).
    let jobs: [(&[&str], &Path); 3] = [
        (&["--seq", "3", "-o", "certificate.pdf"], &good),
        (&["--seq", "6", "-o", "certificate-failed.pdf"], &failed),
        (&["--since", "2030-01-01", "-o", "review.pdf"], &review),
    ];
    for (args, pdf) in jobs {
        let out = Command::new(reliquary_bin())
            .args(["audit", "report", "--dir", "audit"])
            .args(args)
            .current_dir(tmp.path())
            .output()
            .expect("run reliquary");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let name = pdf.file_stem().expect("stem").to_string_lossy().to_string();
        let text = mask_generation_time(&pdf_text(pdf));
        let golden = papers.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&papers).expect("papers dir");
            std::fs::write(&golden, &text).expect("golden");
            let rendered = Command::new("pdftoppm")
                .args(["-r", "60", "-png", "-f", "1", "-l", "1", "-singlefile"])
                .arg(pdf)
                .arg(papers.join(&name))
                .status()
                .expect("pdftoppm");
            assert!(rendered.success());
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with RELIQUARY_UPDATE_PAPERS=1",
                golden.display()
            )
        });
        assert_eq!(
            text,
            expected,
            "{name} differs from {}; if the change is meant, regenerate with RELIQUARY_UPDATE_PAPERS=1",
            golden.display()
        );
    }
    let failed_text = pdf_text(&failed);
    assert!(failed_text.contains("RESTORE FAILED"), "{failed_text}");
    assert!(
        failed_text.contains("wiped and will not boot"),
        "{failed_text}"
    );
    assert!(!pdf_text(&good).contains("FAILED"));
}

/// The review's generation time, the one thing that changes between runs,
/// replaced by a mark of the same width.
fn mask_generation_time(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("Generated") {
            Some(_) => line
                .split_whitespace()
                .map(|word| {
                    if word.len() >= 20 && word.starts_with("20") && word.ends_with('Z') {
                        "YYYY-MM-DDTHH:MM:SS.sssZ"
                    } else {
                        word
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
