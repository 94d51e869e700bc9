//! The random-weights baseline (`--random-baseline`) through the CLI, on
//! the embedded default model (tiny-resnet, trained on synthetic scenes)
//! and the probe set it ships with (`assets/default`): the trained run and
//! the baseline, with the same settings, in their own folders, a comparison
//! page of the two, and the trained network's units more interpretable.

mod common;
use common::*;

use std::path::Path;

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn a_random_baseline_is_dissected_beside_the_trained_network_and_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("base");
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default/probe");
    let model = default_model();
    let args = [
        "dissect",
        "--model",
        "tiny-resnet",
        "--weights",
        s(&model),
        "--layers",
        "layer3,layer4",
        "--dataset",
        s(&probe),
        "--out",
        s(&out),
        "--backend",
        "cpu",
        "--random-baseline",
        "5",
        "--quiet",
    ];
    let o = netdissect(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let (trained, random) = (
        results(&out.join("model")),
        results(&out.join("random-init-5")),
    );
    assert_eq!(trained["options"], random["options"], "the same settings");
    assert_eq!(trained["model"], random["model"]);
    assert_eq!(
        random["weights"],
        "random initialisation (torchvision's), seed 5"
    );
    assert!(
        trained["weights"]
            .as_str()
            .unwrap()
            .ends_with("model.safetensors")
    );
    // The trained network detects more concepts than its random twin, in
    // each layer, by both rules.
    for l in 0..2 {
        let count = |run: &serde_json::Value, what: &str| {
            run["layers"][l]["summary"][what].as_u64().unwrap()
        };
        for what in ["detectors", "unique_per_category"] {
            assert!(
                count(&trained, what) > count(&random, what),
                "layer {l} {what}: trained {} vs random {}",
                count(&trained, what),
                count(&random, what)
            );
        }
    }
    let page = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(
        page.contains("random init (seed 5)"),
        "the page names the baseline"
    );
    assert_ne!(
        trained["layers"][0]["thresholds"],
        random["layers"][0]["thresholds"]
    );
}

#[test]
fn a_baseline_needs_an_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 2);
    let mut args = planted_dissect(&data, &tmp.path().join("out"));
    args.push("--random-baseline".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = netdissect(&refs);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--random-baseline needs a zoo architecture"));
}
