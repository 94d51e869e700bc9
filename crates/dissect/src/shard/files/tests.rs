//! The shard folders and the thresholds file, written and read back: the
//! round trips are exact, and a damaged or misplaced file is refused with
//! an error that names it.

use std::path::Path;

use kernels::Counts;

use super::*;
use crate::ErrorKind;
use crate::results::TopMaps;
use crate::shard::fixture::info;
use crate::shard::{
    Candidates, CountShard, LayerCandidates, LayerThresholds, MergedThresholds, ThresholdShard,
};

/// Units per layer, top images per unit, and the maps' `[h, w]`.
pub(super) const UNITS: u32 = 3;
pub(super) const K: usize = 2;
pub(super) const SIZE: [u32; 2] = [2, 2];
/// The layers: a plain name and one that is not safe for a file name.
pub(super) const LAYERS: [&str; 2] = ["l1", "a/b c"];

pub(super) fn meta(name: &str) -> LayerMeta {
    LayerMeta {
        name: name.into(),
        tap: format!("tap.{name}"),
        field: None,
        units: UNITS,
        feature_size: SIZE,
    }
}

/// Shard 0 of 2, keeping the top [`K`] images.
fn shard_info() -> ShardInfo {
    let mut info = info(0, 2, "digest");
    info.options.top_k = K;
    info
}

/// Per unit, `K` top images with floats a text format could lose.
pub(super) fn top_k(seed: u32) -> Vec<Vec<(u32, f32)>> {
    (0..UNITS)
        .map(|u| vec![(seed + u, f32::INFINITY), (seed + u + 7, -0.0)])
        .collect()
}

fn threshold_shard() -> ThresholdShard {
    let layers = (LAYERS.iter().enumerate())
        .map(|(l, name)| LayerCandidates {
            meta: meta(name),
            rank: 4,
            top_k: top_k(l as u32),
            keys: (0..UNITS)
                .map(|u| vec![u32::MAX - u, 1000 + u, 7, l as u32])
                .collect(),
        })
        .collect();
    ThresholdShard {
        info: shard_info(),
        layers,
    }
}

pub(super) fn merged() -> MergedThresholds {
    let layers = (LAYERS.iter().enumerate())
        .map(|(l, name)| LayerThresholds {
            meta: meta(name),
            thresholds: vec![0.5, -0.0, f32::MIN_POSITIVE / 3.0],
            top_k: top_k(10 * l as u32),
        })
        .collect();
    MergedThresholds {
        digest: "digest".into(),
        shards: 2,
        n_images: 30,
        layers,
        duration_secs: 1.25,
        timings: Default::default(),
    }
}

