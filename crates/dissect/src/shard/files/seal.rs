//! The digests that seal the shard files: `shard.json` and a thresholds
//! file each record the SHA-256 of their own contents, and `shard.json`
//! the SHA-256 of every data file it lists, so that every read for a merge
//! refuses a file changed or corrupted since it was written, by name,
//! rather than merging it as it is.
//!
//! A JSON file's own digest is of what it holds, not of its text: the
//! SHA-256 of its compact JSON with the digest's field left out (the
//! field is empty while the digest is taken, and an empty field is not
//! written). Every value survives that JSON exactly (results' floats as
//! their bits, other floats through serde_json's exact round trip), so a
//! file read back digests to what it was written with, and a file whose
//! spacing alone changed still reads as the same data.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{malformed, write_error};
use crate::DissectError;
use crate::shard::digest::{hash_file, hex};

/// A file that records the digest of its own contents, in a field that
/// is left out of its JSON while it is empty.
pub(super) trait Sealed: Serialize + Sized {
    /// The field that holds the digest of the rest.
    fn seal_field(&mut self) -> &mut String;

    /// Records in the seal field the digest of the rest, for the file at
    /// `path`.
    fn seal(&mut self, path: &Path) -> Result<(), DissectError> {
        self.seal_field().clear();
        let digest = contents_digest(self).map_err(|e| write_error(path, e))?;
        *self.seal_field() = digest;
        Ok(())
    }

    /// Errors unless the seal field, as read from the file at `path`,
    /// holds the digest of the rest.
    fn check_seal(&mut self, path: &Path) -> Result<(), DissectError> {
        let recorded = std::mem::take(self.seal_field());
        if recorded.is_empty() {
            return Err(malformed(
                path,
                "records no digest of its contents (written by an older netdissect? run its \
                 phase again)",
            ));
        }
        // What was parsed serializes again, so a failure here is a bug.
        let actual = contents_digest(self)
            .map_err(|e| DissectError::Internal(format!("{}: {e}", path.display())))?;
        if recorded != actual {
            return Err(changed(path));
        }
        *self.seal_field() = recorded;
        Ok(())
    }
}

/// The hex SHA-256 of `value`'s compact JSON, streamed into the hash.
fn contents_digest<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut h = Sha256::new();
    serde_json::to_writer(&mut h, value)?;
    Ok(hex(&h.finalize()))
}

/// The hex SHA-256 of `bytes`, a data file's contents.
pub(super) fn bytes_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Errors unless `bytes`, the contents of the data file `path`, have the
/// digest `recorded`.
pub(super) fn check_bytes(path: &Path, bytes: &[u8], recorded: &str) -> Result<(), DissectError> {
    if bytes_digest(bytes) != recorded {
        return Err(changed(path));
    }
    Ok(())
}

/// Errors unless the data file `path` has the digest `recorded`, reading
/// it a megabyte at a time (a layer's candidates can be gigabytes).
pub(super) fn check_file(path: &Path, recorded: &str) -> Result<(), DissectError> {
    let mut h = Sha256::new();
    hash_file(&mut h, path)?;
    if hex(&h.finalize()) != recorded {
        return Err(changed(path));
    }
    Ok(())
}

/// The error that the file at `path` is not what its digest says.
fn changed(path: &Path) -> DissectError {
    DissectError::File {
        path: path.to_path_buf(),
        row: None,
        message: "does not match its recorded digest: the file was changed or corrupted".into(),
    }
}
