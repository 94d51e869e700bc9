//! Resumable runs as a user meets them: a run killed with SIGKILL at 20
//! random moments across its whole length, each started again with the same
//! command, ends with the uninterrupted run's folder byte for byte (but for
//! durations); Ctrl-C stops a run cleanly and says how to resume. The
//! network is the embedded default (`assets/default`), on the CPU backend;
//! the dataset is generated with `broden::synth::generate` (seeded) in a
//! temp folder.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// 40 images in batches of 4: ten batches in each of the two passes, a
/// checkpoint after each one.
fn args(data: &Path, out: &Path) -> Vec<String> {
    let model = default_model();
    let mut a: Vec<String> = [
        "dissect",
        "--model",
        "tiny-resnet",
        "--layers",
        "layer3,layer4",
        "--batch-size",
        "4",
        "--backend",
        "cpu",
        "--checkpoint-every",
        "0.000001",
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    for (flag, path) in [("--weights", &model), ("--dataset", &data.to_path_buf())] {
        a.extend([flag.to_string(), s(path).to_string()]);
    }
    a.extend(["--out".to_string(), s(out).to_string()]);
    a
}

fn run(data: &Path, out: &Path) -> Output {
    binary()
        .args(args(data, out))
        .output()
        .expect("the netdissect binary runs")
}

fn spawn(data: &Path, out: &Path) -> std::process::Child {
    binary()
        .args(args(data, out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the netdissect binary runs")
}

/// The checkpoint folder of `out`.
fn checkpoint(out: &Path) -> PathBuf {
    let name = out.file_name().unwrap().to_string_lossy();
    out.with_file_name(format!(".{name}.checkpoint"))
}

/// A fraction in [0, 1) from `state`, advanced (a 64-bit LCG: the test's
/// moments are random but the same on every run).
fn next_fraction(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_the_uninterrupted_results() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path(), 40, 7, 112, 10);
    let want = tmp.path().join("want");
    let started = Instant::now();
    let o = run(&data, &want);
    assert!(o.status.success(), "{}", stderr(&o));
    let whole = started.elapsed();
    assert!(
        !checkpoint(&want).exists(),
        "removed once the results are in"
    );

    // Twenty moments, one in each twentieth of the run's length, each a
    // fresh run killed there and then started again with the same command.
    let mut state = 28;
    let mut resumed = 0;
    for i in 0..20 {
        let out = tmp.path().join(format!("killed-{i}"));
        let at = whole.mul_f64((i as f64 + next_fraction(&mut state)) / 20.0);
        let mut child = spawn(&data, &out);
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // A run killed after its results were swapped in has finished.
        if !out.exists() {
            let o = run(&data, &out);
            assert!(o.status.success(), "killed at {at:?}: {}", stderr(&o));
            resumed += usize::from(stderr(&o).contains("resuming from"));
        }
        assert_same_folders(&want, &out);
        let left: Vec<String> = names_with(tmp.path(), &format!(".killed-{i}"));
        assert!(left.is_empty(), "killed at {at:?}: left {left:?}");
    }
    assert!(
        resumed >= 10,
        "only {resumed} of 20 runs resumed from a checkpoint"
    );
}

/// Sends Ctrl-C's SIGINT to `child`, a run into `out`, once its first
/// checkpoint is written (within `whole`, an uninterrupted run's time).
fn interrupt_after_first_checkpoint(child: &std::process::Child, out: &Path, whole: Duration) {
    let state = checkpoint(out).join("state.json");
    let deadline = Instant::now() + whole * 2;
    while !state.exists() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint in {}",
            state.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// The dataset of these tests in a new temp folder, and the uninterrupted
/// run's folder and time.
fn uninterrupted() -> (tempfile::TempDir, PathBuf, PathBuf, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path(), 40, 7, 112, 10);
    let want = tmp.path().join("want");
    let started = Instant::now();
    assert!(run(&data, &want).status.success());
    let whole = started.elapsed();
    (tmp, data, want, whole)
}

#[test]
fn ctrl_c_stops_a_run_that_the_same_command_resumes() {
    let (tmp, data, want, whole) = uninterrupted();

    let out = tmp.path().join("out");
    let child = spawn(&data, &out);
    interrupt_after_first_checkpoint(&child, &out, whole);
    let o = child.wait_with_output().unwrap();
    let said = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{said}");
    assert!(
        said.contains("run the same command again to resume"),
        "{said}"
    );
    assert!(checkpoint(&out).join("state.json").exists());
    assert!(!out.exists(), "no results yet");

    let o = run(&data, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming from"), "{}", stderr(&o));
    assert_same_folders(&want, &out);
    assert!(!checkpoint(&out).exists());

    // A checkpoint of other options is not resumed; --restart discards one.
    for (extra, said) in [
        (&["--top-k", "3"][..], "checkpoint of another run"),
        (&["--restart"][..], ""),
    ] {
        let out = tmp.path().join(format!("again{}", extra.len()));
        let child = spawn(&data, &out);
        interrupt_after_first_checkpoint(&child, &out, whole);
        assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
        let mut again = args(&data, &out);
        again.extend(extra.iter().map(|a| a.to_string()));
        let o = binary().args(&again).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains(said), "{}", stderr(&o));
        assert!(!stderr(&o).contains("resuming from"), "{}", stderr(&o));
        assert!(!checkpoint(&out).exists());
    }
}

/// The phase `state.json` of `out`'s checkpoint names, once there is one.
fn committed_phase(out: &Path) -> Option<String> {
    let text = std::fs::read_to_string(checkpoint(out).join("state.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["phase"].as_str().map(String::from)
}

/// SIGINT and SIGTERM at several moments of both passes, with the default
/// interval (so that a pass's second part holds all its remaining batches
/// and the stop comes inside it): each run exits 130 saying how to resume
/// (or 0 with its results, when the signal came after the passes), and the
/// same command then ends with the uninterrupted run's folder.
#[test]
fn sigint_and_sigterm_in_either_pass_exit_130_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path(), 40, 7, 112, 10);
    let default_every = |out: &Path| {
        let mut a = args(&data, out);
        let at = a.iter().position(|a| a == "--checkpoint-every").unwrap();
        a.drain(at..at + 2);
        a
    };
    let want = tmp.path().join("want");
    let started = Instant::now();
    let o = binary().args(default_every(&want)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let whole = started.elapsed();
    let mut stopped_in = Vec::new();
    // (phase committed before the signal, delay after it, signal)
    let moments = [
        ("thresholds", 0.0, "INT"),
        ("thresholds", 0.15, "TERM"),
        ("counts", 0.0, "TERM"),
        ("counts", 0.1, "INT"),
    ];
    for (i, (phase, delay, signal)) in moments.into_iter().enumerate() {
        let out = tmp.path().join(format!("signal-{i}"));
        let child = binary()
            .args(default_every(&out))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + whole * 3;
        while committed_phase(&out).as_deref() != Some(phase) && !out.exists() {
            assert!(Instant::now() < deadline, "{i}: no {phase} checkpoint");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(whole.mul_f64(delay));
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let o = child.wait_with_output().unwrap();
        let said = stderr(&o);
        let case = format!("SIG{signal} in {phase} after {delay} of the run");
        match o.status.code() {
            Some(130) => {
                assert!(
                    said.contains("stopped; the work up to the last checkpoint is kept"),
                    "{case}: {said}"
                );
                assert!(
                    said.contains("run the same command again to resume"),
                    "{case}: {said}"
                );
                assert!(!said.contains("error: the checkpoint"), "{case}: {said}");
                stopped_in.push(committed_phase(&out).unwrap());
                let o = binary().args(default_every(&out)).output().unwrap();
                assert!(o.status.success(), "{case}, resumed: {}", stderr(&o));
            }
            Some(0) => assert!(out.join("results.json").exists(), "{case}: {said}"),
            code => panic!("{case}: exit {code:?}: {said}"),
        }
        assert_same_folders(&want, &out);
        assert!(!checkpoint(&out).exists(), "{case}");
    }
    for phase in ["thresholds", "counts"] {
        assert!(
            stopped_in.iter().any(|p| p == phase),
            "no stop in the {phase} phase: {stopped_in:?}"
        );
    }
}

/// A checkpoint whose `state.json` no longer matches its files, and a file
/// where the checkpoint folder goes: each run exits 3 naming the file,
/// discards the checkpoint and says to run again, and the next run starts
/// over and ends with the uninterrupted run's folder.
#[test]
fn a_damaged_checkpoint_is_named_and_discarded_and_the_next_run_starts_over() {
    let (tmp, data, want, whole) = uninterrupted();

    let out = tmp.path().join("out");
    let child = spawn(&data, &out);
    interrupt_after_first_checkpoint(&child, &out, whole);
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
    let state = checkpoint(&out).join("state.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    json["images_done"] = (json["images_done"].as_u64().unwrap() + 4).into();
    std::fs::write(&state, json.to_string()).unwrap();
    let damaged = [(state.clone(), "state.json")];
    std::fs::write(tmp.path().join(".file.checkpoint"), b"x").unwrap();
    let file_out = tmp.path().join("file");
    let not_a_folder = [(checkpoint(&file_out), "not a folder")];
    for (out, (file, why)) in [(&out, &damaged[0]), (&file_out, &not_a_folder[0])] {
        let o = run(&data, out);
        let said = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{said}");
        for words in [
            &format!("checkpoint damaged (file {}", file.display())[..],
            why,
            "discarded; run the same command again to start over",
        ] {
            assert!(said.contains(words), "no `{words}` in: {said}");
        }
        assert!(checkpoint(out).symlink_metadata().is_err(), "discarded");
        let o = run(&data, out);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_same_folders(&want, out);
    }
}
