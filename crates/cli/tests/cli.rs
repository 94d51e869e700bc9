//! The `netdissect` binary as scripts use it: exit codes, messages that
//! name the problem, and no partial results. Datasets are generated with
//! `broden::synth::generate` (seeded) in temp folders.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;

/// Runs `netdissect dissect` with `extra` appended to a valid command line
/// (planted model, generated dataset, fresh output folder) after applying
/// `edit` to the argument list.
fn dissect_with(tmp: &Path, data: &Path, edit: impl Fn(&mut Vec<String>)) -> (Output, PathBuf) {
    let out = tmp.join("out");
    let mut args = planted_dissect(data, &out);
    edit(&mut args);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (netdissect(&refs), out)
}

fn set(args: &mut [String], flag: &str, value: &str) {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value.to_string();
}

#[test]
fn bad_input_fails_with_a_clear_message_and_no_results() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 6);
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("index.csv"), "image,split\n").unwrap();
    let broken_s = broken.to_str().unwrap().to_string();
    // (what, flags given new values, flags added, exit code, a word of the
    // message)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        i32,
        &'a str,
    );
    let cases: &[Case] = &[
        (
            "unknown model",
            &[("--model", "resnet9000")],
            &[],
            3,
            "resnet18",
        ),
        (
            "unknown layer of a zoo model",
            &[("--model", "resnet18"), ("--layers", "layer9")],
            &[],
            3,
            "layer4",
        ),
        (
            "unknown layer of the planted model",
            &[("--layers", "conv1")],
            &[],
            3,
            "color16",
        ),
        (
            "missing dataset",
            &[("--dataset", "/nonexistent/broden")],
            &[],
            3,
            "/nonexistent/broden",
        ),
        (
            "broken dataset",
            &[("--dataset", &broken_s)],
            &[],
            3,
            "category.csv",
        ),
        (
            "missing weights",
            &[("--model", "resnet18"), ("--layers", "layer4")],
            &["--weights", "/nonexistent/w.pth"],
            3,
            "/nonexistent/w.pth",
        ),
        (
            "auto without weights",
            &[("--model", "auto")],
            &[],
            2,
            "--weights",
        ),
        (
            "quantile out of range",
            &[],
            &["--quantile", "0"],
            2,
            "quantile",
        ),
        (
            "top-k beyond any dataset",
            &[],
            &["--top-k", "18446744073709551615"],
            2,
            "top-k",
        ),
        (
            "a layer named twice",
            &[("--layers", "color16,color16")],
            &[],
            2,
            "twice",
        ),
        (
            "unknown category",
            &[],
            &["--categories", "colour"],
            3,
            "colour",
        ),
        ("invalid preset", &[], &["--preset", "fast"], 2, "fast"),
    ];
    for &(what, sets, adds, code, needle) in cases {
        let edit = |a: &mut Vec<String>| {
            for (flag, value) in sets {
                set(a, flag, value);
            }
            a.extend(adds.iter().map(|s| s.to_string()));
        };
        let run = tempfile::tempdir().unwrap();
        let (o, out) = dissect_with(run.path(), &data, edit);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{what}: {err}");
        assert!(
            err.contains(needle),
            "{what}: {err:?} should mention {needle:?}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(
            !out.join("results.json").exists(),
            "{what}: partial results"
        );
    }
}

