//! The `--out` folder as runs claim and replace it: a run stopped at each
//! step of the final swap leaves the old or the new results whole (or
//! moved aside, put back by the next run), one run at a time claims a
//! folder, a user's files are never deleted, a merge never writes over its
//! own shards, and a file given as `--out` is named plainly. Datasets are
//! generated with `broden::synth::generate` (seeded) in temp folders.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;

/// The test hook of `report::swap`: the process exits with
/// [`STOPPED_EXIT_CODE`] once this many steps of the swap are done.
const STOP_VAR: &str = "NETDISSECT_TEST_STOP_IN_COMMIT";
const STOPPED_EXIT_CODE: i32 = 86;

fn netdissect(args: &[&str], stop_after: Option<u32>) -> Output {
    let mut command = binary();
    command.args(args).env_remove(STOP_VAR);
    if let Some(steps) = stop_after {
        command.env(STOP_VAR, steps.to_string());
    }
    command.output().expect("the netdissect binary runs")
}

fn dataset(dir: &Path) -> PathBuf {
    synth(dir, 3, 5, 112, 0)
}

/// Dissects `layer` of the planted model into `out`.
fn dissect(data: &Path, layer: &str, out: &Path, force: bool, stop_after: Option<u32>) -> Output {
    let mut args = vec![
        "dissect",
        "--model",
        "planted-colors",
        "--layers",
        layer,
        "--dataset",
        s(data),
        "--out",
        s(out),
        "--backend",
        "cpu",
        "--quiet",
    ];
    if force {
        args.push("--force");
    }
    netdissect(&args, stop_after)
}

/// Asserts that `dir` holds a complete run of `layer`: the files of the
/// uninterrupted run `reference`, and results of that layer.
fn assert_complete(dir: &Path, reference: &Path, layer: &str, what: &str) {
    let (got, want) = (files(dir), files(reference));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: the files of a whole run"
    );
    let json: serde_json::Value = serde_json::from_slice(&got[Path::new("results.json")]).unwrap();
    assert_eq!(json["layers"][0]["name"], layer, "{what}");
}

