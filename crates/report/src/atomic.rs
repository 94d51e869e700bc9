//! Atomic file writes, so an interrupted run never leaves a half-written
//! file under the final name.

use std::path::Path;

use crate::ReportError;

/// Writes `bytes` to `path` through a temp file in the same folder, synced
/// and then renamed over `path`, the folder synced ([`store::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    store::write_atomic(path, bytes).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}
