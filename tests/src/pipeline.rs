//! The engine on the device against the naive CPU implementation, and
//! planted detectors found by dissection.
//!
//! Fixtures: synthetic Broden datasets made by `broden::synth::generate`
//! (seeded) in a temp folder, the hand-built `PlantedColors` network, and
//! `TiesNet` (piecewise-constant maps) below.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use broden::synth::{SynthOptions, generate};
use broden::{BatchOptions, Dataset, DatasetOptions};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Tensor, TensorData};
use dissect::planted::PlantedColors;
use dissect::score::{label_infos, layer_counts};
use dissect::{
    Alignment, CacheMode, DissectError, Dissector, FieldMap, GeoOp, LayerTap, Network, Options,
    Outcome, Preset, UnionRule, score_units, summarize,
};
use kernels::{Counts, Upsample};

use crate::naive;

/// One engine (one wgpu runtime) per test process.
pub(crate) fn dissector() -> &'static Dissector {
    static D: OnceLock<Dissector> = OnceLock::new();
    D.get_or_init(|| {
        Dissector::new().expect("a wgpu adapter (lavapipe in CI): install mesa-vulkan-drivers")
    })
}

/// A generated dataset, made once per process.
pub(crate) fn dataset_dir(images: usize, seed: u64) -> PathBuf {
    static DIRS: OnceLock<std::sync::Mutex<Vec<(usize, u64, tempfile::TempDir)>>> = OnceLock::new();
    let dirs = DIRS.get_or_init(Default::default);
    let mut dirs = dirs.lock().unwrap();
    if let Some((_, _, d)) = dirs.iter().find(|(n, s, _)| *n == images && *s == seed) {
        return d.path().join("broden");
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("broden");
    generate(
        &out,
        &SynthOptions {
            images,
            seed,
            size: 224,
            swatch_percent: 0,
        },
    )
    .unwrap();
    dirs.push((images, seed, tmp));
    out
}

fn planted_options(union: UnionRule, alignment: Alignment, quantile: f64) -> Options {
    let mut o = Options::preset(Preset::Original, &PlantedColors::preprocess());
    o.union = union;
    o.alignment = alignment;
    o.quantile = quantile;
    // An uneven last batch.
    o.batch_size = 5;
    o.top_k = 3;
    o
}

fn layers() -> Vec<String> {
    PlantedColors::layer_names()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The CPU backend, made once per test process.
pub(crate) fn cpu() -> &'static Dissector {
    static D: OnceLock<Dissector> = OnceLock::new();
    D.get_or_init(Dissector::cpu)
}

fn run(net: &dyn Network, ds: &Dataset, opts: &Options, budget: Option<u64>) -> Outcome {
    run_on(dissector(), net, &layers(), ds, opts, budget)
}

pub(crate) fn run_on(
    d: &Dissector,
    net: &dyn Network,
    names: &[String],
    ds: &Dataset,
    opts: &Options,
    budget: Option<u64>,
) -> Outcome {
    let budget = budget.unwrap_or(d.cache_budget_bytes);
    d.run_with_cache_budget(net, names, ds, opts, budget, &mut |_| {})
        .unwrap()
}

/// Host copies of every layer's activations, per batch (test only: the
/// engine never reads activations back).
pub(crate) fn host_activations(
    d: &Dissector,
    net: &dyn Network,
    names: &[String],
    ds: &Dataset,
    opts: &Options,
) -> Vec<Vec<(Vec<f32>, [u32; 4])>> {
    let layers: Vec<_> = names.iter().map(|l| net.layer(l).unwrap()).collect();
    let bopts = BatchOptions {
        batch_size: opts.batch_size,
        preprocess: opts.preprocess.clone(),
        prefetch: 1,
        labels_only: false,
    };
    let mut per_layer = vec![Vec::new(); layers.len()];
    for batch in ds.batches(&bopts) {
        let batch = batch.unwrap();
        let n = batch.indices.len();
        let input = Tensor::<4>::from_data(
            TensorData::new(
                batch.pixels.clone(),
                [n, 3, batch.height as usize, batch.width as usize],
            ),
            d.device(),
        );
        for (i, act) in net
            .forward_layers(input, &layers)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            let d = act.dims();
            let shape = [d[0] as u32, d[1] as u32, d[2] as u32, d[3] as u32];
            per_layer[i].push((
                act.into_data()
                    .try_to_vec::<f32>()
                    .expect("f32 activations"),
                shape,
            ));
        }
    }
    per_layer
}

