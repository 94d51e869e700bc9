//! The `netdissect` binary where things go wrong late or around the run:
//! a write failure while generating a dataset, a bad checkpoint after good
//! ones, and what a default run prints on a machine without a display.

mod common;
use common::*;

use std::path::Path;

/// A folder that cannot be written is a run failure (exit 1), not bad
/// input, leaves no partial dataset, and the rerun to a good path works.
/// A path below a regular file fails for root too, where permissions
/// would not.
#[test]
fn synth_that_cannot_write_fails_the_run_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "not a folder").unwrap();
    let synth = |out: &Path| {
        netdissect(&[
            "synth",
            "--out",
            out.to_str().unwrap(),
            "--images",
            "2",
            "--size",
            "32",
        ])
    };
    let below = file.join("data");
    let o = synth(&below);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(below.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
    assert_eq!(names_with(tmp.path(), ""), ["file"], "nothing left behind");
    let good = tmp.path().join("data");
    let o = synth(&good);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(good.join("index.csv").is_file());
    assert_eq!(
        names_with(tmp.path(), ""),
        ["data", "file"],
        "no staging folder left"
    );
}

/// `synth --shape broden` writes a set with Broden's 1,197 labels that
/// `info` reads, and refuses `--swatch-percent`, which it does not use.
#[test]
fn synth_of_brodens_shape_is_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shaped");
    let args = [
        "synth", "--shape", "broden", "--images", "40", "--size", "32",
    ];
    let mut with_out = args.to_vec();
    with_out.extend(["--out", s(&out)]);
    let o = netdissect(&with_out);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        said.contains("wrote 40 images") && said.contains("1,197 labels"),
        "{said}"
    );
    let o = netdissect(&["info", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(info.contains("1197"), "{info}");
    let mut swatches = with_out.clone();
    swatches.extend(["--swatch-percent", "5"]);
    let o = netdissect(&swatches);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// With several checkpoints, a corrupt later one fails before the first
/// is dissected: exit 3, naming it, and nothing at `--out`.
#[test]
fn a_bad_later_checkpoint_fails_before_any_dissection() {
    let good = std::fs::read(default_model()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    let data = dataset(tmp.path(), 2);
    std::fs::write(ckpt.join("snap-100.safetensors"), &good).unwrap();
    // The second checkpoint in name order is cut short.
    let bad = ckpt.join("snap-200.safetensors");
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    let pattern = ckpt.join("snap-*.safetensors");
    let model = ["dissect", "--model", "tiny-resnet", "--layers", "layer4"];
    let files = [
        "--weights",
        s(&pattern),
        "--dataset",
        s(&data),
        "--out",
        s(&out),
    ];
    let o = netdissect(&[&model[..], &files, &["--backend", "cpu", "--quiet"]].concat());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(bad.to_str().unwrap()), "{}", stderr(&o));
    assert!(
        !out.exists(),
        "nothing written: {:?}",
        names_with(tmp.path(), "")
    );
}

/// A successful run on the default backend, where no display session sets
/// `XDG_RUNTIME_DIR`, prints nothing about it (the adapter probe used to
/// print two `error:` lines).
#[test]
fn the_adapter_probe_says_nothing_about_xdg_runtime_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 2);
    let out = tmp.path().join("out");
    let o = binary()
        .args(planted_dissect(&data, &out))
        .args(["--backend", "auto"])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("the netdissect binary runs");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("XDG_RUNTIME_DIR"), "{}", stderr(&o));
    let o = binary()
        .arg("devices")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("the netdissect binary runs");
    assert!(!stderr(&o).contains("XDG_RUNTIME_DIR"), "{}", stderr(&o));
}
