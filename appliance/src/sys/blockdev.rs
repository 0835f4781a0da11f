//! Block-device ioctls and the exclusive open of a restore target.
//!
//! Modelled on coreos-installer's `src/blockdev.rs`: the raw ioctls live in a
//! small private module and each is wrapped in a safe function.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;

use super::{kernel_range, SysError};

/// How many times [`reread_partitions`] tries while the kernel says `EBUSY`
/// (udev probing a freshly written disk holds it open for a moment).
const REREAD_ATTEMPTS: u32 = 5;

/// What kind of restore target [`open_exclusive_for_write`] opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A block device, opened with `O_EXCL`.
    BlockDevice,
    /// A regular file (tests, producing raw disk files).
    RegularFile,
}

/// An open restore target.
#[derive(Debug)]
pub struct WriteTarget {
    /// The open file, read-write.
    pub file: File,
    /// Whether it is a block device or a regular file.
    pub kind: TargetKind,
    /// The path it was opened by.
    pub path: PathBuf,
}

/// Opens an existing restore target for reading and writing.
///
/// A block device is opened with `O_EXCL`, which the kernel refuses with
/// `EBUSY` while any partition is mounted or the disk is held (device-mapper,
/// RAID, swap); that case is [`SysError::Busy`], a safety refusal. The
/// exclusivity lasts as long as the returned file stays open. A regular file
/// is opened without `O_EXCL` (it means nothing there without `O_CREAT`).
/// With `direct`, the file is opened with `O_DIRECT`, so reads and writes
/// need [`AlignedBuf`](super::AlignedBuf) buffers and sector-aligned offsets.
pub fn open_exclusive_for_write(path: &Path, direct: bool) -> Result<WriteTarget, SysError> {
    let open_err = |source| SysError::Open {
        path: path.to_owned(),
        source,
    };
    let file_type = std::fs::metadata(path).map_err(open_err)?.file_type();
    let kind = if file_type.is_block_device() {
        TargetKind::BlockDevice
    } else if file_type.is_file() {
        TargetKind::RegularFile
    } else {
        return Err(SysError::UnsupportedTarget {
            path: path.to_owned(),
        });
    };
    let mut flags = 0;
    if kind == TargetKind::BlockDevice {
        flags |= libc::O_EXCL;
    }
    if direct {
        flags |= libc::O_DIRECT;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| {
            if source.kind() == ErrorKind::ResourceBusy {
                SysError::Busy {
                    path: path.to_owned(),
                }
            } else {
                open_err(source)
            }
        })?;
    // The path could have been replaced between the stat and the open; the
    // open file is what we will write, so check that one.
    let opened_is_block = is_block_device(&file)?;
    if opened_is_block != (kind == TargetKind::BlockDevice) {
        return Err(SysError::UnsupportedTarget {
            path: path.to_owned(),
        });
    }
    Ok(WriteTarget {
        file,
        kind,
        path: path.to_owned(),
    })
}

/// Whether the open file is a block device.
pub fn is_block_device(file: &File) -> Result<bool, SysError> {
    let meta = file
        .metadata()
        .map_err(|source| SysError::Stat { source })?;
    Ok(meta.file_type().is_block_device())
}

/// The size of a block device in bytes (`BLKGETSIZE64`).
pub fn device_size_bytes(file: &File) -> Result<u64, SysError> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to
    // a live, writable u64 for the duration of the call.
    unsafe { ioctl::blkgetsize64(file.as_raw_fd(), &mut size) }
        .map_err(|source| SysError::DeviceSize { source })?;
    Ok(size)
}

/// The logical sector size in bytes (`BLKSSZGET`): the unit of addressing and
/// the alignment `O_DIRECT` needs.
pub fn logical_sector_size(file: &File) -> Result<NonZeroU32, SysError> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to a
    // live, writable c_int for the duration of the call.
    unsafe { ioctl::blksszget(file.as_raw_fd(), &mut size) }
        .map_err(|source| SysError::LogicalSectorSize { source })?;
    sector_size(size).ok_or(SysError::LogicalSectorSize {
        source: Errno::EINVAL,
    })
}

/// The physical sector size in bytes (`BLKPBSZGET`): the unit the medium
/// writes without read-modify-write.
pub fn physical_sector_size(file: &File) -> Result<NonZeroU32, SysError> {
    let mut size: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one unsigned int through the pointer, which
    // points to a live, writable c_uint for the duration of the call.
    unsafe { ioctl::blkpbszget(file.as_raw_fd(), &mut size) }
        .map_err(|source| SysError::PhysicalSectorSize { source })?;
    i32::try_from(size)
        .ok()
        .and_then(sector_size)
        .ok_or(SysError::PhysicalSectorSize {
            source: Errno::EINVAL,
        })
}

