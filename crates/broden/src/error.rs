//! Errors of the Broden reader, loader, writer and generator. Every variant
//! names the file (and the row, where there is one) and the problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BrodenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: required file is missing")]
    MissingFile { path: PathBuf },
    #[error("{path}, row {row}: {message}")]
    Csv {
        path: PathBuf,
        row: usize,
        message: String,
    },
    #[error("{path}: cannot decode image: {message}")]
    Image { path: PathBuf, message: String },
}
