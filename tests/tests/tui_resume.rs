//! The TUI resumes a restore that a SIGKILL interrupted: the target list
//! and the confirmation offer "Resume (about N % already in place)" next to
//! "Start over", and the resume ends with the very bytes of a full restore.
//!
//! Needs `tmux` and the `recovery-tui` and `reliquary` binaries of this
//! profile (`cargo build --workspace --bins`).

mod tui;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reliquary_tests::reliquary_bin;
use tui::*;

/// The kill lands once this much of the target is written: past the wiped
/// partition-table area, well before the end of the restore.
const KILL_AFTER_BYTES: u64 = 32 << 20;

#[test]
fn a_killed_restore_is_offered_for_resume_and_the_resume_ends_byte_exact() {
    let Some(demo) = Demo::prepared_with("resume", 512) else {
        return;
    };
    let p = &demo.paths;
    let interrupted_seq = kill_a_restore_midway(p);
    let reference = demo.reference_restore();

    let tmux = demo.on_stick("tui");
    open_targets(&tmux);
    let screen = tmux.wait_for("interrupted restore", SCREEN_TIMEOUT);
    assert!(
        screen.contains(&format!("(audit record {interrupted_seq})")),
        "{screen}"
    );
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("type this code:", SCREEN_TIMEOUT);
    assert!(
        screen.contains("Resume (about") && screen.contains("Start over"),
        "{screen}"
    );
    let percent = percent_offered(&screen);
    assert!(
        (1..100).contains(&percent),
        "a restore killed midway is partly written: {percent} %\n{screen}"
    );
    let code = confirmation_code(&screen);
    // Resume is the first choice; Enter moves on to the meaning.
    tmux.keys(&["Enter"]);
    confirm_with(&tmux, "WO-4715", &code);
    let screen = tmux.wait_for("RESTORE SUCCEEDED", RESTORE_TIMEOUT);
    assert!(
        screen.contains(&format!("interrupted at audit record {interrupted_seq}"))
            && screen.contains("already correct"),
        "{screen}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);

    assert_same_bytes(&reference, &p.target);
    let (ok, out) = run(Command::new(reliquary_bin())
        .arg("check")
        .arg(&p.image)
        .arg(&p.target)
        .arg("--trust")
        .arg(&p.trust));
    assert!(ok, "reliquary check failed:\n{out}");
    let records = verified_records(&p.audit);
    let started = find_record(&records, "RestoreStarted");
    assert_eq!(
        started["record"]["payload"]["mode"]["Resume"]["interrupted_seq"], interrupted_seq,
        "the resume names the interrupted start: {started}"
    );
    let finished = find_record(&records, "RestoreFinished");
    assert_eq!(finished["result"], "success", "{finished}");
    assert_eq!(finished["record"]["payload"]["started_seq"], started["seq"]);
    let skipped = finished["record"]["payload"]["bytes_skipped"]
        .as_u64()
        .unwrap_or_default();
    assert!(skipped > 0, "nothing was skipped: {finished}");
}

/// Starts `reliquary restore` of the demo image onto the demo's target
/// file, SIGKILLs it once part of the image is written, and returns the
/// sequence number of its `RestoreStarted`.
fn kill_a_restore_midway(p: &DemoPaths) -> u64 {
    let mut child = Command::new(reliquary_bin())
        .arg("restore")
        .arg(&p.image)
        .arg(&p.target)
        .arg("--trust")
        .arg(&p.trust)
        .arg("--audit")
        .arg(&p.audit)
        .arg("--vault")
        .arg(&p.vault)
        .args([
            "--operator",
            "tech1",
            "--pin-stdin",
            "--yes",
            "--create-file",
            "--meaning",
            "replacement",
            "--reason",
            "WO-4711",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs reliquary restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"111111\n")
        .expect("writes the PIN");
    let started = Instant::now();
    loop {
        let written = std::fs::metadata(&p.target).map_or(0, |m| m.blocks() * 512);
        if written >= KILL_AFTER_BYTES {
            break;
        }
        if let Some(status) = child.try_wait().expect("polls the restore") {
            panic!("the restore ended ({status}) before it could be killed");
        }
        assert!(
            started.elapsed() < RESTORE_TIMEOUT,
            "the restore wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("waits");
    let records = verified_records(&p.audit);
    let start = find_record(&records, "RestoreStarted");
    assert!(
        records
            .iter()
            .all(|r| r["record"]["kind"] != "RestoreFinished"),
        "the kill landed after the end of the restore: {records:?}"
    );
    start["seq"].as_u64().expect("a sequence number")
}

/// N in "Resume (about N % already in place)".
fn percent_offered(screen: &str) -> u32 {
    let after = screen
        .split("Resume (about ")
        .nth(1)
        .unwrap_or_else(|| panic!("no estimate on the screen:\n{screen}"));
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after \"Resume (about\":\n{screen}"))
}
