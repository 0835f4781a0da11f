//! Issue 22's smaller items about what the CLI says: `operators` under
//! `--json` and without a trust store, usage errors under `--json` that
//! name what is missing, and `audit verify` warnings on stderr.
//!
//! Needs the binary (`cargo build -p reliquary-appliance`).

use std::process::Output;

use serde_json::Value;

use reliquary_appliance::audit::{
    AuditLog, Environment, ImageRef, Operator, Payload, RestoreStarted, TargetRef,
};
use reliquary_tests::reliquary_with_stdin;

fn run(args: &[&str], stdin: &str) -> Output {
    reliquary_with_stdin(args, stdin)
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn operators_answer_in_json_and_refuse_a_missing_trust_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let trust = tmp.path().to_str().expect("utf8");
    let out = run(
        &[
            "--json",
            "operators",
            "add",
            "--trust",
            trust,
            "op7",
            "--name",
            "Alice Jones",
        ],
        "471147\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["added"], "op7");
    let out = run(&["--json", "operators", "list", "--trust", trust], "");
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["operators"][0]["id"], "op7");
    assert_eq!(v["operators"][0]["name"], "Alice Jones");

    let missing = tmp.path().join("no-such-trust");
    let missing = missing.to_str().expect("utf8");
    let out = run(&["--json", "operators", "list", "--trust", missing], "");
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["error"]["path"], missing, "{v}");
    let out = run(&["operators", "list", "--trust", missing], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open the trust store"));
}

#[test]
fn a_usage_error_under_json_names_the_missing_argument() {
    let out = run(&["--json", "audit", "verify", "--dir", "/nowhere"], "");
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert_eq!(v["error"]["class"], "usage");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("--key"), "{message}");
}

#[test]
fn audit_verify_prints_its_warnings_on_stderr() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("audit");
    let mut log = AuditLog::init(&dir, Some("line-3"), Environment::system(None)).expect("init");
    log.append(
        &Operator {
            id: "jdoe".into(),
            name: None,
        },
        Payload::RestoreStarted(RestoreStarted {
            image: ImageRef::default(),
            target: TargetRef::default(),
            meaning: Some("replacement".into()),
            reason: Some("WO-4711".into()),
            ..Default::default()
        }),
    )
    .expect("append");
    drop(log);
    let d = dir.to_str().expect("utf8");
    let key = dir.join("appliance.pub");
    let out = run(
        &[
            "audit",
            "verify",
            "--dir",
            d,
            "--key",
            key.to_str().expect("utf8"),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("warning"), "{stdout}");
    assert!(
        stderr.contains("warning: record 1") && stderr.contains("INTERRUPTED"),
        "{stderr}"
    );
}

#[test]
fn every_man_page_has_the_global_flags_exit_status_version_and_unhyphenated_examples() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run(&["man", "--out", tmp.path().to_str().expect("utf8")], "");
    assert!(out.status.success());
    for name in [
        "reliquary.1",
        "reliquary-restore.1",
        "reliquary-audit-verify.1",
    ] {
        let page = std::fs::read_to_string(tmp.path().join(name)).expect("page");
        for want in [
            ".SH \"GLOBAL OPTIONS\"",
            "\\fB\\-\\-json\\fR",
            "\\fB\\-\\-quiet\\fR",
            ".SH \"EXIT STATUS\"",
            ".SH VERSION",
            env!("CARGO_PKG_VERSION"),
        ] {
            assert!(page.contains(want), "{name} lacks {want}:\n{page}");
        }
        if name != "reliquary.1" {
            assert!(
                page.contains(".SH EXAMPLES\n.nf\n.nh\n"),
                "{name}: examples are not set as typed:\n{page}"
            );
        }
    }
}
