//! Low-level device access: block-device ioctls, exclusive opens, aligned
//! buffers for `O_DIRECT`, and zeroing ranges of regular files.
//!
//! This is the only module of the crate allowed to use `unsafe`; every unsafe
//! block carries a `// SAFETY:` comment. Everything exported from here is a
//! safe function returning typed values and a typed [`SysError`].
//!
//! The functions take a `&File` rather than a path, so their errors carry the
//! operation and the byte range; the caller, who knows which device it opened,
//! adds the device path to its own error.
#![allow(unsafe_code)]

mod aligned;
mod blockdev;
mod file;

use std::io;
use std::path::PathBuf;

use crate::exit::ExitClass;

pub use aligned::{AlignError, AlignedBuf};
pub use blockdev::{
    device_size_bytes, discard_zeroing, discards_to_zero, flush_buffers, is_block_device,
    logical_sector_size, open_exclusive_for_write, physical_sector_size, reread_partitions,
    zero_out, TargetKind, WriteTarget,
};
pub use file::{open_direct, punch_or_zero_range, reopen_direct, ZeroMethod};

/// Lets a closed stdout end the process quietly, as it ends `cat` or `ls`
/// (`reliquary inspect IMG | head`), where a failed print would panic.
/// Only for commands that write nothing: the others keep ignoring SIGPIPE,
/// so a closed pipe can never stop them halfway through a write or a record.
pub fn end_quietly_on_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: the default action runs no code of ours, so no handler can
    // break async-signal safety; replacing a disposition is always sound.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// A failed low-level operation on a device or file.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// `open(2)` of a restore target failed for a reason other than it being busy.
    #[error("could not open {path} for writing")]
    Open { path: PathBuf, source: io::Error },
    /// The exclusive open of a block device failed with `EBUSY`: a partition
    /// is mounted, or something (device-mapper, RAID, swap) holds it.
    #[error(
        "{path} is busy: it or one of its partitions is mounted or held by another \
         user; unmount it and stop whatever holds it, then try again"
    )]
    Busy { path: PathBuf },
    /// The target is neither a block device nor a regular file.
    #[error("{path} is neither a block device nor a regular file")]
    UnsupportedTarget { path: PathBuf },
    /// `fstat(2)` on an open file failed.
    #[error("could not stat the open target")]
    Stat { source: io::Error },
    /// `BLKGETSIZE64` failed.
    #[error("could not read the device size (BLKGETSIZE64)")]
    DeviceSize { source: nix::Error },
    /// `BLKSSZGET` failed or returned a nonsensical value.
    #[error("could not read the logical sector size (BLKSSZGET)")]
    LogicalSectorSize { source: nix::Error },
    /// `BLKPBSZGET` failed or returned a nonsensical value.
    #[error("could not read the physical sector size (BLKPBSZGET)")]
    PhysicalSectorSize { source: nix::Error },
    /// `BLKZEROOUT` failed for a reason other than lack of support.
    #[error("could not zero {len} bytes at offset {offset} (BLKZEROOUT)")]
    ZeroOut {
        offset: u64,
        len: u64,
        source: nix::Error,
    },
    /// The device does not implement `BLKZEROOUT`; the caller should write
    /// zeros itself.
    #[error("the device cannot zero {len} bytes at offset {offset} in place; write zeros instead")]
    ZeroOutUnsupported { offset: u64, len: u64 },
    /// The byte range does not fit in the kernel's signed 64-bit offsets.
    #[error("the range of {len} bytes at offset {offset} is out of bounds")]
    RangeOutOfBounds { offset: u64, len: u64 },
    /// `BLKRRPART` failed, after retrying while the device was busy.
    #[error(
        "the kernel could not reread the partition table after {attempts} attempts (BLKRRPART)"
    )]
    RereadPartitions { attempts: u32, source: nix::Error },
    /// `BLKFLSBUF` failed.
    #[error("could not flush the device's buffer cache (BLKFLSBUF)")]
    FlushBuffers { source: nix::Error },
    /// `fallocate(2)` failed for a reason other than lack of support.
    #[error("could not zero {len} bytes at offset {offset} of the file (fallocate)")]
    Fallocate {
        offset: u64,
        len: u64,
        source: nix::Error,
    },
    /// The file system supports neither zero-range nor punch-hole; the caller
    /// should write zeros itself.
    #[error(
        "the file system cannot zero {len} bytes at offset {offset} in place; write zeros instead"
    )]
    ZeroRangeUnsupported { offset: u64, len: u64 },
}

impl SysError {
    /// The exit class: a busy target, or one that is neither a disk nor a
    /// regular file (a FIFO, a socket, a directory), is a safety refusal;
    /// the rest are runtime failures.
    pub fn exit_class(&self) -> ExitClass {
        match self {
            SysError::Busy { .. } | SysError::UnsupportedTarget { .. } => ExitClass::Refused,
            _ => ExitClass::Runtime,
        }
    }

    /// Whether the caller should fall back to writing zeros itself.
    pub fn wants_zero_fallback(&self) -> bool {
        matches!(
            self,
            SysError::ZeroOutUnsupported { .. } | SysError::ZeroRangeUnsupported { .. }
        )
    }
}

/// Converts a byte range to the kernel's signed offsets, refusing overflow.
fn kernel_range(offset: u64, len: u64) -> Result<(i64, i64), SysError> {
    let out = || SysError::RangeOutOfBounds { offset, len };
    let end = offset.checked_add(len).ok_or_else(out)?;
    i64::try_from(end).map_err(|_| out())?;
    Ok((
        i64::try_from(offset).map_err(|_| out())?,
        i64::try_from(len).map_err(|_| out())?,
    ))
}

#[cfg(test)]
pub(crate) mod testutil;
