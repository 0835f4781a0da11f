//! Zeroing ranges of regular-file targets without writing the zeros, and
//! reopening a file for O_DIRECT reads.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};

use super::{kernel_range, SysError};

/// Opens `path` read-only with O_DIRECT (`EINVAL` where its file system
/// refuses it, as tmpfs does).
pub fn open_direct(path: impl AsRef<Path>) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path)
}

/// A second, read-only O_DIRECT handle on the very file `file` is
/// (reopened through /proc, never by path), or `None` where O_DIRECT is
/// refused. For bytes read once, which have no use for the page cache.
pub fn reopen_direct(file: &File) -> Option<File> {
    open_direct(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

/// How [`punch_or_zero_range`] zeroed a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroMethod {
    /// `FALLOC_FL_ZERO_RANGE`: the range reads as zero and stays allocated.
    ZeroRange,
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`: the range reads as zero
    /// and its blocks are freed.
    PunchHole,
}

/// Makes `len` bytes at `offset` of a regular file read as zero, preferring
/// to punch a hole, which needs no space (a sparse target may be larger
/// than its file system), and falling back to zero-range.
///
/// The file should already have its final size: zero-range may extend it,
/// punch-hole never does. When the file system supports neither, the error
/// is [`SysError::ZeroRangeUnsupported`] ([`SysError::wants_zero_fallback`])
/// and the caller should write zeros itself.
pub fn punch_or_zero_range(file: &File, offset: u64, len: u64) -> Result<ZeroMethod, SysError> {
    let (off, length) = kernel_range(offset, len)?;
    if len == 0 {
        return Ok(ZeroMethod::PunchHole);
    }
    let fd = file.as_raw_fd();
    let attempts = [
        (
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            ZeroMethod::PunchHole,
        ),
        (FallocateFlags::FALLOC_FL_ZERO_RANGE, ZeroMethod::ZeroRange),
    ];
    for (flags, method) in attempts {
        match fallocate(fd, flags, off, length) {
            Ok(()) => return Ok(method),
            // Not supported by this file system (or on this kind of file):
            // try the next method.
            Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => continue,
            Err(source) => {
                return Err(SysError::Fallocate {
                    offset,
                    len,
                    source,
                })
            }
        }
    }
    Err(SysError::ZeroRangeUnsupported { offset, len })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::*;

    #[test]
    fn zeroes_exactly_the_range_and_keeps_size() {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(&[0xCD; 64 * 1024]).expect("fill");
        match punch_or_zero_range(&file, 8192, 16384) {
            Ok(_) => {}
            Err(e) if e.wants_zero_fallback() => {
                crate::sys::testutil::skip_or_fail(
                    "the temp directory's file system supports neither zero-range nor punch-hole",
                );
                return;
            }
            Err(e) => panic!("fallocate failed: {e}"),
        }
        assert_eq!(file.metadata().expect("stat").len(), 64 * 1024);
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.read_to_end(&mut back).expect("read");
        assert!(back[..8192].iter().all(|b| *b == 0xCD));
        assert!(back[8192..24576].iter().all(|b| *b == 0));
        assert!(back[24576..].iter().all(|b| *b == 0xCD));
    }

    #[test]
    fn empty_range_is_a_no_op() {
        let file = tempfile::tempfile().expect("temp file");
        assert_eq!(
            punch_or_zero_range(&file, 0, 0).expect("no-op"),
            ZeroMethod::PunchHole
        );
        assert_eq!(file.metadata().expect("stat").len(), 0);
    }

    #[test]
    fn overflowing_range_is_refused() {
        let file = tempfile::tempfile().expect("temp file");
        let err = punch_or_zero_range(&file, i64::MAX as u64, 1).expect_err("overflow");
        assert!(matches!(err, SysError::RangeOutOfBounds { .. }), "{err:?}");
    }
}
