//! Argument parsing and dispatch. Each area of the CLI lives in its own file.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use reliquary_appliance::exit::ExitClass;

mod audit;
mod targets;
/// A usage error found after parsing (a bad combination of arguments).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "reliquary",
    version,
    about = "Capture, sign, verify and restore sealed disk images",
    after_help = "Exit codes: 0 success, 1 runtime or I/O error, 2 usage error, \
                  3 integrity or authenticity failure, 4 refused for safety."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, verify and review the signed restore audit log.
    Audit(audit::AuditArgs),
    /// List the disks an image could be restored onto, and why some may not.
    Targets(targets::TargetsArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Audit(args) => audit::run(args),
        Command::Targets(args) => targets::run(args),
    }
}

/// Maps an error to its exit class by finding the first typed library error
/// in its chain.
pub fn exit_class(err: &anyhow::Error) -> ExitClass {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return ExitClass::Usage;
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::safety::Refusal>() {
            return e.exit_class();
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::sys::SysError>() {
            return e.exit_class();
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::discover::DiscoverError>() {
            return e.exit_class();
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::audit::AuditError>() {
            return e.exit_class();
        }
    }
    ExitClass::Runtime
}
