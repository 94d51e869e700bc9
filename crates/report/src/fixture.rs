//! Test fixtures for the report: a small hand-built `Dissection` whose
//! dataset images are generated into a temp folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broden::write::{ImageData, LabelSpec, PlaneData, Writer};
use dissect::{
    Alignment, CacheMode, CategoryBest, Dissection, LabelScore, LayerResult, Options, TopImage,
    TopMaps, UnionRule, UnitScore, UnitSignificance, summarize,
};

pub(crate) const FEATURE: u32 = 8;
pub(crate) const TOP_K: usize = 3;
pub(crate) const N_IMAGES: usize = 6;
/// The grey of every generated image, so overlay classes are easy to read.
pub(crate) const GREY: u8 = 200;

pub(crate) fn categories() -> Vec<String> {
    vec!["color".into(), "object".into()]
}

pub(crate) fn options() -> Options {
    Options {
        quantile: 0.005,
        iou_threshold: 0.04,
        categories: None,
        union: UnionRule::Lite,
        alignment: Alignment::HalfPixel,
        preprocess: broden::Preprocess {
            height: 224,
            width: 224,
            order: broden::ChannelOrder::Rgb,
            range: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        },
        split: None,
        max_images: None,
        batch_size: 4,
        top_k: TOP_K,
        formula: None,
        rotate: None,
    }
}

/// Segmentation size of the generated images.
pub(crate) const SEG: u32 = 112;

/// Label `label`'s pixels in image `i`'s segmentation: colour `1 + i % 3`
/// on the top half; the object `4` ("dog") on the left half of even images
/// and `5` on the left half of odd ones.
pub(crate) fn seg_has(i: usize, label: u32, y: u32, x: u32) -> bool {
    let half = SEG / 2;
    match label {
        1..=3 => label == 1 + (i % 3) as u32 && y < half,
        4 | 5 => label == 4 + (i % 2) as u32 && x < half,
        _ => false,
    }
}

/// Writes a Broden dataset of `N_IMAGES` uniform grey 224x224 PNGs
/// (`images/img{i}.png`) with the labels of [`seg_has`], through the
/// project's Broden writer.
pub(crate) fn write_images(dataset: &Path) {
    let label = |name: &str, category| LabelSpec {
        name: name.into(),
        category,
        syns: Vec::new(),
    };
    let labels = vec![
        label("red", 0),
        label("green", 0),
        label("blue", 0),
        label("dog", 1),
        label("cat <&> \"hat\"", 1),
    ];
    let mut writer = Writer::create(dataset, categories(), labels).unwrap();
    let rgb = vec![GREY; 224 * 224 * 3];
    for i in 0..N_IMAGES {
        let plane = |labels: &[u32]| -> Vec<u32> {
            (0..SEG * SEG)
                .map(|p| {
                    let (y, x) = (p / SEG, p % SEG);
                    labels
                        .iter()
                        .copied()
                        .find(|&l| seg_has(i, l, y, x))
                        .unwrap_or(0)
                })
                .collect()
        };
        let (color, object) = (plane(&[1, 2, 3]), plane(&[4, 5]));
        let path = format!("img{i}.png");
        writer
            .add(&ImageData {
                path: &path,
                split: "train",
                width: 224,
                height: 224,
                rgb: &rgb,
                seg_width: SEG,
                seg_height: SEG,
                planes: vec![
                    PlaneData {
                        category: 0,
                        labels: &color,
                    },
                    PlaneData {
                        category: 1,
                        labels: &object,
                    },
                ],
                image_labels: Vec::new(),
            })
            .unwrap();
    }
    writer.finish().unwrap();
}

