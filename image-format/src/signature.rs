//! The signature section: Ed25519 signatures over a domain-separated message
//! that covers the exact manifest bytes and a signer statement.

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};
use crate::layout::MANIFEST_SIGNATURE_CONTEXT;
use crate::manifest::SignerStatement;

/// One stored signature. `statement` holds the postcard bytes of a
/// [`SignerStatement`], kept as bytes so the exact signed bytes are verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    pub public_key: [u8; 32],
    pub statement: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The message an image signature covers:
/// context ‖ u64le(len manifest) ‖ manifest ‖ u64le(len statement) ‖ statement.
pub fn signed_message(manifest_bytes: &[u8], statement_bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(
        MANIFEST_SIGNATURE_CONTEXT.len() + 16 + manifest_bytes.len() + statement_bytes.len(),
    );
    message.extend_from_slice(MANIFEST_SIGNATURE_CONTEXT);
    message.extend_from_slice(&(manifest_bytes.len() as u64).to_le_bytes());
    message.extend_from_slice(manifest_bytes);
    message.extend_from_slice(&(statement_bytes.len() as u64).to_le_bytes());
    message.extend_from_slice(statement_bytes);
    message
}

/// Signs `manifest_bytes` with `key`, declaring `statement`.
pub fn sign_manifest(
    key: &SigningKey,
    manifest_bytes: &[u8],
    statement: &SignerStatement,
) -> Result<SignatureEntry, postcard::Error> {
    let statement_bytes = postcard::to_stdvec(statement)?;
    let signature = key.sign(&signed_message(manifest_bytes, &statement_bytes));
    Ok(SignatureEntry {
        public_key: *key.public_key().as_bytes(),
        statement: statement_bytes,
        signature: signature.to_vec(),
    })
}

impl SignatureEntry {
    /// True if the signature is a valid Ed25519 signature by `public_key`
    /// over this manifest and statement.
    pub fn is_valid_for(&self, key: &PublicKey, manifest_bytes: &[u8]) -> bool {
        self.signature.len() == 64
            && key.verify(
                &signed_message(manifest_bytes, &self.statement),
                &self.signature,
            )
    }
}
