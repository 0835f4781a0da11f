//! The tmux harness of the TUI tests: the demo's files, a private tmux
//! server per test, and the keys and screens of the restore flow.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reliquary_tests::{reliquary_bin, skip_or_fail, workspace_bin};

pub const WIDTH: u16 = 80;
pub const HEIGHT: u16 = 25;
/// The demo prepares its disk and image before the first screen.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
pub const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(180);

/// Esc on the sign-in screen, then a pause: an Esc followed at once by a
/// letter reads as Alt+letter.
pub fn clear_sign_in(tmux: &Tmux) {
    tmux.keys(&["Escape"]);
    tmux.wait_for("Operator id   _", SCREEN_TIMEOUT);
    std::thread::sleep(Duration::from_millis(300));
}

/// Types an id, Enter, a PIN, Enter on the sign-in screen.
pub fn sign_in(tmux: &Tmux, id: &str, pin: &str) {
    tmux.type_text(id);
    tmux.keys(&["Enter"]);
    tmux.type_text(pin);
    tmux.keys(&["Enter"]);
}

/// Signs in as tech1 and chooses the vault's image: the target list.
pub fn open_targets(tmux: &Tmux) {
    open_targets_as(tmux, "tech1", "111111");
}

/// Signs in as `id` with `pin` and chooses the vault's image: the target
/// list.
pub fn open_targets_as(tmux: &Tmux, id: &str, pin: &str) {
    tmux.wait_for("Operator id", START_TIMEOUT);
    sign_in(tmux, id, pin);
    tmux.wait_for("Images in the vault", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Image details", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    tmux.wait_for("Targets for", SCREEN_TIMEOUT);
}

/// Signs in as `id`, chooses the vault's image and the demo's target, and
/// confirms with the shown code and the work order `reason`: the restore
/// starts.
pub fn start_restore_as(tmux: &Tmux, id: &str, pin: &str, reason: &str) {
    open_targets_as(tmux, id, pin);
    tmux.wait_for("target.raw", SCREEN_TIMEOUT);
    tmux.keys(&["Enter"]);
    let code = confirmation_code(&tmux.wait_for("type this code:", SCREEN_TIMEOUT));
    confirm_with(tmux, reason, &code);
}

/// Keeps the first meaning, types the work order, then the code, Enter.
pub fn confirm_with(tmux: &Tmux, reason: &str, code: &str) {
    tmux.keys(&["Enter"]);
    tmux.type_text(reason);
    tmux.keys(&["Enter"]);
    tmux.type_text(code);
    tmux.keys(&["Enter"]);
}

/// A demo running in its own tmux server, with its files in a temp dir.
pub struct Demo {
    pub tmux: Tmux,
    pub paths: DemoPaths,
    _dir: tempfile::TempDir,
}

pub struct DemoPaths {
    pub root: PathBuf,
    pub vault: PathBuf,
    pub image: PathBuf,
    pub target: PathBuf,
    pub trust: PathBuf,
    pub audit: PathBuf,
}

impl Demo {
    pub fn start(name: &str, size_mib: u64) -> Option<Demo> {
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
    pub fn prepared(name: &str) -> Option<Demo> {
        Demo::prepared_with(name, 64)
    }

    /// [`Demo::prepared`] with a disk of `size_mib`.
    pub fn prepared_with(name: &str, size_mib: u64) -> Option<Demo> {
        let demo = Demo::start(name, size_mib)?;
        demo.tmux.wait_for("Operator id", START_TIMEOUT);
        demo.tmux.keys(&["C-c"]);
        demo.tmux.wait_for("EXITED 0", SCREEN_TIMEOUT);
        Some(demo)
    }

    /// The TUI on the demo's files without `--demo`, as a stick runs it.
    pub fn on_stick(&self, name: &str) -> Tmux {
        self.on_stick_with(name, &[&self.paths.target])
    }

    /// [`Demo::on_stick`] offering these files as targets.
    pub fn on_stick_with(&self, name: &str, targets: &[&Path]) -> Tmux {
        let p = &self.paths;
        let target_files: String = targets
            .iter()
            .map(|t| format!(" --target-file {}", t.display()))
            .collect();
        let command = format!(
            "{} --vault {} --trust {} --audit {}{target_files}; echo EXITED $?; sleep 600",
            workspace_bin("recovery-tui").display(),
            p.vault.display(),
            p.trust.display(),
            p.audit.display(),
        );
        Tmux::start(&format!("{}-{name}", self.tmux.socket), &command)
    }

    /// The demo image restored in full by `reliquary restore` onto a new
    /// file: the bytes a restore in the TUI must leave. Unrecorded, but
    /// still signed in: the demo's trust store lists operators.
    pub fn reference_restore(&self) -> PathBuf {
        use std::io::Write;
        let p = &self.paths;
        let reference = p.root.join("reference.raw");
        let mut child = Command::new(reliquary_bin())
            .arg("restore")
            .arg(&p.image)
            .arg(&reference)
            .arg("--trust")
            .arg(&p.trust)
            .args(["--no-audit", "--yes", "--create-file"])
            .args(["--operator", "tech1", "--pin-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs reliquary restore");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"111111\n")
            .expect("writes the PIN");
        let out = child.wait_with_output().expect("waits");
        assert!(
            out.status.success(),
            "the reference restore failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }
}

/// A private tmux server (its own socket), killed when dropped.
pub struct Tmux {
    pub socket: String,
}

impl Tmux {
    pub fn start(name: &str, command: &str) -> Tmux {
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

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]).env_remove("TMUX");
        cmd
    }

    pub fn keys(&self, keys: &[&str]) {
        let (ok, out) = run(self.command().args(["send-keys", "-t", "tui"]).args(keys));
        assert!(ok, "tmux send-keys failed: {out}");
    }

    pub fn type_text(&self, text: &str) {
        let (ok, out) = run(self.command().args(["send-keys", "-t", "tui", "-l", text]));
        assert!(ok, "tmux send-keys failed: {out}");
    }

    pub fn capture(&self) -> String {
        run(self.command().args(["capture-pane", "-p", "-t", "tui"])).1
    }

    /// Waits until the screen shows `needle`; returns the screen.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
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
pub fn run(cmd: &mut Command) -> (bool, String) {
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
pub fn confirmation_code(screen: &str) -> String {
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
pub fn field_after(screen: &str, label: &str) -> String {
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
pub fn verified_records(audit: &Path) -> Vec<serde_json::Value> {
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

pub fn find_record<'a>(records: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    records
        .iter()
        .rev()
        .find(|r| r["record"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} record in {records:?}"))
}

/// The two files hold the same bytes.
pub fn assert_same_bytes(expected: &Path, actual: &Path) {
    use std::io::Read;
    let (mut a, mut b) = (
        std::fs::File::open(expected).expect("opens"),
        std::fs::File::open(actual).expect("opens"),
    );
    assert_eq!(
        a.metadata().expect("stat").len(),
        b.metadata().expect("stat").len(),
        "{} and {} differ in size",
        expected.display(),
        actual.display()
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let n = a.read(&mut x).expect("reads");
        if n == 0 {
            return;
        }
        b.read_exact(&mut y[..n]).expect("reads");
        assert!(
            x[..n] == y[..n],
            "{} differs from {} in the MiB at byte {offset}",
            actual.display(),
            expected.display()
        );
        offset += n as u64;
    }
}

/// Unmounts a test mount when dropped.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (`mount -o size=`) on the new directory
/// `dir`; `None` (after skip_or_fail) where mounting is not allowed.
pub fn small_tmpfs(dir: &Path, size: &str) -> Option<Unmount> {
    std::fs::create_dir(dir).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        skip_or_fail("cannot mount a small tmpfs (needs root)");
        return None;
    }
    Some(Unmount(dir.to_path_buf()))
}
