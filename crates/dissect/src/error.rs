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
            DissectError::Kernel(_) | DissectError::Write { .. } | DissectError::Internal(_) => {
                ErrorKind::Failure
            }
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
