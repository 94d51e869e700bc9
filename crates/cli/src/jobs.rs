//! The command line's arguments mapped onto the application layer's jobs.

use app::{
    Backend, CompareJob, EngineSpec, ExplainJob, Job, MergeJob, MergePhase, Settings, Source,
};
use dissect::recorded::TokenLayout;
use dissect::{Alignment, Preset, UnionRule};

use crate::args::{
    AblateArgs, AblateToArg, AlignArg, BackendArg, CompareArgs, DissectArgs, ExplainArgs,
    MergeArgs, MethodArg, PhaseArg, PresetArg, UnionArg,
};

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => Backend::Auto,
            BackendArg::Gpu => Backend::Gpu,
            BackendArg::Cpu => Backend::Cpu,
        }
    }
}

impl crate::args::SourceArgs {
    /// The registry files and mirrors these arguments add.
    pub fn sources(&self) -> app::Sources {
        app::Sources {
            registry: self.registry.clone(),
            mirrors: self.mirror.clone(),
        }
    }
}

impl DissectArgs {
    /// The job these arguments describe.
    pub fn job(&self) -> Job<'static> {
        let source = match &self.activations {
            Some(dir) => Source::Recorded {
                dir: dir.clone(),
                tokens: TokenLayout {
                    grid: self.token_grid,
                    skip: self.skip_tokens,
                },
            },
            None => Source::Model {
                name: self.model.clone().unwrap_or_default(),
                weights: self.weights.clone(),
            },
        };
        Job {
            source,
            layers: self.layers.clone(),
            dataset: self.dataset.clone(),
            settings: self.settings(),
            engine: EngineSpec {
                backend: self.backend.into(),
                device: self.device,
                cache_mib: self.cache_mib,
            },
            out: self.out.clone(),
            force: self.force,
            resume: app::Resume {
                every_secs: self.checkpoint_every,
                restart: self.restart,
            },
            stop: Some(crate::signals::stop_flag()),
        }
    }

    /// The preset, overridden flag by flag.
    fn settings(&self) -> Settings {
        let overrides = dissect::options::Overrides {
            quantile: self.quantile,
            iou_threshold: self.iou_threshold,
            categories: self.categories.clone(),
            union: self.union.map(|u| match u {
                UnionArg::Original => UnionRule::Original,
                UnionArg::Lite => UnionRule::Lite,
            }),
            alignment: self.upsample.map(|u| match u {
                AlignArg::ReceptiveField => Alignment::ReceptiveField,
                AlignArg::HalfPixel => Alignment::HalfPixel,
            }),
            preprocess: None,
            split: self.split.clone(),
            max_images: self.max_images,
            batch_size: self.batch_size,
            top_k: self.top_k,
            formula_length: self.formula_length,
            beam: self.beam,
            // Set per run from `Settings::rotate`.
            rotate: None,
        };
        Settings {
            preset: match self.preset {
                PresetArg::Original => Preset::Original,
                PresetArg::Lite => Preset::Lite,
            },
            overrides,
            preprocess: self.preprocess,
            rotate: self.rotate.clone(),
            rotate_seed: self.rotate_seed,
            random_baseline: self.random_baseline,
        }
    }

    /// The shard and phase of `--shard` and `--thresholds`.
    pub fn shard_spec(&self) -> Option<app::ShardSpec> {
        self.shard.map(|shard| app::ShardSpec {
            shard,
            thresholds: self.thresholds.clone(),
        })
    }
}

impl MergeArgs {
    pub fn job(&self) -> MergeJob {
        MergeJob {
            shards: self.shards.clone(),
            phase: match self.phase {
                PhaseArg::Thresholds => MergePhase::Thresholds,
                PhaseArg::Counts => MergePhase::Counts,
            },
            out: self.out.clone(),
            dataset: self.dataset.clone(),
            force: self.force,
            backend: self.backend.into(),
        }
    }
}

impl AblateArgs {
    pub fn job(&self) -> app::AblateJob {
        app::AblateJob {
            results: self.results.clone(),
            weights: self.weights.clone(),
            dataset: self.dataset.clone(),
            classes: self.classes.clone(),
            layer: self.layer.clone(),
            to: match self.ablate_to {
                AblateToArg::Zero => app::AblateTo::Zero,
                AblateToArg::Mean => app::AblateTo::Mean,
            },
            method: match self.method {
                MethodArg::Auto => app::Method::Auto,
                MethodArg::ClosedForm => app::Method::ClosedForm,
                MethodArg::ReRun => app::Method::Rerun,
            },
            sizes: self.sizes.clone(),
            units: self.units.clone(),
            concept: self.concept.clone(),
            out: self.out.clone(),
            batch: self.batch_size,
            backend: self.backend.into(),
        }
    }
}

impl ExplainArgs {
    pub fn job(&self) -> ExplainJob {
        ExplainJob {
            results: self.results.clone(),
            weights: self.weights.clone(),
            images: self.image.clone(),
            dataset: self.dataset.clone().zip(self.images),
            classes: self.classes.clone(),
            out: self.out.clone(),
            top_classes: self.top_classes,
            top_units: self.top_units,
            backend: self.backend.into(),
        }
    }
}

impl CompareArgs {
    pub fn job(&self) -> CompareJob {
        CompareJob {
            runs: self.runs.clone(),
            labels: self.labels.clone(),
            ordered: self.ordered,
            out: self.out.clone(),
        }
    }
}