#[test]
fn a_run_writes_complete_results_and_refuses_to_overwrite_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 6);
    let (o, out) = dissect_with(tmp.path(), &data, |a| {
        a.extend([
            "--quantile".into(),
            "0.02".into(),
            "--batch-size".into(),
            "4".into(),
        ]);
    });
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("color4"),
        "the summary table names the layer: {stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["options"]["quantile"], 0.02);
    assert_eq!(json["layers"][0]["n_units"], 13);
    let tally = std::fs::read_to_string(out.join("color4-tally.csv")).unwrap();
    let header = tally.lines().next().unwrap();
    assert!(
        header.starts_with("unit,category,label,score,color-label,color-truth"),
        "{header}"
    );
    assert_eq!(tally.lines().count(), 14, "a row per unit");

    // The report comes with the run, and regenerates from the saved files.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("data-unit=").count(), 13, "a card per unit");
    std::fs::remove_file(out.join("report.html")).unwrap();
    let o = netdissect(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        again == html,
        "the regenerated report differs from the first"
    );
    let o = netdissect(&["report", tmp.path().join("nothing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // A second run into the same folder must not clobber it silently.
    let before = std::fs::read(out.join("results.json")).unwrap();
    let (again, _) = dissect_with(tmp.path(), &data, |_| {});
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
    assert!(stderr(&again).contains("--force"));
    assert_eq!(std::fs::read(out.join("results.json")).unwrap(), before);
    // Nor may a forced run whose options are wrong: they are checked first.
    let (typo, _) = dissect_with(tmp.path(), &data, |a| {
        a.extend(["--force".into(), "--quantile".into(), "0".into()]);
    });
    assert_eq!(typo.status.code(), Some(2), "{}", stderr(&typo));
    assert_eq!(std::fs::read(out.join("results.json")).unwrap(), before);
}

#[test]
fn formulas_reach_the_tally_results_and_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 6);
    let (o, out) = dissect_with(tmp.path(), &data, |a| {
        a.extend(["--formula-length", "2", "--beam", "3", "--quantile", "0.02"].map(String::from));
    });
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("units gain from a formula (length 2, beam 3)"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["options"]["formula"]["length"], 2);
    assert_eq!(json["options"]["formula"]["beam"], 3);
    let units = json["layers"][0]["units"].as_array().unwrap();
    let with_formula: Vec<&serde_json::Value> = units
        .iter()
        .filter(|u| u.get("formulas").is_some())
        .collect();
    assert!(!with_formula.is_empty());
    for u in &with_formula {
        let beam = u["formulas"].as_array().unwrap();
        assert!(!beam.is_empty() && beam.len() <= 3);
        assert!(beam[0]["terms"].as_array().unwrap().len() <= 2);
    }
    let tally = std::fs::read_to_string(out.join("color4-tally.csv")).unwrap();
    assert!(
        tally
            .lines()
            .next()
            .unwrap()
            .ends_with(",formula,formula-iou")
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"f-formula\""));
    assert_eq!(
        html.matches("<p class=\"formula\"").count(),
        with_formula.len()
    );

    // The beam needs a length; lengths and beams out of range are usage errors.
    for bad in [
        &["--beam", "3"][..],
        &["--formula-length", "0"],
        &["--formula-length", "2", "--beam", "0"],
    ] {
        let (o, _) = dissect_with(tmp.path(), &data, |a| {
            a.extend(bad.iter().map(|s| s.to_string()));
            a.push("--force".into());
        });
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
}

