//! Reading one disk's sysfs directory, defensively.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Component, Path, PathBuf};

use super::{
    DevNum, DiscoverError, DiscoverOptions, Disk, DiskRoles, Mount, MountEntry, Partition,
    Transport,
};

/// The most bytes read from any one sysfs attribute or udev record.
pub(super) const MAX_ATTR: u64 = 4096;
/// The most bytes read from a udev database record.
const MAX_UDEV_RECORD: u64 = 64 * 1024;
/// How far up the device tree to look for a USB serial number.
const MAX_ANCESTORS: usize = 12;

/// Reads `/sys/block/<name>`; `None` for devices that are not targets
/// (zero size, hidden, loop devices with nothing attached).
pub(super) fn read_disk(
    sysfs_root: &Path,
    name: &str,
    mounts: &[MountEntry],
    options: &DiscoverOptions,
) -> Result<Option<Disk>, DiscoverError> {
    let dir = sysfs_root.join("block").join(name);
    let size_bytes = sectors_to_bytes(&dir.join("size"))?;
    if size_bytes == 0 || flag(&dir.join("hidden"))?.unwrap_or(false) {
        return Ok(None);
    }
    let devnum = devnum(&dir.join("dev"))?;
    let backing_file = text(&dir.join("loop/backing_file")).map(PathBuf::from);
    let transport = transport(sysfs_root, &dir, name);
    if transport == Transport::Loop && backing_file.is_none() {
        return Ok(None);
    }
    let path = dev_path(&options.dev_root, name);
    let udev = udev_record(options, devnum);

    let mut partitions = Vec::new();
    for part_dir in partition_dirs(&dir)? {
        partitions.push(read_partition(&part_dir, options)?);
    }
    partitions.sort_by_key(|p| p.number);

    let mut mount_list = mounts_of(mounts, devnum, &path);
    for part in &partitions {
        mount_list.extend(mounts_of(mounts, part.devnum, &part.path));
    }

    Ok(Some(Disk {
        name: name.to_owned(),
        devnum,
        diskseq: text(&dir.join("diskseq")).and_then(|s| s.parse().ok()),
        // virtio reports its PCI vendor id (0x1af4) here, which names no one.
        vendor: text(&dir.join("device/vendor")).filter(|v| !v.starts_with("0x")),
        model: text(&dir.join("device/model")),
        serial: serial(&dir),
        wwn: text(&dir.join("device/wwid")).or_else(|| text(&dir.join("wwid"))),
        size_bytes,
        logical_sector_size: sector_size(&dir.join("queue/logical_block_size"))?,
        physical_sector_size: sector_size(&dir.join("queue/physical_block_size"))?,
        transport,
        removable: flag(&dir.join("removable"))?.unwrap_or(false),
        rotational: flag(&dir.join("queue/rotational"))?.unwrap_or(false),
        read_only: required(&dir.join("ro"), flag(&dir.join("ro"))?)?,
        partition_table: udev.get("ID_PART_TABLE_TYPE").cloned(),
        partitions,
        mounts: mount_list,
        holders: holders(&dir),
        roles: DiskRoles::default(),
        backing_file,
        path,
        unreadable: None,
    }))
}

fn read_partition(dir: &Path, options: &DiscoverOptions) -> Result<Partition, DiscoverError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let devnum = devnum(&dir.join("dev"))?;
    let number_path = dir.join("partition");
    let number = required(&number_path, parse_number::<u32>(&number_path)?)?;
    let start_path = dir.join("start");
    let udev = udev_record(options, devnum);
    let uevent = uevent(&dir.join("uevent"));
    Ok(Partition {
        path: dev_path(&options.dev_root, &name),
        devnum,
        number,
        start_sector_512: required(&start_path, parse_number::<u64>(&start_path)?)?,
        size_bytes: sectors_to_bytes(&dir.join("size"))?,
        read_only: flag(&dir.join("ro"))?.unwrap_or(false),
        label: udev
            .get("ID_PART_ENTRY_NAME")
            .or_else(|| uevent.get("PARTNAME"))
            .cloned(),
        part_type: udev.get("ID_PART_ENTRY_TYPE").cloned(),
        fs_type: udev.get("ID_FS_TYPE").cloned(),
        fs_label: udev.get("ID_FS_LABEL").cloned(),
        holders: holders(dir),
        name,
    })
}

