//! Audit log benchmark: one append with its fdatasync, and verifying and
//! opening (recovery scan) a log of 100,000 records.
//!
//! Run: `cargo bench -p reliquary-appliance --bench audit`
//! (`AUDIT_BENCH_RECORDS=N` changes the size of the large log).

use std::path::Path;
use std::time::{Duration, Instant};

use reliquary_appliance::audit::{
    verify_dir, AuditLog, Environment, ImageRef, Operator, Payload, RestoreFinished,
    RestoreOutcome, RestoreStarted, SignerRef, TargetRef,
};

fn main() {
    let records: u64 = std::env::var("AUDIT_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let op = Operator {
        id: "bench".into(),
        name: Some("Bench Operator".into()),
    };

    // 1. Appends with fdatasync, on the local disk (the target directory).
    let local = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut log =
        AuditLog::init(local.path(), Some("bench"), Environment::system(None)).expect("init");
    let mut times = Vec::new();
    for i in 0..500u64 {
        let t = Instant::now();
        log.append(&op, payload(i, 0)).expect("append");
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "append + fdatasync ({}): median {:?}, p99 {:?}, mean {:?}",
        local.path().display(),
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times.iter().sum::<Duration>() / times.len() as u32
    );
    drop(log);

    // 2. A large log of realistic restore records. Built on tmpfs so that
    // building it does not take 100,000 disk syncs; it is read back from
    // the page cache either way.
    let base = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
    }
    .expect("tempdir");
    let dir = base.path();
    let t = Instant::now();
    let mut log = AuditLog::init(dir, Some("bench-big"), Environment::system(None)).expect("init");
    let mut started = 0;
    for i in 1..records {
        let p = payload(i, started);
        if matches!(p, Payload::RestoreStarted(_)) {
            started = i;
        }
        log.append(&op, p).expect("append");
    }
    let key = log.public_key();
    drop(log);
    let size = std::fs::metadata(dir.join("audit.log"))
        .expect("stat")
        .len();
    println!(
        "built {records} records ({} MiB) in {:?}",
        size >> 20,
        t.elapsed()
    );

    // Three runs each: this VM is shared, so the best and the worst are
    // both reported.
    let mut verify = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let report = verify_dir(dir, &key, None).expect("verify");
        verify.push(t.elapsed());
        assert!(report.is_ok() && report.size == records);
    }
    verify.sort();
    println!(
        "verify {records} records: best {:?}, worst {:?} ({} threads)",
        verify[0],
        verify[2],
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let mut open = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let log = AuditLog::open(dir, Environment::system(None)).expect("open");
        open.push(t.elapsed());
        assert_eq!(log.size(), records);
    }
    open.sort();
    println!(
        "open (recovery scan) {records} records: best {:?}, worst {:?}",
        open[0], open[2]
    );
}

/// Alternating RestoreStarted / RestoreFinished records, as a busy appliance
/// writes them.
fn payload(i: u64, started: u64) -> Payload {
    let image = ImageRef {
        uuid: "6f1c1e0a-6c53-4a4e-9a43-5b0c8d1f2e11".into(),
        name: "press-line-hmi".into(),
        version: format!("2024.{}", i % 12),
        manifest_digest: reliquary_appliance::audit::Digest([0xab; 32]),
        signers: vec![SignerRef {
            name: "QA".into(),
            key_id: "fedcba9876543210".into(),
            meaning: "approved for production".into(),
            signed_unix: Some(1_767_225_600),
        }],
    };
    let target = TargetRef {
        path: "/dev/sda".into(),
        model: "INTEL SSDSC2KB480G8".into(),
        serial: format!("PHYS{i:08}"),
        wwn: Some("0x55cd2e414d2f1a2b".into()),
        size_bytes: 480_103_981_056,
        logical_sector_size: 512,
        physical_sector_size: 4096,
    };
    if i % 2 == 1 {
        Payload::RestoreStarted(RestoreStarted {
            image,
            target,
            ..Default::default()
        })
    } else {
        Payload::RestoreFinished(RestoreFinished {
            started_seq: started,
            image,
            target,
            outcome: RestoreOutcome::Success,
            bytes_written: 21 << 30,
            bytes_skipped: 0,
            stage_millis: vec![("verify".into(), 61_000), ("write".into(), 402_500)],
            readback_digest: Some(reliquary_appliance::audit::Digest([0xcd; 32])),
        })
    }
}