#[test]
fn explain_lists_the_units_behind_each_prediction_and_their_sums_add_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 6);
    let weights = default_model();
    let results = tmp.path().join("run");
    let dissect = |layers: &str, out: &Path| {
        netdissect(&[
            "dissect",
            "--model",
            "tiny-resnet",
            "--weights",
            weights.to_str().unwrap(),
            "--layers",
            layers,
            "--dataset",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quantile",
            "0.02",
            "--quiet",
        ])
    };
    let o = dissect("layer3,layer4", &results);
    assert!(o.status.success(), "{}", stderr(&o));
    // The run explains a few probe images itself, and its report links there.
    let example = std::fs::read_to_string(results.join("explain/explain.html")).unwrap();
    assert_eq!(example.matches("<section class=\"image\"").count(), 3);
    let report = std::fs::read_to_string(results.join("report.html")).unwrap();
    assert!(report.contains("href=\"explain/explain.html\""));
    let out = tmp.path().join("why");
    // `explain` of the results in `dir` with the checkpoint `w`, and `rest`.
    let explain = |dir: &Path, w: &Path, rest: &[&str]| {
        let (dir, w) = (dir.to_str().unwrap(), w.to_str().unwrap());
        let mut args = vec!["explain", "--results", dir, "--weights", w];
        args.extend(rest);
        netdissect(&args)
    };
    let data_s = data.to_str().unwrap();
    let o = explain(
        &results,
        &weights,
        &[
            "--dataset",
            data_s,
            "--images",
            "2",
            "--top-units",
            "4",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("results.json")).unwrap())
            .unwrap();
    let layer4 = &run["layers"][1];
    let threshold = layer4["summary"]["iou_threshold"].as_f64().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("explain.json")).unwrap()).unwrap();
    assert_eq!(json["layer"], "layer4");
    let images = json["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for image in images {
        let predictions = image["predictions"].as_array().unwrap();
        assert!(!predictions.is_empty() && predictions.len() <= 5);
        let logits: Vec<f64> = predictions
            .iter()
            .map(|p| p["logit"].as_f64().unwrap())
            .collect();
        assert!(
            logits.windows(2).all(|w| w[0] >= w[1]),
            "top prediction first"
        );
        for p in predictions {
            let units = p["units"].as_array().unwrap();
            assert_eq!(units.len(), 4);
            let c: Vec<f64> = units
                .iter()
                .map(|u| u["contribution"].as_f64().unwrap())
                .collect();
            assert!(
                c.windows(2).all(|w| w[0] >= w[1]),
                "largest contributions first"
            );
            let sum = p["bias"].as_f64().unwrap()
                + c.iter().sum::<f64>()
                + p["other_units"].as_f64().unwrap();
            let logit = p["logit"].as_f64().unwrap();
            assert!(
                (sum - logit).abs() < 1e-3 * logit.abs().max(1.0),
                "{sum} against {logit}"
            );
            for u in units {
                let k = u["unit"].as_u64().unwrap() as usize - 1;
                let saved = &layer4["units"][k];
                let iou = saved["per_category"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b["iou"].as_f64().unwrap())
                    .fold(0.0, f64::max);
                assert_eq!(u["iou"].as_f64().unwrap(), iou, "unit {}", k + 1);
                assert_eq!(
                    u["label"] == "unlabelled",
                    iou <= threshold,
                    "unit {}",
                    k + 1
                );
            }
        }
    }
    let html = std::fs::read_to_string(out.join("explain.html")).unwrap();
    assert_eq!(html.matches("<section class=\"image\"").count(), 2);
    assert_eq!(html.matches("src=\"data:image/jpeg;base64,").count(), 2 * 4);
    assert!(!html.contains("src=\"http"));

    // Only the network's last layer can be explained; nothing to explain
    // and a missing checkpoint are errors too.
    let early = tmp.path().join("early");
    assert!(dissect("layer3", &early).status.success());
    assert!(!early.join("explain").exists());
    let report = std::fs::read_to_string(early.join("report.html")).unwrap();
    assert!(!report.contains("id=\"explain-link\""));
    let o = explain(&early, &weights, &["--dataset", data_s, "--images", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("layer4"), "{}", stderr(&o));
    let o = explain(&results, &weights, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let missing = tmp.path().join("none.safetensors");
    let o = explain(&results, &missing, &["--dataset", data_s, "--images", "1"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn info_and_models_describe_what_they_see() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 4);
    let o = netdissect(&["info", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for cat in ["color", "object", "part", "material", "scene", "texture"] {
        assert!(text.contains(cat), "{text}");
    }
    let o = netdissect(&["info", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(3));
    let o = netdissect(&["models"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("resnet18") && text.contains("layer4") && text.contains("planted-colors")
    );
    assert_eq!(netdissect(&[]).status.code(), Some(2), "usage error");
}

/// `netdissect synth` writes what the library's generator writes for the
/// same options, and refuses bad options and non-empty folders.
#[test]
fn synth_writes_the_generators_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("synth");
    let out_s = out.to_str().unwrap();
    let args = [
        "synth",
        "--out",
        out_s,
        "--images",
        "5",
        "--seed",
        "4",
        "--size",
        "64",
        "--swatch-percent",
        "40",
    ];
    let o = netdissect(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = tmp.path().join("want");
    broden::synth::generate(
        &want,
        &broden::synth::SynthOptions {
            images: 5,
            seed: 4,
            size: 64,
            swatch_percent: 40,
        },
    )
    .unwrap();
    for file in [
        "index.csv",
        "label.csv",
        "c_texture.csv",
        "images/synth/000003.png",
    ] {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(want.join(file)).unwrap(),
            "{file}"
        );
    }
    let o = netdissect(&args);
    assert_eq!(o.status.code(), Some(3), "non-empty folder");
    assert!(stderr(&o).contains(out_s), "{}", stderr(&o));
    let other = tmp.path().join("other");
    let o = netdissect(&[
        "synth",
        "--out",
        other.to_str().unwrap(),
        "--swatch-percent",
        "101",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("swatch percentage 101"),
        "{}",
        stderr(&o)
    );
}

/// `--cache-mib 0` re-runs the network on every pass, and results.json says
/// so; the default keeps a small run's activations (on the CPU backend in a
/// temporary file), and both give the same tallies.
#[test]
fn cache_budget_picks_the_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 4);
    let mut tallies = Vec::new();
    for (mib, mode) in [("0", "recomputed"), ("2048", "cached")] {
        let (o, out) = dissect_with(tmp.path(), &data, |a| {
            a.extend(["--cache-mib", mib, "--backend", "cpu", "--force"].map(String::from))
        });
        assert!(o.status.success(), "{}", stderr(&o));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
        assert_eq!(json["mode"], mode, "--cache-mib {mib}");
        let csvs: Vec<_> = files(&out)
            .into_iter()
            .filter(|(path, _)| path.extension().is_some_and(|e| e == "csv"))
            .collect();
        assert!(!csvs.is_empty(), "no tally CSV in {}", out.display());
        tallies.push(csvs);
    }
    assert!(tallies[0] == tallies[1], "cached and re-run tallies differ");
}

#[test]
fn forced_runs_that_fail_keep_the_old_results_and_replaced_folders_keep_nothing_old() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 5);
    let two = |a: &mut Vec<String>| set(a, "--layers", "color4,color16");
    let (o, out) = dissect_with(tmp.path(), &data, two);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = files(&out);
    assert!(before.contains_key(Path::new("color16-tally.csv")));

    // A corrupt image, found mid-run: exit 3, the old folder untouched,
    // nothing left beside it.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let copy = dataset(&broken, 5);
    // The generator names images `synth/NNNNNN.png`; its masks carry a suffix.
    let image = copy.join("images/synth/000003.png");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::write(&image, &bytes[..bytes.len() / 3]).unwrap();
    let (o, _) = dissect_with(tmp.path(), &copy, |a| {
        two(a);
        a.push("--force".into());
    });
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(files(&out), before, "the previous results are intact");
    let beside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(beside.is_empty(), "leftovers: {beside:?}");

    // A forced run with one layer: the other layer's files are gone.
    let (o, _) = dissect_with(tmp.path(), &data, |a| a.push("--force".into()));
    assert!(o.status.success(), "{}", stderr(&o));
    let after = files(&out);
    assert!(after.contains_key(Path::new("color4-tally.csv")));
    assert!(
        !after
            .keys()
            .any(|k| k.to_string_lossy().contains("color16")),
        "{:?}",
        after.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_folder_of_other_files_is_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 3);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let (o, _) = dissect_with(tmp.path(), &data, |a| a.push("--force".into()));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("notes.txt"), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn info_decodes_every_image_and_mask() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 4);
    let o = netdissect(&["info", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("decoded 4 images"));
    // A zero-byte image passes the CSV checks but not decoding.
    let image = data.join("images/synth/000002.png");
    std::fs::write(&image, b"").unwrap();
    let o = netdissect(&["info", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr(&o).contains(&name), "{}", stderr(&o));
    let o = netdissect(&["info", "--no-decode", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn several_checkpoints_are_dissected_into_subfolders_and_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 6);
    // Two snapshots of the embedded default model (the same weights under
    // two step names: this checks the plumbing, not training).
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    let model = default_model();
    for step in [200, 100] {
        std::fs::copy(&model, ckpt.join(format!("snap-{step}.safetensors"))).unwrap();
    }
    let out = tmp.path().join("out");
    let pattern = ckpt.join("snap-*.safetensors");
    let args = |out: &Path, weights: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["dissect", "--model", "tiny-resnet", "--layers", "layer4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push("--weights".into());
        v.extend(weights.iter().map(|s| s.to_string()));
        v.extend(
            [
                "--dataset",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--backend",
                "cpu",
                "--quiet",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v
    };
    let run = |v: Vec<String>| netdissect(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let o = run(args(&out, &[pattern.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));
    for step in [100, 200] {
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("snap-{step}/results.json"))).unwrap(),
        )
        .unwrap();
        let weights = json["weights"].as_str().unwrap();
        assert!(
            weights.ends_with(&format!("snap-{step}.safetensors")),
            "{weights}"
        );
        assert!(out.join(format!("snap-{step}/report.html")).is_file());
    }
    let csv = std::fs::read_to_string(out.join("compare.csv")).unwrap();
    let runs: Vec<&str> = csv
        .lines()
        .skip(1)
        .filter(|l| l.contains(",all,"))
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(runs, ["snap-100", "snap-200"], "snapshots by step: {csv}");
    let html = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(html.contains("Interpretability over training"));

    // `compare` on the folders, with labels in the order given.
    let cmp = tmp.path().join("cmp");
    let (a, b) = (out.join("snap-200"), out.join("snap-100"));
    let o = netdissect(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
        "--label",
        "late",
        "--label",
        "early",
        "--ordered",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(cmp.join("compare.csv")).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().starts_with("1,late,200,"),
        "{csv}"
    );
    let o = netdissect(&[
        "compare",
        a.to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
        "--label",
        "x",
        "--label",
        "y",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = netdissect(&[
        "compare",
        a.to_str().unwrap(),
        tmp.path().join("none").to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("results.json"), "{}", stderr(&o));

    // Two checkpoints that would share a folder, or a pattern matching
    // nothing, fail before anything is written.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(&model, other.join("snap-100.safetensors")).unwrap();
    let clash = tmp.path().join("clash");
    let o = run(args(
        &clash,
        &[
            ckpt.join("snap-100.safetensors").to_str().unwrap(),
            other.join("snap-100.safetensors").to_str().unwrap(),
        ],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("share the output folder"),
        "{}",
        stderr(&o)
    );
    assert!(!clash.exists());
    let o = run(args(
        &clash,
        &[ckpt.join("nothing-*.pth").to_str().unwrap()],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("matches no file"), "{}", stderr(&o));
}

#[test]
fn recorded_activations_are_dissected_and_results_come_as_numpy_arrays_too() {
    use dissect::npy;
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 6);
    let acts = tmp.path().join("acts");
    std::fs::create_dir_all(&acts).unwrap();
    // 6 images x 4 units x 7 x 7, a deterministic pattern per unit.
    let values: Vec<f32> = (0..6 * 4 * 49)
        .map(|i| ((i * 37 + (i / 49) * 11) % 101) as f32 / 10.0)
        .collect();
    std::fs::write(
        acts.join("block.npy"),
        npy::encode_f32(&[6, 4, 7, 7], &values),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "dissect",
            "--activations",
            acts.to_str().unwrap(),
            "--layers",
            "block",
            "--dataset",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--top-k",
            "3",
        ];
        args.extend_from_slice(extra);
        netdissect(&args)
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("half-pixel"),
        "the run says how it upsamples"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["options"]["alignment"], "half-pixel");
    assert_eq!(json["layers"][0]["n_units"], 4);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("the receptive fields of recorded activations are unknown"),
        "the report header says how maps were upsampled"
    );

    // The arrays: IoU per unit and label, thresholds, top images.
    // (shape, data) of a written array, read as NumPy would: the header's
    // shape tuple, then the data after the header.
    let read = |name: &str| {
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{name}");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        let shape = header
            .split("'shape': (")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap();
        let shape: Vec<usize> = shape
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        (shape, bytes[10 + len..].to_vec())
    };
    let (shape, iou) = read("block-iou.npy");
    assert_eq!(shape[0], 4);
    let n_labels = shape[1];
    let (shape, thresholds) = read("block-thresholds.npy");
    assert_eq!(shape, [4]);
    let (shape, top) = read("block-topk.npy");
    assert_eq!(shape, [4, 3]);
    for unit in 0..4 {
        let t = f32::from_le_bytes(thresholds[4 * unit..4 * unit + 4].try_into().unwrap());
        assert_eq!(
            f64::from(t),
            json["layers"][0]["thresholds"][unit].as_f64().unwrap()
        );
        let first = i64::from_le_bytes(top[24 * unit..24 * unit + 8].try_into().unwrap());
        assert_eq!(
            first,
            json["layers"][0]["top_images"][unit][0]["image"]
                .as_i64()
                .unwrap()
        );
        // The best label's IoU in the matrix is the unit's score.
        let u = &json["layers"][0]["units"][unit];
        if let Some(c) = u["category"].as_u64() {
            let best = &u["per_category"][c as usize];
            let label = best["label"].as_u64().unwrap() as usize;
            let at = 4 * (unit * n_labels + label);
            let v = f32::from_le_bytes(iou[at..at + 4].try_into().unwrap());
            assert_eq!(v, best["iou"].as_f64().unwrap() as f32);
        }
    }

    // Mismatches name the file and the problem; nothing is written.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("block.npy"),
        npy::encode_f32(&[5, 4, 7, 7], &values[..5 * 196]),
    )
    .unwrap();
    let mut bytes = npy::encode_f32(&[6, 4, 7, 7], &values);
    let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
    bytes[at..at + 3].copy_from_slice(b"<f8");
    std::fs::write(bad.join("wide.npy"), bytes).unwrap();
    let out2 = tmp.path().join("out2");
    for (layer, want) in [
        ("block", "5 rows, but 6 images are selected"),
        ("wide", "dtype <f8"),
        ("missing", "layer `missing` was not recorded"),
    ] {
        let o = netdissect(&[
            "dissect",
            "--activations",
            bad.to_str().unwrap(),
            "--layers",
            layer,
            "--dataset",
            data.to_str().unwrap(),
            "--out",
            out2.to_str().unwrap(),
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{layer}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("{layer}.npy")),
            "{}",
            stderr(&o)
        );
        assert!(!out2.exists(), "nothing written for {layer}");
    }
    // Receptive-field alignment needs geometry that recordings lack.
    let o = run(&["--upsample", "receptive-field", "--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&["--model", "resnet18"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn devices_are_listed_and_device_n_picks_one() {
    let o = netdissect(&["devices"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = String::from_utf8_lossy(&o.stdout);
    // CI has Mesa's lavapipe: adapter 0 is a software Vulkan device.
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("0 ") && l.contains("vulkan")),
        "{listing}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 4);
    let (o, out) = dissect_with(tmp.path(), &data, |a| {
        a.extend(["--device".into(), "0".into()]);
    });
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert!(
        !json["adapter"].as_str().unwrap().starts_with("cpu"),
        "--device runs on the adapter: {}",
        json["adapter"]
    );
    let (o, _) = dissect_with(tmp.path(), &data, |a| {
        a.extend(["--device".into(), "99".into(), "--force".into()]);
    });
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("netdissect devices"), "{}", stderr(&o));
    let (o, _) = dissect_with(tmp.path(), &data, |a| {
        a.extend(["--device", "0", "--backend", "cpu", "--force"].map(String::from));
    });
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
