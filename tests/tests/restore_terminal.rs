//! Issue 22: an operator at a terminal signs in to `reliquary restore`
//! with the PIN asked for and never echoed, and confirms; with the PIN
//! piped in, the confirmation is asked on the terminal. Played in tmux.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and tmux.

mod tui;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reliquary_tests::{reliquary_bin, reliquary_with_stdin, skip_or_fail};
use tui::Tmux;

const TIMEOUT: Duration = Duration::from_secs(60);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn ok(args: &[&str], stdin: &str) {
    let out = reliquary_with_stdin(args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_pin_is_asked_with_echo_off_and_a_piped_pin_is_confirmed_on_the_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        skip_or_fail("tmux is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let key = t.join("eng.key");
    ok(&["keygen", "--out", s(&key), "--name", "A. Engineer"], "");
    let trust = t.join("trust");
    std::fs::create_dir(&trust).expect("trust");
    std::fs::copy(t.join("eng.key.pub"), trust.join("eng.pub")).expect("key");
    ok(
        &[
            "operators",
            "add",
            "--trust",
            s(&trust),
            "op7",
            "--name",
            "Alice Jones",
        ],
        "471193\n",
    );
    let disk = t.join("disk.raw");
    std::fs::write(&disk, vec![0x5a; 1 << 20]).expect("disk");
    let image = t.join("hmi.rimg");
    let capture = [
        "-q",
        "capture",
        s(&disk),
        "-o",
        s(&image),
        "--key",
        s(&key),
        "--name",
        "HMI",
        "--image-version",
        "1",
    ];
    ok(&capture, "");
    let audit = t.join("audit");
    ok(&["audit", "init", "--dir", s(&audit)], "");
    let restore = |target: &str| {
        format!(
            "{} -q restore {} {} --create-file --trust {} --audit {} --operator op7 \
             --meaning replacement --reason WO-4711",
            reliquary_bin().display(),
            s(&image),
            s(&t.join(target)),
            s(&trust),
            s(&audit)
        )
    };

    // At a terminal: a prompt, no echo, then the confirmation.
    let tmux = Tmux::start("pin", &format!("{}; sleep 120", restore("a.raw")));
    tmux.wait_for("PIN for op7:", TIMEOUT);
    tmux.type_text("471193");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("Type `yes` to continue:", TIMEOUT);
    assert!(!screen.contains("471193"), "the PIN was echoed:\n{screen}");
    // The question claims no more than a restore writes.
    assert!(screen.contains("About to OVERWRITE:"), "{screen}");
    assert!(!screen.contains("every byte"), "{screen}");
    tmux.type_text("yes");
    tmux.keys(&["Enter"]);
    tmux.wait_for("RESTORED", TIMEOUT);
    drop(tmux);

    // The PIN on standard input: the confirmation is asked on the terminal.
    let piped = format!("echo 471193 | {} --pin-stdin; sleep 120", restore("b.raw"));
    let tmux = Tmux::start("piped", &piped);
    tmux.wait_for("Type `yes` to continue:", TIMEOUT);
    tmux.type_text("yes");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("RESTORED", TIMEOUT);
    assert!(!screen.contains("471193"), "{screen}");
    assert!(t.join("a.raw").exists() && t.join("b.raw").exists());
}
