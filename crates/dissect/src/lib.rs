//! The dissection engine: streaming passes over a dataset, scores, and the
//! result types the CLI and report share.

pub mod score;

pub use score::{CategoryBest, LabelInfo, LayerCounts, Summary, UnitScore, score_units, summarize};