/// The partition subdirectories of a disk: those with a `partition` file.
fn partition_dirs(disk_dir: &Path) -> Result<Vec<PathBuf>, DiscoverError> {
    let entries = std::fs::read_dir(disk_dir).map_err(|source| DiscoverError::ListDisks {
        path: disk_dir.to_owned(),
        source,
    })?;
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.join("partition").is_file() {
            dirs.push(path);
        }
    }
    Ok(dirs)
}

/// The mounts whose device is `devnum` or whose source is the device node
/// (file systems such as btrfs report an anonymous device number).
fn mounts_of(mounts: &[MountEntry], devnum: DevNum, path: &Path) -> Vec<Mount> {
    mounts
        .iter()
        .filter(|m| m.devnum == devnum || m.source == path)
        .map(|m| Mount {
            device: path.to_owned(),
            mount_point: m.mount_point.to_string_lossy().into_owned(),
            fs_type: m.fs_type.clone(),
        })
        .collect()
}

/// The transport, from where the disk sits in the device tree
/// (`/sys/block/sda -> ../devices/pci…/ata1/host0/…/block/sda`).
pub(super) fn transport(sysfs_root: &Path, disk_dir: &Path, name: &str) -> Transport {
    if name.starts_with("loop") {
        return Transport::Loop;
    }
    let (Ok(root), Ok(real)) = (sysfs_root.canonicalize(), disk_dir.canonicalize()) else {
        return Transport::Unknown;
    };
    // Only the part below the sysfs root: a fixture's own path says nothing.
    let Ok(rel) = real.strip_prefix(&root) else {
        return Transport::Unknown;
    };
    let parts: Vec<String> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let has = |prefix: &str| parts.iter().any(|p| p.starts_with(prefix));
    // USB first: a USB-to-SATA bridge also shows SCSI hosts below the USB port.
    if has("usb") {
        Transport::Usb
    } else if has("nvme") {
        Transport::Nvme
    } else if has("virtio") {
        Transport::Virtio
    } else if has("ata") {
        Transport::Sata
    } else if has("mmc") {
        Transport::Mmc
    } else if has("host") {
        Transport::Scsi
    } else {
        Transport::Unknown
    }
}

/// The serial number, wherever this kind of device keeps it.
fn serial(disk_dir: &Path) -> Option<String> {
    text(&disk_dir.join("device/serial"))
        .or_else(|| text(&disk_dir.join("serial")))
        .or_else(|| vpd_serial(&disk_dir.join("device/vpd_pg80")))
        .or_else(|| usb_serial(disk_dir))
}

/// The SCSI Unit Serial Number VPD page (0x80): a 4-byte header whose last
/// byte is the length, then the ASCII serial.
fn vpd_serial(path: &Path) -> Option<String> {
    let raw = read_bounded(path).ok()??;
    let len = usize::from(*raw.get(3)?);
    clean(raw.get(4..4 + len)?)
}

/// USB mass storage keeps the serial on the USB device, an ancestor of the
/// SCSI device.
fn usb_serial(disk_dir: &Path) -> Option<String> {
    let mut dir = disk_dir.join("device").canonicalize().ok()?;
    for _ in 0..MAX_ANCESTORS {
        if dir.join("idVendor").is_file() {
            return text(&dir.join("serial"));
        }
        dir = dir.parent()?.to_owned();
    }
    None
}

/// The names of the devices stacked on this one.
fn holders(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("holders")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `/dev/<name>`; sysfs spells `/` in names as `!` (`cciss!c0d0`).
fn dev_path(dev_root: &Path, name: &str) -> PathBuf {
    dev_root.join(name.replace('!', "/"))
}

/// udev's `E:KEY=value` properties for a block device; empty when udev has
/// no record (no udev running, as on the appliance's minimal init).
fn udev_record(options: &DiscoverOptions, devnum: DevNum) -> HashMap<String, String> {
    let Some(root) = &options.udev_data_root else {
        return HashMap::new();
    };
    let Ok(Some(raw)) = read_limited(&root.join(format!("b{devnum}")), MAX_UDEV_RECORD) else {
        return HashMap::new();
    };
    String::from_utf8_lossy(&raw)
        .lines()
        .filter_map(|l| l.strip_prefix("E:")?.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), clean(v.as_bytes())?)))
        .collect()
}

