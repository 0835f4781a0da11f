//! Issue 9: fail closed and stay bounded under hostile input and faults.
//! These tests run the `reliquary` binary (`cargo build --workspace --bins`
//! first) with a timeout: a hang is a failure, never a stuck CI job.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reliquary_tests::{reliquary_bin, running_as_root, skip_or_fail, trust_without_operators};

/// Longest a refusal may take; the old code hung forever on a FIFO.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `cmd`, killing it and failing the test if it outlives `limit`.
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reliquary");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} still ran after {limit:?} (it hangs); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reliquary(args: &[&str]) -> Output {
    let mut cmd = Command::new(reliquary_bin());
    cmd.args(args);
    run_within(cmd, REFUSAL_TIMEOUT)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Asserts exit `code` and that stderr names every needle.
fn refused(out: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A trust-store directory holding one key, `eng.pub`.
fn trust_dir(root: &Path) -> PathBuf {
    let dir = root.join("trust");
    std::fs::create_dir(&dir).expect("mkdir trust");
    let out = reliquary(&["keygen", "--out", s(&dir.join("eng")), "--name", "Eng"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(dir.join("eng")).expect("remove the private key");
    dir
}

#[test]
fn a_fifo_as_image_as_trust_or_as_audit_log_is_refused_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let fifo = root.join("fifo");
    mkfifo(&fifo);
    let trust = trust_dir(root);

    refused(&reliquary(&["inspect", s(&fifo)]), 1, &[s(&fifo), "FIFO"]);
    refused(
        &reliquary(&["verify", s(&fifo), "--trust", s(&trust)]),
        1,
        &[s(&fifo), "FIFO"],
    );
    refused(
        &reliquary(&["verify", s(&root.join("absent.rimg")), "--trust", s(&fifo)]),
        1,
        &[s(&fifo), "FIFO"],
    );

    let audit = root.join("audit");
    let out = reliquary(&[
        "audit",
        "init",
        "--dir",
        s(&audit),
        "--appliance-id",
        "fifo-1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = audit.join("audit.log");
    std::fs::remove_file(&log).expect("remove log");
    mkfifo(&log);
    let key = audit.join("appliance.pub");
    refused(
        &reliquary(&["audit", "verify", "--dir", s(&audit), "--key", s(&key)]),
        1,
        &[s(&log), "FIFO"],
    );
    refused(
        &reliquary(&[
            "audit",
            "note",
            "--dir",
            s(&audit),
            "--trust",
            s(&trust_without_operators(root)),
            "--operator",
            "op1",
            "--text",
            "hello",
        ]),
        1,
        &[s(&log), "FIFO"],
    );
}

#[test]
fn a_policy_that_is_a_dangling_link_or_a_fifo_refuses_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let trust = trust_dir(tmp.path());
    let policy = trust.join("policy");
    let image = tmp.path().join("absent.rimg");
    let verify = || reliquary(&["verify", s(&image), "--trust", s(&trust)]);

    std::os::unix::fs::symlink("/nonexistent/partition/policy", &policy).expect("symlink");
    refused(&verify(), 1, &[s(&policy), "symbolic link"]);

    std::fs::remove_file(&policy).expect("rm");
    mkfifo(&policy);
    refused(&verify(), 1, &[s(&policy), "FIFO"]);
}

#[test]
fn an_unreadable_operators_file_refuses_the_store() {
    if !running_as_root() {
        skip_or_fail("needs root to run the binary as another user");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let trust = trust_dir(tmp.path());
    let operators = trust.join("operators");
    std::fs::write(&operators, "op7 Alice Jones\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&operators, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    for dir in [tmp.path(), &trust] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // Root reads any file, so the check runs as `nobody`.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(reliquary_bin())
        .args([
            "verify",
            s(&tmp.path().join("absent.rimg")),
            "--trust",
            s(&trust),
        ]);
    let out = run_within(cmd, REFUSAL_TIMEOUT);
    refused(&out, 1, &[s(&operators), "Permission denied"]);
}

// ------------------------------------------------ torn-tail quarantine copy

/// `audit init` in `dir` plus one note.
fn audit_log_with_a_note(dir: &Path, id: &str) {
    let out = reliquary(&["audit", "init", "--dir", s(dir), "--appliance-id", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    note(dir)
        .status
        .success()
        .then_some(())
        .expect("first note");
}

fn note(dir: &Path) -> Output {
    let mut cmd = Command::new(reliquary_bin());
    let keys = tempfile::tempdir().expect("tempdir");
    let trust = trust_without_operators(keys.path());
    cmd.args(["audit", "note", "--dir", s(dir), "--trust", s(&trust)])
        .args(["--operator", "op1"])
        .args(["--text", "shift handover"]);
    run_within(cmd, Duration::from_secs(120))
}

/// Appends `len` bytes that start like a frame but never complete one: a
/// torn tail as an append cut short leaves it.
fn append_torn_tail(dir: &Path, len: usize) -> Vec<u8> {
    use std::io::Write;
    let mut tail: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    tail[..4].copy_from_slice(b"RLQR");
    tail[4..8].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("audit.log"))
        .and_then(|mut f| f.write_all(&tail))
        .expect("append the torn tail");
    tail
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Checks that the log recovered the whole tail: a quarantine file with its
/// exact bytes, a `Recovered` record of its full length, and a clean verify.
fn assert_recovered_fully(dir: &Path, tail: &[u8]) {
    use reliquary_appliance::audit::{verify_dir, Payload};
    let (key, _) = reliquary_image::keys::PublicKey::load(&dir.join("appliance.pub")).expect("key");
    let report = verify_dir(dir, &key, None).expect("verify");
    assert!(report.is_ok(), "{:?}", report.first_problem());
    let recovered: Vec<_> = report
        .records
        .iter()
        .filter_map(|r| match &r.record.as_ref()?.payload {
            Payload::Recovered {
                length,
                sha256,
                quarantine_file,
                ..
            } => Some((*length, sha256.to_hex(), quarantine_file.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    let (length, hash, file) = &recovered[0];
    assert_eq!(*length, tail.len() as u64);
    assert_eq!(*hash, sha256(tail));
    let copy = std::fs::read(dir.join(file)).expect("quarantine file");
    assert_eq!(copy.len(), tail.len());
    assert_eq!(sha256(&copy), sha256(tail));
    assert!(dir_names(dir).iter().all(|n| !n.ends_with(".partial")));
}

/// A tmpfs of a fixed size, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(SmallFs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_quarantine_copy_that_runs_out_of_space_leaves_the_log_as_it_was() {
    if !running_as_root() {
        skip_or_fail("mounting a small tmpfs needs root");
        return;
    }
    let Some(fs) = SmallFs::mount("1m") else {
        skip_or_fail("cannot mount a tmpfs");
        return;
    };
    let dir = fs.path().join("audit");
    audit_log_with_a_note(&dir, "enospc-1");
    let tail = append_torn_tail(&dir, 300_000);
    // Fill the file system: the 300,000-byte copy cannot fit.
    let filler = fs.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 1 << 20]);
    let log_before = std::fs::read(dir.join("audit.log")).expect("read");
    let names_before = dir_names(&dir);

    let out = note(&dir);
    refused(
        &out,
        1,
        &["cannot copy the torn tail", "the log was not changed"],
    );
    assert_eq!(
        std::fs::read(dir.join("audit.log")).expect("read"),
        log_before
    );
    assert_eq!(dir_names(&dir), names_before, "no partial copy is left");

    std::fs::remove_file(&filler).expect("free the space");
    let out = note(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_recovered_fully(&dir, &tail);
}

#[test]
fn a_sigkill_during_the_quarantine_copy_leaves_the_log_as_it_was() {
    use std::os::unix::fs::MetadataExt;
    const TAIL: usize = 64 << 20;
    // The kill must land while the copy runs; a machine fast enough to
    // finish it between two polls gets another try.
    for attempt in 1..=5 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("audit");
        audit_log_with_a_note(&dir, "sigkill-1");
        let tail = append_torn_tail(&dir, TAIL);
        let trust = trust_without_operators(tmp.path());
        let log_before = sha256(&std::fs::read(dir.join("audit.log")).expect("read"));
        let names_before = dir_names(&dir);

        let mut child = Command::new(reliquary_bin())
            .args(["audit", "note", "--dir", s(&dir), "--trust", s(&trust)])
            .args(["--operator", "op1"])
            .args(["--text", "shift handover"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let start = Instant::now();
        let mut killed_mid_copy = false;
        while start.elapsed() < Duration::from_secs(60) {
            let partial = dir_names(&dir)
                .into_iter()
                .find(|n| n.ends_with(".partial"));
            let size = partial.and_then(|n| std::fs::metadata(dir.join(n)).ok());
            if size.is_some_and(|m| m.size() > 0 && m.size() < TAIL as u64) {
                child.kill().expect("SIGKILL");
                killed_mid_copy = true;
                break;
            }
            if child.try_wait().expect("wait").is_some() {
                break;
            }
        }
        let _ = child.kill();
        child.wait().expect("reap");
        if !killed_mid_copy {
            eprintln!("attempt {attempt}: the copy finished before the kill; trying again");
            continue;
        }
        let log_after = sha256(&std::fs::read(dir.join("audit.log")).expect("read"));
        assert_eq!(log_after, log_before, "the log is as it was");
        let names: Vec<String> = dir_names(&dir)
            .into_iter()
            .filter(|n| !n.ends_with(".partial"))
            .collect();
        assert_eq!(names, names_before, "nothing under a final quarantine name");

        let out = note(&dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_recovered_fully(&dir, &tail);
        return;
    }
    panic!("no kill landed during the copy in 5 attempts");
}

// ------------------------------------------------ the stick's own witness

#[test]
fn a_log_cut_back_by_one_record_is_refused_by_the_sticks_own_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("audit");
    audit_log_with_a_note(&dir, "witness-1");
    let checkpoint = || reliquary(&["audit", "checkpoint", "--dir", s(&dir)]);
    let out = checkpoint();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = std::fs::read_to_string(dir.join("checkpoint")).expect("checkpoint");
    let out = note(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = checkpoint();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Appended, not overwritten: both checkpoints are in the history.
    let history = std::fs::read_to_string(dir.join("checkpoint.history")).expect("history");
    assert!(history.starts_with(&first), "{history}");
    assert_eq!(history.matches("\n\n\u{2014} ").count(), 2, "{history}");

    // Cut the last record (one 4 KiB frame) off.
    let log = dir.join("audit.log");
    let len = std::fs::metadata(&log).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(len - 4096))
        .expect("truncate");
    refused(
        &note(&dir),
        3,
        &["holds 2 records, fewer than the 3 witnessed", "checkpoint"],
    );
    // Putting the older checkpoint back does not hide it: the history keeps
    // the newer one.
    std::fs::write(dir.join("checkpoint"), &first).expect("write");
    refused(
        &note(&dir),
        3,
        &["fewer than the 3 witnessed", "checkpoint.history"],
    );
    assert_eq!(std::fs::metadata(&log).expect("stat").len(), len - 4096);

    // A new log is never started beside an old log's witnesses.
    for file in ["audit.log", "appliance.key", "appliance.pub"] {
        std::fs::remove_file(dir.join(file)).expect("remove");
    }
    let init = reliquary(&["audit", "init", "--dir", s(&dir), "--appliance-id", "w-2"]);
    refused(&init, 4, &["checkpoint", "already exists"]);
}

// ------------------------------------------------ memory on hostile images

/// The memory target of every command, whatever the input (issue 9).
const RSS_LIMIT_KIB: u64 = 256 << 10;

/// Runs `reliquary args` under `/usr/bin/time` and returns its output and
/// peak RSS in KiB.
fn peak_rss(args: &[&str]) -> Option<(Output, u64)> {
    peak_rss_within(args, Duration::from_secs(60))
}

/// [`peak_rss`] for a command that may take up to `limit`.
fn peak_rss_within(args: &[&str], limit: Duration) -> Option<(Output, u64)> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        return None;
    }
    let mut cmd = Command::new(time);
    cmd.args(["-f", "reliquary-peak-rss-kib=%M"])
        .arg(reliquary_bin())
        .args(args);
    let out = run_within(cmd, limit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix("reliquary-peak-rss-kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("/usr/bin/time printed the peak RSS");
    Some((out, kib))
}

/// `inspect` and `verify` of `image` stay under the memory target; returns
/// their stderr.
fn bounded_inspect_and_verify(image: &Path, trust: &Path) -> Option<[Output; 2]> {
    let mut outs = Vec::new();
    for args in [
        vec!["inspect", s(image)],
        vec!["verify", s(image), "--trust", s(trust)],
    ] {
        let (out, kib) = peak_rss(&args)?;
        eprintln!("{args:?}: peak RSS {kib} KiB, exit {:?}", out.status.code());
        assert!(
            kib <= RSS_LIMIT_KIB,
            "{args:?} peaked at {kib} KiB, over {RSS_LIMIT_KIB} KiB"
        );
        outs.push(out);
    }
    outs.try_into().ok()
}

fn hostile_key(root: &Path) -> (reliquary_image::keys::SigningKey, PathBuf) {
    let key = root.join("hostile");
    let signer =
        reliquary_image::keys::SigningKey::generate_to_files(&key, Some("Hostile")).expect("key");
    (signer, reliquary_image::keys::public_key_path(&key))
}

#[test]
fn a_134m_extent_index_is_refused_within_the_memory_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, trust) = hostile_key(tmp.path());
    let image = tmp.path().join("index-134m.rimg");
    // 134,217,725 one-sector extents: 2 bytes each plus the two counts fill
    // the 256 MiB index limit exactly.
    reliquary_tests::hostile::one_sector_extents(&image, &key, 134_217_725, false)
        .expect("generate");
    let Some(outs) = bounded_inspect_and_verify(&image, &trust) else {
        skip_or_fail("/usr/bin/time is missing (Debian package `time`)");
        return;
    };
    for out in outs {
        refused(&out, 3, &["134217725 extents, more than the 1048576"]);
    }
}

/// `restore` (onto a new file) and `check` of `image`, each under the
/// memory target; returns their outputs and the restore's wall time.
fn bounded_restore_and_check(
    image: &Path,
    trust: &Path,
    target: &Path,
) -> Option<([Output; 2], Duration)> {
    let started = std::time::Instant::now();
    let restore = [
        "restore",
        s(image),
        s(target),
        "--trust",
        s(trust),
        "--create-file",
        "--no-audit",
        "--yes",
    ];
    let (restored, kib) = peak_rss(&restore)?;
    let took = started.elapsed();
    eprintln!(
        "restore: peak RSS {kib} KiB, {took:?}, exit {:?}",
        restored.status.code()
    );
    assert!(kib <= RSS_LIMIT_KIB, "restore peaked at {kib} KiB");
    let (checked, kib) = peak_rss(&["check", s(image), s(target), "--trust", s(trust)])?;
    eprintln!(
        "check: peak RSS {kib} KiB, exit {:?}",
        checked.status.code()
    );
    assert!(kib <= RSS_LIMIT_KIB, "check peaked at {kib} KiB");
    Some(([restored, checked], took))
}

#[test]
fn a_30m_extent_image_is_refused_by_every_command_at_once_within_the_memory_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, trust) = hostile_key(tmp.path());
    let image = tmp.path().join("extents-30m.rimg");
    reliquary_tests::hostile::one_sector_extents(&image, &key, 30_000_000, false)
        .expect("generate");
    let target = tmp.path().join("target.disk");
    std::fs::write(&target, b"").expect("target");
    let (Some(read), Some((written, took))) = (
        bounded_inspect_and_verify(&image, &trust),
        bounded_restore_and_check(&image, &trust, &target),
    ) else {
        skip_or_fail("/usr/bin/time is missing (Debian package `time`)");
        return;
    };
    assert!(took < Duration::from_secs(30), "the refusal took {took:?}");
    for out in read.iter().chain(&written) {
        refused(out, 3, &["30000000 extents"]);
    }
    assert_eq!(
        std::fs::metadata(&target).expect("stat").len(),
        0,
        "the target was written"
    );
}

#[test]
fn an_image_at_the_extent_ceiling_is_read_within_the_memory_target_and_restored_in_under_30_s() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, trust) = hostile_key(tmp.path());
    let image = tmp.path().join("extents-ceiling.rimg");
    let ceiling = reliquary_image::layout::MAX_EXTENTS;
    reliquary_tests::hostile::one_sector_extents(&image, &key, ceiling, true).expect("generate");
    let target = tmp.path().join("target.disk");
    let (Some(read), Some((written, took))) = (
        bounded_inspect_and_verify(&image, &trust),
        bounded_restore_and_check(&image, &trust, &target),
    ) else {
        skip_or_fail("/usr/bin/time is missing (Debian package `time`)");
        return;
    };
    for out in read.iter().chain(&written) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(took < Duration::from_secs(30), "the restore took {took:?}");
}

#[test]
fn a_signed_2tib_zero_disk_with_64k_chunks_inspects_and_verifies_within_the_memory_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, trust) = hostile_key(tmp.path());
    let image = tmp.path().join("zero-2t.rimg");
    reliquary_tests::hostile::zero_disk(&image, &key, 2 << 40, 64 << 10).expect("generate");
    assert!(std::fs::metadata(&image).expect("stat").len() < 16 << 10);
    let Some(outs) = bounded_inspect_and_verify(&image, &trust) else {
        skip_or_fail("/usr/bin/time is missing (Debian package `time`)");
        return;
    };
    for out in outs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Incompressible data is capture's worst case for memory: every window in
/// flight and every compressed piece waiting for its turn is a whole chunk.
#[test]
fn capturing_incompressible_data_stays_within_the_memory_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = noise_disk(tmp.path(), 512 << 20);
    let key = author_key(tmp.path());
    let image = tmp.path().join("random.rimg");
    let capture = [
        "capture",
        s(&disk),
        "-o",
        s(&image),
        "--key",
        s(&key),
        "--name",
        "m",
    ];
    let Some((captured, kib)) = peak_rss(&capture) else {
        skip_or_fail("/usr/bin/time is missing (Debian package `time`)");
        return;
    };
    assert!(
        captured.status.success(),
        "{}",
        String::from_utf8_lossy(&captured.stderr)
    );
    eprintln!("capture of 512 MiB of random bytes: peak RSS {kib} KiB");
    assert!(kib <= RSS_LIMIT_KIB, "capture peaked at {kib} KiB");
}

const VAULT_SCAN_CHILD_ENV: &str = "RELIQUARY_HARDENING_VAULT_SCAN";

/// The child half of the vault-scan memory test: scans `DIR/vault` with the
/// trust store `DIR/hostile.pub`, as the TUI does at start. Does nothing
/// unless the parent set `VAULT_SCAN_CHILD_ENV` to DIR.
#[test]
fn vault_scan_child() {
    let Ok(dir) = std::env::var(VAULT_SCAN_CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let trust = reliquary_image::TrustStore::load(&dir.join("hostile.pub")).expect("trust");
    let scanned = recovery_tui::engine::vault::scan_vault(&dir.join("vault"), &trust)
        .expect("scan the vault");
    println!("scanned {} images", scanned.len());
}

#[test]
fn the_tui_vault_scan_of_hostile_images_stays_within_the_memory_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, _trust) = hostile_key(tmp.path());
    let stranger = reliquary_image::keys::SigningKey::generate()
        .expect("key")
        .0;
    let vault = tmp.path().join("vault");
    std::fs::create_dir(&vault).expect("mkdir vault");
    // Signed by the trusted key: verification reaches the index and refuses it.
    reliquary_tests::hostile::one_sector_extents(
        &vault.join("index-134m.rimg"),
        &key,
        134_217_725,
        false,
    )
    .expect("generate");
    // Signed by a key the store does not hold: only the manifest is read.
    reliquary_tests::hostile::one_sector_extents(
        &vault.join("untrusted-30m.rimg"),
        &stranger,
        30_000_000,
        false,
    )
    .expect("generate");
    reliquary_tests::hostile::zero_disk(&vault.join("zero-2t.rimg"), &key, 2 << 40, 64 << 10)
        .expect("generate");

    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        skip_or_fail("/usr/bin/time is missing (Debian package `time`)");
        return;
    }
    let mut cmd = Command::new(time);
    cmd.args(["-f", "reliquary-peak-rss-kib=%M"])
        .arg(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "vault_scan_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(VAULT_SCAN_CHILD_ENV, tmp.path());
    let out = run_within(cmd, Duration::from_secs(60));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("scanned 3 images"), "{stdout}");
    let kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("reliquary-peak-rss-kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("/usr/bin/time printed the peak RSS");
    eprintln!("vault scan of 3 hostile images: peak RSS {kib} KiB");
    assert!(kib <= RSS_LIMIT_KIB, "the vault scan peaked at {kib} KiB");
}

/// The peak resident set (`VmHWM`) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `cmd` for at most `limit`, sampling its peak RSS; returns the peak
/// and whether it was still running (then it is killed).
fn peak_rss_while_running(cmd: &mut Command, limit: Duration) -> (u64, bool) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    let mut peak = 0;
    let running = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if child.try_wait().expect("try_wait").is_some() {
            break false;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (peak, running)
}

#[test]
fn checking_a_2tib_disk_against_a_zero_image_stays_within_the_memory_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, trust) = hostile_key(tmp.path());
    let image = tmp.path().join("zero-2t.rimg");
    reliquary_tests::hostile::zero_disk(&image, &key, 2 << 40, 64 << 10).expect("generate");
    let disk = tmp.path().join("disk-2t.raw");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(2 << 40))
        .expect("a sparse 2 TiB disk");
    // Before the read-back streamed, this grew past 1.36 GB within 30 s.
    let (peak, running) = peak_rss_while_running(
        Command::new(reliquary_bin())
            .arg("check")
            .arg(&image)
            .arg(&disk)
            .arg("--trust")
            .arg(&trust),
        Duration::from_secs(8),
    );
    assert!(running, "check of 2 TiB ended within 8 s");
    assert!(
        peak <= RSS_LIMIT_KIB,
        "check peaked at {peak} KiB, over {RSS_LIMIT_KIB}"
    );
    eprintln!(
        "check of a 2 TiB disk: peak RSS {} MiB after 8 s",
        peak / 1024
    );
}