pub(super) fn count_shard(merged: &MergedThresholds) -> CountShard {
    let (n_labels, n_categories) = (4, 2);
    let counts = (0..LAYERS.len() as u64)
        .map(|l| {
            let mut c = Counts::zeros(UNITS, n_labels, n_categories);
            for (i, v) in c.intersect.iter_mut().enumerate() {
                *v = l * 100 + i as u64;
            }
            c.label_pixels = vec![9, 8, 7, 6];
            c.unit_pixels = vec![l, 2, 3];
            c.unit_category_original[1] = 5;
            c.unit_category_lite[4] = 6;
            // Moments on a 2 x 2 grid (4 blocks, 10 pairs), every value distinct.
            let seq = |n: u32, from: u64| (from..from + u64::from(n)).collect::<Vec<u64>>();
            c.moments = kernels::Moments {
                seg: [4, 6],
                grid: [2, 2],
                images: 30,
                unit_blocks: seq(UNITS * 4, l * 1000),
                unit_gram: seq(UNITS * 10, l * 1000 + 100),
                unit_max: seq(UNITS, l * 1000 + 200),
                label_blocks: seq(n_labels * 4, l * 1000 + 300),
                label_gram: seq(n_labels * 10, l * 1000 + 400),
                label_max: seq(n_labels, l * 1000 + 500),
                label_layers: seq(n_labels, 1),
            };
            c
        })
        .collect();
    let plane = (SIZE[0] * SIZE[1]) as usize;
    let top_maps = (0..LAYERS.len())
        .map(|l| {
            let values = (0..UNITS as usize * K * plane)
                .map(|i| (l * 1000 + i) as f32 / 8.0)
                .collect();
            TopMaps::from_values(UNITS as usize, K, SIZE.map(|v| v as usize), values).unwrap()
        })
        .collect();
    CountShard {
        info: shard_info(),
        thresholds: merged.fingerprint(),
        layers: LAYERS.iter().map(|name| meta(name)).collect(),
        counts,
        top_maps,
    }
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = (std::fs::read_dir(dir).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_threshold_shard_reads_back_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = threshold_shard();
    let written = write_threshold_shard(tmp.path(), &shard).unwrap();
    assert_eq!(written.last(), Some(&tmp.path().join(SHARD_JSON)));
    assert_eq!(
        entries(tmp.path()),
        ["a_b_c-candidates.u32", "l1-candidates.u32", SHARD_JSON],
        "one keys file per layer and shard.json, no temp file left"
    );
    let opened = open_threshold_shard(tmp.path()).unwrap();
    let layers = (opened.layers().iter().enumerate())
        .map(|(l, c)| LayerCandidates {
            keys: opened.keys(l, 0..UNITS as usize).unwrap(),
            ..c.clone()
        })
        .collect();
    let read = ThresholdShard {
        info: opened.info().clone(),
        layers,
    };
    assert_eq!(read, shard);
    // A block of units from the middle of the file, as the merge reads it.
    assert_eq!(opened.keys(1, 1..3).unwrap(), shard.layers[1].keys[1..3]);
    assert!(opened.layers()[0].top_k[0][1].1.is_sign_negative(), "-0.0");
}

#[test]
fn a_count_shard_reads_back_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let merged = merged();
    let shard = count_shard(&merged);
    let written = write_count_shard(tmp.path(), &shard, &merged).unwrap();
    assert_eq!(written.last(), Some(&tmp.path().join(SHARD_JSON)));
    assert_eq!(
        entries(tmp.path()),
        [
            "a_b_c-counts.u64",
            "a_b_c-topmaps.f32",
            "l1-counts.u64",
            "l1-topmaps.f32",
            SHARD_JSON,
            THRESHOLDS_JSON
        ],
    );
    assert_eq!(read_count_shard(tmp.path()).unwrap(), shard);
    assert_eq!(read_shard_thresholds(tmp.path()).unwrap(), merged);
}

#[test]
fn a_thresholds_file_reads_back_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.json");
    let mut merged = merged();
    write_thresholds(&path, &merged).unwrap();
    assert_eq!(read_thresholds(&path).unwrap(), merged);
    // NaN equals nothing, so a threshold with a payload is compared by its
    // bits, through the fingerprint that hashes them.
    merged.layers[0].thresholds[0] = f32::from_bits(0x7fc0_0123);
    write_thresholds(&path, &merged).unwrap();
    let read = read_thresholds(&path).unwrap();
    assert_eq!(read.layers[0].thresholds[0].to_bits(), 0x7fc0_0123);
    assert_eq!(read.fingerprint(), merged.fingerprint());
    assert_eq!(entries(tmp.path()), ["t.json"], "no temp file left");
}

/// A refusal to check: a folder of `phase` (1 or 2), `damage` done to it,
/// then `read`, whose error must be bad input holding every one of
/// `words`.
struct Refusal {
    what: &'static str,
    phase: u8,
    damage: fn(&Path),
    read: fn(&Path) -> Result<(), DissectError>,
    words: &'static [&'static str],
}

fn open_phase_1(dir: &Path) -> Result<(), DissectError> {
    open_threshold_shard(dir).map(drop)
}

fn read_phase_2(dir: &Path) -> Result<(), DissectError> {
    read_count_shard(dir).map(drop)
}

