//! Which disks an image may be restored onto, and why the others may not:
//! one answer for `reliquary targets` and the TUI's target list.

use std::path::Path;

use serde::{Serialize, Serializer};

use crate::discover::{discover_system, DiscoverError, Disk, SystemPaths};
use crate::safety::{refusals, Refusal, TargetRequirement};

/// What the list is for.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetQuery<'a> {
    /// Also list loop devices with a file attached.
    pub include_loop: bool,
    /// The vault images are read from: its disk is refused.
    pub vault: Option<&'a Path>,
    /// The image to restore: its disk is refused.
    pub image: Option<&'a Path>,
    /// What that image needs of its target (size, logical sector size).
    /// Without it only the refusals that hold for any image are given.
    pub requirement: Option<TargetRequirement>,
}

/// A discovered disk and every reason it may not be written.
#[derive(Debug, Clone, Serialize)]
pub struct TargetChoice {
    #[serde(flatten)]
    pub disk: Disk,
    /// Most serious first; empty when the disk may be written.
    #[serde(serialize_with = "as_messages")]
    pub refusals: Vec<Refusal>,
}

impl TargetChoice {
    pub fn may_be_written(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// Discovers the disks and judges each for the query.
pub fn targets(query: &TargetQuery<'_>) -> Result<Vec<TargetChoice>, DiscoverError> {
    let paths = SystemPaths {
        vault: query.vault.map(Path::to_path_buf),
        image: query.image.map(Path::to_path_buf),
    };
    let disks = discover_system(query.include_loop, &paths)?;
    Ok(disks
        .into_iter()
        .map(|disk| {
            // Without an image, a requirement every disk meets.
            let requirement = query.requirement.unwrap_or(TargetRequirement {
                min_size_bytes: 0,
                logical_sector_size: disk.logical_sector_size,
            });
            TargetChoice {
                refusals: refusals(&disk, &requirement),
                disk,
            }
        })
        .collect())
}

fn as_messages<S: Serializer>(refusals: &[Refusal], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(refusals.iter().map(ToString::to_string))
}