/// The `KEY=value` lines of a sysfs `uevent` file.
fn uevent(path: &Path) -> HashMap<String, String> {
    let Ok(Some(raw)) = read_bounded(path) else {
        return HashMap::new();
    };
    String::from_utf8_lossy(&raw)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), clean(v.as_bytes())?)))
        .collect()
}

/// A text attribute for display: `None` when missing, unreadable or blank.
fn text(path: &Path) -> Option<String> {
    clean(&read_bounded(path).ok()??)
}

/// Lossy UTF-8, control characters dropped, whitespace trimmed.
fn clean(raw: &[u8]) -> Option<String> {
    let s: String = String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A number attribute: `None` when missing, an error naming the file when it
/// holds anything but a decimal number.
fn parse_number<T: std::str::FromStr>(path: &Path) -> Result<Option<T>, DiscoverError> {
    let Some(raw) = read_bounded(path)? else {
        return Ok(None);
    };
    let s = String::from_utf8_lossy(&raw);
    s.trim()
        .parse()
        .map(Some)
        .map_err(|_| DiscoverError::BadAttribute {
            path: path.to_owned(),
            value: s.trim().chars().take(64).collect(),
            expected: "a decimal number",
        })
}

/// A `0`/`1` attribute.
fn flag(path: &Path) -> Result<Option<bool>, DiscoverError> {
    match parse_number::<u8>(path)? {
        None => Ok(None),
        Some(0) => Ok(Some(false)),
        Some(1) => Ok(Some(true)),
        Some(other) => Err(DiscoverError::BadAttribute {
            path: path.to_owned(),
            value: other.to_string(),
            expected: "0 or 1",
        }),
    }
}

/// A `size` attribute (always in 512-byte units), in bytes.
fn sectors_to_bytes(path: &Path) -> Result<u64, DiscoverError> {
    let sectors: u64 = required(path, parse_number(path)?)?;
    sectors
        .checked_mul(512)
        .ok_or_else(|| DiscoverError::BadAttribute {
            path: path.to_owned(),
            value: sectors.to_string(),
            expected: "a size in 512-byte sectors that fits in 64 bits",
        })
}

/// A sector-size attribute: a power of two of at least 512.
fn sector_size(path: &Path) -> Result<u32, DiscoverError> {
    let size: u32 = required(path, parse_number(path)?)?;
    if size >= 512 && size.is_power_of_two() {
        Ok(size)
    } else {
        Err(DiscoverError::BadAttribute {
            path: path.to_owned(),
            value: size.to_string(),
            expected: "a power of two of at least 512",
        })
    }
}

/// A `dev` attribute (`8:0`).
pub(super) fn devnum(path: &Path) -> Result<DevNum, DiscoverError> {
    let raw = read_bounded(path)?.ok_or_else(|| DiscoverError::MissingAttribute {
        path: path.to_owned(),
    })?;
    let s = String::from_utf8_lossy(&raw);
    DevNum::parse(&s).ok_or_else(|| DiscoverError::BadAttribute {
        path: path.to_owned(),
        value: s.trim().chars().take(64).collect(),
        expected: "a major:minor device number",
    })
}

fn required<T>(path: &Path, value: Option<T>) -> Result<T, DiscoverError> {
    value.ok_or_else(|| DiscoverError::MissingAttribute {
        path: path.to_owned(),
    })
}

/// Reads at most [`MAX_ATTR`] bytes; `None` when the file does not exist.
pub(super) fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, DiscoverError> {
    read_limited(path, MAX_ATTR)
}

fn read_limited(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, DiscoverError> {
    let err = |source| DiscoverError::ReadAttribute {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let mut buf = Vec::new();
    file.take(limit).read_to_end(&mut buf).map_err(err)?;
    Ok(Some(buf))
}
