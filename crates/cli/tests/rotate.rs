//! The paper's rotation test (`--rotate`) through the CLI, on the planted
//! colour network: Q^0 is the network as it is, byte for byte in its
//! labels; under Q^1 most units change label; every rotated run records
//! and reports its rotation, and the comparison page lists them. The
//! dataset is generated with `broden::synth::generate` (seeded) in a temp
//! folder.

mod common;
use common::*;

use std::path::Path;

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap()
}

/// The units of `run`'s layer that are detectors, and the distinct best
/// labels among them.
fn detectors(run: &serde_json::Value) -> (u64, u64) {
    let summary = &run["layers"][0]["summary"];
    (
        summary["detectors"].as_u64().unwrap(),
        summary["unique_top_label"].as_u64().unwrap(),
    )
}

/// A run of the planted network's `color4` layer into `out`.
fn color4(data: &Path, out: &Path) -> Vec<String> {
    let mut args = planted_dissect(data, out);
    let i = args.iter().position(|a| a == "--layers").unwrap();
    args[i + 1] = "color4".into();
    args
}

#[test]
fn rotated_runs_record_their_rotation_q0_is_the_network_itself_and_q1_relabels_most_units() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 40);
    let out = tmp.path().join("rot");
    let mut args = color4(&data, &out);
    args.extend(["--rotate", "0,0.5,1", "--rotate-seed", "7"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = netdissect(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs: Vec<serde_json::Value> = ["rotate-0", "rotate-0.5", "rotate-1"]
        .iter()
        .map(|d| results(&out.join(d)))
        .collect();
    for (run, power) in runs.iter().zip([0.0, 0.5, 1.0]) {
        assert_eq!(run["options"]["rotate"]["power"], power);
        assert_eq!(run["options"]["rotate"]["seed"], 7);
    }
    // In their own basis the planted units are detectors of distinct
    // colours; in a random basis each unit is a mixture of them. (On this
    // network every mixture is again a quadratic form of the pixel's RGB,
    // so it detects *some* colour: detectors do not vanish here, but most
    // units change their label.)
    let (own, own_unique) = detectors(&runs[0]);
    let planted = dissect::planted::PlantedColors::planted();
    let live = planted.iter().filter(|p| p.is_some()).count() as u64;
    assert!(
        own_unique * 2 >= live && own == own_unique,
        "Q^0: {own} detectors, {own_unique} unique"
    );
    let label =
        |run: &serde_json::Value, u: usize| run["layers"][0]["units"][u]["top"][0]["name"].clone();
    let moved = (0..live as usize)
        .filter(|&u| label(&runs[0], u) != label(&runs[2], u))
        .count();
    assert!(
        moved as u64 * 2 > live,
        "only {moved} of {live} units changed label under Q^1"
    );
    // Q^0 is the identity: the same labels as an unrotated run.
    let plain = tmp.path().join("plain");
    let args = color4(&data, &plain);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(netdissect(&refs).status.success());
    let plain = results(&plain);
    assert_eq!(plain["layers"][0]["units"], runs[0]["layers"][0]["units"]);
    // The report says the basis is rotated; the comparison page is there.
    let report = std::fs::read_to_string(out.join("rotate-1/report.html")).unwrap();
    assert!(report.contains("Rotated basis"));
    let csv = std::fs::read_to_string(out.join("compare.csv")).unwrap();
    assert!(csv.contains("Q^0.5"), "{csv}");
    let page = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(page.contains("Interpretability against the rotation"));
}
