//! The application layer's error: a message (the whole chain of causes, as
//! the user reads it) and its [`Kind`], which the CLI maps to an exit code
//! and the Python package to an exception class.

use dissect::{DissectError, ErrorKind};

/// What went wrong, in the terms of who can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Options that do not go together, or a missing one.
    Usage,
    /// A dataset, checkpoint, results folder or name that is wrong.
    Input,
    /// A failure while running or writing.
    Run,
    /// No usable GPU adapter.
    Adapter,
    /// Stopped on request (Ctrl-C, a termination signal).
    Stopped,
}

/// An error with its kind; the message holds every cause, separated by
/// `: `.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: Kind,
    message: String,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    /// Bad input: `e` with its causes.
    pub fn input(e: impl std::error::Error) -> Self {
        Self::new(Kind::Input, chain(&e))
    }

    /// A run failure: `e` with its causes.
    pub fn run(e: impl std::error::Error) -> Self {
        Self::new(Kind::Run, chain(&e))
    }

    /// `e` with its causes after `context`.
    pub fn context(kind: Kind, context: impl std::fmt::Display, e: impl std::error::Error) -> Self {
        Self::new(kind, format!("{context}: {}", chain(&e)))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// An output folder error: the folder's contents are the user's input;
    /// failing to write is a run failure.
    pub fn output(e: report::ReportError) -> Self {
        match e {
            report::ReportError::Exists { .. }
            | report::ReportError::ShardExists { .. }
            | report::ReportError::Appeared { .. }
            | report::ReportError::Foreign { .. }
            | report::ReportError::NotAFolder { .. }
            | report::ReportError::NameTooLong { .. }
            | report::ReportError::Busy { .. } => Self::input(e),
            _ => Self::run(e),
        }
    }
}

/// A library error with the kind of its [`ErrorKind`].
impl From<DissectError> for Error {
    fn from(e: DissectError) -> Self {
        let kind = match e.kind() {
            ErrorKind::Usage => Kind::Usage,
            ErrorKind::Input => Kind::Input,
            ErrorKind::Failure => Kind::Run,
            ErrorKind::Stopped => Kind::Stopped,
        };
        Self::new(kind, chain(&e))
    }
}

/// `e` and its sources, separated by `: ` (as `anyhow` prints `{:#}`). A
/// source that the message already ends with (an error that shows its
/// cause and also returns it as its source) is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.ends_with(&format!(": {cause}")) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn messages_hold_every_cause() {
        let e = Error::context(
            Kind::Input,
            "reading x",
            Outer(std::io::Error::other("inner")),
        );
        assert_eq!(e.to_string(), "reading x: outer: inner");
        assert_eq!(e.kind(), Kind::Input);
    }

    /// An error that shows its cause and also returns it as its source.
    #[derive(Debug, thiserror::Error)]
    #[error("writing x: {0}")]
    struct Shows(#[source] std::io::Error);

    #[test]
    fn a_cause_is_shown_once() {
        let e = Error::run(Shows(std::io::Error::other("File exists")));
        assert_eq!(e.to_string(), "writing x: File exists");
        let e = report::ReportError::Io {
            path: "out".into(),
            source: std::io::Error::other("File exists"),
        };
        assert_eq!(Error::output(e).to_string(), "out: File exists");
    }

    #[test]
    fn output_errors_split_by_who_can_fix_them() {
        let exists = report::ReportError::Exists { path: "out".into() };
        assert_eq!(Error::output(exists).kind(), Kind::Input);
    }
}
