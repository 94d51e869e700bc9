//! A dissection job: where the activations come from, which layers, the
//! dataset, the settings, the engine and the output folder. The CLI and
//! the Python package build one from their arguments; [`crate::run`],
//! [`crate::shards`] and [`crate::warm_up`] carry it out.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use broden::PreprocessKind;
use broden::{Dataset, DatasetOptions, Preprocess};
use dissect::options::Overrides;
use dissect::{Alignment, Options, Preset};

use crate::engine::EngineSpec;
use crate::error::{Error, Result};
use crate::source::Source;

/// The options of a job: a preset, overridden setting by setting.
#[derive(Debug, Clone)]
pub struct Settings {
    pub preset: Preset,
    /// Overrides of the preset; its `preprocess` is set from
    /// [`Settings::preprocess`] at the network's input size.
    pub overrides: Overrides,
    /// The preprocessing, where not the network's own.
    pub preprocess: Option<PreprocessKind>,
    /// Powers of a random rotation of every layer's basis
    /// ([`dissect::options::Rotate`]), one run each; empty: none.
    pub rotate: Vec<f64>,
    /// The rotation's seed.
    pub rotate_seed: u64,
    /// Also dissect the architecture with random weights as torchvision
    /// initialises it, from this seed, into its own folder beside the
    /// trained run's, with a comparison page (`None`: no baseline).
    pub random_baseline: Option<u64>,
}

impl Settings {
    /// The options for a network fed `own`.
    pub fn options(&self, own: &Preprocess) -> Options {
        let mut overrides = self.overrides.clone();
        if let Some(kind) = self.preprocess {
            overrides.preprocess = Some(Preprocess::of(kind, own.height));
        }
        overrides.apply(self.preset, own)
    }

    /// The dataset options these settings select.
    pub fn dataset_options(&self) -> DatasetOptions {
        DatasetOptions {
            split: self.overrides.split.clone(),
            categories: self.overrides.categories.clone(),
            max_images: self.overrides.max_images,
        }
    }
}

/// One dissection to run.
#[derive(Debug)]
pub struct Job<'a> {
    pub source: Source<'a>,
    pub layers: Vec<String>,
    /// The Broden-format dataset's folder.
    pub dataset: PathBuf,
    pub settings: Settings,
    pub engine: EngineSpec,
    /// The results folder; `None` returns the results unwritten.
    pub out: Option<PathBuf>,
    /// Replace results already in `out`.
    pub force: bool,
    /// Checkpoints of a run into `out`, and resuming from them.
    pub resume: Resume,
    /// Set (by the caller's signal handler) to stop after the batch in
    /// progress: a run with checkpoints keeps its last one.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Checkpoints of a run, so that it continues where it was killed when
/// started again (see [`dissect::resume`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resume {
    /// About how many seconds of work between two checkpoints: `None` the
    /// default ([`crate::resume::DEFAULT_EVERY_SECS`] on the CPU backend,
    /// none on a GPU), `Some(0.0)` none.
    pub every_secs: Option<f64>,
    /// Start over, discarding a checkpoint of the run.
    pub restart: bool,
}

impl Job<'_> {
    /// The engine, with the job's stop flag.
    pub(crate) fn start_engine(
        &self,
        events: &mut dyn crate::Events,
    ) -> Result<dissect::Dissector> {
        // The cache lives beside the results (a resumable run's checkpoint
        // folder is there too), so their disk bounds it.
        let cache_dir = self.out.as_deref().map(store::parent_of);
        let mut dissector = self.engine.start(events, cache_dir)?;
        dissector.stop = self.stop.clone();
        Ok(dissector)
    }

    /// The dataset, with the settings' split, categories and image limit.
    pub(crate) fn open_dataset(&self) -> Result<Dataset> {
        Dataset::open(&self.dataset, &self.settings.dataset_options()).map_err(Error::input)
    }

    /// Fails on an empty layer list.
    pub(crate) fn check_layers(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::new(
                crate::Kind::Input,
                "--layers is empty: name at least one layer (see `netdissect models`)",
            ));
        }
        Ok(())
    }

    /// The options for a network fed `own`, validated against the layers.
    pub(crate) fn options(&self, own: &Preprocess) -> Result<Options> {
        let opts = self.settings.options(own);
        opts.validate(&self.layers)?;
        Ok(opts)
    }

    /// Fails when the settings ask for receptive fields that recorded
    /// activations do not have.
    pub(crate) fn check_recorded_alignment(&self) -> Result<()> {
        if self.settings.overrides.alignment == Some(Alignment::ReceptiveField) {
            return Err(Error::usage(
                "--upsample receptive-field needs the network's receptive fields, which recorded activations do not have: drop it (--activations upsamples with half-pixel centres)",
            ));
        }
        Ok(())
    }
}