#[test]
fn a_restore_with_64mib_chunks_stays_within_the_memory_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, trust) = hostile_key(tmp.path());
    let raw = tmp.path().join("disk.raw");
    let mut bytes = vec![0u8; 256 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&raw, &bytes).expect("raw disk");
    drop(bytes);
    let image = tmp.path().join("big-chunks.rimg");
    let out = Command::new(reliquary_bin())
        .arg("capture")
        .arg(&raw)
        .arg("-o")
        .arg(&image)
        .arg("--key")
        .arg(tmp.path().join("hostile"))
        .args([
            "--name",
            "big",
            "--chunk-size",
            "64M",
            "--sector-size",
            "512",
        ])
        .output()
        .expect("capture");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = tmp.path().join("target.raw");
    let (peak, running) = peak_rss_while_running(
        Command::new(reliquary_bin())
            .arg("restore")
            .arg(&image)
            .arg(&target)
            .arg("--trust")
            .arg(&trust)
            .args(["--no-audit", "--yes", "--create-file"]),
        Duration::from_secs(120),
    );
    assert!(!running, "the restore did not finish within 120 s");
    assert_eq!(
        std::fs::read(&target).expect("target"),
        std::fs::read(&raw).expect("raw")
    );
    // (3 × cores + 4) buffers of 64 MiB were 660 MB on 2 cores before the
    // pool was sized by bytes.
    assert!(
        peak <= RSS_LIMIT_KIB,
        "restore peaked at {peak} KiB, over {RSS_LIMIT_KIB}"
    );
    eprintln!("restore with 64 MiB chunks: peak RSS {} MiB", peak / 1024);
}

