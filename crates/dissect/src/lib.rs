//! The dissection engine: streaming passes over a dataset, scores, and the
//! result types the CLI and report share.
//!
//! Embedding in a wgpu application: make a [`Dissector`] on the app's own
//! device and queue ([`Dissector::with_wgpu`] with a [`WgpuSetup`]),
//! implement [`Network`] for the app's Burn model (each [`LayerTap`] carries
//! its receptive-field [`FieldMap`]), and call [`Dissector::run`]. See
//! `examples/embed.rs`.

mod accel;
pub mod budget;
pub mod engine;
mod error;
pub mod formula;
pub mod geometry;
pub mod npy;
pub mod options;
pub mod planted;
pub mod recorded;
pub mod results;
pub mod resume;
pub mod rotation;
mod run;
pub mod score;
pub mod shard;
pub mod significance;
#[cfg(test)]
mod synthetic;

pub use engine::{DEFAULT_CACHE_BUDGET, Dissector, LayerTap, Network, Pass, Progress};
pub use error::{DissectError, ErrorKind};
pub use formula::{FormulaScore, FormulaSearch, Op, Term};
pub use options::{Alignment, Options, Preset, UnionRule};
pub use results::CacheMode;
pub use results::{
    Dissection, FieldRecord, LayerResult, Outcome, SCHEMA_VERSION, SignificanceSummary, Timings,
    TopImage, TopMaps, UnitSignificance,
};
pub use score::{
    CategoryBest, LabelInfo, LabelScore, LayerCounts, Summary, TOP_LABELS, UnitScore, score_units,
    summarize,
};

/// What an embedding application needs besides the engine: the types of
/// Burn's wgpu runtime setup, the tensor types, and layer geometry.
pub use burn::tensor::{Device, Tensor};
pub use models::gpu::{WgpuSetup, wgpu};
pub use models::{FieldMap, GeoOp};
