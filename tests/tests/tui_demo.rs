//! Smoke tests of the real `recovery-tui` binary, driven in tmux at 80x25:
//! the README's demo from sign-in to a verified restore, a cancel in the
//! middle of a restore, the PIN lockout, a stick that is not ready, and an
//! image whose chunk fails during a restore.
//!
//! Needs `tmux` and the `recovery-tui` and `reliquary` binaries of this
//! profile (`cargo test --workspace` builds them).

mod tui;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reliquary_tests::reliquary_bin;
use tui::*;

#[test]
fn demo_restores_the_image_and_logs_it_with_the_operator() {
    let Some(demo) = Demo::start("demo", 256) else {
        return;
    };
    let tmux = &demo.tmux;
    tmux.wait_for("Operator id", START_TIMEOUT);
    tmux.wait_for("tech1 PIN 111111", SCREEN_TIMEOUT);
    sign_in(tmux, "nobody", "111111");
    tmux.wait_for("id or PIN is wrong", SCREEN_TIMEOUT);
    clear_sign_in(tmux);
    sign_in(tmux, "tech1", "111111");
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.wait_for("trusted", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Image details", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("target.raw", SCREEN_TIMEOUT);
    assert!(
        screen
            .lines()
            .any(|l| l.contains('▸') && l.contains("target.raw")),
        "the file target should be preselected:\n{screen}"
    );
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("type this code:", SCREEN_TIMEOUT);
    let code = confirmation_code(&screen);
    // Meaning (the first of the list), then the work order, then the code.
    tmux.keys(&["Enter"]);
    tmux.type_text("WO-4711");
    tmux.keys(&["Enter"]);

    // A wrong code starts nothing.
    let wrong = if code == "AAAA" { "CCCC" } else { "AAAA" };
    tmux.type_text(wrong);
    tmux.keys(&["Enter"]);
    tmux.wait_for("does not match", SCREEN_TIMEOUT);
    assert!(
        !demo.paths.target.exists(),
        "a wrong code must not touch the target"
    );

    tmux.type_text(&code);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("RESTORE SUCCEEDED", RESTORE_TIMEOUT);
    assert!(screen.contains("version 2026.03-demo"), "{screen}");
    assert!(
        screen.contains("Next:") && screen.contains("power off"),
        "{screen}"
    );
    let audit_seq = field_after(&screen, "Audit record");
    let checkpoint = field_after(&screen, "Checkpoint");
    assert!(checkpoint.starts_with("size "), "{screen}");
    // The checkpoint's QR code on its own screen at 80x25, captioned.
    tmux.keys(&["c"]);
    let screen = tmux.wait_for("checkpoint: size", SCREEN_TIMEOUT);
    assert!(screen.contains('▀') || screen.contains('▄'), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("RESTORE SUCCEEDED", SCREEN_TIMEOUT);
    // The restore certificate, written to the audit partition.
    tmux.keys(&["p"]);
    let screen = tmux.wait_for("Certificate", SCREEN_TIMEOUT);
    let certificate = demo
        .paths
        .audit
        .join(format!("certificate-{audit_seq}.pdf"));
    assert!(screen.contains("written to"), "{screen}");
    let pdf = std::fs::read(&certificate).expect("the certificate was written");
    assert!(pdf.starts_with(b"%PDF"), "not a PDF");
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);
    assert!(screen.contains("The demo's files are kept in"), "{screen}");

    let check = run(Command::new(reliquary_bin())
        .arg("check")
        .arg(&demo.paths.image)
        .arg(&demo.paths.target)
        .arg("--trust")
        .arg(&demo.paths.trust));
    assert!(check.0, "reliquary check failed:\n{}", check.1);

    let records = verified_records(&demo.paths.audit);
    let started = find_record(&records, "RestoreStarted");
    let finished = find_record(&records, "RestoreFinished");
    for record in [started, finished] {
        assert_eq!(
            record["record"]["meta"]["operator"]["id"], "tech1",
            "{record}"
        );
        assert_eq!(
            record["record"]["meta"]["operator"]["name"],
            "Demo Technician"
        );
    }
    assert_eq!(finished["result"], "success", "{finished}");
    assert_eq!(
        finished["seq"].to_string(),
        audit_seq,
        "the result screen names the record"
    );
    assert_eq!(
        finished["record"]["payload"]["started_seq"], started["seq"],
        "{finished}"
    );
}

/// The full check goes through the same door as `reliquary verify`
/// (`ops::verify_and_record`): shown VERIFIED and recorded with the
/// signed-in operator.
#[test]
fn v_on_the_image_details_verifies_every_chunk_and_records_it() {
    let Some(demo) = Demo::start("verify", 64) else {
        return;
    };
    let tmux = &demo.tmux;
    tmux.wait_for("Operator id", START_TIMEOUT);
    sign_in(tmux, "tech1", "111111");
    tmux.wait_for("trusted", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Image details", SCREEN_TIMEOUT);
    tmux.keys(&["v"]);
    tmux.wait_for("VERIFIED", RESTORE_TIMEOUT);
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED", SCREEN_TIMEOUT);
    let records = verified_records(&demo.paths.audit);
    let verified = find_record(&records, "ImageVerified");
    assert_eq!(
        verified["record"]["payload"]["result"], "Passed",
        "{verified}"
    );
    assert_eq!(
        verified["record"]["meta"]["operator"]["id"], "tech1",
        "{verified}"
    );
}

#[test]
fn cancelling_mid_restore_leaves_the_target_wiped_and_logs_the_cancel() {
    // A bigger disk keeps the restore running while the keys arrive.
    let Some(demo) = Demo::start("cancel", 768) else {
        return;
    };
    let tmux = &demo.tmux;
    start_restore_as(tmux, "qa2", "222222", "WO-4712");
    // Enter started the restore; while it runs, the screen names its
    // start record. Esc asks, Right picks "Cancel restore", Enter confirms.
    // A single Esc alone must not cancel.
    let screen = tmux.wait_for("The start of this restore is audit record", SCREEN_TIMEOUT);
    let shown_start = field_after(&screen, "audit record")
        .trim_end_matches('.')
        .to_string();
    tmux.keys(&["Escape"]);
    tmux.wait_for("Cancel the restore?", SCREEN_TIMEOUT);
    tmux.keys(&["Right", "Enter"]);
    let screen = tmux.wait_for("RESTORE CANCELLED", RESTORE_TIMEOUT);
    assert!(screen.contains("wiped"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);

    let target = std::fs::read(&demo.paths.target).expect("the target file exists");
    assert!(target.len() >= 1 << 20, "target is {} bytes", target.len());
    assert!(
        target[..1 << 20].iter().all(|&b| b == 0),
        "the first MiB of a cancelled target must be zero"
    );
    let records = verified_records(&demo.paths.audit);
    let finished = find_record(&records, "RestoreFinished");
    assert_eq!(finished["result"], "cancelled", "{finished}");
    assert_eq!(finished["record"]["meta"]["operator"]["id"], "qa2");
    let started = find_record(&records, "RestoreStarted");
    assert_eq!(
        started["seq"].to_string(),
        shown_start,
        "the restoring screen names the start record"
    );
}

#[test]
fn a_restore_records_the_meaning_and_the_work_order_in_restore_started() {
    let Some(demo) = Demo::start("wo4711", 64) else {
        return;
    };
    let tmux = &demo.tmux;
    start_restore_as(tmux, "tech1", "111111", "WO-4711");
    tmux.wait_for("RESTORE SUCCEEDED", RESTORE_TIMEOUT);
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);
    let records = verified_records(&demo.paths.audit);
    let started = find_record(&records, "RestoreStarted");
    let payload = &started["record"]["payload"];
    assert_eq!(payload["reason"], "WO-4711", "{started}");
    assert_eq!(
        payload["meaning"], "replacement after disk failure",
        "{started}"
    );
}

#[test]
fn cancel_and_quit_says_the_disk_is_wiped_and_exits_130() {
    let Some(demo) = Demo::start("quit130", 768) else {
        return;
    };
    let tmux = &demo.tmux;
    start_restore_as(tmux, "tech1", "111111", "WO-4713");
    tmux.wait_for("Restoring", SCREEN_TIMEOUT);
    tmux.keys(&["q"]);
    tmux.wait_for("Quit during a restore?", SCREEN_TIMEOUT);
    tmux.keys(&["Right", "Enter"]);
    let screen = tmux.wait_for("EXITED 130", RESTORE_TIMEOUT);
    assert!(screen.contains("left wiped"), "{screen}");
}

#[test]
fn five_wrong_pins_lock_the_id_and_each_failure_is_logged_without_the_pin() {
    let Some(demo) = Demo::start("lockout", 64) else {
        return;
    };
    let tmux = &demo.tmux;
    tmux.wait_for("Operator id", START_TIMEOUT);
    const WRONG: &str = "987654";
    sign_in(tmux, "tech1", WRONG);
    for attempt in 1..=5 {
        if attempt > 1 {
            // After a refusal the id stays and the PIN field has the keys.
            tmux.type_text(WRONG);
            tmux.keys(&["Enter"]);
        }
        let expected = if attempt < 5 {
            format!("Attempt {attempt} of 5")
        } else {
            "locked after 5 failed sign-ins".to_string()
        };
        let screen = tmux.wait_for(&expected, SCREEN_TIMEOUT);
        assert!(!screen.contains(WRONG), "the PIN is on screen:\n{screen}");
    }
    // The right PIN no longer opens a locked id; another id still signs in.
    clear_sign_in(tmux);
    sign_in(tmux, "tech1", "111111");
    tmux.wait_for("locked after 5", SCREEN_TIMEOUT);
    clear_sign_in(tmux);
    sign_in(tmux, "qa2", "222222");
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);

    let records = verified_records(&demo.paths.audit);
    let failures: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["record"]["kind"] == "SignInFailed")
        .collect();
    // The try with the right PIN on the locked id is refused without a
    // record: the lock shows once.
    assert_eq!(failures.len(), 5, "{records:?}");
    for (n, record) in failures.iter().enumerate() {
        let payload = &record["record"]["payload"];
        assert_eq!(payload["operator_id"], "tech1", "{record}");
        assert_eq!(payload["locked"], n >= 4, "{record}");
    }
    let log = std::fs::read(demo.paths.audit.join("audit.log")).expect("reads the log");
    for pin in [WRONG, "111111"] {
        assert!(
            !log.windows(pin.len()).any(|w| w == pin.as_bytes()),
            "the PIN {pin} is in the audit log"
        );
    }
}

