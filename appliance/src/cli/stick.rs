//! `reliquary stick verify`: a stick against its build's manifest, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use reliquary_appliance::stick::{self, StickError};

#[derive(Debug, Args)]
pub struct StickArgs {
    #[command(subcommand)]
    command: StickCommand,
}

#[derive(Debug, Subcommand)]
enum StickCommand {
    /// Check the protective MBR, both GPTs, every partition but audit, the
    /// audit file system and the verity root hash against the manifest the
    /// stick's build wrote.
    #[command(
        after_help = "Example:\n  reliquary stick verify /dev/sdc --manifest reliquary-stick.img.manifest"
    )]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The stick: a block device or an image file.
    #[arg(value_name = "DEVICE|FILE")]
    stick: PathBuf,
    /// The build's manifest (default: FILE.manifest next to an image file).
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
}

pub fn run(args: StickArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        StickCommand::Verify(a) => verify(a),
    }
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let manifest_path = a.manifest.clone().unwrap_or_else(|| {
        let mut name = a.stick.clone().into_os_string();
        name.push(".manifest");
        PathBuf::from(name)
    });
    let manifest = stick::read_manifest(&manifest_path)?;
    let report = stick::verify_stick(&a.stick, &manifest)?;
    if super::output::get().json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("could not write JSON")?
        );
    } else {
        for check in &report.checks {
            let word = if check.matches { "ok     " } else { "DIFFERS" };
            println!("{word} {:<28} {}", check.item, check.detail);
        }
    }
    if !report.all_match() {
        return Err(StickError::Differs {
            count: report.differences(),
        }
        .into());
    }
    println!(
        "{} matches {}: the boot code, both partition tables, every partition but audit, \
         the audit file system and the root hash",
        a.stick.display(),
        manifest_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