/// Issue 21: every target decoded its table areas' chunks at once, and a
/// read-back or a verify held two chunks per core: eight targets with
/// 64 MiB chunks peaked at 1,032 MB, a verify at 267 MB.
#[test]
fn eight_targets_with_64mib_chunks_and_their_verify_check_and_extract_stay_within_the_memory_target(
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Three chunks: the first and last lie in the partition-table areas,
    // the middle one is bulk.
    let raw = noise_disk(tmp.path(), 192 << 20);
    let key = author_key(tmp.path());
    let trust = reliquary_image::keys::public_key_path(&key);
    let image = tmp.path().join("big-chunks.rimg");
    let out = reliquary(&[
        "capture",
        s(&raw),
        "-o",
        s(&image),
        "--key",
        s(&key),
        "--name",
        "big",
        "--chunk-size",
        "64M",
        "--sector-size",
        "512",
        "--all-sectors",
    ]);
    assert!(out.status.success(), "capture: {out:?}");
    let targets: Vec<PathBuf> = (0..8)
        .map(|i| tmp.path().join(format!("target-{i}.raw")))
        .collect();
    let mut restore = vec!["restore", s(&image)];
    restore.extend(targets.iter().map(|t| s(t)));
    restore.extend(["--trust", s(&trust), "--create-file", "--no-audit", "--yes"]);
    let Some((restored, kib)) = peak_rss_within(&restore, Duration::from_secs(600)) else {
        skip_or_fail("/usr/bin/time is missing (Debian package `time`)");
        return;
    };
    eprintln!("restore onto 8 targets, 64 MiB chunks: peak RSS {kib} KiB");
    assert!(restored.status.success(), "restore: {restored:?}");
    assert!(kib <= RSS_LIMIT_KIB, "restore peaked at {kib} KiB");
    let want = std::fs::read(&raw).expect("raw");
    for target in &targets {
        assert!(std::fs::read(target).expect("target") == want, "{target:?}");
    }
    drop(want);

    let extracted = tmp.path().join("extracted.raw");
    for args in [
        vec!["verify", s(&image), "--trust", s(&trust)],
        vec![
            "check",
            s(&image),
            s(&targets[0]),
            s(&targets[1]),
            "--trust",
            s(&trust),
        ],
        vec![
            "extract",
            s(&image),
            "-o",
            s(&extracted),
            "--trust",
            s(&trust),
        ],
    ] {
        let (out, kib) = peak_rss_within(&args, Duration::from_secs(300)).expect("time");
        eprintln!("{}, 64 MiB chunks: peak RSS {kib} KiB", args[0]);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(kib <= RSS_LIMIT_KIB, "{} peaked at {kib} KiB", args[0]);
    }
    assert!(std::fs::read(&extracted).expect("extracted") == std::fs::read(&raw).expect("raw"));
}

