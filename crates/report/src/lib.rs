//! Dissection outputs for people and scripts: the reference tools' tally
//! CSV, results JSON, and the self-contained HTML report with its SVG charts
//! and image strips.
//! Every file is written atomically: a temp file beside it, then a rename.

mod atomic;
pub mod claim;
pub mod compare;
pub mod concepts;
mod error;
#[cfg(test)]
mod fixture;
pub mod html;
pub mod output;
pub mod run_folder;
pub mod strips;
pub mod svg;
mod swap;
pub mod tally;

pub use atomic::write_atomic;
pub use error::ReportError;
