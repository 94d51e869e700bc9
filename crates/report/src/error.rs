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
    #[error("{path} exists: the folder holds complete results (use --force to replace them)")]
    Exists { path: PathBuf },
    #[error("{path} holds {file}, which is not a netdissect result: choose a new or empty folder")]
    Foreign { path: PathBuf, file: String },
    #[error("{path}, row {row}: {message}")]
    Malformed {
        path: PathBuf,
        row: usize,
        message: String,
    },
}
