//! What a job tells its caller while it runs: progress over the passes,
//! notes for the user, and the summary of a finished run. The CLI draws
//! bars and prints; the Python package stays silent ([`Silent`]).

use dissect::{Dissection, Progress};

/// A job's observer. Every method does nothing by default.
pub trait Events {
    /// Progress within a pass over the data.
    fn progress(&mut self, _progress: &Progress) {}
    /// The passes of one run are over.
    fn passes_done(&mut self) {}
    /// A line for the user: what runs where, warnings, files written.
    fn note(&mut self, _line: &str) {}
    /// A run finished and its results were written.
    fn finished(&mut self, _dissection: &Dissection) {}
}

/// Events nobody watches.
#[derive(Debug, Default)]
pub struct Silent;

impl Events for Silent {}

/// Notes collected in order, for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub notes: Vec<String>,
}

#[cfg(test)]
impl Events for Recorded {
    fn note(&mut self, line: &str) {
        self.notes.push(line.to_string());
    }
}
