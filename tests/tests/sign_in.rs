//! Every command that writes an audit record signs its operator in against
//! the trust store's operators list, and the sign-in cannot be abused
//! (issue 19): wrong PINs and unknown ids are refused and recorded, five
//! failures lock an id across processes until a supervisor unlocks it, and
//! an operators file cannot choose its own Argon2 cost or be writable by
//! anyone. Everything runs the real `reliquary` binary on plain files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reliquary_image::keys::{public_key_path, SigningKey};
use reliquary_tests::{reliquary_bin, skip_or_fail};

const TECH: (&str, &str) = ("tech1", "471100");
const SUPERVISOR: (&str, &str) = ("qa2", "582044");
const OTHER_TECH: (&str, &str) = ("op9", "909090");
const WRONG_PIN: &str = "000000";

/// A plant's files: an engineer's key, a trust store with three operators
/// (one a supervisor), a small signed image, its raw disk and an audit log.
struct Plant {
    dir: tempfile::TempDir,
    trust: PathBuf,
    audit: PathBuf,
    image: PathBuf,
    raw: PathBuf,
}

impl Plant {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("eng.key");
        SigningKey::generate_to_files(&key, Some("Plant Engineer")).expect("key");
        let trust = dir.path().join("trust");
        std::fs::create_dir(&trust).expect("trust dir");
        std::fs::copy(public_key_path(&key), trust.join("eng.pub")).expect("trusted key");
        for ((id, pin), name, role) in [
            (TECH, "A. Tech", "technician"),
            (SUPERVISOR, "Q. Adams", "supervisor"),
            (OTHER_TECH, "O. Nine", "technician"),
        ] {
            let out = run_with_stdin(
                Command::new(reliquary_bin())
                    .args(["operators", "add", "--trust"])
                    .arg(&trust)
                    .args([id, "--name", name, "--role", role]),
                pin,
            );
            assert!(out.status.success(), "operators add: {}", text(&out));
        }
        let raw = dir.path().join("disk.raw");
        let bytes: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&raw, bytes).expect("raw disk");
        let image = dir.path().join("disk.rimg");
        let out = Command::new(reliquary_bin())
            .arg("capture")
            .arg(&raw)
            .arg("-o")
            .arg(&image)
            .arg("--key")
            .arg(&key)
            .args(["--name", "small", "--chunk-size", "256K", "--all-sectors"])
            .args(["--sector-size", "512"])
            .output()
            .expect("capture");
        assert!(out.status.success(), "capture: {}", text(&out));
        let audit = dir.path().join("audit");
        let out = Command::new(reliquary_bin())
            .args(["audit", "init", "--dir"])
            .arg(&audit)
            .output()
            .expect("audit init");
        assert!(out.status.success(), "audit init: {}", text(&out));
        Self {
            dir,
            trust,
            audit,
            image,
            raw,
        }
    }

    /// `audit note` as `id`, with `pin` on stdin when given.
    fn note(&self, id: &str, pin: Option<&str>) -> Output {
        run_with_pin(
            Command::new(reliquary_bin())
                .args(["audit", "note", "--dir"])
                .arg(&self.audit)
                .arg("--trust")
                .arg(&self.trust)
                .args(["--operator", id, "--text", "shift handover"]),
            pin,
        )
    }

    /// The four commands that record (or, with `--no-audit`, would), as
    /// `id`: the name of each and its command line.
    fn recording_commands(&self, id: &str) -> Vec<(&'static str, Command)> {
        let mut restore = Command::new(reliquary_bin());
        restore
            .arg("restore")
            .arg(&self.image)
            .arg(self.restored())
            .arg("--trust")
            .arg(&self.trust)
            .args(["--no-audit", "--yes", "--create-file", "--operator", id]);
        let mut check = Command::new(reliquary_bin());
        check
            .arg("check")
            .arg(&self.image)
            .arg(&self.raw)
            .arg("--trust")
            .arg(&self.trust)
            .arg("--audit")
            .arg(&self.audit)
            .args(["--operator", id]);
        let mut verify = Command::new(reliquary_bin());
        verify
            .arg("verify")
            .arg(&self.image)
            .arg("--trust")
            .arg(&self.trust)
            .arg("--audit")
            .arg(&self.audit)
            .args(["--operator", id]);
        let mut note = Command::new(reliquary_bin());
        note.args(["audit", "note", "--dir"])
            .arg(&self.audit)
            .arg("--trust")
            .arg(&self.trust)
            .args(["--operator", id, "--text", "shift handover"]);
        vec![
            ("restore --no-audit", restore),
            ("check --audit", check),
            ("verify --audit", verify),
            ("audit note", note),
        ]
    }

    fn restored(&self) -> PathBuf {
        self.dir.path().join("restored.raw")
    }

    fn records(&self) -> Vec<serde_json::Value> {
        let out = Command::new(reliquary_bin())
            .args(["audit", "export", "--format", "jsonl", "--dir"])
            .arg(&self.audit)
            .output()
            .expect("audit export");
        assert!(out.status.success(), "audit export: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("jsonl"))
            .collect()
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(self.audit.join("audit.log"))
            .expect("log")
            .len()
    }

    fn audit_verifies(&self) {
        let out = Command::new(reliquary_bin())
            .args(["audit", "verify", "--dir"])
            .arg(&self.audit)
            .arg("--key")
            .arg(self.audit.join("appliance.pub"))
            .output()
            .expect("audit verify");
        assert!(out.status.success(), "audit verify: {}", text(&out));
    }
}

