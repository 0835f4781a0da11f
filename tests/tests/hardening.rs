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
