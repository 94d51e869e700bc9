//! Broden-format probe datasets: the on-disk model, a validating reader, a
//! batching loader with bounded prefetch, a writer, and a deterministic
//! generator of synthetic Broden datasets.
//!
//! The on-disk format is the one of the original NetDissect release
//! (`index.csv`, `category.csv`, `label.csv`, `c_<category>.csv`,
//! segmentation PNGs whose label is `R + 256 * G`). This crate knows nothing
//! about models or GPUs.

mod error;
mod model;
mod preprocess;

pub mod batch;
pub mod read;
pub mod synth;
pub mod write;

#[cfg(test)]
mod read_tests;

#[cfg(test)]
mod shaped_tests;
#[cfg(test)]
mod synth_tests;

pub use batch::{Batch, BatchOptions, Batches, ImageLabels, LabelPlane, load_image};
pub use error::BrodenError;
pub use model::{
    Category, CategoryLabel, Dataset, DatasetOptions, ImageRecord, KnownLabels, Label, LabelEntry,
};
pub use preprocess::{ChannelOrder, Preprocess, PreprocessKind};
