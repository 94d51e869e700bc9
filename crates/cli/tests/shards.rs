//! Sharded runs (`dissect --shard`, `merge`) as a cluster runs them: four
//! uneven shards merge to the single run's folder byte for byte (but for
//! durations) on both backends and on recorded activations; and sets of
//! shards that do not belong together are refused by name. (slurm.rs runs
//! the Slurm scripts of `deploy/slurm` on a real cluster.) Datasets are
//! generated with `broden::synth::generate` (seeded) in temp folders.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// 26 images in batches of 4: 7 batches, the last of 2, so 4 shards hold
/// 1, 2, 2 and 2 batches (4, 8, 8 and 6 images).
const IMAGES: usize = 26;

fn dataset(dir: &Path) -> PathBuf {
    synth(dir, IMAGES, 11, 112, 10)
}

/// Runs every phase of a sharded run by hand: `shards` phase-1 runs, the
/// thresholds merge, `shards` phase-2 runs, the final merge into
/// `<tmp>/merged`. Returns that folder.
fn sharded(tmp: &Path, args: &[&str], shards: u32) -> PathBuf {
    let dir = |phase: &str, i: u32| tmp.join(format!("{phase}-{i}"));
    for i in 0..shards {
        let shard = format!("{i}/{shards}");
        let out = dir("thresholds", i);
        let mut a = args.to_vec();
        a.extend(["--shard", &shard, "--out", s(&out)]);
        let o = ok(netdissect(&a));
        assert!(
            stderr(&o).contains(&format!("shard {shard} (phase 1")),
            "{}",
            stderr(&o)
        );
    }
    let thresholds = tmp.join("thresholds.json");
    let mut merge = vec!["merge", "--phase", "thresholds", "--out", s(&thresholds)];
    // Any order will do.
    let p1: Vec<PathBuf> = (0..shards).rev().map(|i| dir("thresholds", i)).collect();
    merge.extend(p1.iter().map(|p| s(p)));
    ok(netdissect(&merge));
    for i in 0..shards {
        let shard = format!("{i}/{shards}");
        let out = dir("counts", i);
        let mut a = args.to_vec();
        a.extend([
            "--shard",
            &shard,
            "--thresholds",
            s(&thresholds),
            "--out",
            s(&out),
        ]);
        ok(netdissect(&a));
    }
    let merged = tmp.join("merged");
    let p2: Vec<PathBuf> = (0..shards).map(|i| dir("counts", i)).collect();
    let mut merge = vec!["merge", "--out", s(&merged)];
    merge.extend(p2.iter().map(|p| s(p)));
    ok(netdissect(&merge));
    merged
}

fn planted_args<'a>(data: &'a Path, backend: &'a str) -> Vec<&'a str> {
    vec![
        "dissect",
        "--model",
        "planted-colors",
        "--layers",
        "color4,color16",
        "--dataset",
        s(data),
        "--batch-size",
        "4",
        "--top-k",
        "5",
        "--backend",
        backend,
        "--quiet",
    ]
}

