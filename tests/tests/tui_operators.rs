//! `reliquary operators add|remove|list` keeps the trust store's operators
//! file that the TUI's sign-in checks: PINs go in on stdin and only their
//! Argon2id hashes come out.

use reliquary_appliance::operators::{OperatorList, SignInRefusal, OPERATORS_FILE};
use reliquary_tests::reliquary_with_stdin;

fn operators(args: &[&str], stdin: &str) -> (i32, String, String) {
    let args: Vec<&str> = std::iter::once("operators")
        .chain(args.iter().copied())
        .collect();
    let out = reliquary_with_stdin(&args, stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn operators_are_added_listed_and_removed_with_hashed_pins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trust = dir.path().to_str().expect("utf-8 path");
    let (code, _, err) = operators(
        &["add", "--trust", trust, "op7", "--name", "Alice Jones"],
        "471100\n",
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = operators(
        &[
            "add",
            "--trust",
            trust,
            "svc12",
            "--name",
            "Bob Smith",
            "--role",
            "supervisor",
        ],
        "s3cret!\n",
    );
    assert_eq!(code, 0, "{err}");

    let text = std::fs::read_to_string(dir.path().join(OPERATORS_FILE)).expect("written");
    assert!(
        !text.contains("471100") && !text.contains("s3cret!"),
        "{text}"
    );
    let list = OperatorList::parse(&text, dir.path()).expect("parses");
    assert_eq!(
        list.verify("op7", "471100").map(|e| e.name.as_str()),
        Ok("Alice Jones")
    );
    assert_eq!(list.verify("op7", "s3cret!"), Err(SignInRefusal::WrongPin));

    let (code, out, _) = operators(&["list", "--trust", trust], "");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "op7\tAlice Jones\ttechnician\nsvc12\tBob Smith\tsupervisor\n"
    );

    // Refusals are usage errors (exit 2) and change nothing.
    let (code, _, err) = operators(
        &["add", "--trust", trust, "op7", "--name", "Again"],
        "123456\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already listed"), "{err}");
    // PINs of at least 6 characters: a 4-digit PIN falls to brute force.
    for short in ["4711\n", "12345\n"] {
        let (code, _, err) = operators(&["add", "--trust", trust, "op8", "--name", "Short"], short);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("at least 6"), "{err}");
    }
    // A policy line may ask for more.
    std::fs::write(dir.path().join("policy"), "min-pin-length 8\n").expect("policy");
    let (code, _, err) = operators(
        &["add", "--trust", trust, "op8", "--name", "Short"],
        "1234567\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 8"), "{err}");
    let (code, _, err) = operators(
        &["add", "--trust", trust, "op8", "--name", "Long enough"],
        "12345678\n",
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = operators(&["remove", "--trust", trust, "op8"], "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = operators(
        &["add", "--trust", trust, "bad id", "--name", "X"],
        "123456\n",
    );
    assert_eq!(code, 2, "{err}");

    let (code, _, err) = operators(&["remove", "--trust", trust, "op7"], "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = operators(&["remove", "--trust", trust, "op7"], "");
    assert_eq!(code, 2, "{err}");
    let (_, out, _) = operators(&["list", "--trust", trust], "");
    assert_eq!(out, "svc12\tBob Smith\tsupervisor\n");
}
