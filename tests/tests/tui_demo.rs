//! Smoke tests of the real `recovery-tui` binary, driven in tmux at 80x25:
//! the README's demo from sign-in to a verified restore, and a cancel in
//! the middle of a restore.
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
    tmux.type_text("nobody");
    tmux.keys(&["Enter"]);
    tmux.wait_for("is not in this stick's operators list", SCREEN_TIMEOUT);
    tmux.type_text("tech1");
    tmux.keys(&["Enter"]);
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
    let audit_seq = field_after(&screen, "Audit record");
    let checkpoint = field_after(&screen, "Checkpoint");
    assert!(checkpoint.starts_with("size "), "{screen}");
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
    tmux.type_text("qa2");
    tmux.keys(&["Enter"]);
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Image details", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("target.raw", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    let code = confirmation_code(&tmux.wait_for("type this code:", SCREEN_TIMEOUT));
    tmux.type_text(&code);
    // Enter starts the restore; Esc asks, Right picks "Cancel restore",
    // Enter confirms. A single Esc alone must not cancel.
    tmux.keys(&["Enter"]);
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

/// A demo running in its own tmux server, with its files in a temp dir.
struct Demo {
    tmux: Tmux,
    paths: DemoPaths,
    _dir: tempfile::TempDir,
}

struct DemoPaths {
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
