//! Dissection outputs for people and scripts: the reference tools' tally
//! CSV, results JSON, and (later) the HTML report with plots and strips.
//! Every file is written atomically: a temp file beside it, then a rename.

mod atomic;
mod error;
pub mod output;
pub mod tally;

pub use atomic::write_atomic;
pub use error::ReportError;
