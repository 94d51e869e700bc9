//! A resumable run stopped after every batch in turn, and resumed, ends
//! with the uninterrupted run's results; and the results are the plain
//! run's. Fixture: `broden::synth::generate` (seeded) in a temp folder,
//! dissected by the planted colour network on the CPU backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use broden::{Dataset, DatasetOptions};

use super::*;
use crate::options::Options;
use crate::planted::PlantedColors;
use crate::shard::{DigestInput, Shard, digest};

struct Fixture {
    _tmp: tempfile::TempDir,
    dataset: Dataset,
    net: PlantedColors,
    layers: Vec<String>,
    opts: Options,
    digest: String,
    dir: std::path::PathBuf,
}

/// The fixture, and a CPU engine whose stop flag the test sets.
fn fixture(images: usize) -> (Fixture, Dissector) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("broden");
    let synth = broden::synth::SynthOptions {
        images,
        seed: 3,
        size: 32,
        swatch_percent: 20,
    };
    broden::synth::generate(&root, &synth).unwrap();
    let dataset = Dataset::open(&root, &DatasetOptions::default()).unwrap();
    let mut engine = Dissector::cpu();
    engine.stop = Some(Arc::new(AtomicBool::new(false)));
    let net = PlantedColors::new(engine.device());
    let mut preprocess = PlantedColors::preprocess();
    preprocess.height = 32;
    preprocess.width = 32;
    let mut opts = Options::preset(crate::options::Preset::Original, &preprocess);
    opts.batch_size = 3;
    opts.top_k = 4;
    let layers = vec!["color4".to_string(), "color16".to_string()];
    let digest = digest(&DigestInput {
        model: "planted-colors",
        layers: &layers,
        options: &opts,
        weights: &[],
        activations: &[],
        dataset: &dataset,
        shards: 1,
    })
    .unwrap();
    let dir = tmp.path().join("checkpoint");
    let f = Fixture {
        _tmp: tmp,
        dataset,
        net,
        layers,
        opts,
        digest,
        dir,
    };
    (f, engine)
}

impl Fixture {
    fn job(&self) -> ShardJob<'_> {
        ShardJob {
            network: &self.net,
            layers: &self.layers,
            dataset: &self.dataset,
            shard: Shard { index: 0, count: 1 },
            digest: &self.digest,
            options: &self.opts,
        }
    }

    /// A resumable run, stopped once `stop_at` images of `stop_phase` are
    /// done (never when `None`).
    fn run(
        &self,
        engine: &Dissector,
        every: Duration,
        budget: u64,
        stop_at: Option<(u32, usize)>,
    ) -> Result<Outcome, DissectError> {
        let stop = engine.stop.as_deref().unwrap();
        stop.store(false, Ordering::Relaxed);
        let checkpoints = Checkpoints {
            dir: &self.dir,
            every,
        };
        let mut progress = |p: &Progress| {
            if stop_at == Some((p.pass_index, p.images_done)) {
                stop.store(true, Ordering::Relaxed);
            }
        };
        engine.run_resumable(&self.job(), &checkpoints, budget, &mut progress)
    }
}

/// The parts of results that must not depend on how the run went.
fn comparable(o: &Outcome) -> (String, Vec<kernels::Counts>, Vec<Vec<u32>>) {
    let mut d = o.dissection.clone();
    d.duration_secs = 0.0;
    d.timings = Default::default();
    let maps = (o.top_maps.iter())
        .map(|m| m.values.iter().map(|v| v.to_bits()).collect())
        .collect();
    (serde_json::to_string(&d).unwrap(), o.counts.clone(), maps)
}