#[test]
fn a_stick_with_a_problem_shows_not_ready_and_offers_no_sign_in() {
    let Some(demo) = Demo::prepared("notready") else {
        return;
    };
    let p = &demo.paths;
    let cases: [(&str, &str, StickChange, StickChange); 5] = [
        (
            "missing-audit",
            "audit log:",
            Box::new(|| std::fs::rename(&p.audit, p.root.join("audit.away")).expect("move")),
            Box::new(|| std::fs::rename(p.root.join("audit.away"), &p.audit).expect("move")),
        ),
        (
            "threshold",
            "holds only 1 usable key",
            Box::new(|| std::fs::write(p.trust.join("policy"), "threshold 5\n").expect("write")),
            Box::new(|| std::fs::remove_file(p.trust.join("policy")).expect("remove")),
        ),
        (
            "operators",
            "operators:",
            Box::new(|| {
                std::fs::rename(p.trust.join("operators"), p.root.join("operators.away"))
                    .expect("move");
                std::fs::write(p.trust.join("operators"), "tech1 Demo Technician\n")
                    .expect("write");
            }),
            Box::new(|| {
                std::fs::rename(p.root.join("operators.away"), p.trust.join("operators"))
                    .expect("move")
            }),
        ),
        (
            "vault",
            "vault:",
            Box::new(|| std::fs::rename(&p.vault, p.root.join("vault.away")).expect("move")),
            Box::new(|| std::fs::rename(p.root.join("vault.away"), &p.vault).expect("move")),
        ),
        (
            "corrupt-log",
            "audit log:",
            Box::new(|| flip_byte(&p.audit.join("audit.log"), 4096 + 100)),
            Box::new(|| flip_byte(&p.audit.join("audit.log"), 4096 + 100)),
        ),
    ];
    for (name, expected, break_it, mend_it) in &cases {
        break_it();
        let tmux = demo.on_stick(name);
        // The last part drawn: a capture taken mid-draw holds only the title.
        let screen = tmux.wait_for("What to do", SCREEN_TIMEOUT);
        assert!(screen.contains("Stick not ready"), "{name}: {screen}");
        assert!(screen.contains(expected), "{name}: {screen}");
        // The stick has no shell: no advice to run a command on it.
        assert!(!screen.contains("run `reliquary"), "{name}: {screen}");
        // Keys that would sign in or start anything do nothing here.
        tmux.type_text("tech1");
        tmux.keys(&["Enter"]);
        let screen = tmux.wait_for("Stick not ready", SCREEN_TIMEOUT);
        assert!(!screen.contains("Operator id"), "{name}: {screen}");
        tmux.keys(&["q"]);
        tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);
        mend_it();
    }
    assert!(!p.target.exists(), "nothing may touch the target");
    let tmux = demo.on_stick("mended");
    tmux.wait_for("Operator id", SCREEN_TIMEOUT);
}

