//! `--json` on every command (issue 12): on success and on each error
//! class, stdout holds exactly one JSON document that `serde_json` parses,
//! errors are `{"error": {"class", "message", "path"}}`, and the exit code is
//! the documented one (0 success, 1 runtime, 2 usage, 3 integrity, 4
//! refused).
//!
//! Needs the binary: `cargo build -p reliquary-appliance` first.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use reliquary_image::layout::{Preamble, PREAMBLE_LEN};
use reliquary_tests::{reliquary_bin, trust_without_operators};

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf8").to_string()
    }

    /// A key pair, a 4 MiB disk file with text in it and its signed image.
    fn image(&self) {
        ok(&["keygen", "--out", &self.s("k.key"), "--name", "Alice"]);
        let disk: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(self.path("disk.raw"), disk).expect("disk");
        ok(&[
            "capture",
            &self.s("disk.raw"),
            "-o",
            &self.s("i.rimg"),
            "--key",
            &self.s("k.key"),
            "--name",
            "win7",
        ]);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(reliquary_bin())
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("run reliquary")
}

/// Runs with `--json` and parses stdout as one JSON document.
fn json(args: &[&str]) -> (i32, Value) {
    let out = run(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not one JSON document ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit code"), value)
}

/// Expects success and returns the result.
fn ok(args: &[&str]) -> Value {
    let (code, value) = json(args);
    assert_eq!(code, 0, "{args:?}: {value}");
    assert!(value.get("error").is_none(), "{args:?}: {value}");
    value
}

/// Expects an error envelope of `class` with exit `code`; returns it.
fn error(args: &[&str], class: &str, code: i32) -> Value {
    let (got, value) = json(args);
    assert_eq!(got, code, "{args:?}: {value}");
    let e = &value["error"];
    assert_eq!(e["class"], class, "{args:?}: {value}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{args:?}: {value}"
    );
    assert!(
        e.get("path").is_some(),
        "{args:?}: the envelope has no path key: {value}"
    );
    e.clone()
}

#[test]
fn image_commands_print_json_on_success_and_on_every_error_class() {
    let w = Work::new();
    w.image();
    let v = ok(&["inspect", &w.s("i.rimg")]);
    assert_eq!(v["name"], "win7");
    let trust = w.s("k.key.pub");
    let v = ok(&["verify", &w.s("i.rimg"), "--trust", &trust]);
    assert_eq!(v["verified"], true);
    ok(&["keygen", "--out", &w.s("qa.key"), "--name", "QA"]);
    let v = ok(&[
        "sign",
        &w.s("i.rimg"),
        "--key",
        &w.s("qa.key"),
        "--meaning",
        "approved",
    ]);
    assert_eq!(v["meaning"], "approved");
    let v = ok(&[
        "extract",
        &w.s("i.rimg"),
        "-o",
        &w.s("out.raw"),
        "--trust",
        &trust,
    ]);
    assert_eq!(v["bytes"], 4 << 20);
    let v = ok(&["check", &w.s("i.rimg"), &w.s("out.raw"), "--trust", &trust]);
    assert_eq!(v["matches"], true);

    // runtime (1), naming the missing file once.
    let e = error(&["inspect", &w.s("missing.rimg")], "runtime", 1);
    assert_eq!(e["path"], w.s("missing.rimg"));
    let message = e["message"].as_str().expect("message");
    assert_eq!(message.matches("os error 2").count(), 1, "{message}");
    // usage (2): from clap, and from a check after parsing.
    error(&["inspect"], "usage", 2);
    error(
        &[
            "capture",
            &w.s("disk.raw"),
            "-o",
            &w.s("j.rimg"),
            "--key",
            &w.s("k.key"),
            "--name",
            "x",
            "--chunk-size",
            "3",
        ],
        "usage",
        2,
    );
    // integrity (3): a flipped bit in the signed manifest.
    let tampered = w.path("tampered.rimg");
    std::fs::copy(w.path("i.rimg"), &tampered).expect("copy");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&tampered)
        .expect("open");
    let mut raw = [0u8; PREAMBLE_LEN];
    f.read_exact_at(&mut raw, 0).expect("read preamble");
    let at = Preamble::decode_fields(&raw).manifest.offset + 20;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at).expect("read");
    f.write_all_at(&[byte[0] ^ 0x02], at).expect("write");
    drop(f);
    let (code, value) = json(&[
        "verify",
        tampered.to_str().expect("utf8"),
        "--trust",
        &trust,
    ]);
    assert!(
        code == 3 && value["error"]["class"] == "integrity",
        "{code} {value}"
    );
    // A disk that differs: the report itself, exit 3.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(w.path("out.raw"))
        .expect("open");
    f.write_all_at(b"changed", 1 << 20).expect("write");
    drop(f);
    let (code, value) = json(&["check", &w.s("i.rimg"), &w.s("out.raw"), "--trust", &trust]);
    assert_eq!(
        (code, &value["matches"]),
        (3, &Value::Bool(false)),
        "{value}"
    );
    // refused (4): a restore with no terminal to confirm on.
    error(
        &[
            "restore",
            &w.s("i.rimg"),
            &w.s("target.raw"),
            "--trust",
            &trust,
            "--no-audit",
        ],
        "refused",
        4,
    );
}

