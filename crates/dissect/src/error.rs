//! Errors of a dissection run, each with the kind of failure it is, so a
//! shell can tell the user's mistakes from the program's.

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An option value out of range: the caller's usage (CLI exit 2).
    Usage,
    /// Input that cannot be dissected: a dataset, checkpoint or layer name
    /// (CLI exit 3).
    Input,
    /// A failure while running that is not the input's fault: the device,
    /// or a bug (CLI exit 1).
    Failure,
    /// Stopped on request, by Ctrl-C or a termination signal (CLI exit
    /// 130).
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum DissectError {
    #[error(transparent)]
    Dataset(#[from] broden::BrodenError),
    #[error(transparent)]
    Model(#[from] models::ModelError),
    #[error(transparent)]
    Kernel(#[from] kernels::KernelError),
    /// An option value out of range, found before any work starts.
    #[error("invalid option: {0}")]
    Usage(String),
    /// Input that cannot be dissected and is not one file's fault (an empty
    /// image selection, a network that rejects the input).
    #[error("{0}")]
    Input(String),
    #[error("layer `{layer}`: {message}")]
    Layer { layer: String, message: String },
    /// A file that could not be written (a full disk, a folder without
    /// permission): not the input's fault.
    #[error("{path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that cannot be read as what it should be (a shard or
    /// checkpoint file): bad input that names it, with the JSON line at
    /// fault where there is one.
    #[error("{}", file_message(path, *row, message))]
    File {
        path: std::path::PathBuf,
        row: Option<usize>,
        message: String,
    },
    /// A resumable run's checkpoint that cannot be resumed: `file` is the
    /// file at fault. The caller discards the checkpoint.
    #[error("checkpoint damaged (file {}): {message}", file.display())]
    Checkpoint {
        file: std::path::PathBuf,
        message: String,
    },
    /// A file that could not be read for a reason that may pass (a
    /// permission, an I/O error, a network file system away): not taken
    /// for damage, so a checkpoint is kept.
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A failure of this program, not of its input.
    #[error("internal error: {0}")]
    Internal(String),
    /// Stopped on request (a signal) after the batch in progress; the run
    /// had done `images_done` of its images in that pass.
    #[error("stopped on request after {images_done} images of the pass")]
    Stopped { images_done: usize },
}

impl DissectError {
    /// The kind of failure, for exit codes.
    pub fn kind(&self) -> ErrorKind {
        use models::ModelError as M;
        match self {
            DissectError::Usage(_) => ErrorKind::Usage,
            DissectError::Dataset(_)
            | DissectError::Input(_)
            | DissectError::Layer { .. }
            | DissectError::File { .. }
            | DissectError::Checkpoint { .. } => ErrorKind::Input,
            DissectError::Model(M::NotWgpu { .. } | M::Wgpu { .. }) => ErrorKind::Failure,
            DissectError::Model(_) => ErrorKind::Input,
            DissectError::Kernel(_)
            | DissectError::Write { .. }
            | DissectError::Read { .. }
            | DissectError::Internal(_) => ErrorKind::Failure,
            DissectError::Stopped { .. } => ErrorKind::Stopped,
        }
    }
}

/// `path`, then the row at fault where there is one, then `message`.
fn file_message(path: &std::path::Path, row: Option<usize>, message: &str) -> String {
    match row {
        Some(row) => format!("{}, row {row}: {message}", path.display()),
        None => format!("{}: {message}", path.display()),
    }
}

impl DissectError {
    /// The file a [`DissectError::File`] or [`DissectError::Write`] names.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            DissectError::File { path, .. } | DissectError::Write { path, .. } => Some(path),
            DissectError::Checkpoint { file, .. } => Some(file),
            _ => None,
        }
    }
}

/// Whether a failed read of a file says something about the file itself
/// (missing, not a file, cut short, not text, a link loop): damage. Other
/// errors (permissions, I/O errors, a network file system away) may pass.
pub fn is_damage(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    // ELOOP: `ErrorKind::FilesystemLoop` is not stable yet.
    const ELOOP: i32 = if cfg!(any(target_os = "linux", target_os = "android")) {
        40
    } else {
        62
    };
    matches!(
        e.kind(),
        K::NotFound | K::InvalidData | K::UnexpectedEof | K::IsADirectory | K::NotADirectory
    ) || e.raw_os_error() == Some(ELOOP)
}

/// The error of reading `path` that failed with `e`: a [`DissectError::File`]
/// where the file is at fault ([`is_damage`]), else [`DissectError::Read`].
pub(crate) fn read_error(path: &std::path::Path, e: std::io::Error) -> DissectError {
    if is_damage(&e) {
        DissectError::File {
            path: path.to_path_buf(),
            row: None,
            message: e.to_string(),
        }
    } else {
        DissectError::Read {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind as K};

    /// A file that is missing, cut short, not text or a link loop is
    /// damage; a permission, an I/O error or a stale network handle may
    /// pass, and a checkpoint that meets one is kept.
    #[test]
    fn read_failures_split_into_damage_and_what_may_pass() {
        for (e, damage) in [
            (Error::from(K::NotFound), true),
            (Error::from(K::InvalidData), true),
            (Error::from(K::UnexpectedEof), true),
            (Error::from(K::PermissionDenied), false),
            (Error::from_raw_os_error(5), false), // EIO
            (Error::from(K::TimedOut), false),
        ] {
            assert_eq!(is_damage(&e), damage, "{e}");
            let got = read_error(std::path::Path::new("state.json"), e);
            let kind = if damage {
                ErrorKind::Input
            } else {
                ErrorKind::Failure
            };
            assert_eq!(got.kind(), kind, "{got}");
        }
        #[cfg(target_os = "linux")]
        assert!(is_damage(&Error::from_raw_os_error(40)), "ELOOP");
    }
}