#[test]
fn restore_no_audit_check_verify_and_note_refuse_a_wrong_pin_an_unknown_id_and_no_pin() {
    let plant = Plant::new();
    for (name, _) in plant.recording_commands("x") {
        let command = |id: &str| {
            plant
                .recording_commands(id)
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, cmd)| cmd)
                .expect("command")
        };
        let before = plant.records().len();
        for (id, pin) in [(TECH.0, WRONG_PIN), ("nobody", TECH.1)] {
            let out = run_with_pin(&mut command(id), Some(pin));
            assert_eq!(out.status.code(), Some(4), "{name} as {id}: {}", text(&out));
            // The same words whether the id exists or not.
            assert!(
                text(&out).contains("the operator id or PIN is wrong"),
                "{name} as {id}: {}",
                text(&out)
            );
        }
        let out = run_with_pin(&mut command(TECH.0), None);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert!(
            text(&out).contains("give the PIN"),
            "{name}: {}",
            text(&out)
        );
        if name == "restore --no-audit" {
            assert!(!plant.restored().exists(), "{name} wrote the target");
        }

        let records = plant.records();
        let failed: Vec<&serde_json::Value> = records[before..]
            .iter()
            .map(|r| &r["record"])
            .filter(|r| r["kind"] == "SignInFailed")
            .collect();
        if name == "restore --no-audit" {
            // No log: refused, and recorded nowhere.
            assert_eq!(records.len(), before, "{name}");
        } else {
            assert_eq!(records.len(), before + 2, "{name}: only the failures");
            assert_eq!(failed.len(), 2, "{name}");
            assert_eq!(failed[0]["payload"]["operator_id"], TECH.0);
            assert_eq!(failed[1]["payload"]["operator_id"], "nobody");
            for f in &failed {
                assert!(!f.to_string().contains(WRONG_PIN), "the PIN: {f}");
                assert!(!f.to_string().contains(TECH.1), "the PIN: {f}");
            }
        }

        let out = run_with_pin(
            command(TECH.0).args(["--operator-name", "Mallory"]),
            Some(TECH.1),
        );
        assert!(out.status.success(), "{name}: {}", text(&out));
        if name != "restore --no-audit" {
            let records = plant.records();
            let last = &records.last().expect("a record")["record"];
            assert_eq!(last["meta"]["operator"]["id"], TECH.0, "{name}: {last}");
            // The list's name, not the one given on the command line.
            assert_eq!(
                last["meta"]["operator"]["name"], "A. Tech",
                "{name}: {last}"
            );
        }
    }
    plant.audit_verifies();
}

#[test]
fn five_wrong_pins_lock_an_id_across_processes_until_another_supervisor_unlocks_it() {
    let plant = Plant::new();
    // Each try is its own process: only the log carries the count.
    for attempt in 1..=5 {
        let out = plant.note(TECH.0, Some(WRONG_PIN));
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
        assert_eq!(
            text(&out).contains("locked after 5 failed sign-ins"),
            attempt == 5,
            "attempt {attempt}: {}",
            text(&out)
        );
    }
    // The right PIN no longer opens the id, and the refusal adds nothing.
    let len = plant.log_len();
    let out = plant.note(TECH.0, Some(TECH.1));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("a supervisor must unlock it"),
        "{}",
        text(&out)
    );
    assert_eq!(plant.log_len(), len);

    // The lock shows once in `audit show`.
    let out = Command::new(reliquary_bin())
        .args(["audit", "show", "--dir"])
        .arg(&plant.audit)
        .output()
        .expect("audit show");
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(shown.matches("operator locked").count(), 1, "{shown}");

    let unlock = |by: (&str, &str)| {
        run_with_stdin(
            Command::new(reliquary_bin())
                .args(["operators", "unlock", TECH.0, "--trust"])
                .arg(&plant.trust)
                .arg("--audit")
                .arg(&plant.audit)
                .args(["--supervisor", by.0]),
            by.1,
        )
    };
    let out = unlock(TECH);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("cannot unlock their own id"),
        "{}",
        text(&out)
    );
    let out = unlock(OTHER_TECH);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("not a supervisor"), "{}", text(&out));
    let out = unlock((SUPERVISOR.0, WRONG_PIN));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(plant.note(TECH.0, Some(TECH.1)).status.code() == Some(4));

    let out = unlock(SUPERVISOR);
    assert!(out.status.success(), "{}", text(&out));
    let records = plant.records();
    let unlocked = records
        .iter()
        .map(|r| &r["record"])
        .find(|r| r["kind"] == "OperatorUnlocked")
        .expect("the unlock is recorded");
    assert_eq!(unlocked["payload"]["operator_id"], TECH.0, "{unlocked}");
    assert_eq!(
        unlocked["meta"]["operator"]["id"], SUPERVISOR.0,
        "{unlocked}"
    );
    assert_eq!(
        unlocked["meta"]["operator"]["name"], "Q. Adams",
        "{unlocked}"
    );

    let out = plant.note(TECH.0, Some(TECH.1));
    assert!(out.status.success(), "{}", text(&out));
    plant.audit_verifies();
}