#[test]
fn audit_commands_print_json_on_success_and_on_every_error_class() {
    let w = Work::new();
    let dir = w.s("audit");
    let v = ok(&["audit", "init", "--dir", &dir, "--appliance-id", "line-9"]);
    assert_eq!(v["appliance_id"], "line-9");
    let trust = trust_without_operators(w.dir.path()).display().to_string();
    let v = ok(&[
        "audit",
        "note",
        "--dir",
        &dir,
        "--trust",
        &trust,
        "--operator",
        "jdoe",
        "--text",
        "hello",
    ]);
    assert_eq!(v["seq"], 1);
    let key = format!("{dir}/appliance.pub");
    let v = ok(&["audit", "verify", "--dir", &dir, "--key", &key]);
    assert_eq!(v["size"], 2);
    let v = ok(&["audit", "checkpoint", "--dir", &dir]);
    assert!(v["note"]
        .as_str()
        .is_some_and(|n| n.starts_with("reliquary-audit/line-9\n2\n")));
    let v = ok(&["audit", "show", "--dir", &dir]);
    assert_eq!(
        (v["shown"].as_u64(), v["total"].as_u64()),
        (Some(2), Some(2))
    );
    let v = ok(&["audit", "export", "--dir", &dir]);
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    let v = ok(&[
        "audit",
        "report",
        "--dir",
        &dir,
        "--since",
        "2000-01-01",
        "-o",
        &w.s("r.pdf"),
    ]);
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 1000));

    // usage (2): an enumerated value clap refuses, and a record that is
    // not a restore.
    let e = error(
        &["audit", "show", "--dir", &dir, "--result", "bogus"],
        "usage",
        2,
    );
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("bogus")),
        "{e}"
    );
    error(
        &[
            "audit",
            "report",
            "--dir",
            &dir,
            "--seq",
            "1",
            "-o",
            &w.s("c.pdf"),
        ],
        "usage",
        2,
    );
    // refused (4): init never overwrites.
    let e = error(&["audit", "init", "--dir", &dir], "refused", 4);
    assert!(
        e["path"].as_str().is_some_and(|p| p.starts_with(&dir)),
        "{e}"
    );
    // runtime (1): no log there.
    let e = error(&["audit", "show", "--dir", &w.s("nowhere")], "runtime", 1);
    assert!(e["path"].as_str().is_some(), "{e}");
    // usage (2): a note with no signature line is a malformed copy.
    std::fs::write(
        w.path("bad.checkpoint"),
        "reliquary-audit/line-9\n2\nAAAA\n\n",
    )
    .expect("write");
    error(
        &[
            "audit",
            "verify",
            "--dir",
            &dir,
            "--key",
            &key,
            "--checkpoint",
            &w.s("bad.checkpoint"),
        ],
        "usage",
        2,
    );
    // integrity (3): a well-formed note whose signature does not cover it.
    let note =
        std::fs::read_to_string(std::path::Path::new(&dir).join("checkpoint")).expect("checkpoint");
    let mut lines: Vec<&str> = note.lines().collect();
    lines[1] = "1";
    std::fs::write(w.path("bad.checkpoint"), lines.join("\n") + "\n").expect("write");
    error(
        &[
            "audit",
            "verify",
            "--dir",
            &dir,
            "--key",
            &key,
            "--checkpoint",
            &w.s("bad.checkpoint"),
        ],
        "integrity",
        3,
    );
}

#[test]
fn the_other_commands_print_json_too() {
    let w = Work::new();
    let v = ok(&["completions", "bash"]);
    assert!(v["script"]
        .as_str()
        .is_some_and(|s| s.contains("reliquary")));
    error(&["completions", "tcsh-9"], "usage", 2);
    let v = ok(&["man", "--out", &w.s("man")]);
    let pages = v["written"].as_array().expect("pages");
    assert!(pages.iter().any(|p| p
        .as_str()
        .is_some_and(|p| p.ends_with("reliquary-audit-report.1"))));
    for p in pages {
        let page = std::fs::read_to_string(p.as_str().expect("path")).expect("page");
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{p}");
    }
    let (code, v) = json(&["targets"]);
    assert_eq!(code, 0, "{v}");
    assert!(v.is_array(), "{v}");
    error(&["targets", "--vault", "/nonexistent/vault"], "runtime", 1);
}

#[test]
fn without_json_stdout_holds_only_the_result() {
    let w = Work::new();
    let dir = w.s("audit");
    let out = Command::new(reliquary_bin())
        .args(["audit", "init", "--dir", &dir])
        .output()
        .expect("run");
    assert!(out.status.success());
    let out = Command::new(reliquary_bin())
        .args(["audit", "checkpoint", "--dir", &dir])
        .output()
        .expect("run");
    let note = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(
        note,
        std::fs::read_to_string(Path::new(&dir).join("checkpoint")).expect("checkpoint"),
        "stdout is the signed note and nothing else"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("short form:"));
    let quiet = Command::new(reliquary_bin())
        .args(["audit", "checkpoint", "--dir", &dir, "--quiet"])
        .output()
        .expect("run");
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    // An error names its cause once.
    let out = Command::new(reliquary_bin())
        .args(["inspect", &w.s("missing.rimg")])
        .output()
        .expect("run");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains(&w.s("missing.rimg")), "{err}");
}
