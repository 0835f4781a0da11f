//! Argument parsing and dispatch. Each area of the CLI lives in its own file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use reliquary_appliance::exit::ExitClass;

mod audit;
mod image;
mod inputs;
mod operators;
pub mod output;
mod progress;
mod restore;
mod stick;
mod targets;
mod terminal;

pub use restore::AlreadyReported;

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
                  3 integrity or authenticity failure, 4 refused for safety.\n\
                  With --json, results and errors go to stdout as JSON; an error is \
                  {\"error\": {\"class\": \"runtime|usage|integrity|refused\", \
                  \"message\": ..., \"path\": ...}} with the same exit code.\n\n\
                  Example:\n  reliquary verify win7-line3.rimg --trust /etc/reliquary/trust --json"
)]
pub struct Cli {
    /// Print the result, or the error, as JSON on stdout (nothing else goes to stdout).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print no progress and no informational messages (errors and warnings still print).
    #[arg(short, long, global = true)]
    pub quiet: bool,
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
    /// Check a boot stick against its build's manifest: every byte the boot
    /// reads (boot code, both GPTs, every partition but audit, the verity
    /// root hash) and the audit partition's file system.
    #[command(
        after_help = "Example:\n  reliquary stick verify /dev/sdc --manifest reliquary-stick.img.manifest"
    )]
    Stick(stick::StickArgs),
    /// Manage the operators who may sign in, each with a hashed PIN.
    #[command(
        after_help = "Example:\n  echo 4711 | reliquary operators add --trust /etc/reliquary/trust tech1 --name \"A. Tech\""
    )]
    Operators(operators::OperatorsArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  reliquary completions bash > /etc/bash_completion.d/reliquary"
    )]
    Completions(CompletionsArgs),
    /// Write the man pages (reliquary.1 and one per subcommand) into a directory.
    #[command(after_help = "Example:\n  reliquary man --out /usr/share/man/man1")]
    Man(ManArgs),
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
struct ManArgs {
    /// The directory to write the pages to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    output::set(output::Output {
        json: cli.json,
        quiet: cli.quiet,
    });
    let only_prints = match &cli.command {
        Command::Inspect(_) | Command::Targets(_) | Command::Completions(_) => true,
        Command::Audit(args) => args.only_prints(),
        _ => false,
    };
    if only_prints {
        reliquary_appliance::sys::end_quietly_on_closed_pipe();
    }
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
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "reliquary", &mut script);
            let script = String::from_utf8_lossy(&script);
            output::print_result(
                &serde_json::json!({"shell": args.shell.to_string(), "script": script}),
                || print!("{script}"),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => man(&args.out),
        Command::Stick(args) => stick::run(args),
        Command::Operators(args) => operators::run(args),
    }
}

/// Writes `reliquary.1` and a `reliquary-<sub>.1` page per subcommand
/// (nested ones too: `reliquary-audit-verify.1`).
fn man(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).map_err(|e| output::FileError::new("cannot create", dir, e))?;
    let mut written = Vec::new();
    write_man_pages(Cli::command(), dir, &mut written)?;
    output::print_result(&serde_json::json!({ "written": written }), || {
        for page in &written {
            println!("{page}");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn write_man_pages(
    command: clap::Command,
    dir: &std::path::Path,
    written: &mut Vec<String>,
) -> anyhow::Result<()> {
    let command = command.disable_help_subcommand(true);
    let name = command
        .get_display_name()
        .unwrap_or(command.get_name())
        .to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    let page = finish_man_page(&String::from_utf8_lossy(&page));
    std::fs::write(&path, page).map_err(|e| output::FileError::new("cannot write", &path, e))?;
    written.push(path.display().to_string());
    for sub in command.get_subcommands() {
        let sub = sub
            .clone()
            .display_name(format!("{name}-{}", sub.get_name()))
            .bin_name(format!("{name} {}", sub.get_name()))
            .version(env!("CARGO_PKG_VERSION"));
        write_man_pages(sub, dir, written)?;
    }
    Ok(())
}

/// What every page needs beyond clap's: the examples set as typed (no
/// filling, no hyphenation, so they copy as commands), the global flags,
/// which clap documents only on the top page, and the exit status. (Each
/// page is given the version, which clap prints in its VERSION section.)
fn finish_man_page(page: &str) -> String {
    let mut out = String::new();
    let mut in_examples = false;
    for line in page.lines() {
        if line.starts_with(".SH ") && in_examples {
            out.push_str(".fi\n.hy\n");
            in_examples = false;
        }
        if line == ".SH EXTRA" {
            out.push_str(".SH EXAMPLES\n.nf\n.nh\n");
            in_examples = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if in_examples {
        out.push_str(".fi\n.hy\n");
    }
    out.push_str(concat!(
        ".SH \"GLOBAL OPTIONS\"\n",
        ".TP\n\\fB\\-\\-json\\fR\n",
        "stdout holds one JSON document: the result, or the error as ",
        "{\"error\": {\"class\", \"message\", \"path\"}}, with the same exit status.\n",
        ".TP\n\\fB\\-q\\fR, \\fB\\-\\-quiet\\fR\n",
        "No progress and no informational messages; errors and warnings still print.\n",
        ".SH \"EXIT STATUS\"\n",
        ".TP\n0\nSuccess.\n",
        ".TP\n1\nA runtime or I/O error.\n",
        ".TP\n2\nA usage error.\n",
        ".TP\n3\nAn integrity or authenticity failure.\n",
        ".TP\n4\nRefused for safety.\n",
        ".TP\n130\nInterrupted (Ctrl\\-C).\n",
    ));
    out
}

/// Maps an error to its exit class by finding the first typed library error
/// in its chain.
pub fn exit_class(err: &anyhow::Error) -> ExitClass {
    // Refusing to overwrite an existing file is a safety refusal, whichever
    // command and layer noticed it.
    let exists = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists)
            || matches!(
                cause.downcast_ref::<reliquary_image::keys::KeyError>(),
                Some(reliquary_image::keys::KeyError::Exists(_))
            )
    });
    if exists {
        return ExitClass::Refused;
    }
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
        if let Some(e) = cause.downcast_ref::<restore::AlreadyReported>() {
            return e.0;
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
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::report::ReportError>() {
            return e.exit_class();
        }
        // Anyone on the machine could have changed who is trusted.
        if let Some(reliquary_image::trust::TrustError::WorldWritable(_)) =
            cause.downcast_ref::<reliquary_image::trust::TrustError>()
        {
            return ExitClass::Refused;
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::operators::SignInError>() {
            return e.exit_class();
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::audit::AuditError>() {
            return e.exit_class();
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::stick::StickError>() {
            return e.exit_class();
        }
        if let Some(e) = cause.downcast_ref::<reliquary_image::ImageError>() {
            return image_error_class(e);
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::capture::CaptureError>() {
            return e.exit_class();
        }
        if let Some(e) = cause.downcast_ref::<reliquary_appliance::ops::SourceError>() {
            return e.exit_class();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument says what it is for, and every command shows an example.
    #[test]
    fn every_help_entry_is_filled_and_every_command_has_an_example() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() && path != " reliquary" {
                missing.push(format!("{path}: no description"));
            }
            let leaf = command.get_subcommands().next().is_none();
            let example = command
                .get_after_help()
                .is_some_and(|h| h.to_string().contains("Example"));
            if leaf && !example {
                missing.push(format!("{path}: no example"));
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}: no help", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
