//! A planted network: the embedded default model's trained trunk with a
//! head whose class `c` reads only a known set of units `S_c`. Removing a
//! unit of `S_c` lowers class `c`'s margin on every image where the unit
//! is active; removing any other unit leaves it or raises it. So each
//! class's top `|S_c|` units must be exactly `S_c`, by the closed form and
//! by the re-run, on the CPU and on wgpu.

use std::path::{Path, PathBuf};

use broden::{Dataset, DatasetOptions};
use models::burn::tensor::{Device, Tensor, TensorData};
use models::{Arch, ArchChoice, Fetch, Model, ModelError, ParamSource, StateDict};

use super::*;
use crate::events::Silent;

const IMAGES: usize = 16;
const CLASSES: usize = 3;
const PER_CLASS: usize = 3;

fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default")
}

/// The default model's parameters, with `fc` replaced.
struct Planted {
    inner: StateDict,
    fc_weight: Vec<f32>,
}

impl ParamSource for Planted {
    fn fetch(&mut self, key: &str, shape: &[usize]) -> std::result::Result<Fetch, ModelError> {
        match key {
            "fc.weight" => Ok(Fetch::Values(self.fc_weight.clone())),
            "fc.bias" => Ok(Fetch::Values(vec![0.0; CLASSES])),
            _ => self.inner.fetch(key, shape),
        }
    }
}

fn probe_images() -> Vec<PathBuf> {
    let ds = Dataset::open(&default_dir().join("probe"), &DatasetOptions::default()).unwrap();
    let root = ds.root.join("images");
    ds.images
        .iter()
        .take(IMAGES)
        .map(|r| root.join(&r.image))
        .collect()
}

/// Each image's `layer4` units pooled, `[n][units]`, by the trained model.
fn pooled(model: &Model, paths: &[PathBuf], device: &Device) -> (Vec<f32>, usize) {
    let p = Arch::TinyResNet.default_preprocess_spec();
    let mut out = Vec::new();
    let mut units = 0;
    for path in paths {
        let (_, px) = broden::load_image(path, &p).unwrap();
        let x = Tensor::<4>::from_data(
            TensorData::new(px, [1, 3, p.height as usize, p.width as usize]),
            device,
        );
        let tap = model.tap("layer4").unwrap();
        let f = model.forward_taps(x, &[tap]).unwrap().remove(0);
        units = f.dims()[1];
        out.extend(model.pooled(f).unwrap().head);
    }
    (out, units)
}

/// The planted sets (units active on every image, spread over the
/// layer) and the head that reads them, each class's logit near 1 on
/// average.
fn plant(pooled: &[f32], units: usize) -> (Vec<Vec<usize>>, Vec<f32>) {
    let n = pooled.len() / units;
    // The units active on the most images (then the largest means).
    let active = |k: usize| (0..n).filter(|&i| pooled[i * units + k] > 1e-3).count();
    let mean = |k: usize| (0..n).map(|i| pooled[i * units + k]).sum::<f32>() / n as f32;
    let mut order: Vec<usize> = (0..units).collect();
    order.sort_by(|&a, &b| (active(b).cmp(&active(a))).then(mean(b).total_cmp(&mean(a))));
    let chosen = &order[..CLASSES * PER_CLASS];
    assert!(
        chosen.iter().all(|&k| active(k) * 4 >= n * 3),
        "too few units active on most images"
    );
    // Interleaved, so each class has units of every activity.
    let sets: Vec<Vec<usize>> = (0..CLASSES)
        .map(|c| {
            let mut set: Vec<usize> = (0..PER_CLASS).map(|j| chosen[j * CLASSES + c]).collect();
            set.sort_unstable();
            set
        })
        .collect();
    let mut weight = vec![0f32; CLASSES * units];
    for (c, set) in sets.iter().enumerate() {
        let mean: f32 = (set.iter())
            .map(|&k| (0..n).map(|i| pooled[i * units + k]).sum::<f32>() / n as f32)
            .sum();
        for &k in set {
            weight[c * units + k] = 1.0 / mean;
        }
    }
    (sets, weight)
}

