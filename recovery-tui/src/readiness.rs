//! The stick checks itself before anyone signs in: a stick set up wrong
//! must say so at once, not after the technician has typed the code.
//!
//! Every check runs, so the "Stick not ready" screen lists every problem,
//! each with what to do on *this* stick, which has no shell.

use std::path::Path;

use reliquary_appliance::audit::{
    verify_dir, AuditError, AuditLog, Digest, Environment, RESTORE_RESERVE_BYTES,
};
use reliquary_image::TrustStore;

use crate::engine::targets::error_chain;
use crate::engine::SessionConfig;
use crate::model::StickProblem;
use crate::operators::OperatorList;

/// Room kept beyond the restore reserve: a day of sign-ins, verifications
/// and restores at one 4 KiB frame each.
pub const SPACE_MARGIN_BYTES: u64 = 1 << 20;
/// What the audit partition must have free for restores to be offered.
pub const REQUIRED_FREE_BYTES: u64 = RESTORE_RESERVE_BYTES + SPACE_MARGIN_BYTES;

const BACK_TO_ENGINEER: &str =
    "Power off (o) and take the stick back to the engineer who prepared it.";

/// Runs every check; an empty list means the stick is ready.
pub fn check(config: &SessionConfig) -> Vec<StickProblem> {
    let mut problems = Vec::new();
    let mut problem = |part: &str, problem: String, remedy: &str| {
        problems.push(StickProblem {
            part: part.to_string(),
            problem,
            remedy: remedy.to_string(),
        });
    };

    let trust = match TrustStore::load(&config.trust) {
        Ok(trust) => {
            let usable = trust
                .keys()
                .filter(|k| !trust.is_key_revoked(&k.key.key_id()))
                .count();
            if usable < trust.threshold() {
                problem(
                    "trust store",
                    format!(
                        "its policy needs {} signatures but it holds only {usable} usable key(s), \
                         so no image can ever be trusted",
                        trust.threshold()
                    ),
                    BACK_TO_ENGINEER,
                );
            }
            match OperatorList::from_trust(&trust, &config.trust) {
                Ok(Some(list)) if list.entries.is_empty() => problem(
                    "operators",
                    "the operators list names nobody, so nobody can sign in".into(),
                    BACK_TO_ENGINEER,
                ),
                Ok(_) => {}
                Err(e) => problem(
                    "operators",
                    format!("the operators list cannot be read: {e}"),
                    BACK_TO_ENGINEER,
                ),
            }
            Some(trust)
        }
        Err(e) => {
            problem(
                "trust store",
                format!("{} cannot be loaded: {e}", config.trust.display()),
                BACK_TO_ENGINEER,
            );
            None
        }
    };

    let env = Environment::system(trust.as_ref().map(|t| Digest(t.digest())));
    match AuditLog::open(&config.audit, env) {
        Ok(log) => {
            match verify_dir(&config.audit, &log.public_key(), None) {
                Ok(report) if report.is_ok() => {}
                Ok(report) => problem(
                    "audit log",
                    format!(
                        "it does not verify against the appliance key: {}",
                        report
                            .first_problem()
                            .map_or_else(|| "unknown problem".to_string(), |p| p.to_string())
                    ),
                    BACK_TO_ENGINEER,
                ),
                Err(e) => problem(
                    "audit log",
                    format!("it cannot be verified: {}", on_this_stick(&e)),
                    BACK_TO_ENGINEER,
                ),
            }
            if let Err(e) = probe_writable(&config.audit) {
                problem(
                    "audit space",
                    format!("the audit partition is not writable: {e}"),
                    BACK_TO_ENGINEER,
                );
            } else if let Err(e) = log.ensure_space(REQUIRED_FREE_BYTES) {
                problem(
                    "audit space",
                    format!(
                        "the audit partition needs {} KiB free: {}",
                        REQUIRED_FREE_BYTES / 1024,
                        error_chain(&e)
                    ),
                    "Power off (o) and have the engineer archive the audit log and free space \
                     on the stick's audit partition.",
                );
            }
        }
        Err(e) => problem(
            "audit log",
            format!(
                "{} cannot be opened: {}",
                config.audit.display(),
                on_this_stick(&e)
            ),
            BACK_TO_ENGINEER,
        ),
    }

    if let Err(e) = std::fs::read_dir(&config.vault) {
        problem(
            "vault",
            format!("{} cannot be read: {e}", config.vault.display()),
            BACK_TO_ENGINEER,
        );
    }
    problems
}

/// Creates, syncs and removes a small file: a read-only or failing audit
/// partition shows here, before a restore depends on it.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".reliquary-write-probe");
    let written =
        std::fs::write(&probe, b"probe").and_then(|()| std::fs::File::open(&probe)?.sync_all());
    let removed = std::fs::remove_file(&probe);
    written.and(removed)
}

/// An audit log error as this stick can act on it: the library's advice
/// to run a `reliquary` command means nothing on a stick with no shell.
fn on_this_stick(e: &AuditError) -> String {
    match e {
        AuditError::Open { path, source } => format!("cannot open {}: {source}", path.display()),
        AuditError::Damaged { path, problem } => format!(
            "{}: {problem}; damage followed by valid records is tampering or corruption, \
             so the log is left untouched and new records are refused",
            path.display()
        ),
        AuditError::Witness {
            path,
            witness,
            reason,
        } => format!(
            "{} {reason}, as witnessed by the checkpoint this stick wrote in {}: records were \
             removed or replaced",
            path.display(),
            witness.display()
        ),
        e => error_chain(e),
    }
}