/// The naive CPU dissection of one layer: thresholds and counts.
fn naive_layer(
    net: &dyn Network,
    name: &str,
    ds: &Dataset,
    opts: &Options,
    acts: &[(Vec<f32>, [u32; 4])],
) -> (Vec<f32>, Counts) {
    let units = acts[0].1[1] as usize;
    let mut values = vec![Vec::new(); units];
    for (data, [_, c, h, w]) in acts {
        let plane = (*h * *w) as usize;
        for (i, chunk) in data.chunks(plane).enumerate() {
            values[i % *c as usize].extend_from_slice(chunk);
        }
    }
    let thresholds = naive::thresholds(&values, opts.quantile);
    let n_labels = ds.labels.len() as u32;
    let n_cat = ds.categories.len() as u32;
    let label_category: Vec<u32> = ds.labels.iter().map(|l| l.category as u32).collect();
    let mut counts = Counts::zeros(units as u32, n_labels, n_cat);
    let l = net.layer(name).unwrap();
    let bopts = BatchOptions {
        batch_size: opts.batch_size,
        preprocess: opts.preprocess.clone(),
        prefetch: 1,
        labels_only: true,
    };
    for (batch, (data, [_, _, h, w])) in ds.batches(&bopts).zip(acts) {
        let batch = batch.unwrap();
        let (sh, sw) = (batch.seg_height, batch.seg_width);
        let up = match opts.alignment {
            Alignment::HalfPixel => Upsample::half_pixel(*h, *w, sh, sw),
            Alignment::ReceptiveField => naive::original_upsampling(
                l.field.as_ref().expect("zoo layers have receptive fields"),
                [opts.preprocess.height, opts.preprocess.width],
                [*h, *w],
                [sh, sw],
            ),
        };
        naive::count_batch(&mut counts, &up, data, &thresholds, &batch, &label_category);
    }
    (thresholds, counts)
}

