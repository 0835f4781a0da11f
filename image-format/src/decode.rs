//! Postcard decoding shared by the reader and the manifest's versions.

use serde::de::DeserializeOwned;

use crate::error::{ImageError, SectionName};

/// Decodes postcard bytes, refusing trailing bytes.
pub(crate) fn decode_exact<T: DeserializeOwned>(
    bytes: &[u8],
    section: SectionName,
) -> Result<T, ImageError> {
    let (value, rest) = postcard::take_from_bytes(bytes)
        .map_err(|source| ImageError::Decode { section, source })?;
    if !rest.is_empty() {
        return Err(ImageError::SectionTrailingBytes {
            section,
            extra: rest.len(),
        });
    }
    Ok(value)
}