/// A `FEATURE x FEATURE` map that is 1 on rows `r0..r1`, columns `c0..c1`
/// and 0 elsewhere.
pub(crate) fn rect_map(r0: usize, r1: usize, c0: usize, c1: usize) -> Vec<f32> {
    let n = FEATURE as usize;
    (0..n * n)
        .map(|i| {
            let (y, x) = (i / n, i % n);
            if (r0..r1).contains(&y) && (c0..c1).contains(&x) {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

fn best(label: Option<u32>, name: &str, iou: f64) -> CategoryBest {
    CategoryBest {
        label,
        name: name.into(),
        truth: 100,
        activation: 100,
        intersect: (iou * 100.0) as u64,
        iou,
    }
}

/// Scores of unit `u`: colour and object labels cycling through small
/// vocabularies (one object name needs HTML escaping), IoUs spread around
/// the threshold (some exactly on it), and the last unit scoring nothing.
fn unit_score(u: usize, n_units: usize, salt: usize) -> UnitScore {
    const COLORS: [&str; 3] = ["red", "green", "blue"];
    const OBJECTS: [&str; 2] = ["dog", "cat <&> \"hat\""];
    if u + 1 == n_units {
        return UnitScore {
            unit: u,
            category: None,
            per_category: vec![best(None, "", 0.0), best(None, "", 0.0)],
            top: Vec::new(),
            formulas: Vec::new(),
            significance: None,
        };
    }
    // Unit 0 detects an object but also a colour above the threshold, so
    // the two counting rules differ.
    let (color_iou, object_iou) = if u == 0 {
        (0.05, 0.09)
    } else {
        (
            ((u * 7 + salt) % 10) as f64 / 100.0,
            ((u * 3 + 2 * salt) % 9) as f64 / 100.0,
        )
    };
    let color = best(Some(1 + (u % 3) as u32), COLORS[u % 3], color_iou);
    let object = best(Some(4 + (u % 2) as u32), OBJECTS[u % 2], object_iou);
    let category = Some(if object_iou > color_iou { 1 } else { 0 });
    let mut top: Vec<LabelScore> = [(&color, 0), (&object, 1)]
        .into_iter()
        .filter(|(b, _)| b.iou > 0.0)
        .map(|(b, c)| LabelScore {
            label: b.label.unwrap_or(0),
            name: b.name.clone(),
            category: c,
            iou: b.iou,
        })
        .collect();
    top.sort_by(|a, b| b.iou.total_cmp(&a.iou).then(a.category.cmp(&b.category)));
    UnitScore {
        unit: u,
        category,
        per_category: vec![color, object],
        top,
        formulas: Vec::new(),
        // Every third unit's best label is not significant, whatever its
        // IoU, so both rules' lists of disagreements fill.
        significance: Some(UnitSignificance {
            p_value: if u % 3 == 1 { 0.2 } else { 1e-9 },
            expected: 10.0,
            significant: u % 3 != 1,
        }),
    }
}

/// A layer of `n_units` units. Unit 0's slot 0 map is high on rows 2..6,
/// columns 2..5 and its slot 1 map on rows 0..2, columns 4..8; unit 1 has
/// only two images; unit 2 has none; unit 3's first image does not exist.
pub(crate) fn layer(name: &str, n_units: usize, salt: usize) -> (LayerResult, TopMaps) {
    let plane = (FEATURE * FEATURE) as usize;
    let mut top_images = Vec::new();
    let mut top_maps = Vec::new();
    for u in 0..n_units {
        let n = match u {
            1 => 2,
            2 => 0,
            _ => TOP_K,
        };
        let images: Vec<TopImage> = (0..n)
            .map(|slot| {
                let image = (u + slot) % N_IMAGES;
                TopImage {
                    image,
                    path: if u == 3 && slot == 0 {
                        "missing/nowhere.jpg".into()
                    } else {
                        format!("img{image}.png")
                    },
                    max: 1.0 - slot as f32 * 0.1,
                }
            })
            .collect();
        for slot in 0..TOP_K {
            if slot >= n {
                top_maps.extend(std::iter::repeat_n(f32::NAN, plane));
            } else if u == 0 && slot == 0 {
                top_maps.extend(rect_map(2, 6, 2, 5));
            } else if u == 0 && slot == 1 {
                top_maps.extend(rect_map(0, 2, 4, 8));
            } else {
                let r = (u + slot) % 5;
                top_maps.extend(rect_map(r, r + 3, 1, 4 + slot));
            }
        }
        top_images.push(images);
    }
    let units: Vec<UnitScore> = (0..n_units).map(|u| unit_score(u, n_units, salt)).collect();
    let mut summary = summarize(&units, &categories(), 0.04);
    let tests = n_units * 5;
    summary.significance = Some(dissect::significance::summarize(
        &units,
        0.04,
        tests,
        Some(1e-9),
    ));
    let result = LayerResult {
        name: name.into(),
        tap: format!("{name}.out"),
        n_units,
        feature_size: [FEATURE, FEATURE],
        field: None,
        thresholds: vec![0.5; n_units],
        top_images,
        unit_pixels: vec![10; n_units],
        units,
        summary,
        top_maps_file: Some(dissect::results::top_maps_file_name(name)),
    };
    let f = FEATURE as usize;
    let maps = TopMaps::from_values(n_units, TOP_K, [f, f], top_maps).expect("sized above");
    (result, maps)
}

/// A dissection of `layers` over the dataset folder `dataset`, and the
/// layers' top maps.
pub(crate) fn dissection(
    dataset: &Path,
    layers: Vec<(LayerResult, TopMaps)>,
) -> (Dissection, Vec<TopMaps>) {
    let (layers, maps): (Vec<_>, Vec<_>) = layers.into_iter().unzip();
    let d = Dissection {
        schema_version: dissect::SCHEMA_VERSION,
        tool_version: "test".into(),
        model: "tiny<net>".into(),
        weights: None,
        dataset: dataset.display().to_string(),
        adapter: "none".into(),
        options: options(),
        n_images: N_IMAGES,
        categories: categories(),
        mode: CacheMode::Cached,
        passes: 2,
        duration_secs: 1.5,
        timings: Default::default(),
        layers,
    };
    (d, maps)
}

/// Gives every unit with a label a formula search's result: even units a
/// formula that beats their label by 0.05 (one name needs escaping), odd
/// units their label alone.
pub(crate) fn add_formulas(d: &mut Dissection) {
    d.options.formula = Some(dissect::FormulaSearch::COMPEXP);
    for layer in &mut d.layers {
        for unit in &mut layer.units {
            let Some(best) = unit.best().filter(|b| b.iou > 0.0).cloned() else {
                continue;
            };
            let label = best.label.unwrap_or(0);
            let mut terms = vec![dissect::Term {
                op: None,
                label,
                name: best.name.clone(),
            }];
            let mut iou = best.iou;
            if unit.unit % 2 == 0 {
                terms.push(dissect::Term {
                    op: Some(dissect::Op::AndNot),
                    label: 5,
                    name: "cat <&> \"hat\"".into(),
                });
                iou += 0.05;
            }
            let formula = match terms.as_slice() {
                [a] => a.name.clone(),
                [a, b] => format!("{} AND NOT {}", a.name, b.name),
                _ => unreachable!("one or two terms"),
            };
            unit.formulas = vec![dissect::FormulaScore {
                formula,
                terms,
                iou,
                intersect: best.intersect,
                truth: best.truth,
                activation: best.activation,
            }];
        }
    }
}

/// The shards of `d` (maps `maps`) as shard 0 of 2 would write them in each
/// phase, and the merged thresholds between: the files' sizes are right,
/// their numbers mean nothing.
pub(crate) fn shards(
    d: &Dissection,
    maps: &[TopMaps],
) -> (
    dissect::shard::ThresholdShard,
    dissect::shard::CountShard,
    dissect::shard::MergedThresholds,
) {
    use dissect::shard::{
        CountShard, LayerCandidates, LayerMeta, LayerThresholds, MergedThresholds, Shard,
        ShardInfo, ThresholdShard,
    };
    let meta = |l: &LayerResult| LayerMeta {
        name: l.name.clone(),
        tap: l.tap.clone(),
        field: l.field,
        units: l.n_units as u32,
        feature_size: l.feature_size,
    };
    let info = ShardInfo {
        digest: "digest".into(),
        shard: Shard { index: 0, count: 2 },
        images: [0, N_IMAGES / 2],
        n_images: N_IMAGES,
        model: d.model.clone(),
        weights: None,
        dataset: d.dataset.clone(),
        dataset_digest: "dataset".into(),
        adapter: d.adapter.clone(),
        tool_version: d.tool_version.clone(),
        options: d.options.clone(),
        duration_secs: 0.5,
        timings: Default::default(),
    };
    let thresholds = ThresholdShard {
        info: info.clone(),
        layers: (d.layers.iter())
            .map(|l| LayerCandidates {
                meta: meta(l),
                rank: 1,
                top_k: vec![vec![(0, 1.0)]; l.n_units],
                keys: vec![vec![7, 3]; l.n_units],
            })
            .collect(),
    };
    let merged = MergedThresholds {
        digest: info.digest.clone(),
        shards: 2,
        n_images: N_IMAGES,
        layers: (d.layers.iter())
            .map(|l| LayerThresholds {
                meta: meta(l),
                thresholds: l.thresholds.clone(),
                top_k: vec![vec![(0, 1.0)]; l.n_units],
            })
            .collect(),
        duration_secs: 0.5,
        timings: Default::default(),
    };
    let counts = CountShard {
        info,
        thresholds: merged.fingerprint(),
        layers: d.layers.iter().map(meta).collect(),
        counts: (d.layers.iter())
            .map(|l| kernels::Counts::zeros(l.n_units as u32, 6, 2))
            .collect(),
        top_maps: maps.to_vec(),
    };
    (thresholds, counts, merged)
}

/// The Chromium binary: `$CHROMIUM`, else `chromium` or
/// `chromium-browser` on the `PATH`. The report tests fail without one:
/// `cargo xtask test` installs the Debian package `chromium`.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("chromium not found on PATH (install the Debian package chromium, or set CHROMIUM)");
}

/// Runs headless Chromium on `url` with `extra` flags, stdout to
/// `stdout_file`, failing the test after two minutes.
pub(crate) fn run_chromium(profile: &Path, extra: &[String], url: &str, stdout_file: &Path) {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--allow-file-access-from-files",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout_file).unwrap())
        .stderr(std::fs::File::create(stdout_file.with_extension("stderr")).unwrap())
        .spawn()
        .expect("starting chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr =
                std::fs::read_to_string(stdout_file.with_extension("stderr")).unwrap_or_default();
            assert!(status.success(), "chromium exited with {status}: {stderr}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The names of the entries directly in `dir`, sorted.
pub fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = (std::fs::read_dir(dir).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