// ------------------------------------------------ restore targets

/// A disk of `size` incompressible pseudo-random bytes, `ROOT/noise.raw`.
fn noise_disk(root: &Path, size: usize) -> PathBuf {
    let raw = root.join("noise.raw");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&raw, bytes).expect("source");
    raw
}

/// A new signing key, `ROOT/author` (its public half beside it).
fn author_key(root: &Path) -> PathBuf {
    let key = root.join("author");
    let out = reliquary(&["keygen", "--out", s(&key), "--name", "author"]);
    assert!(out.status.success(), "keygen: {out:?}");
    key
}

/// A signed image of `size` bytes of noise, captured whole, and its trust
/// key.
fn noise_image(root: &Path, size: usize) -> (PathBuf, PathBuf) {
    let raw = noise_disk(root, size);
    let key = author_key(root);
    let image = root.join("noise.rimg");
    let out = reliquary(&[
        "capture",
        s(&raw),
        "-o",
        s(&image),
        "--key",
        s(&key),
        "--name",
        "noise",
        "--chunk-size",
        "1M",
        "--all-sectors",
    ]);
    assert!(out.status.success(), "capture: {out:?}");
    (image, reliquary_image::keys::public_key_path(&key))
}

#[test]
fn a_fifo_as_the_restore_target_is_refused_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (image, trust) = noise_image(tmp.path(), 1 << 20);
    let fifo = tmp.path().join("target.fifo");
    mkfifo(&fifo);
    for extra in [&[][..], &["--create-file"][..]] {
        let mut args = vec!["restore", s(&image), s(&fifo), "--trust", s(&trust)];
        args.extend(["--no-audit", "--yes"]);
        args.extend(extra);
        refused(&reliquary(&args), 4, &[s(&fifo)]);
    }
}