/// Zeros `len` bytes at `offset` on a block device (`BLKZEROOUT`), using the
/// device's write-zeroes or discard-zeroes support where it has it.
///
/// Both values must be multiples of the logical sector size. When the device
/// or kernel does not support the ioctl the error is
/// [`SysError::ZeroOutUnsupported`] ([`SysError::wants_zero_fallback`]), and
/// the caller should write zeros itself.
pub fn zero_out(file: &File, offset: u64, len: u64) -> Result<(), SysError> {
    kernel_range(offset, len)?;
    if len == 0 {
        return Ok(());
    }
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64s (start, length) through the pointer,
    // which points to a live [u64; 2] for the duration of the call.
    match unsafe { ioctl::blkzeroout(file.as_raw_fd(), &range) } {
        Ok(_) => Ok(()),
        Err(Errno::EOPNOTSUPP | Errno::ENOTTY) => Err(SysError::ZeroOutUnsupported { offset, len }),
        Err(source) => Err(SysError::ZeroOut {
            offset,
            len,
            source,
        }),
    }
}

/// Whether the block device open as `file` can zero ranges without
/// writing them (`write_zeroes_max_bytes` in its sysfs queue), which is
/// what [`discard_zeroing`] needs.
pub fn discards_to_zero(file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let (major, minor) = (
        nix::sys::stat::major(meta.rdev()),
        nix::sys::stat::minor(meta.rdev()),
    );
    std::fs::read_to_string(format!(
        "/sys/dev/block/{major}:{minor}/queue/write_zeroes_max_bytes"
    ))
    .ok()
    .and_then(|text| text.trim().parse::<u64>().ok())
    .is_some_and(|max| max > 0)
}

/// Discards `len` bytes at `offset` of a block device so that they read
/// back as zero: `fallocate(PUNCH_HOLE)` on a block device discards only
/// where the device guarantees zeroes afterwards, and fails with
/// `EOPNOTSUPP` ([`SysError::wants_zero_fallback`]) where it does not.
pub fn discard_zeroing(file: &File, offset: u64, len: u64) -> Result<(), SysError> {
    let (off, length) = kernel_range(offset, len)?;
    if len == 0 {
        return Ok(());
    }
    let flags = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match nix::fcntl::fallocate(file.as_raw_fd(), flags, off, length) {
        Ok(()) => Ok(()),
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL) => {
            Err(SysError::ZeroOutUnsupported { offset, len })
        }
        Err(source) => Err(SysError::Fallocate {
            offset,
            len,
            source,
        }),
    }
}

/// Asks the kernel to reread the partition table (`BLKRRPART`) so the new
/// partitions appear, retrying with short sleeps while the device is busy.
pub fn reread_partitions(file: &File) -> Result<(), SysError> {
    let mut attempt = 1;
    loop {
        // SAFETY: BLKRRPART takes no argument; the fd is valid for the
        // duration of the call because `file` is borrowed.
        match unsafe { ioctl::blkrrpart(file.as_raw_fd()) } {
            Ok(_) => return Ok(()),
            Err(Errno::EBUSY) if attempt < REREAD_ATTEMPTS => {
                thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                attempt += 1;
            }
            Err(source) => {
                return Err(SysError::RereadPartitions {
                    attempts: attempt,
                    source,
                })
            }
        }
    }
}

/// Writes back and drops the device's buffer cache (`BLKFLSBUF`), so reads
/// after a restore through the page cache see the medium, not stale pages.
pub fn flush_buffers(file: &File) -> Result<(), SysError> {
    // SAFETY: BLKFLSBUF takes no argument; the fd is valid for the duration
    // of the call because `file` is borrowed.
    unsafe { ioctl::blkflsbuf(file.as_raw_fd()) }
        .map_err(|source| SysError::FlushBuffers { source })?;
    Ok(())
}

/// A sector size the kernel reported, if it is a plausible one (a power of
/// two of at least 512 bytes).
fn sector_size(raw: libc::c_int) -> Option<NonZeroU32> {
    u32::try_from(raw)
        .ok()
        .filter(|s| *s >= 512 && s.is_power_of_two())
        .and_then(NonZeroU32::new)
}

mod ioctl {
    use nix::libc::{c_int, c_uint};
    use nix::{ioctl_none, ioctl_read, ioctl_read_bad, ioctl_write_ptr_bad, request_code_none};

    // <linux/fs.h>
    ioctl_read!(blkgetsize64, 0x12, 114, u64);
    ioctl_read_bad!(blksszget, request_code_none!(0x12, 104), c_int);
    ioctl_read_bad!(blkpbszget, request_code_none!(0x12, 123), c_uint);
    ioctl_none!(blkrrpart, 0x12, 95);
    ioctl_none!(blkflsbuf, 0x12, 97);
    ioctl_write_ptr_bad!(blkzeroout, request_code_none!(0x12, 127), [u64; 2]);
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::sys::testutil::{skip_or_fail, TestLoop};

