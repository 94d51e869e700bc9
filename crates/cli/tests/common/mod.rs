//! Helpers every test of the `netdissect` binary shares: running it,
//! reading what it printed, generating a dataset, and reading folders back.
//! Each test file uses some of them, so the others are dead code there.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `netdissect` binary of this build, not yet run.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netdissect"))
}

/// Runs `netdissect` with `args`.
pub fn netdissect(args: &[&str]) -> Output {
    binary()
        .args(args)
        .output()
        .expect("the netdissect binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A generated Broden-format dataset in `<dir>/broden` (`netdissect
/// synth`'s generator, seeded).
pub fn synth(dir: &Path, images: usize, seed: u64, size: u32, swatch_percent: u8) -> PathBuf {
    let out = dir.join("broden");
    let opts = broden::synth::SynthOptions {
        images,
        seed,
        size,
        swatch_percent,
    };
    broden::synth::generate(&out, &opts).unwrap();
    out
}

/// `images` generated 224-pixel images (seed 3, no swatches).
pub fn dataset(dir: &Path, images: usize) -> PathBuf {
    synth(dir, images, 3, 224, 0)
}

/// Every file under `dir`, by relative path, with its bytes.
pub fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The names in `dir` that start with `prefix`, sorted.
pub fn names_with(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = (std::fs::read_dir(dir).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// `dissect` of the planted network's `color4` over `data` into `out`,
/// quietly: a valid command line that tests add to.
pub fn planted_dissect(data: &Path, out: &Path) -> Vec<String> {
    let args = ["dissect", "--model", "planted-colors", "--layers", "color4"];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    for (flag, path) in [("--dataset", data), ("--out", out)] {
        args.extend([flag.to_string(), s(path).to_string()]);
    }
    args.push("--quiet".into());
    args
}

/// The embedded default checkpoint (tiny-resnet, `assets/default`).
pub fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default/model.safetensors")
}

/// Every file under `dir`, by relative path, with what differs between
/// runs by design blanked: durations and timings in `results.json`, the
/// duration in the report's header.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let mut bytes = std::fs::read(&path).unwrap();
            let name = rel.to_string_lossy();
            if name == "results.json" {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                v["duration_secs"] = 0.into();
                v["timings"] = serde_json::Value::Null;
                bytes = serde_json::to_vec_pretty(&v).unwrap();
            } else if name == "report.html" {
                let text = String::from_utf8(bytes).unwrap();
                let at = text
                    .find(" s · netdissect")
                    .expect("the report states a duration");
                let start = text[..at].rfind("· ").unwrap() + 2;
                bytes = format!("{}<duration>{}", &text[..start], &text[at..]).into_bytes();
            }
            out.insert(rel, bytes);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Panics unless `want` and `got` hold the same files with the same bytes,
/// but for what [`snapshot`] blanks.
pub fn assert_same_folders(want: &Path, got: &Path) {
    let (want, got) = (snapshot(want), snapshot(got));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (name, bytes) in &want {
        assert!(bytes == &got[name], "{} differs", name.display());
    }
}
