//! Issue 9: fail closed and stay bounded under hostile input and faults.
//! These tests run the `reliquary` binary (`cargo build --workspace --bins`
//! first) with a timeout: a hang is a failure, never a stuck CI job.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reliquary_tests::{reliquary_bin, running_as_root, skip_or_fail};

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
    cmd.args(["audit", "note", "--dir", s(dir), "--operator", "op1"])
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
        let log_before = sha256(&std::fs::read(dir.join("audit.log")).expect("read"));
        let names_before = dir_names(&dir);

        let mut child = Command::new(reliquary_bin())
            .args(["audit", "note", "--dir", s(&dir), "--operator", "op1"])
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
