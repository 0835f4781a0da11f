//! Capture's source probing: a block device or a disk file, its size and
//! sector sizes, and the refusal of a source whose file system is mounted
//! read-write (it would be captured torn).

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::capture::{refuse_writable_mounts, CaptureError};
use crate::discover::{self, DevNum, DiscoverError};
use crate::exit::ExitClass;
use crate::partition::{self, SectorSizeEvidence};
use crate::sys::{self, SysError};

/// A capture source, probed.
#[derive(Debug)]
pub struct CaptureSource {
    pub file: File,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// Something the operator should read: the sector size came from the
    /// one asked for, because the source's table could not decide.
    pub warning: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--sector-size {given} contradicts the source's GPT, which is written for \
         {table}-byte sectors; leave --sector-size out"
    )]
    ContradictsGpt { given: u32, table: u32 },
    #[error("{reason}; pass --sector-size 512 or 4096 if you know it")]
    Undecided { reason: String },
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
}

impl SourceError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            SourceError::ContradictsGpt { .. } | SourceError::Undecided { .. } => ExitClass::Usage,
            SourceError::Capture(e) => e.exit_class(),
            SourceError::Sys(e) => e.exit_class(),
            SourceError::Discover(e) => e.exit_class(),
            SourceError::Open { .. } | SourceError::Read { .. } => ExitClass::Runtime,
        }
    }
}

/// Opens and probes the source at `path`: a block device (refused when a
/// file system on it is mounted read-write, its partitions found under
/// `sysfs_root`) gives its own sizes; a disk file's sector size comes from
/// its GPT, checked against `sector_size` when one is asked for.
pub fn probe_source(
    path: &Path,
    sector_size: Option<u32>,
    sysfs_root: &Path,
) -> Result<CaptureSource, SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let read_err = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(read_err)?;
    if sys::is_block_device(&file)? {
        let devnum = DevNum::from_dev_t(meta.rdev());
        let mounts = discover::read_system_mounts()?;
        refuse_writable_mounts(sysfs_root, path, devnum, &mounts)?;
        return Ok(CaptureSource {
            size_bytes: sys::device_size_bytes(&file)?,
            logical_sector_size: sys::logical_sector_size(&file)?.get(),
            physical_sector_size: sys::physical_sector_size(&file)?.get(),
            file,
            warning: None,
        });
    }
    let size = meta.len();
    let (logical, warning) = file_sector_size(&file, size, sector_size).map_err(|e| match e {
        FileSectorError::Read(source) => read_err(source),
        FileSectorError::Source(e) => e,
    })?;
    Ok(CaptureSource {
        file,
        size_bytes: size,
        logical_sector_size: logical,
        physical_sector_size: logical.max(4096),
        warning,
    })
}

enum FileSectorError {
    Read(std::io::Error),
    Source(SourceError),
}

/// The logical sector size of a disk file: what its GPT says, checked
/// against `given`; a table that cannot say is refused unless `given`
/// decides (with a warning).
fn file_sector_size(
    source: &File,
    size: u64,
    given: Option<u32>,
) -> Result<(u32, Option<String>), FileSectorError> {
    let mut head = vec![0u8; partition::DETECT_HEAD_LEN.min(size as usize)];
    source
        .read_exact_at(&mut head, 0)
        .map_err(FileSectorError::Read)?;
    match (partition::detect_sector_size(&head, size), given) {
        (Ok(SectorSizeEvidence::Gpt { sector_size }), Some(given)) if given != sector_size => {
            Err(FileSectorError::Source(SourceError::ContradictsGpt {
                given,
                table: sector_size,
            }))
        }
        (Ok(SectorSizeEvidence::Gpt { sector_size }), _) => Ok((sector_size, None)),
        (Ok(SectorSizeEvidence::Mbr | SectorSizeEvidence::NoTable), given) => {
            Ok((given.unwrap_or(512), None))
        }
        (Err(reason), Some(given)) => Ok((
            given,
            Some(format!("{reason}; using --sector-size {given}")),
        )),
        (Err(reason), None) => Err(FileSectorError::Source(SourceError::Undecided {
            reason: reason.to_string(),
        })),
    }
}