pub(crate) fn open(dir: &Path, categories: Option<Vec<String>>) -> Dataset {
    Dataset::open(
        dir,
        &DatasetOptions {
            categories,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn gpu_pipeline_equals_naive_cpu_under_every_option() {
    equals_naive_under_every_option(dissector());
}

#[test]
fn cpu_backend_equals_naive_cpu_under_every_option() {
    equals_naive_under_every_option(cpu());
}

fn equals_naive_under_every_option(d: &Dissector) {
    let net = PlantedColors::new(d.device());
    let cases = [
        (None, Alignment::ReceptiveField),
        (None, Alignment::HalfPixel),
        (
            Some(vec!["object".to_string(), "scene".into(), "color".into()]),
            Alignment::HalfPixel,
        ),
    ];
    for (categories, alignment) in cases {
        let ds = open(&dataset_dir(12, 7), categories.clone());
        let base = planted_options(UnionRule::Original, alignment, 0.02);
        let acts = host_activations(d, &net, &layers(), &ds, &base);
        let naive: Vec<_> = (0..acts.len())
            .map(|i| naive_layer(&net, &layers()[i], &ds, &base, &acts[i]))
            .collect();
        let names: Vec<String> = ds
            .selected
            .iter()
            .map(|&c| ds.categories[c].name.clone())
            .collect();
        for union in [UnionRule::Original, UnionRule::Lite] {
            let opts = Options {
                union,
                ..base.clone()
            };
            let outcome = run_on(d, &net, &layers(), &ds, &opts, None);
            let got = &outcome.dissection;
            let what = format!(
                "{} {categories:?} {alignment:?} {union:?}",
                d.adapter_line()
            );
            assert_eq!(got.mode, CacheMode::Cached, "{what}");
            assert_eq!(got.categories, names, "{what}");
            for ((layer, engine_counts), (thresholds, counts)) in
                got.layers.iter().zip(&outcome.counts).zip(&naive)
            {
                let what = format!("{what} {}", layer.name);
                assert_eq!(&layer.thresholds, thresholds, "{what}: thresholds");
                assert_eq!(
                    engine_counts.intersect, counts.intersect,
                    "{what}: intersections"
                );
                assert_eq!(
                    engine_counts.label_pixels, counts.label_pixels,
                    "{what}: truth"
                );
                assert_eq!(
                    engine_counts.unit_pixels, counts.unit_pixels,
                    "{what}: unit pixels"
                );
                assert_eq!(
                    engine_counts.unit_category_original, counts.unit_category_original,
                    "{what}: original union"
                );
                assert_eq!(
                    engine_counts.unit_category_lite, counts.unit_category_lite,
                    "{what}: lite union"
                );
                assert_eq!(engine_counts.moments, counts.moments, "{what}: moments");
                let mut want = score_units(
                    &layer_counts(counts, union, &ds.selected),
                    &label_infos(&ds),
                );
                let mut summary = summarize(&want, &names, opts.iou_threshold);
                summary.significance = Some(dissect::significance::assess(
                    counts,
                    &label_infos(&ds),
                    &mut want,
                    opts.iou_threshold,
                ));
                assert_eq!(layer.units, want, "{what}: scores");
                assert_eq!(layer.summary, summary, "{what}");
                assert_eq!(layer.unit_pixels, counts.unit_pixels, "{what}");
                // Something was counted: the comparison is not vacuous.
                assert!(counts.unit_pixels.iter().sum::<u64>() > 0, "{what}");
            }
        }
    }
}

#[test]
fn recomputing_equals_caching() {
    let net = PlantedColors::new(dissector().device());
    let ds = open(&dataset_dir(12, 7), None);
    let opts = planted_options(UnionRule::Lite, Alignment::ReceptiveField, 0.01);
    let cached = run(&net, &ds, &opts, None);
    let recomputed = run(&net, &ds, &opts, Some(0));
    assert_eq!(cached.counts, recomputed.counts);
    let (cached, recomputed) = (cached.dissection, recomputed.dissection);
    assert_eq!(cached.mode, CacheMode::Cached);
    assert_eq!(recomputed.mode, CacheMode::Recomputed);
    assert_eq!(cached.layers, recomputed.layers);
    assert_eq!(
        (cached.passes, recomputed.passes),
        (2, 2),
        "one threshold pass and one counting pass"
    );
}

#[test]
fn planted_colour_units_are_found_and_dead_units_are_not_detectors() {
    let net = PlantedColors::new(dissector().device());
    let ds = open(&dataset_dir(40, 11), None);
    // Colours cover a few percent of pixels each, so the mask takes the top
    // 2% of each unit's activations.
    let opts = planted_options(UnionRule::Original, Alignment::HalfPixel, 0.02);
    let outcome = run(&net, &ds, &opts, None);
    let result = &outcome.dissection;
    let color = result.categories.iter().position(|c| c == "color").unwrap();
    let planted = PlantedColors::planted();
    let layer = &result.layers[0];
    let counts = &outcome.counts[0];
    let (mut found, mut overall) = (0, 0);
    for (unit, want) in layer.units.iter().zip(&planted) {
        let best = unit.best();
        match want {
            Some(name) => {
                let truth = ds.labels.iter().find(|l| l.name == *name).unwrap();
                // A colour that covers under 0.5% of the pixels cannot fill a
                // 2% mask; such units are not held to the bound.
                let pixels = (ds.images.len() * 112 * 112) as u64;
                if counts.label_pixels[truth.number as usize] * 200 < pixels {
                    continue;
                }
                // Within its own category the planted colour always wins and
                // makes the unit a colour detector.
                let own = &unit.per_category[color];
                assert_eq!(own.name, *name, "unit {} ({name}): {own:?}", unit.unit);
                assert!(
                    own.iou > 0.04,
                    "unit {} ({name}): IoU {}",
                    unit.unit,
                    own.iou
                );
                // Overall, another concept may score higher (white fills the
                // stripes of `striped` images, an image-level texture label).
                if best.is_some_and(|b| b.name == *name) {
                    overall += 1;
                }
                found += 1;
            }
            None => {
                assert!(
                    unit.score() <= opts.iou_threshold,
                    "dead unit {}: {unit:?}",
                    unit.unit
                );
                assert_eq!(
                    layer.unit_pixels[unit.unit], 0,
                    "dead unit {} fired",
                    unit.unit
                );
            }
        }
    }
    // The saved maps of each unit's top images peak at the recorded maxima.
    for (unit, tops) in layer.top_images.iter().enumerate() {
        assert_eq!(tops.len(), opts.top_k, "unit {unit}");
        for (slot, top) in tops.iter().enumerate() {
            let map = outcome.top_maps[0].map(unit, slot).unwrap();
            let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max, top.max, "unit {unit} slot {slot}");
        }
    }
    assert!(found >= 6, "only {found} colour units could be checked");
    assert!(
        overall * 4 >= found * 3,
        "only {overall} of {found} colour units are labelled with their colour overall"
    );
}

#[test]
fn options_are_checked_before_any_work() {
    let net = PlantedColors::new(dissector().device());
    let ds = open(&dataset_dir(12, 7), None);
    let good = planted_options(UnionRule::Original, Alignment::HalfPixel, 0.02);
    let d = dissector();
    let bad_cases: Vec<(Options, Vec<String>, &str)> = vec![
        (
            Options {
                quantile: 0.0,
                ..good.clone()
            },
            layers(),
            "quantile",
        ),
        (
            Options {
                batch_size: 0,
                ..good.clone()
            },
            layers(),
            "batch size",
        ),
        (good.clone(), vec![], "no layers"),
        (
            good.clone(),
            vec!["conv9".into()],
            "valid layers: color4, color16",
        ),
        (
            Options {
                preprocess: broden::Preprocess {
                    height: 0,
                    ..good.preprocess.clone()
                },
                ..good.clone()
            },
            layers(),
            "size",
        ),
    ];
    for (opts, layers, want) in bad_cases {
        let err = d
            .run(&net, &layers, &ds, &opts, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
}

#[test]
fn kernels_run_on_a_burn_tensor_and_read_back_only_results() {
    use burn::tensor::Distribution;
    use kernels::count::Upsample;
    use kernels::{
        ActivationView, CountConfig, Counter, HostLabels, LabelPlane, QuantileSketch, RoundResult,
        TopK,
    };

    let d = dissector();
    let shared = d.gpu().expect("the wgpu engine");
    // A handle of our own on the engine's device, so that its read-back
    // tally counts this test's reads only.
    let gpu = &kernels::Gpu::from_parts(
        shared.device.clone(),
        shared.queue.clone(),
        shared.info.clone(),
    );
    // Activations made by Burn ops on the device, never uploaded by us.
    let (n, units, h, w) = (3usize, 40usize, 9usize, 9usize);
    let x = Tensor::<4>::random([n, units, h, w], Distribution::Normal(0.0, 1.0), d.device());
    let act = burn::tensor::activation::relu(x.clone() * 2.0) - 0.5;
    let host = act.clone().into_data().try_to_vec::<f32>().unwrap();
    let act_bytes = (host.len() * 4) as u64;

    let before = gpu.bytes_read_back();
    let buf = models::gpu::tensor_buffer(act.clone()).unwrap();
    let view = ActivationView {
        buffer: buf.buffer(),
        offset_bytes: buf.offset(),
        shape: [n as u32, units as u32, h as u32, w as u32],
    };
    let mut sketch = QuantileSketch::new(gpu, units as u32, 0.05).unwrap();
    while {
        sketch.observe(gpu, &view).unwrap();
        sketch.finish_round(gpu).unwrap() == RoundResult::NeedsAnotherPass
    } {}
    let mut top = TopK::new(gpu, units as u32, 2).unwrap();
    top.observe(gpu, &view, 0).unwrap();
    let (sh, sw) = (18u32, 18u32);
    let n_labels = 6u32;
    let config = CountConfig {
        n_units: units as u32,
        n_labels,
        n_categories: 2,
        label_category: vec![0, 0, 0, 1, 1, 1],
        upsample: Upsample::half_pixel(h as u32, w as u32, sh, sw),
        max_images: n as u32,
    };
    let labels = HostLabels {
        n_images: n as u32,
        planes: (0..n as u32)
            .map(|image| LabelPlane {
                image,
                category: 0,
                labels: (0..sh * sw).map(|p| (p * 7 + image) % n_labels).collect(),
            })
            .collect(),
        image_labels: Vec::new(),
    };
    let mut counter = Counter::new(gpu, config.clone()).unwrap();
    counter
        .count(gpu, &view, sketch.thresholds_buffer(), &labels)
        .unwrap();
    let thresholds = sketch.read_thresholds(gpu).unwrap();
    let top_k = top.read(gpu).unwrap();
    let counts = counter.read(gpu).unwrap();

    let read = gpu.bytes_read_back() - before;

    // Only results came back: thresholds, top-k pairs, the u64 counts and
    // the unit side of the significance moments (the label side is the
    // host's).
    let m = &counts.moments;
    let results = (thresholds.len() * 4
        + top_k.iter().map(Vec::len).sum::<usize>() * 8
        + (counts.intersect.len()
            + counts.unit_pixels.len()
            + counts.unit_category_original.len()
            + counts.unit_category_lite.len()
            + m.unit_blocks.len()
            + m.unit_gram.len()
            + m.unit_max.len())
            * 8) as u64;
    assert!(read > 0);
    assert!(
        read <= results + 1024,
        "read back {read} bytes for {results} bytes of results"
    );
    // The moments' size depends on the units and the block grid, not on
    // the images (here 3 of them, so they outweigh the activations); the
    // rest is a fraction of the activations.
    let moments = ((m.unit_blocks.len() + m.unit_gram.len() + m.unit_max.len()) * 8) as u64;
    assert!(
        (read - moments) * 4 < act_bytes,
        "read back {read} bytes ({moments} of moments) of {act_bytes} bytes of activations"
    );

    // And the results are right.
    let values = kernels::cpu::values_per_unit(&[(&host, view.shape)]);
    assert_eq!(thresholds, kernels::cpu::quantile_thresholds(&values, 0.05));
    let want = kernels::cpu::count(&config, &host, &thresholds, &labels).unwrap();
    assert_eq!(counts.intersect, want.intersect);
    assert_eq!(counts.unit_category_original, want.unit_category_original);
}

/// Piecewise-constant maps, so that many (unit, image) maxima equal their
/// unit's threshold exactly: unit 0 is the image's mean value rounded to a
/// multiple of 1/16, constant over the 7x7 map; unit 1 the mean of each
/// 32x32 block of channel 0, rounded to a multiple of 1/2.
struct TiesNet;

impl Network for TiesNet {
    fn name(&self) -> String {
        "ties".into()
    }

    fn layer(&self, name: &str) -> Result<LayerTap, DissectError> {
        match name {
            "steps" => Ok(LayerTap {
                name: name.into(),
                index: 0,
                field: Some(FieldMap::of_path(&[GeoOp::pool(32, 32, 0, false)])),
            }),
            _ => Err(DissectError::Input(format!("ties has no layer `{name}`"))),
        }
    }

    fn forward_layers(
        &self,
        input: Tensor<4>,
        _layers: &[LayerTap],
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        let pooled = avg_pool2d(input, AvgPoolOptions::new([32, 32]));
        let [n, _, h, w] = pooled.dims();
        let steps = |x: Tensor<4>, per: f32| x.mul_scalar(per).round().div_scalar(per);
        let whole = pooled.clone().mean_dim(1).mean_dim(2).mean_dim(3);
        let unit0 = steps(whole, 16.0).expand([n, 1, h, w]);
        let unit1 = steps(pooled.narrow(1, 0, 1), 2.0);
        Ok(vec![Tensor::cat(vec![unit0, unit1], 1)])
    }
}

#[test]
fn maxima_equal_to_the_threshold_count_as_the_naive_implementation_does() {
    let ds = open(&dataset_dir(12, 7), None);
    let names = vec!["steps".to_string()];
    for d in [dissector(), cpu()] {
        for q in [0.2, 0.4] {
            let what = format!("{} q {q}", d.adapter_line());
            let opts = planted_options(UnionRule::Original, Alignment::HalfPixel, q);
            let acts = host_activations(d, &TiesNet, &names, &ds, &opts);
            let (thresholds, counts) = naive_layer(&TiesNet, "steps", &ds, &opts, &acts[0]);
            // The case is real: some (unit, image) map peaks exactly at the
            // unit's threshold (an empty mask by the strict rule).
            let at_threshold = acts[0].iter().any(|(data, [_, c, h, w])| {
                let plane = (h * w) as usize;
                data.chunks(plane).enumerate().any(|(i, map)| {
                    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    max == thresholds[i % *c as usize]
                })
            });
            assert!(at_threshold, "{what}: no map peaks at its threshold");
            assert!(counts.unit_pixels.iter().sum::<u64>() > 0, "{what}");
            let outcome = run_on(d, &TiesNet, &names, &ds, &opts, None);
            assert_eq!(
                outcome.dissection.layers[0].thresholds, thresholds,
                "{what}"
            );
            assert_eq!(outcome.counts[0], counts, "{what}");
        }
    }
}

/// Writes each layer's activations (as `host_activations` returns them) to
/// `<dir>/<layer>.npy`, rows in dataset order; `encode` turns the
/// `[n, c, h, w]` values into the file.
fn record(
    dir: &Path,
    names: &[String],
    acts: &[Vec<(Vec<f32>, [u32; 4])>],
    encode: impl Fn(&[f32], [usize; 4]) -> Vec<u8>,
) {
    for (name, batches) in names.iter().zip(acts) {
        let [_, c, h, w] = batches[0].1.map(|v| v as usize);
        let values: Vec<f32> = batches
            .iter()
            .flat_map(|(v, _)| v.iter().copied())
            .collect();
        let n = values.len() / (c * h * w);
        std::fs::write(
            dir.join(format!("{name}.npy")),
            encode(&values, [n, c, h, w]),
        )
        .unwrap();
    }
}

/// Two runs agree on everything but the network's name and geometry.
fn assert_same_outcome(want: &Outcome, got: &Outcome) {
    assert_eq!(got.counts, want.counts, "raw counts");
    assert_eq!(got.ious, want.ious, "IoU matrices");
    assert_eq!(got.top_maps, want.top_maps, "top maps");
    let (a, b) = (&want.dissection, &got.dissection);
    assert_eq!(
        (a.n_images, &a.categories, &a.options),
        (b.n_images, &b.categories, &b.options)
    );
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.thresholds, y.thresholds, "{} thresholds", x.name);
        assert_eq!(x.top_images, y.top_images, "{} top images", x.name);
        assert_eq!(x.unit_pixels, y.unit_pixels);
        assert_eq!(x.units, y.units, "{} scores", x.name);
        assert_eq!(x.summary, y.summary);
        assert_eq!(x.feature_size, y.feature_size);
    }
}

#[test]
fn recorded_activations_of_resnet18_dissect_exactly_as_the_network_does() {
    use dissect::npy;
    use dissect::recorded::{Recorded, TokenLayout};
    let d = cpu();
    let arch = models::Arch::ResNet18;
    let model = models::Model::synthetic(arch, 1000, d.device()).unwrap();
    let ds = open(&dataset_dir(10, 5), None);
    let mut opts = Options::preset(Preset::Original, &arch.default_preprocess_spec());
    opts.alignment = Alignment::HalfPixel;
    opts.batch_size = 4;
    opts.top_k = 3;
    let names = vec!["layer3".to_string(), "layer4".to_string()];
    let direct = run_on(d, &model, &names, &ds, &opts, None);
    let acts = host_activations(d, &model, &names, &ds, &opts);

    // float32 N x C x H x W, as a forward hook saves them.
    let tmp = tempfile::tempdir().unwrap();
    record(tmp.path(), &names, &acts, |v, s| npy::encode_f32(&s, v));
    let open_recorded = |dir: &Path, names: &[String], tokens| {
        Recorded::open(dir, names, ds.images.len(), tokens)
            .unwrap()
            .on(d.device())
    };
    let recorded = open_recorded(tmp.path(), &names, TokenLayout::default());
    let got = run_on(d, &recorded, &names, &ds, &opts, None);
    assert_same_outcome(&direct, &got);
    assert!(got.dissection.layers.iter().all(|l| l.field.is_none()));
    assert!(direct.dissection.layers[1].summary.n_units == 512);

    // float16 tokens (N x (1 + h*w) x C, a class token first) on a 7x7
    // grid dissect as the same values rounded to f16 in N x C x H x W.
    let layer4 = &names[1..];
    let rounded: Vec<Vec<(Vec<f32>, [u32; 4])>> = vec![
        acts[1]
            .iter()
            .map(|(v, s)| {
                (
                    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
                    *s,
                )
            })
            .collect(),
    ];
    let plain = tempfile::tempdir().unwrap();
    record(plain.path(), layer4, &rounded, |v, s| {
        npy::encode_f32(&s, v)
    });
    let tokens = tempfile::tempdir().unwrap();
    record(tokens.path(), layer4, &rounded, |v, [n, c, h, w]| {
        let t = 1 + h * w;
        let mut tokens = Vec::with_capacity(n * t * c);
        for i in 0..n {
            for tok in 0..t {
                for ch in 0..c {
                    let x = if tok == 0 {
                        1e4
                    } else {
                        v[((i * c + ch) * h * w) + tok - 1]
                    };
                    tokens.push(x);
                }
            }
        }
        npy::encode_f16(&[n, t, c], &tokens)
    });
    let want = run_on(
        d,
        &open_recorded(plain.path(), layer4, TokenLayout::default()),
        layer4,
        &ds,
        &opts,
        None,
    );
    let grid = TokenLayout {
        grid: Some([7, 7]),
        skip: 1,
    };
    let got = run_on(
        d,
        &open_recorded(tokens.path(), layer4, grid),
        layer4,
        &ds,
        &opts,
        None,
    );
    assert_same_outcome(&want, &got);

    // Mismatched files are refused with the file and the problem named.
    let err = |dir: &Path, rows: usize, tokens| {
        Recorded::open(dir, layer4, rows, tokens)
            .unwrap_err()
            .to_string()
    };
    let e = err(plain.path(), ds.images.len() + 1, TokenLayout::default());
    assert!(
        e.contains("layer4.npy") && e.contains("rows") && e.contains("selected"),
        "{e}"
    );
    let e = err(tokens.path(), ds.images.len(), TokenLayout::default());
    assert!(e.contains("--token-grid"), "{e}");
    let e = err(
        tokens.path(),
        ds.images.len(),
        TokenLayout {
            grid: Some([7, 7]),
            skip: 0,
        },
    );
    assert!(e.contains("50 tokens") && e.contains("needs 49"), "{e}");
    let e = Recorded::open(
        plain.path(),
        &["layer9".to_string()],
        10,
        TokenLayout::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("layer9.npy") && e.contains("layer4"),
        "names what was recorded: {e}"
    );
}