fn read_copied_thresholds(dir: &Path) -> Result<(), DissectError> {
    read_shard_thresholds(dir).map(drop)
}

/// Cuts the last 4 bytes off the file at `path`.
fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() - 4]).unwrap();
}

/// Rewrites the JSON file at `path` with `edit` applied, its recorded
/// digest left as it was.
fn edit_json(path: &Path, edit: fn(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec(&value).unwrap()).unwrap();
}

/// Rewrites the `shard.json` at `path` with `edit` applied and sealed
/// again, as a writer with a bug would: the checks of what it says still
/// refuse it.
fn edit_and_reseal(path: &Path, edit: fn(&mut serde_json::Value)) {
    edit_json(path, edit);
    let mut file: ShardFile = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    file.seal(path).unwrap();
    std::fs::write(path, json(path, &file).unwrap()).unwrap();
}

/// Flips the bits of the last byte of the file at `path`.
fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// What a changed file is refused with.
const CHANGED: &str = "does not match its recorded digest: the file was changed or corrupted";

const REFUSALS: &[Refusal] = &[
    Refusal {
        what: "a truncated candidates file",
        phase: 1,
        damage: |dir| truncate(&dir.join("l1-candidates.u32")),
        read: open_phase_1,
        words: &[
            "l1-candidates.u32",
            "44 bytes, expected 48 (3 units x 4 keys)",
        ],
    },
    Refusal {
        what: "a truncated top maps file",
        phase: 2,
        damage: |dir| truncate(&dir.join("a_b_c-topmaps.f32")),
        read: read_phase_2,
        words: &["a_b_c-topmaps.f32", "92 bytes, expected 24 values"],
    },
    Refusal {
        what: "a missing shard.json",
        phase: 1,
        damage: |dir| std::fs::remove_file(dir.join(SHARD_JSON)).unwrap(),
        read: open_phase_1,
        words: &[SHARD_JSON],
    },
    Refusal {
        what: "a results folder given for a shard folder",
        phase: 2,
        damage: |dir| {
            std::fs::remove_file(dir.join(SHARD_JSON)).unwrap();
            std::fs::write(dir.join("results.json"), "{}").unwrap();
        },
        read: read_phase_2,
        words: &[SHARD_JSON, "this is a results folder, not a shard folder"],
    },
    Refusal {
        what: "phase 2 opened as phase 1",
        phase: 2,
        damage: |_| {},
        read: open_phase_1,
        words: &[SHARD_JSON, "not a thresholds (phase 1) shard"],
    },
    Refusal {
        what: "phase 1 read as phase 2",
        phase: 1,
        damage: |_| {},
        read: read_phase_2,
        words: &[SHARD_JSON, "not a counts (phase 2) shard"],
    },
    Refusal {
        what: "malformed JSON",
        phase: 1,
        damage: |dir| std::fs::write(dir.join(SHARD_JSON), "{\n\"kind\": ").unwrap(),
        read: open_phase_1,
        words: &["shard.json, row 2"],
    },
    Refusal {
        what: "a shard.json of another kind",
        phase: 1,
        damage: |dir| edit_and_reseal(&dir.join(SHARD_JSON), |v| v["kind"] = "other".into()),
        read: open_phase_1,
        words: &[SHARD_JSON, "kind `other`, not netdissect-shard"],
    },
    Refusal {
        what: "counts of the wrong length",
        phase: 2,
        damage: |dir| {
            edit_and_reseal(&dir.join(SHARD_JSON), |v| {
                v["layers"][0]["counts"]["n_labels"] = 5.into();
            });
        },
        read: read_phase_2,
        words: &["l1-counts.u64", "layer l1:", "bytes, not the", "5 labels"],
    },
    Refusal {
        what: "a flipped byte in a counts file",
        phase: 2,
        damage: |dir| flip_last_byte(&dir.join("l1-counts.u64")),
        read: read_phase_2,
        words: &["l1-counts.u64", CHANGED],
    },
    Refusal {
        what: "a malformed copy of the thresholds",
        phase: 2,
        damage: |dir| std::fs::write(dir.join(THRESHOLDS_JSON), "[").unwrap(),
        read: read_copied_thresholds,
        words: &["thresholds.json, row 1"],
    },
    Refusal {
        what: "a flipped byte in a candidates file",
        phase: 1,
        damage: |dir| flip_last_byte(&dir.join("a_b_c-candidates.u32")),
        read: open_phase_1,
        words: &["a_b_c-candidates.u32", CHANGED],
    },
    Refusal {
        what: "a flipped byte in a top maps file",
        phase: 2,
        damage: |dir| flip_last_byte(&dir.join("l1-topmaps.f32")),
        read: read_phase_2,
        words: &["l1-topmaps.f32", CHANGED],
    },
    Refusal {
        what: "an edited count",
        phase: 2,
        damage: |dir| {
            edit_json(&dir.join(SHARD_JSON), |v| {
                v["layers"][1]["counts"]["images"] = 4.into();
            });
        },
        read: read_phase_2,
        words: &[SHARD_JSON, CHANGED],
    },
    Refusal {
        what: "a counts file one count short",
        phase: 2,
        damage: |dir| {
            let path = dir.join("l1-counts.u64");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
        },
        read: read_phase_2,
        words: &["l1-counts.u64", "layer l1:", "bytes, not the"],
    },
    Refusal {
        what: "a block grid beyond the largest",
        phase: 2,
        damage: |dir| {
            edit_and_reseal(&dir.join(SHARD_JSON), |v| {
                v["layers"][0]["counts"]["grid"] = serde_json::json!([9, 2]);
            });
        },
        read: read_phase_2,
        words: &[
            SHARD_JSON,
            "block grid [9, 2] is not 1 to 7 blocks per axis",
        ],
    },
    Refusal {
        what: "an edited top-k image",
        phase: 1,
        damage: |dir| {
            edit_json(&dir.join(SHARD_JSON), |v| {
                v["layers"][0]["candidates"]["top_k"][0][0][0] = 29.into();
            });
        },
        read: open_phase_1,
        words: &[SHARD_JSON, CHANGED],
    },
    Refusal {
        what: "a shard.json without its digest",
        phase: 1,
        damage: |dir| {
            edit_json(&dir.join(SHARD_JSON), |v| {
                v.as_object_mut().unwrap().remove("contents_sha256");
            });
        },
        read: open_phase_1,
        words: &[SHARD_JSON, "records no digest of its contents"],
    },
    Refusal {
        what: "an edited threshold",
        phase: 2,
        damage: |dir| {
            edit_json(&dir.join(THRESHOLDS_JSON), |v| {
                v["layers"][1]["thresholds"][0] = 0.into();
            });
        },
        read: read_copied_thresholds,
        words: &[THRESHOLDS_JSON, CHANGED],
    },
];

#[test]
fn damaged_and_misplaced_files_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let merged = merged();
    let mut failures = Vec::new();
    for (i, case) in REFUSALS.iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        std::fs::create_dir(&dir).unwrap();
        match case.phase {
            1 => write_threshold_shard(&dir, &threshold_shard()).map(drop),
            _ => write_count_shard(&dir, &count_shard(&merged), &merged).map(drop),
        }
        .unwrap();
        (case.damage)(&dir);
        let message = match (case.read)(&dir) {
            Ok(()) => format!("{}: read without an error", case.what),
            Err(e) if e.kind() != ErrorKind::Input => format!("{}: {:?}: {e}", case.what, e.kind()),
            Err(e) => {
                let text = e.to_string();
                let missing: Vec<_> = (case.words.iter()).filter(|w| !text.contains(*w)).collect();
                if missing.is_empty() {
                    continue;
                }
                format!("{}: {missing:?} not in `{text}`", case.what)
            }
        };
        failures.push(message);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
