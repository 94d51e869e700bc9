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
use crate::results::Dissection;
use crate::shard::{DigestInput, Shard, digest};

struct Fixture {
    _tmp: tempfile::TempDir,
    dataset: Dataset,
    net: PlantedColors,
    layers: Vec<String>,
    opts: Options,
    digest: String,
    dir: std::path::PathBuf,
    /// The notes of the runs so far.
    notes: std::cell::RefCell<Vec<String>>,
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
        notes: Default::default(),
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
        let mut report = |r: Report<'_>| match r {
            Report::Progress(p) if stop_at == Some((p.pass_index, p.images_done)) => {
                stop.store(true, Ordering::Relaxed);
            }
            Report::Note(line) => self.notes.borrow_mut().push(line.to_string()),
            _ => {}
        };
        engine.run_resumable(&self.job(), &checkpoints, budget, &mut report)
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
    // committed: reading changes nothing; the resumed run removes it.
    std::fs::write(f.dir.join("counts-99"), b"half").unwrap();
    let found = find(&f.dir, &f.digest).unwrap();
    assert!(matches!(
        found,
        Found::Resumable {
            phase: Phase::Counts,
            images_done: 3
        }
    ));
    assert!(f.dir.join("counts-99").exists());
    let stopped = f.run(&engine, Duration::ZERO, 0, Some((2, 6)));
    assert!(matches!(
        stopped,
        Err(DissectError::Stopped { images_done: 6 })
    ));
    assert!(!f.dir.join("counts-99").exists());
    // A state file that is not one: refused, by name.
    std::fs::write(f.dir.join(STATE_JSON), b"{}").unwrap();
    let err = find(&f.dir, &f.digest).unwrap_err();
    assert!(
        matches!(&err, DissectError::Checkpoint { file, .. } if file.ends_with(STATE_JSON)),
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

/// An hour between checkpoints: the first part is one batch (to measure the
/// pace), the second is the rest of the run.
const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_run_stopped_inside_a_part_of_many_batches_commits_the_batches_done() {
    let (f, engine) = fixture(14);
    let budget = 1 << 30;
    let want = comparable(&f.run(&engine, Duration::ZERO, budget, None).unwrap());
    discard(&f.dir).unwrap();
    // Batches of 3: the stop comes after the third batch, inside the second
    // part, [3, 14), of either phase.
    for (phase, want_phase) in [(1, Phase::Thresholds), (2, Phase::Counts)] {
        let stopped = f.run(&engine, HOUR, budget, Some((phase, 9)));
        assert!(
            matches!(stopped, Err(DissectError::Stopped { images_done: 9 })),
            "phase {phase}: {stopped:?}"
        );
        let found = find(&f.dir, &f.digest).unwrap();
        let resumable = Found::Resumable {
            phase: want_phase,
            images_done: 9,
        };
        assert_eq!(found, resumable, "phase {phase}");
        let resumed = f.run(&engine, HOUR, budget, None).unwrap();
        assert_eq!(comparable(&resumed), want, "phase {phase}");
        discard(&f.dir).unwrap();
    }
}

/// Every file of `dir` and its folders, sorted.
fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_in(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Ways a checkpoint file can be damaged; `other` is another file of the
/// checkpoint.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Garbage,
    Truncated,
    Deleted,
    Swapped,
}

fn damage(file: &Path, other: &Path, how: Damage) {
    let bytes = std::fs::read(file).unwrap();
    match how {
        Damage::Garbage => {
            let mut changed = bytes.clone();
            let mid = changed.len() / 2;
            for b in &mut changed[mid..(mid + 64).min(bytes.len())] {
                *b = b.wrapping_add(0x5a);
            }
            std::fs::write(file, changed).unwrap();
        }
        Damage::Truncated => std::fs::write(file, &bytes[..bytes.len() / 2]).unwrap(),
        Damage::Deleted => std::fs::remove_file(file).unwrap(),
        Damage::Swapped => {
            let theirs = std::fs::read(other).unwrap();
            std::fs::write(file, theirs).unwrap();
            std::fs::write(other, bytes).unwrap();
        }
    }
}

/// Every file of a checkpoint taken in either phase, damaged in every way,
/// then resumed: the run refuses the checkpoint naming the damaged file
/// (or the file it was swapped with, or `state.json` whose count it no
/// longer matches), except where nothing is lost: without `state.json`
/// nothing was committed and the run starts over, and damaged cached
/// activations are recomputed with a note; both end with the right results.
#[test]
fn every_damaged_checkpoint_file_is_named_or_recomputed() {
    let (f, engine) = fixture(14);
    let budget = 1 << 30;
    let want = comparable(&f.run(&engine, Duration::ZERO, budget, None).unwrap());
    discard(&f.dir).unwrap();
    let mut failures = Vec::new();
    for phase in [1, 2] {
        f.run(&engine, HOUR, budget, Some((phase, 9))).unwrap_err();
        let files = files_in(&f.dir);
        discard(&f.dir).unwrap();
        for (i, file) in files.iter().enumerate() {
            let other = &files[(i + 1) % files.len()];
            for how in [
                Damage::Garbage,
                Damage::Truncated,
                Damage::Deleted,
                Damage::Swapped,
            ] {
                f.run(&engine, HOUR, budget, Some((phase, 9))).unwrap_err();
                damage(file, other, how);
                f.notes.borrow_mut().clear();
                let resumed = f.run(&engine, HOUR, budget, None);
                let name = file.file_name().unwrap().to_string_lossy().into_owned();
                let case = format!("phase {phase}, {} {how:?}", file.display());
                let swapped = matches!(how, Damage::Swapped);
                let cache_only = name == ACTIVATIONS && !swapped;
                // Files a resume must read, whose damage it must name.
                let read = (name == STATE_JSON && !matches!(how, Damage::Deleted))
                    || name == "shard.json"
                    || name.ends_with(".u32")
                    || name.ends_with(".u64")
                    || file.parent() == Some(&f.dir) && name == "thresholds.json"
                    || swapped && other.parent() == Some(&f.dir) && !other.ends_with(ACTIVATIONS);
                match resumed {
                    // Nothing read was damaged: the results are right, and a
                    // recomputation is noted.
                    Ok(o) if !read => {
                        let noted = f.notes.borrow().iter().any(|n| {
                            n.starts_with("checkpoint damaged") && n.contains(ACTIVATIONS)
                        });
                        let (mut got, want) = (comparable(&o), want.clone());
                        let mut d: Dissection = serde_json::from_str(&got.0).unwrap();
                        d.mode = CacheMode::Cached;
                        got.0 = serde_json::to_string(&d).unwrap();
                        let recomputed = o.dissection.mode == CacheMode::Recomputed;
                        if got != want || recomputed != noted || cache_only && !noted {
                            failures
                                .push(format!("{case}: noted {noted}, {:?}", o.dissection.mode));
                        }
                    }
                    Err(DissectError::Checkpoint { file: named, .. })
                        if !cache_only
                            && (&named == file
                                || &named == other
                                || named.ends_with(STATE_JSON)
                                || named == file.parent().unwrap()) => {}
                    Ok(_) => failures.push(format!("{case}: resumed without a word")),
                    Err(e) => failures.push(format!("{case}: {e}")),
                }
                discard(&f.dir).unwrap();
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_state_that_contradicts_its_folder_or_a_checkpoint_that_is_no_folder_is_named() {
    let (f, engine) = fixture(10);
    f.run(&engine, Duration::ZERO, 0, Some((1, 6))).unwrap_err();
    let state = f.dir.join(STATE_JSON);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    for done in [3, 9, 11] {
        json["images_done"] = done.into();
        std::fs::write(&state, serde_json::to_vec(&json).unwrap()).unwrap();
        let err = f.run(&engine, Duration::ZERO, 0, None).unwrap_err();
        assert!(
            matches!(&err, DissectError::Checkpoint { file, .. } if file == &state),
            "{done}: {err}"
        );
        assert!(
            err.to_string().starts_with("checkpoint damaged (file "),
            "{err}"
        );
    }
    discard(&f.dir).unwrap();
    // A file, and a link to itself, where the folder goes.
    std::fs::write(&f.dir, b"x").unwrap();
    let err = f.run(&engine, Duration::ZERO, 0, None).unwrap_err();
    assert!(
        matches!(&err, DissectError::Checkpoint { file, .. } if file == &f.dir),
        "{err}"
    );
    discard(&f.dir).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&f.dir, &f.dir).unwrap();
        let err = find(&f.dir, &f.digest).unwrap_err();
        assert!(
            matches!(&err, DissectError::Checkpoint { file, .. } if file == &f.dir),
            "{err}"
        );
        discard(&f.dir).unwrap();
        assert!(f.dir.symlink_metadata().is_err());
    }
    assert!(f.run(&engine, Duration::ZERO, 0, None).is_ok());
}
