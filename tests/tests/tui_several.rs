//! The TUI restores several targets at once: Space marks them, one typed
//! code confirms them all, the restore screen shows one progress row per
//! target and the result one row per target, and every target ends with
//! the bytes of a full restore, or, where it failed, is wiped and says why.
//!
//! Needs `tmux` and the `recovery-tui` and `reliquary` binaries of this
//! profile (`cargo build --workspace --bins`).

mod tui;

use std::time::Instant;

use tui::*;

#[test]
fn two_marked_targets_are_restored_at_once_with_a_row_each() {
    // A bigger disk keeps the restore running while the screen is read.
    let Some(demo) = Demo::prepared_with("several", 768) else {
        return;
    };
    let p = &demo.paths;
    let second = p.root.join("second.raw");
    let tmux = demo.on_stick_with("tui", &[&p.target, &second]);
    open_targets(&tmux);
    tmux.wait_for("second.raw", SCREEN_TIMEOUT);
    tmux.keys(&["Space", "Down", "Space"]);
    let screen = tmux.wait_for("[x] /", SCREEN_TIMEOUT);
    let marked = |screen: &str| screen.lines().filter(|l| l.contains("[x] /")).count();
    let screen = if marked(&screen) == 2 {
        screen
    } else {
        std::thread::sleep(std::time::Duration::from_millis(300));
        tmux.capture()
    };
    assert_eq!(marked(&screen), 2, "both targets are marked:\n{screen}");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("type this code:", SCREEN_TIMEOUT);
    assert!(
        screen.contains("onto 2 targets at once")
            && screen.contains("target.raw")
            && screen.contains("second.raw"),
        "the confirmation lists every target:\n{screen}"
    );
    let code = confirmation_code(&screen);
    confirm_with(&tmux, "WO-4716", &code);

    // One progress row per target, each with its bytes, rate and ETA.
    tmux.wait_for("onto 2 targets", SCREEN_TIMEOUT);
    let started = Instant::now();
    loop {
        let screen = tmux.capture();
        let rows = screen.lines().filter(|l| l.contains("MB/s  ETA")).count();
        if rows == 2 {
            break;
        }
        assert!(
            !screen.contains("RESTORE ") && started.elapsed() < RESTORE_TIMEOUT,
            "two progress rows never showed:\n{screen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let screen = tmux.wait_for("RESTORE SUCCEEDED on all 2 targets", RESTORE_TIMEOUT);
    let results = screen
        .lines()
        .filter(|l| l.contains("OK ") && l.contains(".raw"))
        .count();
    assert_eq!(results, 2, "one result row per target:\n{screen}");
    assert_eq!(
        screen.matches("read back and matching").count(),
        2,
        "{screen}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);

    let reference = demo.reference_restore();
    assert_same_bytes(&reference, &p.target);
    assert_same_bytes(&reference, &second);
    let records = verified_records(&p.audit);
    let finished: Vec<_> = records
        .iter()
        .filter(|r| r["record"]["kind"] == "RestoreFinished")
        .collect();
    assert_eq!(finished.len(), 2, "one end per target: {records:?}");
    for record in finished {
        assert_eq!(record["result"], "success", "{record}");
    }
}

#[test]
fn a_target_that_fails_is_wiped_and_reported_while_the_other_is_restored() {
    let Some(demo) = Demo::prepared_with("onefails", 256) else {
        return;
    };
    let p = &demo.paths;
    // The second target's file system fills up long before the image fits.
    let small = p.root.join("small");
    let Some(_unmount) = small_tmpfs(&small, "24m") else {
        return;
    };
    let full = small.join("full.raw");
    let tmux = demo.on_stick_with("tui", &[&p.target, &full]);
    open_targets(&tmux);
    tmux.wait_for("full.raw", SCREEN_TIMEOUT);
    tmux.keys(&["Space", "Down", "Space", "Enter"]);
    let code = confirmation_code(&tmux.wait_for("type this code:", SCREEN_TIMEOUT));
    confirm_with(&tmux, "WO-4717", &code);
    let screen = tmux.wait_for("RESTORE FAILED on 1 of 2 targets", RESTORE_TIMEOUT);
    let row = |word: &str, file: &str| screen.lines().any(|l| l.contains(word) && l.contains(file));
    assert!(row("OK ", "target.raw"), "{screen}");
    assert!(row("FAILED", "full.raw"), "{screen}");
    assert!(screen.contains("left wiped:"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);

    assert_same_bytes(&demo.reference_restore(), &p.target);
    let wiped = std::fs::read(&full).expect("the failed target exists");
    assert!(
        wiped.len() >= 1 << 20 && wiped[..1 << 20].iter().all(|&b| b == 0),
        "the failed target's first MiB is wiped"
    );
    let records = verified_records(&p.audit);
    let mut results: Vec<String> = records
        .iter()
        .filter(|r| r["record"]["kind"] == "RestoreFinished")
        .map(|r| r["result"].as_str().unwrap_or_default().to_string())
        .collect();
    results.sort();
    assert_eq!(results, ["failed", "success"], "{records:?}");
}
