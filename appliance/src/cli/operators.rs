//! `reliquary operators add|remove|list|unlock`: keep the trust store's
//! list of operators who may sign in on the stick, each with a hashed PIN,
//! and lift a lockout the audit log holds.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use reliquary_appliance::operators::{self, OperatorList, Role, OPERATORS_FILE};
use reliquary_image::TrustStore;

use super::output::{self, print_result, FileError};
use super::restore::{read_pin, AuditDir};
use super::UsageError;

#[derive(Debug, Args)]
pub struct OperatorsArgs {
    #[command(subcommand)]
    command: OperatorsCommand,
}

#[derive(Debug, Subcommand)]
enum OperatorsCommand {
    /// Add an operator. The PIN is read from the first line of stdin and
    /// only its Argon2id hash is written.
    /// The PIN needs at least 6 characters, or the trust store policy's
    /// `min-pin-length`.
    #[command(
        after_help = "Example:\n  echo 471193 | reliquary operators add --trust trust/ op7 --name \"Alice Jones\""
    )]
    Add {
        /// The trust-store directory holding the `operators` file.
        #[arg(long, value_name = "DIR")]
        trust: PathBuf,
        /// The operator id typed at sign-in (letters, digits, `.`, `_`, `-`, `@`).
        id: String,
        /// The operator's full name, as the audit log records it.
        #[arg(long)]
        name: String,
        /// `technician`, or `supervisor` (may unlock another operator's id).
        #[arg(long, default_value = "technician", value_parser = parse_role)]
        role: Role,
    },
    /// Remove an operator.
    #[command(after_help = "Example:\n  reliquary operators remove --trust trust/ op7")]
    Remove {
        /// The trust-store directory holding the `operators` file.
        #[arg(long, value_name = "DIR")]
        trust: PathBuf,
        /// The operator id to remove.
        id: String,
    },
    /// List the operators' ids and names (never their PIN hashes).
    #[command(after_help = "Example:\n  reliquary operators list --trust trust/")]
    List {
        /// The trust-store directory holding the `operators` file.
        #[arg(long, value_name = "DIR")]
        trust: PathBuf,
    },
    /// Lift the lockout of an id after 5 failed sign-ins. A supervisor
    /// (another operator) signs in with the PIN on stdin; the unlock is
    /// recorded in the audit log in the supervisor's name.
    #[command(
        after_help = "Example:\n  echo 582044 | reliquary operators unlock op7 --trust /etc/reliquary/trust \\\n    --audit /media/audit --supervisor qa2"
    )]
    Unlock {
        /// The locked operator id.
        id: String,
        /// The trust store whose operators list names the supervisor.
        #[arg(long, value_name = "PATH")]
        trust: PathBuf,
        #[command(flatten)]
        audit: AuditDir,
        /// The supervisor's operator id; the PIN is read from stdin.
        #[arg(long, value_name = "ID")]
        supervisor: String,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("`{text}` is not a role: use technician or supervisor"))
}

pub fn run(args: OperatorsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        OperatorsCommand::Add {
            trust,
            id,
            name,
            role,
        } => {
            let min_pin_len = TrustStore::min_pin_length_of(&trust)?;
            let file = trust.join(OPERATORS_FILE);
            let mut list = read_list(&file)?;
            let mut pin = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut pin)
                .context("could not read the PIN from stdin")?;
            let pin = pin.trim_end_matches(['\n', '\r']);
            list.add(&id, &name, role, pin, min_pin_len)
                .map_err(|e| UsageError(e.to_string()))?;
            write_list(&file, &list)?;
            print_result(&json!({"added": id, "name": name, "file": file}), || {
                output::info(format_args!(
                    "added operator {id} ({name}) to {}",
                    file.display()
                ))
            })?;
        }
        OperatorsCommand::Remove { trust, id } => {
            let file = trust.join(OPERATORS_FILE);
            let mut list = read_list(&file)?;
            if !list.remove(&id) {
                return Err(UsageError(format!(
                    "operator `{id}` is not listed in {}",
                    file.display()
                ))
                .into());
            }
            write_list(&file, &list)?;
            print_result(&json!({"removed": id, "file": file}), || {
                output::info(format_args!(
                    "removed operator {id} from {}",
                    file.display()
                ))
            })?;
        }
        OperatorsCommand::List { trust } => {
            let file = trust.join(OPERATORS_FILE);
            let list = read_list(&file)?;
            let value = json!({
                "trust": trust,
                "operators": list
                    .entries
                    .iter()
                    .map(|e| json!({"id": e.id, "name": e.name, "role": e.role.name()}))
                    .collect::<Vec<_>>(),
            });
            print_result(&value, || {
                for e in &list.entries {
                    println!("{}\t{}\t{}", e.id, e.name, e.role.name());
                }
            })?;
        }
        OperatorsCommand::Unlock {
            id,
            trust: trust_path,
            audit,
            supervisor,
        } => {
            let trust = TrustStore::load(&trust_path)?;
            let mut log = audit.open(&trust)?;
            let pin = read_pin()?;
            let by =
                operators::unlock(&trust, &trust_path, &mut log, &supervisor, Some(&pin), &id)?;
            print_result(
                &serde_json::json!({ "unlocked": id, "by": by.operator.id }),
                || {
                    output::info(format_args!(
                        "unlocked operator {id}; recorded in the name of {supervisor}"
                    ))
                },
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The list in `file`; an absent file in an existing trust store is an
/// empty list, an absent trust store an error.
fn read_list(file: &Path) -> anyhow::Result<OperatorList> {
    let trust = file.parent().unwrap_or(Path::new("."));
    if let Err(e) = std::fs::metadata(trust) {
        return Err(FileError::new("cannot open the trust store", trust, e).into());
    }
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(OperatorList::parse(&text, file)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OperatorList::default()),
        Err(e) => Err(e).with_context(|| format!("could not read {}", file.display())),
    }
}

/// Replaces `file` whole: written beside it, synced, then renamed.
fn write_list(file: &Path, list: &OperatorList) -> anyhow::Result<()> {
    let tmp = file.with_extension("new");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(list.to_text().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    };
    write().with_context(|| format!("could not write {}", file.display()))
}
