//! `reliquary targets`: the disks an image could be restored onto, and why
//! the others may not, as the operations layer lists them for the TUI too.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use reliquary_appliance::discover::Disk;
use reliquary_appliance::ops::{self, TargetChoice, TargetQuery};
use reliquary_appliance::safety::TargetRequirement;

use super::inputs::open_image;
use super::progress::human_bytes;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  reliquary targets --vault /media/vault --image /media/vault/hmi-7.rimg --json"
)]
pub struct TargetsArgs {
    /// Also list loop devices that have a file attached.
    #[arg(long)]
    include_loop: bool,
    /// The vault directory images are read from; its disk is marked VAULT.
    #[arg(long, value_name = "DIR")]
    vault: Option<PathBuf>,
    /// The image to restore: disks too small for it or with other sectors
    /// are refused too, and its own disk is marked IMAGE. Its manifest is
    /// read, not verified.
    #[arg(long, value_name = "IMAGE")]
    image: Option<PathBuf>,
}

pub fn run(args: TargetsArgs) -> anyhow::Result<ExitCode> {
    let requirement = match &args.image {
        Some(path) => {
            let (manifest, _) = open_image(path)?.claims()?;
            Some(TargetRequirement {
                min_size_bytes: manifest.logical_bytes(),
                logical_sector_size: manifest.source.logical_sector_size,
            })
        }
        None => None,
    };
    let choices = ops::targets(&TargetQuery {
        include_loop: args.include_loop,
        vault: args.vault.as_deref(),
        image: args.image.as_deref(),
        requirement,
    })
    .context("could not list the disks")?;
    let mut out = std::io::stdout().lock();
    if super::output::get().json {
        serde_json::to_writer_pretty(&mut out, &choices).context("could not write JSON")?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &choices)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_table(out: &mut impl Write, choices: &[TargetChoice]) -> std::io::Result<()> {
    if choices.is_empty() {
        return writeln!(out, "No disks found.");
    }
    writeln!(
        out,
        "{:<16} {:>10} {:>9} {:<9} {:<24} {:<20} FLAGS",
        "PATH", "SIZE", "SECTORS", "TRANSPORT", "MODEL", "SERIAL"
    )?;
    for TargetChoice { disk, refusals } in choices {
        writeln!(
            out,
            "{:<16} {:>10} {:>9} {:<9} {:<24} {:<20} {}",
            disk.path.display(),
            human_bytes(disk.size_bytes),
            format!("{}/{}", disk.logical_sector_size, disk.physical_sector_size),
            disk.transport.to_string(),
            disk.model.as_deref().unwrap_or("-"),
            disk.serial.as_deref().unwrap_or("-"),
            flags(disk),
        )?;
        for part in &disk.partitions {
            let what = [&part.fs_type, &part.label, &part.fs_label]
                .into_iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join(" ");
            let mounted: Vec<&str> = disk
                .mounts
                .iter()
                .filter(|m| m.device == part.path)
                .map(|m| m.mount_point.as_str())
                .collect();
            write!(
                out,
                "  {:<14} {:>10}  start {:<10} {}",
                part.path.display(),
                human_bytes(part.size_bytes),
                part.start_sector_512,
                what
            )?;
            if !mounted.is_empty() {
                write!(out, " mounted on {}", mounted.join(", "))?;
            }
            writeln!(out)?;
        }
        let prefix = format!("refusing to write {}: ", disk.path.display());
        for refusal in refusals {
            let reason = refusal.to_string();
            writeln!(
                out,
                "  refused: {}",
                reason.strip_prefix(&prefix).unwrap_or(&reason)
            )?;
        }
    }
    Ok(())
}

/// Short upper-case words for what makes a disk special or unsafe.
fn flags(disk: &Disk) -> String {
    let holders = !disk.holders.is_empty() || disk.partitions.iter().any(|p| !p.holders.is_empty());
    [
        (disk.roles.system, "SYSTEM"),
        (disk.roles.vault, "VAULT"),
        (disk.roles.image, "IMAGE"),
        (disk.is_mounted(), "MOUNTED"),
        (holders, "HELD"),
        (disk.read_only, "RO"),
        (disk.removable, "REMOVABLE"),
    ]
    .into_iter()
    .filter_map(|(on, word)| on.then_some(word))
    .collect::<Vec<_>>()
    .join(",")
}
