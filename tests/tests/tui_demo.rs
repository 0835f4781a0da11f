//! Smoke tests of the real `recovery-tui` binary, driven in tmux at 80x25:
//! the README's demo from sign-in to a verified restore, a cancel in the
//! middle of a restore, the PIN lockout, a stick that is not ready, and an
//! image whose chunk fails during a restore.
//!
//! Needs `tmux` and the `recovery-tui` and `reliquary` binaries of this
//! profile (`cargo test --workspace` builds them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reliquary_tests::{reliquary_bin, skip_or_fail, workspace_bin};

const WIDTH: u16 = 80;
const HEIGHT: u16 = 25;
/// The demo prepares its disk and image before the first screen.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn demo_restores_the_image_and_logs_it_with_the_operator() {
    let Some(demo) = Demo::start("demo", 256) else {
        return;
    };
    let tmux = &demo.tmux;
    tmux.wait_for("Operator id", START_TIMEOUT);
    tmux.wait_for("tech1 PIN 1111", SCREEN_TIMEOUT);
    sign_in(tmux, "nobody", "1111");
    tmux.wait_for("id or PIN is wrong", SCREEN_TIMEOUT);
    clear_sign_in(tmux);
    sign_in(tmux, "tech1", "1111");
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

#[test]
fn cancelling_mid_restore_leaves_the_target_wiped_and_logs_the_cancel() {
    // A bigger disk keeps the restore running while the keys arrive.
    let Some(demo) = Demo::start("cancel", 768) else {
        return;
    };
    let tmux = &demo.tmux;
    tmux.wait_for("Operator id", START_TIMEOUT);
    sign_in(tmux, "qa2", "2222");
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Image details", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("target.raw", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    let code = confirmation_code(&tmux.wait_for("type this code:", SCREEN_TIMEOUT));
    confirm_with(tmux, "WO-4712", &code);
    // Enter started the restore; Esc asks, Right picks "Cancel restore",
    // Enter confirms. A single Esc alone must not cancel.
    tmux.wait_for("Restoring", SCREEN_TIMEOUT);
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
}

#[test]
fn a_restore_records_the_meaning_and_the_work_order_in_restore_started() {
    let Some(demo) = Demo::start("wo4711", 64) else {
        return;
    };
    let tmux = &demo.tmux;
    tmux.wait_for("Operator id", START_TIMEOUT);
    sign_in(tmux, "tech1", "1111");
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Image details", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("target.raw", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    let code = confirmation_code(&tmux.wait_for("type this code:", SCREEN_TIMEOUT));
    confirm_with(tmux, "WO-4711", &code);
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
    tmux.wait_for("Operator id", START_TIMEOUT);
    sign_in(tmux, "tech1", "1111");
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Image details", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("target.raw", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    let code = confirmation_code(&tmux.wait_for("type this code:", SCREEN_TIMEOUT));
    confirm_with(tmux, "WO-4713", &code);
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
    const WRONG: &str = "9876";
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
    sign_in(tmux, "tech1", "1111");
    tmux.wait_for("locked after 5", SCREEN_TIMEOUT);
    clear_sign_in(tmux);
    sign_in(tmux, "qa2", "2222");
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);

    let records = verified_records(&demo.paths.audit);
    let failures: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["record"]["kind"] == "SignInFailed")
        .collect();
    assert_eq!(failures.len(), 6, "{records:?}");
    for (n, record) in failures.iter().enumerate() {
        let payload = &record["record"]["payload"];
        assert_eq!(payload["operator_id"], "tech1", "{record}");
        assert_eq!(payload["locked"], n >= 4, "{record}");
    }
    let log = std::fs::read(demo.paths.audit.join("audit.log")).expect("reads the log");
    for pin in [WRONG, "1111"] {
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
        let screen = tmux.wait_for("Stick not ready", SCREEN_TIMEOUT);
        assert!(screen.contains(expected), "{name}: {screen}");
        assert!(screen.contains("What to do"), "{name}: {screen}");
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
    std::fs::create_dir(&small).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        skip_or_fail("cannot mount a small tmpfs (needs root)");
        return;
    }
    let _unmount = Unmount(small.clone());
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
    sign_in(&tmux, "tech1", "1111");
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
    sign_in(&tmux, "tech1", "1111");
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("cannot be chosen", SCREEN_TIMEOUT);
}

/// Breaks or mends one part of a prepared stick.
type StickChange<'a> = Box<dyn Fn() + 'a>;

/// Esc on the sign-in screen, then a pause: an Esc followed at once by a
/// letter reads as Alt+letter.
fn clear_sign_in(tmux: &Tmux) {
    tmux.keys(&["Escape"]);
    tmux.wait_for("Operator id   _", SCREEN_TIMEOUT);
    std::thread::sleep(Duration::from_millis(300));
}

/// Types an id, Enter, a PIN, Enter on the sign-in screen.
fn sign_in(tmux: &Tmux, id: &str, pin: &str) {
    tmux.type_text(id);
    tmux.keys(&["Enter"]);
    tmux.type_text(pin);
    tmux.keys(&["Enter"]);
}

