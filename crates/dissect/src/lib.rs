//! The dissection engine: streaming passes over a dataset, scores, and the
//! result types the CLI and report share.

mod accel;
pub mod engine;
mod error;
pub mod options;
pub mod planted;
pub mod results;
pub mod score;

pub use engine::{CacheMode, DEFAULT_CACHE_BUDGET, Dissector, Layer, Network, Progress};
pub use error::DissectError;
pub use options::{Alignment, Options, PreprocessSpec, Preset, UnionRule};
pub use results::{Dissection, LayerResult, SCHEMA_VERSION, TopImage};
pub use score::{CategoryBest, LabelInfo, LayerCounts, Summary, UnitScore, score_units, summarize};