#[test]
fn a_run_stopped_at_each_step_of_the_swap_loses_nothing_and_the_next_run_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let layers = ["color4", "color16"];
    // One uninterrupted run of each layer: the reference of a whole folder.
    let refs = layers.map(|layer| tmp.path().join(format!("ref-{layer}")));
    for (layer, dir) in layers.iter().zip(&refs) {
        let o = dissect(&data, layer, dir, false, None);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let out = tmp.path().join("out");
    let o = dissect(&data, layers[0], &out, false, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut current = 0;
    for steps in 0..=3 {
        let what = format!("stopped after {steps} steps");
        let before = files(&out);
        let next = 1 - current;
        let o = dissect(&data, layers[next], &out, true, Some(steps));
        assert_eq!(
            o.status.code(),
            Some(STOPPED_EXIT_CODE),
            "{what}: {}",
            stderr(&o)
        );
        // What the stop left: the old or the new results whole at --out, or
        // the old ones moved aside whole.
        let aside = names_with(tmp.path(), ".out.staging-");
        let moved: Vec<&String> = aside.iter().filter(|n| n.ends_with(".old")).collect();
        match steps {
            0 => assert_eq!(files(&out), before, "{what}"),
            1 => {
                assert!(!out.exists(), "{what}");
                assert_eq!(moved.len(), 1, "{what}: {aside:?}");
                assert_eq!(files(&tmp.path().join(moved[0])), before, "{what}");
            }
            _ => assert_complete(&out, &refs[next], layers[next], &what),
        }
        assert_eq!(
            moved.len(),
            usize::from(steps == 1 || steps == 2),
            "{what}: {aside:?}"
        );
        assert_eq!(names_with(tmp.path(), ".out.lock"), [".out.lock"], "{what}");

        // The next run puts things right, then refuses to replace the
        // complete results without --force.
        let o = dissect(&data, layers[next], &out, false, None);
        assert_eq!(o.status.code(), Some(3), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains("--force"), "{what}: {}", stderr(&o));
        if steps >= 2 {
            current = next;
        } else {
            assert_eq!(files(&out), before, "{what}: the old results");
        }
        assert_complete(&out, &refs[current], layers[current], &what);
        let left = names_with(tmp.path(), ".");
        assert!(left.is_empty(), "{what}: leftovers {left:?}");
    }
    let o = dissect(&data, layers[1 - current], &out, true, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_complete(
        &out,
        &refs[1 - current],
        layers[1 - current],
        "the last run",
    );
    assert!(names_with(tmp.path(), ".").is_empty());
}

#[test]
fn of_two_runs_at_once_into_one_new_folder_one_fails_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let out = tmp.path().join("out");
    let runs: Vec<_> = ["color4", "color16"]
        .map(|layer| {
            let data = data.clone();
            let out = out.clone();
            std::thread::spawn(move || dissect(&data, layer, &out, false, None))
        })
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let (won, lost): (Vec<&Output>, Vec<&Output>) = runs.iter().partition(|o| o.status.success());
    assert_eq!(
        (won.len(), lost.len()),
        (1, 1),
        "{:?}",
        runs.iter().map(stderr).collect::<Vec<_>>()
    );
    let err = stderr(lost[0]);
    assert_eq!(lost[0].status.code(), Some(3), "{err}");
    // Refused at its start while the other runs, or at its start or end
    // once the other's results are there.
    assert!(err.contains(s(&out)), "{err}");
    assert!(
        err.contains("another run") || err.contains("--force"),
        "{err}"
    );
    assert!(out.join("results.json").exists());
    assert!(names_with(tmp.path(), ".").is_empty());
}

#[test]
fn a_forced_run_never_deletes_a_users_tmp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let out = tmp.path().join("out");
    let o = dissect(&data, "color4", &out, false, None);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(out.join(".tmp-notes"), "mine").unwrap();
    let o = dissect(&data, "color4", &out, true, None);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(".tmp-notes"), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join(".tmp-notes")).unwrap(), b"mine");
}

#[test]
fn a_file_given_as_out_is_named_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let file = tmp.path().join("file");
    std::fs::write(&file, "mine").unwrap();
    for out in [file.clone(), file.join("below")] {
        let o = dissect(&data, "color4", &out, true, None);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(
            err.contains(&format!("{} is a file, not a folder", file.display())),
            "{err}"
        );
        assert!(!err.contains("os error"), "{err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

#[test]
fn a_merge_never_writes_over_its_own_shards() {
    let tmp = tempfile::tempdir().unwrap();
    // The check comes before the shards are read: two folders that stand
    // for shards will do.
    let shards = ["shard-0", "shard-1"].map(|n| tmp.path().join(n));
    for dir in &shards {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("shard.json"), "{}").unwrap();
    }
    let roundabout = tmp.path().join("new/../shard-1");
    let inside = shards[0].join("results");
    let cases: [(&[&str], &Path, &str); 4] = [
        (&["--force"], &shards[0], "is"),
        (&[], &roundabout, "is"),
        (&["--force"], &inside, "lies inside"),
        (&["--force"], tmp.path(), "holds"),
    ];
    for (flags, out, relation) in cases {
        for phase in ["counts", "thresholds"] {
            let mut args = vec!["merge", "--phase", phase, "--out", s(out)];
            args.extend(flags);
            args.extend(shards.iter().map(|p| s(p)));
            let o = netdissect(&args, None);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{phase} {}: {err}", out.display());
            assert!(err.contains(&format!(" {relation} ")), "{err}");
            assert!(err.contains("one of the shards being merged"), "{err}");
        }
    }
    for dir in &shards {
        assert_eq!(std::fs::read(dir.join("shard.json")).unwrap(), b"{}");
    }
    assert!(!inside.exists());
}