#[test]
fn a_stick_without_room_on_the_audit_partition_is_not_ready() {
    let Some(demo) = Demo::prepared("nospace") else {
        return;
    };
    let p = &demo.paths;
    let small = p.root.join("small");
    let Some(_unmount) = small_tmpfs(&small, "512k") else {
        return;
    };
    let (ok, out) = run(Command::new("cp").arg("-a").arg(&p.audit).arg(&small));
    assert!(ok, "{out}");
    std::fs::remove_dir_all(&p.audit).expect("rm");
    std::os::unix::fs::symlink(small.join("audit"), &p.audit).expect("symlink");
    let tmux = demo.on_stick("nospace");
    let screen = tmux.wait_for("Stick not ready", SCREEN_TIMEOUT);
    assert!(screen.contains("audit space:"), "{screen}");
    assert!(screen.contains("free space"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);
}

#[test]
fn an_image_whose_chunk_fails_during_a_restore_is_damaged_for_the_session() {
    let Some(demo) = Demo::prepared("damaged") else {
        return;
    };
    let p = &demo.paths;
    // The middle of the image is chunk data: the vault scan (signatures,
    // manifest, index) still trusts it; the restore's chunk check will not.
    let len = std::fs::metadata(&p.image).expect("stat").len();
    flip_byte(&p.image, len / 2);
    let tmux = demo.on_stick("damaged");
    tmux.wait_for("Operator id", SCREEN_TIMEOUT);
    sign_in(&tmux, "tech1", "111111");
    tmux.wait_for("trusted", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Image details", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("target.raw", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    let code = confirmation_code(&tmux.wait_for("type this code:", SCREEN_TIMEOUT));
    confirm_with(&tmux, "WO-4714", &code);
    let screen = tmux.wait_for("RESTORE FAILED", RESTORE_TIMEOUT);
    assert!(screen.contains("marked damaged"), "{screen}");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    assert!(screen.contains("damaged"), "{screen}");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("cannot be chosen", SCREEN_TIMEOUT);
    assert!(!screen.contains("Image details"), "{screen}");
    // Signing out and in again keeps the mark: it holds for the session.
    tmux.keys(&["Escape"]);
    tmux.wait_for("Operator id", SCREEN_TIMEOUT);
    std::thread::sleep(Duration::from_millis(300));
    sign_in(&tmux, "tech1", "111111");
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("cannot be chosen", SCREEN_TIMEOUT);
}

/// Breaks or mends one part of a prepared stick.
type StickChange<'a> = Box<dyn Fn() + 'a>;

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("opens");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("reads");
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, offset).expect("writes");
}
