//! Safety refusals: the reasons a disk must not be restored onto.
//!
//! [`check_target`] is pure: it judges a discovered [`Disk`] against what the
//! image needs. The restore engine calls it before opening the target, and
//! maps a failed exclusive open to [`Refusal::Busy`]; the TUI calls
//! [`refusals`] to grey out unsafe disks and show every reason.

use std::path::PathBuf;

use crate::discover::Disk;
use crate::exit::ExitClass;

/// What the image needs of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetRequirement {
    /// The size of the image's disk: the target must be at least this big.
    pub min_size_bytes: u64,
    /// The image's logical sector size: the target's must be equal.
    pub logical_sector_size: u32,
}

/// Why a disk may not be restored onto. Every message names the device and
/// says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "refusing to write {device}: it holds the running system; \
         choose another disk"
    )]
    HoldsRunningSystem { device: PathBuf },
    #[error(
        "refusing to write {device}: it holds the image file being restored; \
         copy the image to another disk or choose another target"
    )]
    HoldsImageFile { device: PathBuf },
    #[error(
        "refusing to write {device}: it holds the image vault; \
         choose another disk"
    )]
    HoldsVault { device: PathBuf },
    #[error(
        "refusing to write {device}: {partition} is mounted on {mount_point}; \
         unmount it first"
    )]
    Mounted {
        device: PathBuf,
        partition: PathBuf,
        mount_point: String,
    },
    #[error(
        "refusing to write {device}: {partition} is in use by {holder} \
         (device-mapper, RAID or LVM); stop it first"
    )]
    Held {
        device: PathBuf,
        partition: PathBuf,
        holder: String,
    },
    #[error(
        "refusing to write {device}: it is read-only; \
         remove the write protection or choose another disk"
    )]
    ReadOnly { device: PathBuf },
    #[error(
        "refusing to write {device}: its logical sectors are {target} bytes but the \
         image's are {image} bytes; use a disk with {image}-byte sectors"
    )]
    SectorSizeMismatch {
        device: PathBuf,
        target: u32,
        image: u32,
    },
    #[error(
        "refusing to write {device}: it holds {target_bytes} bytes but the image needs \
         {required_bytes} bytes; use a disk of at least {required_bytes} bytes"
    )]
    TooSmall {
        device: PathBuf,
        target_bytes: u64,
        required_bytes: u64,
    },
    #[error(
        "refusing to write {device}: it could not be opened exclusively, so something \
         holds it; unmount its partitions and stop whatever uses it"
    )]
    Busy { device: PathBuf },
    #[error("refusing to write {device}: its sysfs could not be read ({reason})")]
    Unreadable { device: PathBuf, reason: String },
    #[error(
        "refusing to write {device}: it is not the disk that was confirmed ({field} was \
         {confirmed}, now {found}); list the disks again and confirm anew"
    )]
    NotTheConfirmedDisk {
        device: PathBuf,
        field: &'static str,
        confirmed: String,
        found: String,
    },
    #[error(
        "refusing to restore: {first} and {second} are the same disk or file; name each target once"
    )]
    NamedTwice { first: PathBuf, second: PathBuf },
    #[error(
        "refusing to write {path}: it does not exist; a restore creates a file only when \
         asked with --create-file, and never under /dev"
    )]
    NoSuchTarget { path: PathBuf },
    #[error("refusing to create {path}: it is under /dev, where only devices belong")]
    FileUnderDev { path: PathBuf },
}

impl Refusal {
    /// Refusals exit with 4.
    pub fn exit_class(&self) -> ExitClass {
        ExitClass::Refused
    }
}

