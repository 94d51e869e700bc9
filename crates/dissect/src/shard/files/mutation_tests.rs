//! Every shard file mutated a byte at a time: the merge that reads it
//! refuses it as bad input or gives the original's result, never a panic
//! and never another result.

use std::fmt::Debug;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRng, TestRunner};

use super::tests::{K, LAYERS, UNITS, count_shard, merged, meta, top_k};
use super::*;
use crate::ErrorKind;
use crate::shard::fixture::info;
use crate::shard::{Candidates, LayerCandidates, ThresholdShard, merge_thresholds};

/// Mutations tried per file: enough to hit every part of these small
/// files many times, few enough for a few seconds in the dev profile.
const CASES: u32 = 96;

/// The only shard of a run over 30 images (2x2 maps, so 120 values per
/// unit), with the rank of its quantile and that many keys per unit: a set
/// that merges.
fn whole_run_shard() -> ThresholdShard {
    let mut info = info(0, 1, "digest");
    info.options.top_k = K;
    info.options.quantile = 0.05;
    let rank = kernels::quantile::rank_from_top(0.05, 30 * 4);
    let layers = (LAYERS.iter().enumerate())
        .map(|(l, name)| LayerCandidates {
            meta: meta(name),
            rank,
            top_k: top_k(l as u32),
            keys: (0..UNITS)
                .map(|u| {
                    (0..rank as u32)
                        .map(|i| 0x8000_0000 + 1000 * u - 17 * i + l as u32)
                        .collect()
                })
                .collect(),
        })
        .collect();
    ThresholdShard { info, layers }
}

/// Opens the phase-1 folder `dir` and merges it, the only shard of its
/// run, into thresholds.
fn merge_phase_1(dir: &Path) -> Result<String, DissectError> {
    let opened = open_threshold_shard(dir)?;
    let named: Vec<(String, &dyn Candidates)> = vec![("s".into(), &opened)];
    // Debug output shows floats exactly enough to tell -0.0 from 0.0.
    merge_thresholds(&named).map(|m| format!("{m:?} {}", m.fingerprint()))
}

/// Reads the phase-2 folder `dir` as the final merge does: its counts and
/// maps and the thresholds it counted with. The merge is a function of
/// these (and the dataset), so the same reads give the same results.
fn read_phase_2(dir: &Path) -> Result<String, DissectError> {
    let shard = read_count_shard(dir)?;
    let thresholds = read_shard_thresholds(dir)?;
    Ok(format!(
        "{shard:?} {thresholds:?} {}",
        thresholds.fingerprint()
    ))
}

/// Copies every file of the folder `from` into the new folder `to`.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Runs [`CASES`] single-byte mutations of the file `name` of the shard
/// folder `original` through `merge`, each in a copy of the folder under
/// `work` (removed after). Returns what went wrong, if anything.
fn mutations_of<T: PartialEq + Debug>(
    work: &Path,
    original: &Path,
    name: &str,
    merge: fn(&Path) -> Result<T, DissectError>,
) -> Option<String> {
    let want = merge(original).unwrap();
    let bytes = std::fs::read(original.join(name)).unwrap();
    let config = Config::with_cases(CASES);
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&(any::<Index>(), any::<u8>()), |(at, byte)| {
        let case = tempfile::tempdir_in(work).unwrap();
        let dir = case.path().join("shard");
        copy_folder(original, &dir);
        let mut mutated = bytes.clone();
        let at = at.index(mutated.len());
        mutated[at] = byte;
        std::fs::write(dir.join(name), &mutated).unwrap();
        match merge(&dir) {
            Ok(got) if got == want => Ok(()),
            Ok(_) => Err(TestCaseError::fail(format!(
                "byte {at} set to {byte:#04x}: merged to another result"
            ))),
            Err(e) if e.kind() == ErrorKind::Input => Ok(()),
            Err(e) => Err(TestCaseError::fail(format!(
                "byte {at} set to {byte:#04x}: {:?} error, not bad input: {e}",
                e.kind()
            ))),
        }
    });
    result.err().map(|e| format!("{name}: {e}"))
}

#[test]
fn any_byte_of_any_shard_file_mutated_is_refused_or_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (phase_1, phase_2) = (tmp.path().join("1"), tmp.path().join("2"));
    std::fs::create_dir(&phase_1).unwrap();
    std::fs::create_dir(&phase_2).unwrap();
    write_threshold_shard(&phase_1, &whole_run_shard()).unwrap();
    let merged = merged();
    write_count_shard(&phase_2, &count_shard(&merged), &merged).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let failures: Vec<String> = [
        mutations_of(&work, &phase_1, SHARD_JSON, merge_phase_1),
        mutations_of(&work, &phase_1, "l1-candidates.u32", merge_phase_1),
        mutations_of(&work, &phase_1, "a_b_c-candidates.u32", merge_phase_1),
        mutations_of(&work, &phase_2, SHARD_JSON, read_phase_2),
        mutations_of(&work, &phase_2, "l1-topmaps.f32", read_phase_2),
        mutations_of(&work, &phase_2, THRESHOLDS_JSON, read_phase_2),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