/// Keeps the first meaning, types the work order, then the code, Enter.
fn confirm_with(tmux: &Tmux, reason: &str, code: &str) {
    tmux.keys(&["Enter"]);
    tmux.type_text(reason);
    tmux.keys(&["Enter"]);
    tmux.type_text(code);
    tmux.keys(&["Enter"]);
}

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

/// Unmounts a test mount when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A demo running in its own tmux server, with its files in a temp dir.
struct Demo {
    tmux: Tmux,
    paths: DemoPaths,
    _dir: tempfile::TempDir,
}

struct DemoPaths {
    root: PathBuf,
    vault: PathBuf,
    image: PathBuf,
    target: PathBuf,
    trust: PathBuf,
    audit: PathBuf,
}

impl Demo {
    fn start(name: &str, size_mib: u64) -> Option<Demo> {
        if Command::new("tmux")
            .arg("-V")
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            skip_or_fail("tmux is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("demo");
        let command = format!(
            "{} --demo --demo-dir {} --demo-size-mib {size_mib}; echo EXITED $?; sleep 600",
            workspace_bin("recovery-tui").display(),
            root.display()
        );
        let tmux = Tmux::start(name, &command);
        let paths = DemoPaths {
            root: root.clone(),
            vault: root.join("vault"),
            image: root.join("vault/win7-cnc-demo.rimg"),
            target: root.join("target.raw"),
            trust: root.join("trust"),
            audit: root.join("audit"),
        };
        Some(Demo {
            tmux,
            paths,
            _dir: dir,
        })
    }

    /// A small demo whose files are made, then the demo quit, so a test
    /// can run the TUI on them as on a stick.
    fn prepared(name: &str) -> Option<Demo> {
        let demo = Demo::start(name, 64)?;
        demo.tmux.wait_for("Operator id", START_TIMEOUT);
        demo.tmux.keys(&["C-c"]);
        demo.tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);
        Some(demo)
    }

    /// The TUI on the demo's files without `--demo`, as a stick runs it.
    fn on_stick(&self, name: &str) -> Tmux {
        let p = &self.paths;
        let command = format!(
            "{} --vault {} --trust {} --audit {} --target-file {}; echo EXITED $?; sleep 600",
            workspace_bin("recovery-tui").display(),
            p.vault.display(),
            p.trust.display(),
            p.audit.display(),
            p.target.display()
        );
        Tmux::start(&format!("{}-{name}", self.tmux.socket), &command)
    }
}

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("reliquary-tui-{name}-{}", std::process::id()),
        };
        let (ok, out) = run(tmux
            .command()
            .args(["new-session", "-d", "-s", "tui", "-x"])
            .arg(WIDTH.to_string())
            .arg("-y")
            .arg(HEIGHT.to_string())
            .arg(command));
        assert!(ok, "tmux new-session failed: {out}");
        tmux
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]).env_remove("TMUX");
        cmd
    }

    fn keys(&self, keys: &[&str]) {
        let (ok, out) = run(self.command().args(["send-keys", "-t", "tui"]).args(keys));
        assert!(ok, "tmux send-keys failed: {out}");
    }

    fn type_text(&self, text: &str) {
        let (ok, out) = run(self.command().args(["send-keys", "-t", "tui", "-l", text]));
        assert!(ok, "tmux send-keys failed: {out}");
    }

    fn capture(&self) -> String {
        run(self.command().args(["capture-pane", "-p", "-t", "tui"])).1
    }

    /// Waits until the screen shows `needle`; returns the screen.
    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            let screen = self.capture();
            if screen.contains(needle) {
                return screen;
            }
            if started.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {needle:?}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// Runs a command; returns whether it succeeded and its stdout + stderr.
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The code after "type this code:" on the confirmation screen.
fn confirmation_code(screen: &str) -> String {
    let line = screen
        .lines()
        .find(|l| l.contains("type this code:"))
        .unwrap_or_else(|| panic!("no code on the screen:\n{screen}"));
    let after = line.split("type this code:").nth(1).unwrap_or("");
    let code = after
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches('│')
        .to_string();
    assert_eq!(code.len(), 4, "bad code {code:?} in {line:?}");
    code
}

/// The first word after `label` on the screen.
fn field_after(screen: &str, label: &str) -> String {
    let line = screen
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no {label:?} on the screen:\n{screen}"));
    let after = line.split(label).nth(1).unwrap_or("").trim();
    match label {
        "Checkpoint" => after.trim_end_matches('│').trim().to_string(),
        _ => after.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// `reliquary audit verify` must pass; returns `audit export --format jsonl`.
fn verified_records(audit: &Path) -> Vec<serde_json::Value> {
    let (ok, out) = run(Command::new(reliquary_bin())
        .args(["audit", "verify", "--dir"])
        .arg(audit)
        .arg("--key")
        .arg(audit.join("appliance.pub")));
    assert!(ok, "reliquary audit verify failed:\n{out}");
    let output = Command::new(reliquary_bin())
        .args(["audit", "export", "--format", "jsonl", "--dir"])
        .arg(audit)
        .output()
        .expect("runs reliquary audit export");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn find_record<'a>(records: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    records
        .iter()
        .rev()
        .find(|r| r["record"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} record in {records:?}"))
}
