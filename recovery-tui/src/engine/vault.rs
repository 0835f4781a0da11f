//! Reading the vault: every `.rimg` file, checked against the trust store.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reliquary_image::digest::sha256;
use reliquary_image::{Image, ImageError, Manifest, PartitionScheme, Signer, TrustStore};

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
    // Only the manifest, to show what the image claims to be: an image that
    // failed verification never gets its index decoded, whatever its size.
    let claims = open().and_then(reliquary_image::open).and_then(|s| {
        let (manifest, signers) = s.claims()?;
        Ok((manifest, sha256(s.manifest_bytes()), signers))
    });
    let claims = claims.ok();
    let signers = claims.as_ref().map(|(_, _, signers)| signers.as_slice());
    let status = classify(&error, signers, trust);
    ScannedImage {
        entry: entry(
            claims
                .as_ref()
                .map(|(m, sha, signers)| summarize_parts(m, sha, signers, None)),
            status,
            Some(error.to_string()),
        ),
        image: None,
    }
}

/// Sorts a verification failure into the words the technician sees.
fn classify(
    error: &ImageError,
    claimed_signers: Option<&[Signer]>,
    trust: &TrustStore,
) -> TrustStatus {
    match error {
        ImageError::RevokedImage(_) => TrustStatus::Revoked,
        ImageError::ThresholdNotMet { .. } | ImageError::NoSignatures => {
            let revoked_signer = claimed_signers
                .is_some_and(|signers| signers.iter().any(|s| trust.is_key_revoked(&s.key_id)));
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
    let chunks = image.index().chunks.len() as u64;
    summarize_parts(
        image.manifest(),
        &image.manifest_sha256(),
        image.signers(),
        Some(chunks),
    )
}

/// The summary from the manifest alone; `chunks` is known only once the
/// index is decoded.
fn summarize_parts(
    m: &Manifest,
    manifest_sha256: &[u8; 32],
    signers: &[Signer],
    chunks: Option<u64>,
) -> ImageSummary {
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
                capture: m
                    .partition_captures
                    .iter()
                    .find(|c| c.partition_number == p.number)
                    .map(|c| c.describe()),
            })
            .collect(),
        chunks,
        manifest_sha256: hex::encode(manifest_sha256),
        signers: signers
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