#[test]
fn an_operators_line_with_a_hostile_argon2_cost_is_refused_within_a_second_and_256_mib() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        skip_or_fail("prlimit (util-linux) is not installed");
        return;
    }
    let plant = Plant::new();
    let operators = plant.trust.join("operators");
    let good = std::fs::read_to_string(&operators).expect("operators");
    // Under the same 256 MiB address-space limit a good sign-in works: the
    // limit is not what refuses the hostile lines.
    let limited_note = |pin: &str| {
        let started = Instant::now();
        let out = run_with_pin(
            Command::new("prlimit")
                .arg(format!("--as={}", 256u64 << 20))
                .arg(reliquary_bin())
                .args(["audit", "note", "--dir"])
                .arg(&plant.audit)
                .arg("--trust")
                .arg(&plant.trust)
                .args(["--operator", TECH.0, "--text", "x"]),
            Some(pin),
        );
        (out, started.elapsed())
    };
    let (out, _) = limited_note(TECH.1);
    assert!(out.status.success(), "{}", text(&out));

    for hostile in [
        "m=4194304,t=2,p=1",
        "m=67108864,t=2,p=1",
        "m=19456,t=100000,p=1",
    ] {
        std::fs::write(&operators, good.replace("m=19456,t=2,p=1", hostile)).expect("write");
        let len = plant.log_len();
        let (out, took) = limited_note(TECH.1);
        assert_eq!(out.status.code(), Some(4), "{hostile}: {}", text(&out));
        assert!(
            text(&out).contains("accepts only `v=19,m=19456,t=2,p=1`"),
            "{hostile}: {}",
            text(&out)
        );
        assert!(took < Duration::from_secs(1), "{hostile}: {took:?}");
        assert_eq!(plant.log_len(), len, "{hostile}: nothing is recorded");
    }

    // A duplicate id is refused the same way, never resolved to either.
    let first = good
        .lines()
        .find(|l| l.starts_with(TECH.0))
        .expect("tech1 line");
    std::fs::write(&operators, format!("{good}{first}\n")).expect("write");
    let (out, _) = limited_note(TECH.1);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("is listed twice"), "{}", text(&out));
}

#[test]
fn a_world_writable_trust_directory_or_operators_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let plant = Plant::new();
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    for (path, writable, sound) in [
        (plant.trust.clone(), 0o777, 0o755),
        (plant.trust.join("operators"), 0o666, 0o644),
    ] {
        mode(&path, writable);
        let len = plant.log_len();
        let out = plant.note(TECH.0, Some(TECH.1));
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
        assert!(text(&out).contains("world-writable"), "{}", text(&out));
        assert!(
            text(&out).contains(&path.display().to_string()),
            "{}",
            text(&out)
        );
        assert_eq!(plant.log_len(), len);
        mode(&path, sound);
    }
    let out = plant.note(TECH.0, Some(TECH.1));
    assert!(out.status.success(), "{}", text(&out));
}

/// Runs `cmd`, with `pin` and `--pin-stdin` when given.
fn run_with_pin(cmd: &mut Command, pin: Option<&str>) -> Output {
    match pin {
        Some(pin) => run_with_stdin(cmd.arg("--pin-stdin"), pin),
        None => run_with_stdin(cmd, ""),
    }
}

/// Runs `cmd` with `line` (if not empty) on its stdin.
fn run_with_stdin(cmd: &mut Command, line: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reliquary");
    let mut stdin = child.stdin.take().expect("stdin");
    if !line.is_empty() {
        // A command refused before it reads the line may have exited.
        let _ = stdin.write_all(format!("{line}\n").as_bytes());
    }
    drop(stdin);
    child.wait_with_output().expect("wait")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
