//! Argument parsing and dispatch. Each area of the CLI lives in its own file.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use reliquary_appliance::exit::ExitClass;

mod audit;
mod image;
mod operators;
mod progress;
mod restore;
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
    /// Generate an Ed25519 signing key pair.
    Keygen(image::KeygenArgs),
    /// Capture a disk or raw image file into a signed image.
    Capture(image::CaptureArgs),
    /// Add a co-signature to an image.
    Sign(image::SignArgs),
    /// Show an image's manifest and signers without verifying it.
    Inspect(image::InspectArgs),
    /// Check an image's signatures against a trust store, then every chunk.
    Verify(image::VerifyArgs),
    /// Write the whole raw disk of a verified image to a file.
    Extract(image::ExtractArgs),
    /// Write a verified image onto a disk, then read it back.
    Restore(restore::RestoreArgs),
    /// Compare a disk with an image without writing (a field audit).
    Check(restore::CheckArgs),
    /// List the disks an image could be restored onto, and why some may not.
    Targets(targets::TargetsArgs),
    /// Create, verify and review the signed restore audit log.
    Audit(audit::AuditArgs),
    /// Manage the operators who may sign in, each with a hashed PIN.
    Operators(operators::OperatorsArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen(args) => image::keygen(args),
        Command::Capture(args) => image::capture_cmd(args),
        Command::Sign(args) => image::sign(args),
        Command::Inspect(args) => image::inspect(args),
        Command::Verify(args) => image::verify(args),
        Command::Extract(args) => image::extract_cmd(args),
        Command::Restore(args) => restore::restore_cmd(args),
        Command::Check(args) => restore::check_cmd(args),
        Command::Targets(args) => targets::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Operators(args) => operators::run(args),
    }
}

/// Maps an error to its exit class by finding the first typed library error
/// in its chain.
pub fn exit_class(err: &anyhow::Error) -> ExitClass {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return ExitClass::Usage;
        }
        if cause.downcast_ref::<restore::CliRefusal>().is_some() {
            return ExitClass::Refused;
        }
        if let Some(e) = cause.downcast_ref::<restore::Unsuccessful>() {
            return e.class;
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::restore::RestoreError>() {
            return e.exit_class();
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
        if let Some(e) = cause.downcast_ref::<reliquary_image::ImageError>() {
            return image_error_class(e);
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::capture::CaptureError>() {
            if let reliquary_appliance::capture::CaptureError::Image(e) = e {
                return image_error_class(e);
            }
            return ExitClass::Runtime;
        }
        if let Some(reliquary_appliance::verify::ExtractError::Image(e)) =
            cause.downcast_ref::<reliquary_appliance::verify::ExtractError>()
        {
            return image_error_class(e);
        }
    }
    ExitClass::Runtime
}

fn image_error_class(e: &reliquary_image::ImageError) -> ExitClass {
    if e.is_integrity_failure() {
        ExitClass::Integrity
    } else {
        ExitClass::Runtime
    }
}
