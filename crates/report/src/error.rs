//! Errors of the report writers and readers; each names the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, row {row}: {message}")]
    Malformed {
        path: PathBuf,
        row: usize,
        message: String,
    },
}
