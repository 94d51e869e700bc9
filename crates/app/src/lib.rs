//! The application layer: what the `netdissect` CLI and the Python
//! package do, with their arguments mapped onto it.
//!
//! A [`Job`] names where the activations come from ([`Source`]: a zoo
//! model with one or several checkpoints, the planted demo network,
//! recorded activations in files or in memory), the layers, the dataset,
//! the [`Settings`], the engine ([`EngineSpec`]) and the output folder.
//! The operations:
//! - [`run`]: dissect and write the results folder (one per checkpoint,
//!   with a comparison page, when there are several);
//! - [`warm_up`]: tune the kernels on a sample, write nothing;
//! - [`run_shard`]: one shard's phase of a sharded run; [`merge`]: the
//!   thresholds merge or the final merge of the shards;
//! - [`explain`]: the units behind a classifier's predictions;
//! - [`fetch_item`]: Broden or a published checkpoint by name, checked;
//!   [`resolve_weights`]: `--weights NAME` fetched where it is no file;
//! - [`compare`], [`regenerate_report`] and [`decode_all`]: on folders
//!   already written.
//!
//! Nothing here parses arguments or prints: what a job has to say goes to
//! its [`Events`], and failures are [`Error`]s whose [`Kind`] the CLI maps
//! to exit codes and the Python package to exception classes.

mod ablate;
mod engine;
mod error;
mod events;
mod explain;
mod explain_page;
mod fetching;
mod folders;
mod job;
mod resume;
mod run;
mod shards;
mod source;

pub use ablate::{
    AblateJob, AblateTo, Ablation, ClassAblation, ClassScore, DEFAULT_SIZES, Method, ablate,
};
pub use engine::{Backend, EngineSpec};
pub use error::{Error, Kind, Result};
pub use events::{Events, Silent};
pub use explain::{ExplainJob, Explained, Prediction, UnitTerm, explain};
pub use fetching::{FetchJob, Sources, fetch_item, resolve_weights};
pub use folders::{CompareJob, Decoded, compare, decode_all, open_dataset, regenerate_report};
pub use job::{Job, Resume, Settings};
pub use resume::checkpoint_dir;
pub use run::{Finished, run, warm_up};
pub use shards::{MergeJob, MergePhase, ShardSpec, merge, run_shard};
pub use source::{PLANTED, Source, checkpoint_stem, checkpoints};
