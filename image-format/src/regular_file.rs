//! Opening paths that must be regular files: images, key files, trust-store
//! files, the audit log and checkpoints. A plain `open` of a FIFO blocks
//! until a writer appears, and a read of a device or socket can block or
//! return endless bytes. These functions open with `O_NONBLOCK`, so the open
//! itself returns at once, then check the opened file with `fstat`, so a
//! swap of the path between a check and the open cannot slip through.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Opens `path` read-only if it is a regular file (symbolic links followed).
pub fn open(path: &Path) -> io::Result<File> {
    open_with(OpenOptions::new().read(true), path)
}

/// Opens `path` read-only if it is a regular file and not a symbolic link.
pub fn open_no_symlink(path: &Path) -> io::Result<File> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path);
    match opened {
        Ok(file) => check_regular(file),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symbolic link; this file must be a regular file, not a link",
        )),
        Err(e) => Err(e),
    }
}

/// Opens `path` with `options` (plus `O_NONBLOCK`) if it is a regular file.
/// `options` must not set custom flags of its own: they would be replaced.
pub fn open_with(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    check_regular(options.custom_flags(libc::O_NONBLOCK).open(path)?)
}

fn check_regular(file: File) -> io::Result<File> {
    let file_type = file.metadata()?.file_type();
    if file_type.is_file() {
        return Ok(file);
    }
    let what = if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {what}, not a regular file"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_directory_and_a_link_are_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let err = open(&fifo).expect_err("a FIFO is refused");
        assert!(err.to_string().contains("FIFO"), "{err}");
        let err = open(dir.path()).expect_err("a directory is refused");
        assert!(err.to_string().contains("directory"), "{err}");

        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(open(&link).is_ok());
        assert!(open_no_symlink(&file).is_ok());
        let err = open_no_symlink(&link).expect_err("a link is refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
}
