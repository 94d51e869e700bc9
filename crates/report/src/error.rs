//! Errors of the report writers and readers; each names the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A failed read or write. The message names the path only: the cause
    /// is the error's source, which the callers print after it (printing
    /// it here too would show it twice).
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists: the folder holds complete results (use --force to replace them)")]
    Exists { path: PathBuf },
    #[error("{path} exists: the folder holds a shard (use --force to replace it)")]
    ShardExists { path: PathBuf },
    /// Complete results that another program wrote into the destination
    /// while this run was under way.
    #[error(
        "{path} appeared during this run: the folder now holds complete results, which this \
         run did not replace (use --force to replace them)"
    )]
    Appeared { path: PathBuf },
    #[error("{path} holds {file}, which is not a netdissect result: choose a new or empty folder")]
    Foreign { path: PathBuf, file: String },
    #[error("{path} is a file, not a folder: choose a folder for --out")]
    NotAFolder { path: PathBuf },
    /// A name a run would make is longer than file systems take.
    #[error(
        "{path}: a run writes {what} of {bytes} bytes there, more than the {limit} a file \
         system takes: choose a shorter --out"
    )]
    NameTooLong {
        path: PathBuf,
        what: &'static str,
        bytes: usize,
        limit: usize,
    },
    /// The destination is claimed by another run.
    #[error(
        "{path} is being written by another run ({holder}): wait for it to finish or choose \
         another folder (if that run is gone, remove {lock})"
    )]
    Busy {
        path: PathBuf,
        holder: String,
        lock: PathBuf,
    },
    #[error("{path}, row {row}: {message}")]
    Malformed {
        path: PathBuf,
        row: usize,
        message: String,
    },
}