#[test]
fn four_uneven_shards_merge_to_the_single_run_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    for backend in ["cpu", "gpu"] {
        let work = tmp.path().join(backend);
        let args = planted_args(&data, backend);
        // The single run with the network run once per pass, as every
        // shard runs it.
        let single = work.join("single");
        let mut a = args.clone();
        a.extend(["--cache-mib", "0", "--out", s(&single)]);
        ok(netdissect(&a));
        let merged = sharded(&work, &args, 4);
        assert_same_folders(&single, &merged);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(merged.join("results.json")).unwrap()).unwrap();
        assert_eq!(json["n_images"], IMAGES);
        assert!(json["duration_secs"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn recorded_activations_shard_by_the_runs_image_index() {
    use dissect::npy;
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let acts = tmp.path().join("acts");
    std::fs::create_dir_all(&acts).unwrap();
    // 26 images x 6 units x 5 x 5, distinct per image so that a shard
    // reading another shard's rows would count differently.
    let values: Vec<f32> = (0..IMAGES * 6 * 25)
        .map(|i| ((i * 7919 + (i / 150) * 104_729) % 1009) as f32 / 100.0)
        .collect();
    std::fs::write(
        acts.join("block.npy"),
        npy::encode_f32(&[IMAGES, 6, 5, 5], &values),
    )
    .unwrap();
    let args = vec![
        "dissect",
        "--activations",
        s(&acts),
        "--layers",
        "block",
        "--dataset",
        s(&data),
        "--batch-size",
        "3",
        "--quantile",
        "0.05",
        "--backend",
        "cpu",
        "--quiet",
    ];
    let single = tmp.path().join("single");
    let mut a = args.clone();
    a.extend(["--cache-mib", "0", "--out", s(&single)]);
    ok(netdissect(&a));
    // 9 batches of 3 in 4 shards: 2, 2, 2 and 3 batches.
    let merged = sharded(tmp.path(), &args, 4);
    assert_same_folders(&single, &merged);
}

#[test]
fn no_top_images_runs_on_both_backends_sharded_or_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    for backend in ["cpu", "gpu"] {
        let work = tmp.path().join(backend);
        let mut args = planted_args(&data, backend);
        let k = args.iter().position(|a| *a == "--top-k").unwrap();
        args[k + 1] = "0";
        let single = work.join("single");
        let mut a = args.clone();
        a.extend(["--cache-mib", "0", "--out", s(&single)]);
        ok(netdissect(&a));
        let merged = sharded(&work, &args, 2);
        assert_same_folders(&single, &merged);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(merged.join("results.json")).unwrap()).unwrap();
        assert!(json["layers"][0]["top_maps_file"].is_null());
    }
}

