//! Reading the vault: every `.rimg` file, checked against the trust store.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reliquary_image::{Image, ImageError, PartitionScheme, TrustStore};

use crate::model::{
    FullCheck, ImageSummary, PartitionSummary, SignerSummary, TrustStatus, VaultEntry,
};

/// The extension of image files in the vault.
pub const IMAGE_EXTENSION: &str = "rimg";

/// A vault entry together with the opened image, when it is trusted.
#[derive(Debug)]
pub struct ScannedImage {
    pub entry: VaultEntry,
    pub image: Option<Arc<Image<File>>>,
}

/// Lists `vault_dir`'s images in name order and checks each one's signature
/// policy. Untrusted images are still decoded (without trust) so the
/// technician can see what they are.
pub fn scan_vault(vault_dir: &Path, trust: &TrustStore) -> std::io::Result<Vec<ScannedImage>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(vault_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == IMAGE_EXTENSION) && p.is_file())
        .collect();
    paths.sort();
    Ok(paths.into_iter().map(|p| scan_image(&p, trust)).collect())
}

fn scan_image(path: &Path, trust: &TrustStore) -> ScannedImage {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = |summary, trust_status, reason| VaultEntry {
        path: path.to_path_buf(),
        file_name: file_name.clone(),
        summary,
        trust: trust_status,
        reason,
        check: FullCheck::NotRun,
        audit_problem: None,
    };
    let open = || {
        reliquary_image::regular_file::open(path).map_err(|source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        })
    };
    let verified = open()
        .and_then(reliquary_image::open)
        .and_then(|sealed| sealed.verify(trust));
    let error = match verified {
        Ok(image) => {
            return ScannedImage {
                entry: entry(Some(summarize(&image)), TrustStatus::Trusted, None),
                image: Some(Arc::new(image)),
            }
        }
        Err(e) => e,
    };
    // Decode without trust, only to show what the image claims to be.
    let unverified = open()
        .and_then(reliquary_image::open)
        .and_then(|s| s.open_unverified())
        .ok();
    let status = classify(&error, unverified.as_ref(), trust);
    ScannedImage {
        entry: entry(
            unverified.as_ref().map(summarize),
            status,
            Some(error.to_string()),
        ),
        image: None,
    }
}

/// Sorts a verification failure into the words the technician sees.
fn classify(
    error: &ImageError,
    unverified: Option<&Image<File>>,
    trust: &TrustStore,
) -> TrustStatus {
    match error {
        ImageError::RevokedImage(_) => TrustStatus::Revoked,
        ImageError::ThresholdNotMet { .. } | ImageError::NoSignatures => {
            let revoked_signer = unverified.is_some_and(|image| {
                image
                    .signers()
                    .iter()
                    .any(|s| trust.revoked_keys.contains(&s.key_id))
            });
            if revoked_signer {
                TrustStatus::Revoked
            } else {
                TrustStatus::Untrusted
            }
        }
        _ => TrustStatus::Damaged,
    }
}

/// The manifest facts the screens show.
pub fn summarize(image: &Image<File>) -> ImageSummary {
    let m = image.manifest();
    let sector = u64::from(m.source.logical_sector_size);
    ImageSummary {
        uuid: m.image_uuid.to_string(),
        name: m.name.clone(),
        version: m.version.clone(),
        description: m.description.clone(),
        created_unix: m.created_unix,
        creator: m.creator.clone(),
        compatible: m.compatible.clone(),
        disk_bytes: m.logical_bytes(),
        stored_bytes: m.stored_bytes,
        logical_sector_size: m.source.logical_sector_size,
        physical_sector_size: m.source.physical_sector_size,
        scheme: match m.partition_table.scheme {
            PartitionScheme::None => "none",
            PartitionScheme::Mbr { .. } => "MBR",
            PartitionScheme::Gpt { .. } => "GPT",
        }
        .to_string(),
        partitions: m
            .partition_table
            .partitions
            .iter()
            .map(|p| PartitionSummary {
                number: p.number,
                start_sector: p.start_sector,
                size_bytes: p.sector_count.saturating_mul(sector),
                type_code: p.type_code.clone(),
                name: p.name.clone(),
                bootable: p.bootable,
            })
            .collect(),
        chunks: image.index().chunks.len() as u64,
        manifest_sha256: hex::encode(image.manifest_sha256()),
        signers: image
            .signers()
            .iter()
            .map(|s| SignerSummary {
                name: s.name.clone(),
                key_id: s.key_id.clone(),
                meaning: s.statement.meaning.as_str().to_string(),
                signed_unix: s.statement.signed_unix,
                status: s.status.as_str().to_string(),
            })
            .collect(),
    }
}