#[test]
fn a_restore_onto_the_audit_logs_own_full_file_system_prints_both_failures() {
    if !running_as_root() {
        skip_or_fail("mounting a small tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (image, trust) = noise_image(tmp.path(), 32 << 20);
    let Some(fs) = SmallFs::mount("24m") else {
        skip_or_fail("cannot mount a tmpfs");
        return;
    };
    let audit = fs.path().join("audit");
    let out = reliquary(&["audit", "init", "--dir", s(&audit)]);
    assert!(out.status.success(), "audit init: {out:?}");
    let target = fs.path().join("target.disk");
    let mut cmd = Command::new(reliquary_bin());
    cmd.args([
        "restore",
        s(&image),
        s(&target),
        "--create-file",
        "--trust",
        s(&trust),
        "--audit",
        s(&audit),
        "--operator",
        "tech1",
        "--yes",
        "--meaning",
        "replacement",
        "--reason",
        "WO-4711",
    ]);
    let out = run_within(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        "failed: cannot write the target",
        "No space left on device",
        "could not be recorded in the audit log",
    ] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
}

#[test]
fn restoring_a_signed_2tib_zero_disk_with_64k_chunks_stays_within_the_memory_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (key, trust) = hostile_key(tmp.path());
    let image = tmp.path().join("zero-2t.rimg");
    reliquary_tests::hostile::zero_disk(&image, &key, 2 << 40, 64 << 10).expect("generate");
    let target = tmp.path().join("target.disk");
    // Without read-back: reading 2 TiB of zeros back is `check`'s test
    // (`checking_a_2tib_disk_against_a_zero_image…`).
    let args = [
        "restore",
        s(&image),
        s(&target),
        "--trust",
        s(&trust),
        "--create-file",
        "--no-audit",
        "--yes",
        "--no-readback",
    ];
    let Some((out, kib)) = peak_rss(&args) else {
        skip_or_fail("/usr/bin/time is missing (Debian package `time`)");
        return;
    };
    eprintln!("restore: peak RSS {kib} KiB");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(kib <= RSS_LIMIT_KIB, "restore peaked at {kib} KiB");
    assert_eq!(std::fs::metadata(&target).expect("stat").len(), 2 << 40);
}
