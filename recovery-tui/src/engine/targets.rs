//! The disks and files an image could be restored onto, with every reason
//! a disk may not be: the disks and their refusals from the operations
//! layer (`ops::targets`, as `reliquary targets` lists them), drawn as
//! candidates with their confirmation codes.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use reliquary_appliance::audit::AuditLog;
use reliquary_appliance::ops::{self, TargetChoice};
use reliquary_appliance::restore::records::interrupted_restores;
use reliquary_appliance::restore::{already_written_percent, TargetIdentity, TargetInfo};
use reliquary_appliance::safety::{Refusal, TargetRequirement};
use reliquary_image::Image;

use crate::model::{ResumeOffer, TargetCandidate, TargetKind, TargetList};

/// Letters and digits that cannot be mistaken for each other on a console.
const CODE_ALPHABET: &[u8] = b"ACDEFHJKLMNPRTUVWXY34679";

/// What the target list is built for.
#[derive(Debug, Clone)]
pub struct TargetQuery<'a> {
    pub requirement: TargetRequirement,
    pub image_path: &'a Path,
    pub vault: &'a Path,
    pub include_loop: bool,
    pub target_files: &'a [PathBuf],
}

/// Discovers the disks (and lists the `--target-file` files) for an image.
pub fn load_targets(query: &TargetQuery<'_>) -> TargetList {
    let choices = ops::targets(&ops::TargetQuery {
        include_loop: query.include_loop,
        vault: Some(query.vault),
        image: Some(query.image_path),
        requirement: Some(query.requirement),
    });
    let (choices, discovery_error) = match choices {
        Ok(choices) => (choices, None),
        Err(e) => (Vec::new(), Some(error_chain(&e))),
    };
    let mut items: Vec<TargetCandidate> = choices.iter().map(disk_candidate).collect();
    items.extend(query.target_files.iter().map(|p| file_candidate(p, query)));
    TargetList {
        loading: false,
        items,
        discovery_error,
        group_code: random_code(),
    }
}

/// Marks each target the audit log shows an interrupted restore of
/// `image` onto, with about how much of the image it already holds. A log
/// that cannot be read offers no resume: the restore then starts over.
pub fn offer_resumes(list: &mut TargetList, image: &Image<File>, log: &AuditLog) {
    let mut candidates: Vec<&mut TargetCandidate> = list
        .items
        .iter_mut()
        .filter(|t| t.is_selectable() && t.confirmed.is_some())
        .collect();
    let infos: Vec<&TargetInfo> = candidates
        .iter()
        .filter_map(|t| t.confirmed.as_ref())
        .collect();
    // The log is verified once for all the targets.
    let Ok(interrupted) = interrupted_restores(log, image, &infos) else {
        return;
    };
    for (target, interrupted_seq) in candidates.iter_mut().zip(interrupted) {
        let (Some(interrupted_seq), Some(info)) = (interrupted_seq, &target.confirmed) else {
            continue;
        };
        target.resume = Some(ResumeOffer {
            interrupted_seq,
            percent_written: already_written_percent(image, &info.path)
                .map_err(|e| error_chain(&e)),
        });
    }
}

/// A discovered disk as a candidate, with its refusals.
pub fn disk_candidate(choice: &TargetChoice) -> TargetCandidate {
    let disk = &choice.disk;
    let serial = disk.serial.clone().filter(|s| s.chars().count() >= 4);
    let (confirm_code, code_is_serial) = match &serial {
        Some(s) => (s.chars().skip(s.chars().count() - 4).collect(), true),
        None => (random_code(), false),
    };
    TargetCandidate {
        kind: TargetKind::Disk,
        path: disk.path.clone(),
        model: disk.model.clone(),
        serial: disk.serial.clone(),
        size_bytes: disk.size_bytes,
        logical_sector_size: disk.logical_sector_size,
        physical_sector_size: disk.physical_sector_size,
        transport: disk.transport.to_string(),
        partitions: disk
            .partitions
            .iter()
            .map(|p| {
                let mut text = p.name.clone();
                if let Some(fs) = &p.fs_type {
                    text += &format!(" {fs}");
                }
                if let Some(label) = p.fs_label.as_ref().or(p.label.as_ref()) {
                    text += &format!(" \"{label}\"");
                }
                text
            })
            .collect(),
        refusals: choice
            .refusals
            .iter()
            .map(|r| without_device_prefix(&refusal_text(r), &disk.path))
            .collect(),
        confirm_code,
        code_is_serial,
        confirmed: Some(TargetInfo::of_disk(disk)),
        resume: None,
    }
}

/// A refusal as the technician reads it: sizes in GiB/MiB, not bytes.
fn refusal_text(refusal: &Refusal) -> String {
    match refusal {
        Refusal::TooSmall {
            device,
            target_bytes,
            required_bytes,
        } => format!(
            "refusing to write {}: it holds {} but the image needs {}; use a disk of at least {}",
            device.display(),
            crate::ui::bytes(*target_bytes),
            crate::ui::bytes(*required_bytes),
            crate::ui::disk_size(*required_bytes),
        ),
        other => other.to_string(),
    }
}

fn file_candidate(path: &Path, query: &TargetQuery<'_>) -> TargetCandidate {
    let mut refused = Vec::new();
    let meta = std::fs::metadata(path).ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        refused.push(format!("{} is a directory", path.display()));
    }
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_file(path, query.image_path) {
        refused.push(format!("{} is the image file itself", path.display()));
    }
    let current = meta.as_ref().filter(|m| m.is_file()).map_or(0, |m| m.len());
    let identity = match &meta {
        Some(m) => TargetIdentity::File {
            dev: m.dev(),
            ino: m.ino(),
        },
        None => TargetIdentity::NewFile,
    };
    let size_bytes = current.max(query.requirement.min_size_bytes);
    TargetCandidate {
        kind: TargetKind::File,
        path: path.to_path_buf(),
        model: None,
        serial: None,
        size_bytes,
        logical_sector_size: query.requirement.logical_sector_size,
        physical_sector_size: query.requirement.logical_sector_size.max(4096),
        transport: "file".into(),
        partitions: Vec::new(),
        refusals: refused,
        confirm_code: random_code(),
        code_is_serial: false,
        confirmed: Some(TargetInfo {
            path: path.to_path_buf(),
            is_block_device: false,
            model: None,
            serial: None,
            wwn: None,
            size_bytes,
            logical_sector_size: query.requirement.logical_sector_size,
            physical_sector_size: query.requirement.logical_sector_size,
            identity,
        }),
        resume: None,
    }
}

/// The list already names the disk, so "refusing to write /dev/sda: " is
/// dropped from each reason.
fn without_device_prefix(reason: &str, device: &Path) -> String {
    let prefix = format!("refusing to write {}: ", device.display());
    reason.strip_prefix(&prefix).unwrap_or(reason).to_string()
}

/// Four characters the operator must read off the screen and type.
fn random_code() -> String {
    // RandomState is seeded randomly per process: enough to make the code
    // something that has to be read, not remembered.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut bits = hasher.finish();
    (0..4)
        .map(|_| {
            let c = CODE_ALPHABET[(bits % CODE_ALPHABET.len() as u64) as usize];
            bits /= CODE_ALPHABET.len() as u64;
            char::from(c)
        })
        .collect()
}

pub use reliquary_appliance::error_chain;
