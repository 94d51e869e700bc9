//! Damaged inputs and impossible sizes through the `netdissect` binary:
//! truncated JPEGs, `.npy` files whose length or shape does not add up and
//! token grids that overflow are refused by name (exit 3 for files, 2 for
//! options), never read silently or panicking.

mod common;
use common::*;

use std::path::Path;
use std::process::Output;

use dissect::npy;

/// Runs `netdissect dissect` on `data` into `<tmp>/out` with `source`
/// (`--model ...` or `--activations ...`) and `extra` flags.
fn dissect(tmp: &Path, data: &Path, source: &[&str], layer: &str, extra: &[&str]) -> Output {
    let out = tmp.join("out");
    let mut args = vec!["dissect", "--layers", layer, "--quiet"];
    args.extend(["--dataset", data.to_str().unwrap()]);
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(source);
    args.extend(extra);
    netdissect(&args)
}

/// Asserts that `o` exited with `code` and a message holding every one of
/// `words`.
fn assert_refused(o: &Output, code: i32, words: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{e}");
    for word in words {
        assert!(e.contains(word), "no `{word}` in: {e}");
    }
}

/// The JPEG the dataset writer makes of a `size` x `size` image of noise.
fn jpeg(dir: &Path, size: u32) -> Vec<u8> {
    use broden::write::{ImageData, Writer};
    let root = dir.join("jpeg");
    let writer = Writer::create(&root, vec!["object".into()], vec![]).unwrap();
    let rgb: Vec<u8> = (0..size * size * 3)
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    let image = ImageData {
        path: "a.jpg",
        split: "train",
        width: size,
        height: size,
        rgb: &rgb,
        seg_width: size,
        seg_height: size,
        planes: Vec::new(),
        image_labels: Vec::new(),
    };
    writer.write_image(&image).unwrap();
    std::fs::read(root.join("images/a.jpg")).unwrap()
}

#[test]
fn a_truncated_jpeg_is_refused_by_name_by_info_and_dissect() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 6);
    // The first image becomes a JPEG of its size, cut short.
    let index_path = data.join("index.csv");
    let index = std::fs::read_to_string(&index_path).unwrap();
    let png = index.lines().nth(1).unwrap().split(',').next().unwrap();
    let image = png.replace(".png", ".jpg");
    std::fs::write(&index_path, index.replacen(png, &image, 1)).unwrap();
    let bytes = jpeg(tmp.path(), 224);
    let cut = &bytes[..bytes.len() * 2 / 3];
    std::fs::write(data.join("images").join(&image), cut).unwrap();
    let words = [image.as_str(), "truncated or corrupt"];
    assert_refused(&netdissect(&["info", data.to_str().unwrap()]), 3, &words);
    let model = ["--model", "planted-colors"];
    let o = dissect(tmp.path(), &data, &model, "color4", &[]);
    assert_refused(&o, 3, &words);
    assert!(!tmp.path().join("out").exists());
}

/// An `.npy` file (version 1.0) with a hand-written `shape` and `data`.
fn npy_with_shape(shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    header.push_str(
        &" ".repeat((10 + header.len() + 1).next_multiple_of(64) - 10 - header.len() - 1),
    );
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn npy_files_whose_sizes_do_not_add_up_and_overflowing_grids_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 6);
    let acts = tmp.path().join("acts");
    std::fs::create_dir_all(&acts).unwrap();
    let values: Vec<f32> = (0..6 * 4 * 9).map(|i| (i % 13) as f32).collect();
    let mut long = npy::encode_f32(&[6, 4, 3, 3], &values);
    long.extend_from_slice(&[0; 8]);
    std::fs::write(acts.join("long.npy"), long).unwrap();
    let huge = npy_with_shape(
        "(40, 4611686018427387904, 4611686018427387904, 7)",
        &[0; 64],
    );
    std::fs::write(acts.join("huge.npy"), huge).unwrap();
    // 6 images x (1 class token + 2 x 2 grid) x 4 channels.
    let tokens = npy::encode_f32(&[6, 5, 4], &values[..6 * 5 * 4]);
    std::fs::write(acts.join("vit.npy"), tokens).unwrap();
    let source = ["--activations", acts.to_str().unwrap()];
    let run = |layer: &str, extra: &[&str]| dissect(tmp.path(), &data, &source, layer, extra);
    let long_words = ["long.npy", "longer than its header says", "the file has"];
    assert_refused(&run("long", &[]), 3, &long_words);
    assert_refused(&run("huge", &[]), 3, &["huge.npy", "too large"]);
    // 2^32 x 2^32 cells overflow; (2^32 - 1) x (2^32 + 1) cells fit, but
    // not with one more token skipped.
    let grid = ["--token-grid", "4294967296x4294967296"];
    assert_refused(
        &run("vit", &grid),
        2,
        &["--token-grid", "4294967296x4294967296"],
    );
    let grid = [
        "--token-grid",
        "4294967295x4294967297",
        "--skip-tokens",
        "1",
    ];
    assert_refused(&run("vit", &grid), 2, &["--token-grid", "--skip-tokens"]);
    assert!(
        run("vit", &["--token-grid", "2x2", "--skip-tokens", "1"])
            .status
            .success()
    );
}