/// Checks that `disk` may be restored onto with an image needing
/// `requirement`; the error is the most serious reason it may not.
///
/// The disk's roles come from discovery, so discover with the vault and image
/// paths of this restore ([`SystemPaths`](crate::discover::SystemPaths)).
pub fn check_target(disk: &Disk, requirement: &TargetRequirement) -> Result<(), Refusal> {
    match refusals(disk, requirement).into_iter().next() {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

/// Every reason `disk` may not be restored onto, most serious first; empty
/// when it may.
pub fn refusals(disk: &Disk, requirement: &TargetRequirement) -> Vec<Refusal> {
    let device = || disk.path.clone();
    let mut out = Vec::new();
    if let Some(reason) = &disk.unreadable {
        out.push(Refusal::Unreadable {
            device: device(),
            reason: reason.clone(),
        });
        return out;
    }
    if disk.roles.system {
        out.push(Refusal::HoldsRunningSystem { device: device() });
    }
    if disk.roles.image {
        out.push(Refusal::HoldsImageFile { device: device() });
    }
    if disk.roles.vault {
        out.push(Refusal::HoldsVault { device: device() });
    }
    for mount in &disk.mounts {
        out.push(Refusal::Mounted {
            device: device(),
            partition: mount.device.clone(),
            mount_point: mount.mount_point.clone(),
        });
    }
    let whole = disk.holders.iter().map(|h| (disk.path.clone(), h));
    let parts = disk
        .partitions
        .iter()
        .flat_map(|p| p.holders.iter().map(|h| (p.path.clone(), h)));
    for (partition, holder) in whole.chain(parts) {
        out.push(Refusal::Held {
            device: device(),
            partition,
            holder: holder.clone(),
        });
    }
    if disk.read_only {
        out.push(Refusal::ReadOnly { device: device() });
    }
    if disk.logical_sector_size != requirement.logical_sector_size {
        out.push(Refusal::SectorSizeMismatch {
            device: device(),
            target: disk.logical_sector_size,
            image: requirement.logical_sector_size,
        });
    }
    if disk.size_bytes < requirement.min_size_bytes {
        out.push(Refusal::TooSmall {
            device: device(),
            target_bytes: disk.size_bytes,
            required_bytes: requirement.min_size_bytes,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{DevNum, DiskRoles, Mount, Partition, Transport};

    const REQ: TargetRequirement = TargetRequirement {
        min_size_bytes: 1 << 30,
        logical_sector_size: 512,
    };

    fn disk() -> Disk {
        Disk {
            name: "sdb".into(),
            path: "/dev/sdb".into(),
            devnum: DevNum {
                major: 8,
                minor: 16,
            },
            diskseq: None,
            vendor: None,
            model: Some("Test".into()),
            serial: Some("123".into()),
            wwn: None,
            size_bytes: 2 << 30,
            logical_sector_size: 512,
            physical_sector_size: 4096,
            transport: Transport::Sata,
            removable: false,
            rotational: false,
            read_only: false,
            partition_table: None,
            partitions: vec![Partition {
                name: "sdb1".into(),
                path: "/dev/sdb1".into(),
                devnum: DevNum {
                    major: 8,
                    minor: 17,
                },
                number: 1,
                start_sector_512: 2048,
                size_bytes: 1 << 30,
                read_only: false,
                label: None,
                part_type: None,
                fs_type: None,
                fs_label: None,
                holders: Vec::new(),
            }],
            mounts: Vec::new(),
            holders: Vec::new(),
            roles: DiskRoles::default(),
            backing_file: None,
            unreadable: None,
        }
    }

    fn refused(d: &Disk) -> Refusal {
        let r = check_target(d, &REQ).expect_err("refused");
        assert_eq!(r.exit_class(), ExitClass::Refused);
        r
    }

    #[test]
    fn a_safe_disk_passes() {
        assert_eq!(check_target(&disk(), &REQ), Ok(()));
        let mut exact = disk();
        exact.size_bytes = REQ.min_size_bytes;
        assert_eq!(check_target(&exact, &REQ), Ok(()));
    }

    #[test]
    fn running_system() {
        let mut d = disk();
        d.roles.system = true;
        let r = refused(&d);
        assert!(matches!(r, Refusal::HoldsRunningSystem { .. }));
        assert!(r.to_string().contains("running system"), "{r}");
    }

    #[test]
    fn image_file_and_vault() {
        let mut d = disk();
        d.roles.image = true;
        assert!(matches!(refused(&d), Refusal::HoldsImageFile { .. }));
        let mut d = disk();
        d.roles.vault = true;
        assert!(matches!(refused(&d), Refusal::HoldsVault { .. }));
    }

    #[test]
    fn mounted_partition_names_it() {
        let mut d = disk();
        d.mounts.push(Mount {
            device: "/dev/sdb1".into(),
            mount_point: "/mnt/data".into(),
            fs_type: "ntfs3".into(),
        });
        let r = refused(&d);
        assert_eq!(
            r.to_string(),
            "refusing to write /dev/sdb: /dev/sdb1 is mounted on /mnt/data; unmount it first"
        );
    }

    #[test]
    fn held_partition_names_the_holder() {
        let mut d = disk();
        d.partitions[0].holders.push("dm-0".into());
        let r = refused(&d);
        assert!(
            matches!(&r, Refusal::Held { partition, holder, .. }
                if partition == &PathBuf::from("/dev/sdb1") && holder == "dm-0"),
            "{r:?}"
        );
    }

    #[test]
    fn read_only() {
        let mut d = disk();
        d.read_only = true;
        assert!(matches!(refused(&d), Refusal::ReadOnly { .. }));
    }

    #[test]
    fn sector_size_mismatch_names_both_sizes() {
        let mut d = disk();
        d.logical_sector_size = 4096;
        let r = refused(&d);
        assert_eq!(
            r,
            Refusal::SectorSizeMismatch {
                device: "/dev/sdb".into(),
                target: 4096,
                image: 512
            }
        );
        let msg = r.to_string();
        assert!(msg.contains("4096") && msg.contains("512"), "{msg}");
    }

    #[test]
    fn too_small_names_both_sizes() {
        let mut d = disk();
        d.size_bytes = REQ.min_size_bytes - 512;
        let r = refused(&d);
        let msg = r.to_string();
        assert!(matches!(r, Refusal::TooSmall { .. }));
        assert!(
            msg.contains(&(REQ.min_size_bytes - 512).to_string())
                && msg.contains(&REQ.min_size_bytes.to_string()),
            "{msg}"
        );
    }

    #[test]
    fn busy_is_a_refusal() {
        let r = Refusal::Busy {
            device: "/dev/sdb".into(),
        };
        assert_eq!(r.exit_class(), ExitClass::Refused);
        assert!(r.to_string().contains("exclusively"), "{r}");
    }

    #[test]
    fn every_reason_is_listed_most_serious_first() {
        let mut d = disk();
        d.roles.system = true;
        d.read_only = true;
        d.size_bytes = 0;
        let all = refusals(&d, &REQ);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(matches!(all[0], Refusal::HoldsRunningSystem { .. }));
        assert!(matches!(all[1], Refusal::ReadOnly { .. }));
        assert!(matches!(all[2], Refusal::TooSmall { .. }));
    }
}
