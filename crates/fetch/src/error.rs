//! What can go wrong while fetching, each naming the file, URL or item.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A name the registry does not hold.
    #[error(
        "`{name}` is not in the registry; known names: {known} (`netdissect models` lists them)"
    )]
    Unknown { name: String, known: String },
    /// A registry file that cannot be read or is malformed.
    #[error("registry {path}: {message}")]
    Registry { path: PathBuf, message: String },
    /// A server's answer that no retry changes (404, 403, ...).
    #[error("{url}: the server answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// A transfer that failed after every retry.
    #[error("{url}: {message}")]
    Transfer { url: String, message: String },
    /// A file whose size or digest is not the one expected; it was removed.
    #[error("{path}: {message}")]
    Digest { path: PathBuf, message: String },
    /// Every mirror failed; one line per mirror.
    #[error("{file}: no mirror delivered it:\n  {}", .errors.join("\n  "))]
    Mirrors { file: String, errors: Vec<String> },
    /// A digest record beside a file that holds no digest.
    #[error("{path}: {message}")]
    Record { path: PathBuf, message: String },
    /// Reading or writing a local file or folder.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A zip that cannot be read, or an entry that would land outside its
    /// folder.
    #[error("{path}: {message}")]
    Zip { path: PathBuf, message: String },
    /// What was unpacked failed the checks of its kind.
    #[error("{path}: {message}: nothing was installed")]
    Refused { path: PathBuf, message: String },
    /// The destination exists and is not an earlier fetch of the same file.
    #[error("{path} already exists: remove it, or choose another destination")]
    Exists { path: PathBuf },
}

impl FetchError {
    /// Whether the user's input is at fault (a name, a registry file, a
    /// zip or destination of theirs), rather than the network or the disk.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            Self::Unknown { .. }
                | Self::Registry { .. }
                | Self::Record { .. }
                | Self::Zip { .. }
                | Self::Refused { .. }
                | Self::Exists { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
