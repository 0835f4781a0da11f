//! Opening what the command line names: images.

use std::fs::File;
use std::path::Path;

use super::output::{FileError, NotAnImage};

/// Opens an image file and checks its framing.
pub fn open_image(path: &Path) -> anyhow::Result<reliquary_image::SealedImage<File>> {
    let file = reliquary_image::regular_file::open(path)
        .map_err(|e| FileError::new("cannot open image", path, e))?;
    Ok(reliquary_image::open(file).map_err(|source| NotAnImage {
        path: path.to_path_buf(),
        source,
    })?)
}