#[test]
fn shard_sets_that_do_not_belong_together_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let args = planted_args(&data, "cpu");
    let phase1 = |name: &str, shard: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut a = args.clone();
        a.extend(["--shard", shard, "--out", s(&out)]);
        a.extend_from_slice(extra);
        ok(netdissect(&a));
        out
    };
    let a0 = phase1("a0", "0/3", &[]);
    let a1 = phase1("a1", "1/3", &[]);
    let a2 = phase1("a2", "2/3", &[]);
    let other = phase1("b1", "1/3", &["--quantile", "0.01"]);
    let thresholds = tmp.path().join("t.json");
    let merge = |dirs: &[&Path]| {
        let mut a = vec!["merge", "--phase", "thresholds", "--out", s(&thresholds)];
        a.extend(dirs.iter().map(|d| s(d)));
        netdissect(&a)
    };
    let refused = |o: Output, words: &[&str]| {
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        for w in words {
            assert!(stderr(&o).contains(w), "`{w}` in: {}", stderr(&o));
        }
        assert!(!thresholds.exists(), "nothing written");
    };
    refused(merge(&[&a0, &a2]), &["1/3", "missing"]);
    refused(merge(&[&a0, &a1, &a1, &a2]), &["1/3", "given twice"]);
    refused(merge(&[&a0, &other, &a2]), &[s(&other), "different runs"]);
    let missing = tmp.path().join("nothing");
    refused(merge(&[&a0, &missing]), &[s(&missing)]);
    // A shard folder cut short: its candidates file truncated.
    let cut = tmp.path().join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    for e in std::fs::read_dir(&a1).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, cut.join(p.file_name().unwrap())).unwrap();
    }
    let keys = cut.join("color4-candidates.u32");
    let len = std::fs::metadata(&keys).unwrap().len();
    std::fs::write(&keys, &std::fs::read(&keys).unwrap()[..(len - 4) as usize]).unwrap();
    refused(
        merge(&[&a0, &cut, &a2]),
        &["color4-candidates.u32", "bytes"],
    );

    ok(merge(&[&a2, &a0, &a1]));
    // Phase 2 with thresholds of another run, or of another shard count.
    let counts = |extra: &[&str], shard: &str| {
        let mut a = args.clone();
        let out = tmp.path().join("c");
        a.extend([
            "--shard",
            shard,
            "--thresholds",
            s(&thresholds),
            "--out",
            s(&out),
        ]);
        a.extend_from_slice(extra);
        netdissect(&a)
    };
    let o = counts(&["--quantile", "0.01"], "0/3");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("another run"), "{}", stderr(&o));
    let o = counts(&[], "0/4");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // The final merge: a phase-2 shard missing, or counted with other
    // thresholds (another phase 1 of the same run, with a shard's top-k
    // edited), is refused, and no results folder appears.
    let phase2 = |name: &str, shard: &str, file: &Path| {
        let out = tmp.path().join(name);
        let mut a = args.clone();
        a.extend(["--shard", shard, "--thresholds", s(file), "--out", s(&out)]);
        ok(netdissect(&a));
        out
    };
    let c0 = phase2("c0", "0/3", &thresholds);
    let c1 = phase2("c1", "1/3", &thresholds);
    let results = tmp.path().join("results");
    let final_merge = |dirs: &[&Path]| {
        let mut a = vec!["merge", "--out", s(&results)];
        a.extend(dirs.iter().map(|d| s(d)));
        netdissect(&a)
    };
    let o = final_merge(&[&c0, &c1]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2/3") && stderr(&o).contains("missing"),
        "{}",
        stderr(&o)
    );
    // Written as a merge writes it: a thresholds file edited by hand is
    // refused for its digest before it is counted with.
    let mut edited = dissect::shard::files::read_thresholds(&thresholds).unwrap();
    edited.layers[0].top_k[0].pop();
    let other = tmp.path().join("other.json");
    dissect::shard::files::write_thresholds(&other, &edited).unwrap();
    let c2 = phase2("c2", "2/3", &other);
    let o = final_merge(&[&c0, &c1, &c2]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("other thresholds"), "{}", stderr(&o));
    assert!(!results.exists(), "no results folder");
    let c2 = phase2("c2-again", "2/3", &thresholds);
    // Scored against another dataset with as many images: refused.
    let elsewhere = tmp.path().join("elsewhere");
    broden::synth::generate(
        &elsewhere,
        &broden::synth::SynthOptions {
            images: IMAGES,
            seed: 12,
            size: 112,
            swatch_percent: 10,
        },
    )
    .unwrap();
    let mut a = vec!["merge", "--out", s(&results), "--dataset", s(&elsewhere)];
    a.extend([s(&c0), s(&c1), s(&c2)]);
    let o = netdissect(&a);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not the one"), "{}", stderr(&o));
    ok(final_merge(&[&c2, &c0, &c1]));
    // A shard.json edited into nonsense is an error naming it, not a panic.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for e in std::fs::read_dir(&a1).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, bad.join(p.file_name().unwrap())).unwrap();
    }
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bad.join("shard.json")).unwrap()).unwrap();
    json["info"]["shard"]["count"] = 0.into();
    std::fs::write(bad.join("shard.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    std::fs::remove_file(&thresholds).unwrap();
    refused(
        merge(&[&a0, &bad, &a2]),
        &["shard.json", "`1/0` is not a shard"],
    );
    // Phases mixed up, and options a shard cannot take.
    let o = netdissect(&[
        "merge",
        "--out",
        s(&tmp.path().join("r")),
        s(&a0),
        s(&a1),
        s(&a2),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("counts (phase 2)"), "{}", stderr(&o));
    let x = tmp.path().join("x");
    for (extra, why) in [
        (vec!["--shard", "0/2", "--formula-length", "2"], "formula"),
        (vec!["--shard", "0/8"], "at most 7 shards"),
    ] {
        let mut a = args.clone();
        a.extend(["--out", s(&x)]);
        a.extend(extra);
        let o = netdissect(&a);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(why), "`{why}` in: {}", stderr(&o));
    }
    let o = netdissect(&["dissect", "--shard", "3/3", "--model", "planted-colors"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let mut a = args.clone();
    a.extend(["--warm-up", "--shard", "0/2"]);
    assert_eq!(
        netdissect(&a).status.code(),
        Some(2),
        "--warm-up runs no shard"
    );
}

/// Copies the files of the folder `from` into a new folder `to`.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// Rewrites the JSON file at `path` with `edit` applied.
fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

/// Asserts that `o` failed as bad input (exit 3) with every one of
/// `words` in its message.
fn refused_with(o: &Output, words: &[&str]) {
    assert_eq!(o.status.code(), Some(3), "{}", stderr(o));
    for w in words {
        assert!(stderr(o).contains(w), "`{w}` in: {}", stderr(o));
    }
}

#[test]
fn changed_shard_files_and_images_are_refused_by_name() {
    const CHANGED: &str = "does not match its recorded digest: the file was changed or corrupted";
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let args = planted_args(&data, "cpu");
    let phase = |name: &str, shard: &str, thresholds: Option<&Path>| {
        let out = tmp.path().join(name);
        let mut a = args.clone();
        a.extend(["--shard", shard, "--out", s(&out)]);
        if let Some(t) = thresholds {
            a.extend(["--thresholds", s(t)]);
        }
        (netdissect(&a), out)
    };
    let (o, t0) = phase("t0", "0/2", None);
    ok(o);
    let (o, t1) = phase("t1", "1/2", None);
    ok(o);
    let thresholds = tmp.path().join("thresholds.json");
    let merge = |out: &Path, extra: &[&str], dirs: &[&Path]| {
        let mut a = vec!["merge", "--out", s(out)];
        a.extend_from_slice(extra);
        a.extend(dirs.iter().map(|d| s(d)));
        netdissect(&a)
    };
    let phase_1 = ["--phase", "thresholds"];
    // A byte of a candidates file flipped.
    let flipped = tmp.path().join("flipped");
    copy_folder(&t1, &flipped);
    let keys = flipped.join("color16-candidates.u32");
    let mut bytes = std::fs::read(&keys).unwrap();
    bytes[5] ^= 0x10;
    std::fs::write(&keys, bytes).unwrap();
    let o = merge(&thresholds, &phase_1, &[&t0, &flipped]);
    refused_with(&o, &[s(&keys), CHANGED]);
    assert!(!thresholds.exists(), "nothing written");
    ok(merge(&thresholds, &phase_1, &[&t0, &t1]));
    // A threshold edited before phase 2 counts with it.
    let edited = tmp.path().join("edited.json");
    std::fs::copy(&thresholds, &edited).unwrap();
    edit_json(&edited, |v| v["layers"][1]["thresholds"][3] = 0.into());
    let (o, _) = phase("c-edited", "0/2", Some(&edited));
    refused_with(&o, &[s(&edited), CHANGED]);
    let (o, c0) = phase("c0", "0/2", Some(&thresholds));
    ok(o);
    let (o, c1) = phase("c1", "1/2", Some(&thresholds));
    ok(o);
    let results = tmp.path().join("results");
    // A count edited, and the copy of the thresholds edited, in a
    // phase-2 shard.
    let recounted = tmp.path().join("recounted");
    copy_folder(&c1, &recounted);
    let counts = recounted.join("color4-counts.u64");
    let mut bytes = std::fs::read(&counts).unwrap();
    bytes[8] = bytes[8].wrapping_add(1);
    std::fs::write(&counts, bytes).unwrap();
    let o = merge(&results, &[], &[&c0, &recounted]);
    refused_with(&o, &[s(&counts), CHANGED]);
    let rethresholded = tmp.path().join("rethresholded");
    copy_folder(&c0, &rethresholded);
    let copy = rethresholded.join("thresholds.json");
    edit_json(&copy, |v| v["layers"][0]["thresholds"][0] = 1.into());
    let o = merge(&results, &[], &[&rethresholded, &c1]);
    refused_with(&o, &[s(&copy), CHANGED]);
    // An image touched after phase 2: the final merge and another phase 2
    // both see that the dataset is not the shards' any more.
    let image = data.join("images/synth/000007.png");
    let file = std::fs::File::options().write(true).open(&image).unwrap();
    let was = file.metadata().unwrap().modified().unwrap();
    file.set_modified(was + std::time::Duration::from_secs(1))
        .unwrap();
    let o = merge(&results, &[], &[&c0, &c1]);
    refused_with(&o, &[s(&data), "is not the one", "modification time"]);
    let (o, _) = phase("c-touched", "1/2", Some(&thresholds));
    refused_with(&o, &["another run"]);
    assert!(!results.exists(), "no results folder");
    file.set_modified(was).unwrap();
    ok(merge(&results, &[], &[&c0, &c1]));
}