    #[test]
    fn ioctls_report_loop_geometry() {
        let Some(lo) = TestLoop::new(8 << 20, None) else {
            return;
        };
        let file = File::open(lo.path()).expect("open loop device");
        assert!(is_block_device(&file).expect("fstat"));
        assert_eq!(device_size_bytes(&file).expect("size"), 8 << 20);
        assert_eq!(logical_sector_size(&file).expect("lss").get(), 512);
        assert!(physical_sector_size(&file).expect("pss").get() >= 512);
        flush_buffers(&file).expect("BLKFLSBUF");
    }

    #[test]
    fn ioctls_report_4k_sectors() {
        let Some(lo) = TestLoop::new(8 << 20, Some(4096)) else {
            return;
        };
        let file = File::open(lo.path()).expect("open loop device");
        assert_eq!(logical_sector_size(&file).expect("lss").get(), 4096);
        assert_eq!(physical_sector_size(&file).expect("pss").get(), 4096);
    }

    #[test]
    fn zero_out_zeros_exactly_the_range() {
        let Some(lo) = TestLoop::new(1 << 20, None) else {
            return;
        };
        let target = open_exclusive_for_write(lo.path(), false).expect("open");
        assert_eq!(target.kind, TargetKind::BlockDevice);
        let mut file = target.file;
        file.write_all(&vec![0xAB; 1 << 20]).expect("fill");
        file.sync_all().expect("sync");
        match zero_out(&file, 4096, 8192) {
            Ok(()) => {}
            Err(e) if e.wants_zero_fallback() => {
                skip_or_fail("this loop device does not support BLKZEROOUT");
                return;
            }
            Err(e) => panic!("BLKZEROOUT failed: {e}"),
        }
        let mut back = vec![0; 1 << 20];
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.read_exact(&mut back).expect("read back");
        assert!(back[..4096].iter().all(|b| *b == 0xAB));
        assert!(back[4096..12288].iter().all(|b| *b == 0));
        assert!(back[12288..].iter().all(|b| *b == 0xAB));
    }

    #[test]
    fn zero_out_rejects_ranges_beyond_i64() {
        let file = tempfile::tempfile().expect("temp file");
        let err = zero_out(&file, u64::MAX - 1, 4096).expect_err("overflow");
        assert!(matches!(err, SysError::RangeOutOfBounds { .. }), "{err:?}");
    }

    #[test]
    fn reread_partitions_succeeds_on_partscan_loop() {
        let Some(lo) = TestLoop::new(4 << 20, None) else {
            return;
        };
        let file = File::open(lo.path()).expect("open loop device");
        reread_partitions(&file).expect("BLKRRPART");
    }

    #[test]
    fn exclusive_open_of_held_device_is_busy() {
        let Some(lo) = TestLoop::new(1 << 20, None) else {
            return;
        };
        let first = open_exclusive_for_write(lo.path(), true).expect("first open");
        let err = open_exclusive_for_write(lo.path(), false).expect_err("second open");
        assert!(matches!(err, SysError::Busy { .. }), "{err:?}");
        assert_eq!(err.exit_class(), crate::exit::ExitClass::Refused);
        drop(first);
        open_exclusive_for_write(lo.path(), false).expect("open after release");
    }

    #[test]
    fn direct_write_with_aligned_buffer_round_trips() {
        let Some(lo) = TestLoop::new(1 << 20, Some(4096)) else {
            return;
        };
        let target = open_exclusive_for_write(lo.path(), true).expect("open O_DIRECT");
        let lss = logical_sector_size(&target.file).expect("lss").get() as usize;
        let mut buf = crate::sys::AlignedBuf::new(2 * lss, lss).expect("buffer");
        buf.as_mut_slice().fill(0x5A);
        target
            .file
            .write_all_at(buf.as_slice(), 8192)
            .expect("direct write");
        let mut back = crate::sys::AlignedBuf::new(2 * lss, lss).expect("buffer");
        target
            .file
            .read_exact_at(back.as_mut_slice(), 8192)
            .expect("direct read");
        assert_eq!(back.as_slice(), buf.as_slice());
    }

    #[test]
    fn regular_file_target_opens_without_excl() {
        let tmp = tempfile::NamedTempFile::new().expect("temp file");
        let target = open_exclusive_for_write(tmp.path(), false).expect("open");
        assert_eq!(target.kind, TargetKind::RegularFile);
        assert!(!is_block_device(&target.file).expect("fstat"));
    }

    #[test]
    fn directory_target_is_unsupported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = open_exclusive_for_write(dir.path(), false).expect_err("directory");
        assert!(matches!(err, SysError::UnsupportedTarget { .. }), "{err:?}");
    }
}