#[test]
fn a_run_stopped_after_any_batch_and_resumed_gives_the_uninterrupted_results() {
    let (f, engine) = fixture(14);
    let every = Duration::ZERO; // a checkpoint after every batch
    let budget = 1 << 30;
    let whole = f.run(&engine, every, budget, None).unwrap();
    assert_eq!(whole.dissection.mode, CacheMode::Cached);
    assert_eq!(whole.dissection.passes, 2);
    assert!(!f.dir.exists() || std::fs::read_dir(&f.dir).unwrap().count() > 0);
    discard(&f.dir).unwrap();
    let want = comparable(&whole);
    // 14 images in batches of 3: the ends of the five batches of each phase.
    // (A stop asked for after the last batch of the counts comes too late:
    // the run is done.)
    for (phase, ends) in [(1, &[3, 6, 9, 12, 14][..]), (2, &[3, 6, 9, 12][..])] {
        for &done in ends {
            let stopped = f.run(&engine, every, budget, Some((phase, done)));
            // Stopped at the end of the thresholds phase, the run has begun
            // the counts phase.
            let want_phase = if phase == 1 && done < 14 {
                Phase::Thresholds
            } else {
                Phase::Counts
            };
            let want_done = if phase == 1 && done == 14 { 0 } else { done };
            assert!(
                matches!(stopped, Err(DissectError::Stopped { images_done }) if images_done == want_done),
                "phase {phase} at {done}: {stopped:?}"
            );
            let found = find(&f.dir, &f.digest).unwrap();
            assert_eq!(
                found,
                Found::Resumable {
                    phase: want_phase,
                    images_done: want_done
                },
                "phase {phase} at {done}"
            );
            let resumed = f.run(&engine, every, budget, None).unwrap();
            assert_eq!(comparable(&resumed), want, "phase {phase} at {done}");
            discard(&f.dir).unwrap();
        }
    }
    assert_eq!(find(&f.dir, "another").unwrap(), Found::Nothing);
}

#[test]
fn resumable_results_are_the_plain_runs_and_a_checkpoint_of_another_run_is_not_resumed() {
    let (f, engine) = fixture(10);
    let plain = engine
        .run_with_cache_budget(&f.net, &f.layers, &f.dataset, &f.opts, 0, &mut |_| {})
        .unwrap();
    // Parts of about a second: the whole run in a part or two.
    let resumable = f.run(&engine, Duration::from_secs(1), 0, None).unwrap();
    assert_eq!(resumable.dissection.mode, CacheMode::Recomputed);
    // The checkpoint of a finished run is the caller's to remove once the
    // results are written.
    assert!(matches!(
        find(&f.dir, &f.digest).unwrap(),
        Found::Resumable {
            phase: Phase::Counts,
            images_done: 10
        }
    ));
    discard(&f.dir).unwrap();
    assert_eq!(resumable.counts, plain.counts);
    for (a, b) in resumable
        .dissection
        .layers
        .iter()
        .zip(&plain.dissection.layers)
    {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
    }
    // Stopped in the counts phase, then resumed by another run: that run
    // starts over, and its checkpoint replaces the other's.
    let stopped = f.run(&engine, Duration::ZERO, 0, Some((2, 3)));
    assert!(matches!(stopped, Err(DissectError::Stopped { .. })));
    assert!(matches!(
        find(&f.dir, "another run").unwrap(),
        Found::OtherRun
    ));
    // A checkpoint folder with a stray file from a checkpoint that was never
    // committed: removed on reading.
    std::fs::write(f.dir.join("counts-99"), b"half").unwrap();
    let found = find(&f.dir, &f.digest).unwrap();
    assert!(matches!(
        found,
        Found::Resumable {
            phase: Phase::Counts,
            images_done: 3
        }
    ));
    assert!(!f.dir.join("counts-99").exists());
    // A state file that is not one: refused, by name.
    std::fs::write(f.dir.join(STATE_JSON), b"{}").unwrap();
    let err = find(&f.dir, &f.digest).unwrap_err().to_string();
    assert!(
        err.contains(STATE_JSON) && err.contains("--restart"),
        "{err}"
    );
}

#[test]
fn parts_are_whole_batches_sized_to_the_interval() {
    let mut pace = Pace::new(Duration::from_secs(10), 4);
    assert_eq!(pace.next(0, 30), 0..4, "one batch first, to measure");
    pace.took(4, Duration::from_secs(2));
    assert_eq!(pace.next(4, 30), 4..24, "five batches of 2 s");
    assert_eq!(pace.next(24, 30), 24..30, "the last part is what is left");
    pace.took(8, Duration::from_secs(100));
    assert_eq!(pace.next(4, 30), 4..8, "at least one batch");
}