#[test]
fn a_token_grid_without_recorded_activations_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("no-dataset");
    let model = ["--model", "planted-colors"];
    for extra in [&["--token-grid", "2x2"][..], &["--skip-tokens", "1"]] {
        let o = dissect(tmp.path(), &data, &model, "color4", extra);
        assert_refused(&o, 2, &[extra[0]]);
    }
}

#[test]
fn options_that_would_be_ignored_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("no-dataset");
    let acts = ["--activations", "/nonexistent-acts"];
    let model = ["--model", "resnet18"];
    for (source, extra, names) in [
        (
            &acts[..],
            &["--random-baseline"][..],
            ["--random-baseline", "--activations"],
        ),
        (
            &model[..],
            &["--random-baseline", "--shard", "0/2"],
            ["--random-baseline", "--shard"],
        ),
        (
            &model[..],
            &["--checkpoint-every", "5", "--formula-length", "2"],
            ["--checkpoint-every", "--formula-length"],
        ),
    ] {
        let o = dissect(tmp.path(), &data, source, "layer4", extra);
        assert_refused(&o, 2, &names);
    }
}

#[test]
fn an_out_too_long_for_the_file_system_is_refused_before_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path(), 4, 1, 32, 20);
    // A name of 240 bytes fits, but its staging and checkpoint folders do not.
    let out = tmp.path().join("r".repeat(240));
    let mut args = planted_dissect(&data, &out);
    args.push("--backend=cpu".into());
    let o = binary().args(&args).output().unwrap();
    assert_refused(&o, 3, &["choose a shorter --out", "255"]);
    let left = names_with(tmp.path(), ".r");
    assert!(left.is_empty() && !out.exists(), "{left:?}");
}

#[test]
fn compare_into_a_file_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path(), 4, 1, 32, 20);
    let runs: Vec<_> = (0..2).map(|i| tmp.path().join(format!("run{i}"))).collect();
    for run in &runs {
        let o = binary().args(planted_dissect(&data, run)).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let file = tmp.path().join("page");
    std::fs::write(&file, b"mine").unwrap();
    let o = netdissect(&["compare", s(&runs[0]), s(&runs[1]), "--out", s(&file)]);
    assert_refused(&o, 3, &[s(&file), "is a file, not a folder"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

#[test]
fn non_finite_recorded_units_are_refused_in_a_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path(), 4, 1, 32, 20);
    let acts = tmp.path().join("acts");
    std::fs::create_dir(&acts).unwrap();
    // Unit 1 is NaN everywhere, unit 2 minus infinity; unit 0 is fine.
    let values: Vec<f32> = (0..4 * 3 * 2 * 2)
        .map(|i| match (i / 4) % 3 {
            0 => i as f32,
            1 => f32::NAN,
            _ => f32::NEG_INFINITY,
        })
        .collect();
    std::fs::write(acts.join("x.npy"), npy::encode_f32(&[4, 3, 2, 2], &values)).unwrap();
    let o = dissect(tmp.path(), &data, &["--activations", s(&acts)], "x", &[]);
    assert_refused(
        &o,
        3,
        &[
            "units 1, 2 are NaN or infinite, so their activations hold",
            "check the",
        ],
    );
}