#[test]
fn each_class_ranks_exactly_its_planted_units_first_both_ways_on_both_backends() {
    let paths = probe_images();
    let weights = default_dir().join("model.safetensors");
    let cpu = models::gpu::cpu_device();
    let trained = Model::load(&weights, ArchChoice::Named(Arch::TinyResNet), &cpu).unwrap();
    let (features, units) = pooled(&trained, &paths, &cpu);
    let (sets, fc_weight) = plant(&features, units);
    let gpu = EngineSpec::of(Backend::Gpu).dissector(&mut Silent).unwrap();
    let preprocess = Arch::TinyResNet.default_preprocess_spec();
    let planted = |device: &Device| {
        let mut source = Planted {
            inner: StateDict::open(&weights).unwrap(),
            fc_weight: fc_weight.clone(),
        };
        Model::from_source(Arch::TinyResNet, CLASSES, &mut source, &weights, device).unwrap()
    };
    // The images' classes are the planted network's own predictions.
    let labels: Vec<usize> = {
        let model = planted(&cpu);
        let zeros = vec![0; paths.len()];
        let s = setup(&model, &zeros, &cpu, &paths, &preprocess);
        let mut engine = Engine::new(
            &s,
            (Method::ClosedForm, AblateTo::Zero),
            (units, "layer4"),
            &mut Silent,
        )
        .unwrap();
        let base = engine
            .outcomes(&[Vec::new()], &zeros, 1, &mut Silent)
            .unwrap();
        base[0].pred.iter().map(|&p| p as usize).collect()
    };
    assert_eq!(
        measured_classes(&labels),
        [0, 1, 2],
        "every class predicted"
    );
    let mut reference: Option<Vec<Vec<f64>>> = None;
    for device in [&cpu, gpu.device()] {
        let model = planted(device);
        for method in [Method::ClosedForm, Method::Rerun] {
            let s = setup(&model, &labels, device, &paths, &preprocess);
            let mut engine =
                Engine::new(&s, (method, AblateTo::Zero), (units, "layer4"), &mut Silent).unwrap();
            assert_eq!(engine.method(), method);
            let drops = drops_of(&mut engine, &labels, units, &sets);
            match &reference {
                None => reference = Some(drops),
                Some(want) => {
                    for (a, b) in want.iter().flatten().zip(drops.iter().flatten()) {
                        assert!(
                            (a - b).abs() < 1e-3 * a.abs().max(1.0),
                            "{method:?}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}

fn setup<'a>(
    model: &'a Model,
    labels: &'a [usize],
    device: &'a Device,
    paths: &'a [PathBuf],
    preprocess: &'a broden::Preprocess,
) -> Setup<'a> {
    Setup {
        model,
        tap: model.tap("layer4").unwrap(),
        paths,
        labels,
        preprocess,
        device,
        batch: 8,
    }
}

/// Each class's single-unit drops, checked against the planted sets.
fn drops_of(
    engine: &mut Engine<'_>,
    labels: &[usize],
    units: usize,
    sets: &[Vec<usize>],
) -> Vec<Vec<f64>> {
    let mut all: Vec<Vec<usize>> = vec![Vec::new()];
    all.extend((0..units).map(|k| vec![k]));
    let mut out = engine.outcomes(&all, labels, 1, &mut Silent).unwrap();
    let base = out.remove(0);
    let measured = measured_classes(labels);
    let drops = single_drops(&base, &out, labels, &measured);
    for (c, set) in sets.iter().enumerate() {
        let mut top: Vec<usize> = ranked(&drops[c])[..set.len()].to_vec();
        top.sort_unstable();
        assert_eq!(&top, set, "class {c}: {:?}", &drops[c]);
        for (k, d) in drops[c].iter().enumerate() {
            if set.contains(&k) {
                assert!(*d > 0.0, "class {c} unit {k}: {d}");
            } else {
                assert!(*d <= 1e-5, "class {c} unit {k} outside the set: {d}");
            }
        }
    }
    drops
}
