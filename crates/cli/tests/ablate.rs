//! `netdissect ablate` on the embedded default model (trained on six
//! synthetic scenes) and its probe set, whose scene labels name the
//! classes (`assets/default/classes.txt`).

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default")
}

/// `netdissect ablate` of `results` on the probe set, with `rest`.
fn ablate(results: &Path, rest: &[&str]) -> std::process::Output {
    ablate_on(results, &assets().join("probe"), rest)
}

/// `netdissect ablate` of `results` on `probe`, with `rest`.
fn ablate_on(results: &Path, probe: &Path, rest: &[&str]) -> std::process::Output {
    let (weights, classes) = (
        assets().join("model.safetensors"),
        assets().join("classes.txt"),
    );
    let mut args = vec![
        "ablate",
        "--results",
        s(results),
        "--weights",
        s(&weights),
        "--dataset",
        s(probe),
        "--classes",
        s(&classes),
        "--quiet",
    ];
    args.extend(rest);
    netdissect(&args)
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("class,removed,units,accuracy,others_accuracy,balanced_accuracy")
    );
    lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

#[test]
fn removing_a_classs_top_units_costs_it_more_than_the_others_and_both_paths_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("run");
    let weights = assets().join("model.safetensors");
    let o = netdissect(&[
        "dissect",
        "--model",
        "tiny-resnet",
        "--weights",
        s(&weights),
        "--dataset",
        s(&assets().join("probe")),
        "--layers",
        "layer3,layer4",
        "--out",
        s(&results),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !std::fs::read_to_string(results.join("report.html"))
            .unwrap()
            .contains("ablation-link")
    );

    // Into the results folder by default: the report links to it.
    let o = ablate(&results, &["--sizes", "1,5,20,50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("closed-form"), "{}", stderr(&o));
    let report = std::fs::read_to_string(results.join("report.html")).unwrap();
    assert!(report.contains("href=\"ablation/ablation.html\""));
    // Linked without drawing the report again, once however often.
    let o = ablate(&results, &["--sizes", "1,5,20,50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = std::fs::read_to_string(results.join("report.html")).unwrap();
    assert_eq!(again, report);
    assert_eq!(again.matches("id=\"ablation-link\"").count(), 1);
    let closed = csv_rows(&results.join("ablation/ablation.csv"));
    // Six classes, each intact and with 1, 5, 20, 50 units removed.
    assert_eq!(closed.len(), 6 * 5);
    for class in closed.chunks(5) {
        let removed: Vec<&str> = class.iter().map(|r| r[1].as_str()).collect();
        assert_eq!(removed, ["0", "1", "5", "20", "50"]);
        assert_eq!(class[0][2], "");
        assert_eq!(class[4][2].split(';').count(), 50);
        // The top 50 of 128 units: the class falls far below the rest.
        let num = |r: &Vec<String>, i: usize| r[i].parse::<f64>().unwrap();
        let fall = num(&class[0], 3) - num(&class[4], 3);
        let others = num(&class[0], 4) - num(&class[4], 4);
        assert!(fall > 0.5 && fall > 5.0 * others.abs(), "{class:?}");
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("ablation/ablation.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["method"], "closed-form");
    assert_eq!(json["classes"][0]["name"], "street-s");
    assert_eq!(json["classes"][0]["units"].as_array().unwrap().len(), 50);
    let html = std::fs::read_to_string(results.join("ablation/ablation.html")).unwrap();
    assert_eq!(html.matches("<section class=\"class\"").count(), 6);
    assert!(html.contains("../strips/layer4/unit-"), "top images linked");

    // The re-run path gives the same predictions, so the same rows.
    let rerun = tmp.path().join("rerun");
    let o = ablate(
        &results,
        &[
            "--sizes",
            "1,5,20,50",
            "--method",
            "re-run",
            "--out",
            s(&rerun),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(csv_rows(&rerun.join("ablation.csv")), closed);

    // A chosen set: every class's change, intact and removed.
    let chosen = tmp.path().join("chosen");
    let o = ablate(&results, &["--units", "3,7", "--out", s(&chosen)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = csv_rows(&chosen.join("ablation.csv"));
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().step_by(2).all(|r| r[1] == "0"));
    assert!(
        rows.iter()
            .skip(1)
            .step_by(2)
            .all(|r| r[1] == "2" && r[2] == "3;7")
    );

    // layer3 is not under the head: re-run only, also to the mean.
    let o = ablate(
        &results,
        &[
            "--layer",
            "layer3",
            "--method",
            "closed-form",
            "--out",
            s(&chosen),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--method re-run"), "{}", stderr(&o));
    let o = ablate(
        &results,
        &[
            "--layer",
            "layer3",
            "--units",
            "1,2,3",
            "--ablate-to",
            "mean",
            "--out",
            s(&chosen),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let json = std::fs::read_to_string(chosen.join("ablation.json")).unwrap();
    assert!(json.contains("\"method\": \"re-run\"") && json.contains("\"ablate_to\": \"mean\""));
}

#[test]
fn bad_requests_and_datasets_are_refused_with_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("run");
    let data = dataset(tmp.path(), 4);
    let o = netdissect(&[
        "dissect",
        "--model",
        "tiny-resnet",
        "--weights",
        s(&assets().join("model.safetensors")),
        "--dataset",
        s(&data),
        "--layers",
        "layer4",
        "--out",
        s(&results),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = std::fs::read_dir(data.join("images/synth"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".png") && !name.contains('_')
        })
        .unwrap();
    // An ImageFolder tree with a class the head lacks, then one with an
    // empty class folder.
    let tree = tmp.path().join("tree");
    for class in ["street-s", "castle"] {
        std::fs::create_dir_all(tree.join(class)).unwrap();
        std::fs::copy(&img, tree.join(class).join("a.png")).unwrap();
    }
    let o = ablate_on(&results, &tree, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("class folder `castle` is not one of the head's 6 classes"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(tree.join("castle")).unwrap();
    std::fs::create_dir_all(tree.join("forest")).unwrap();
    let o = ablate_on(&results, &tree, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no images of class `forest`"),
        "{}",
        stderr(&o)
    );
    // A corrupt image names itself.
    std::fs::write(tree.join("forest/b.png"), b"not a png").unwrap();
    let o = ablate_on(&results, &tree, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("b.png"), "{}", stderr(&o));

    for (rest, words) in [
        (
            &["--units", "129"][..],
            "unit 129 is out of range: layer4 has units 1-128",
        ),
        (&["--units", "0"], "unit 0 is out of range"),
        (
            &["--concept", "unicorn"],
            "no unit of layer4 is labelled `unicorn`",
        ),
        (&["--layer", "layer9"], "--layer layer9: the results in"),
        (&["--sizes", "0"], "--sizes must be at least 1"),
    ] {
        let o = ablate(&results, rest);
        assert_eq!(o.status.code(), Some(2), "{rest:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(words), "{rest:?}: {}", stderr(&o));
    }
    assert!(!results.join("ablation").exists(), "nothing written");
}
