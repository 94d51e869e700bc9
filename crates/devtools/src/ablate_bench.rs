//! `cargo xtask bench-ablate`: what `netdissect ablate` costs beside the
//! forward pass it cannot avoid, on the CPU backend at the sizes people
//! ablate: ResNet-18 (seeded torchvision-style random weights, 6 classes)
//! over generated 224-pixel images whose scene labels are the classes.
//!
//! - `layer4` (closed form): a bare forward pass over the images to the
//!   layer, then `ablate` with one chosen unit, then every single-unit
//!   ablation and each class's curve. The extra cost is the last minus the
//!   bare pass.
//! - `layer3` (re-run): the same on fewer images (`--rerun-images`), since
//!   every set of units re-runs `layer4` and the head over every image.
//!
//! And the embedded default model (trained on six scenes) on its probe
//! set: each class's accuracy with its top 20 and 50 units removed beside
//! the other classes' mean, the paper's finding. Writes `ablation.md` and
//! `ablation.json` under `--out`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use app::{AblateJob, AblateTo, Backend, Method, Silent};
use broden::{Dataset, DatasetOptions};
use clap::Args;
use dissect::{Dissector, Options, Preset};
use models::burn::tensor::{Tensor, TensorData};
use models::{Arch, Model};
use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Args)]
pub struct AblateBenchArgs {
    /// Images for `layer4` (closed form).
    #[arg(long, default_value_t = 1500)]
    pub images: usize,
    /// Images for `layer3` (re-run); 0 skips it.
    #[arg(long, default_value_t = 150)]
    pub rerun_images: usize,
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Timing {
    layer: String,
    method: String,
    images: usize,
    units: usize,
    /// Seconds: a bare forward pass to the layer (decoding included), one
    /// chosen unit removed, every single unit and each class's curve.
    forward: f64,
    one_set: f64,
    all: f64,
    /// Sets of units evaluated by the full ablation.
    sets: usize,
}

#[derive(Debug, Serialize)]
struct Finding {
    class: String,
    intact: f64,
    top20: f64,
    top50: f64,
    others20: f64,
    others50: f64,
}

pub fn bench_ablate(args: AblateBenchArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let work = args.out.join("ablate");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let classes = work.join("classes.txt");
    std::fs::write(&classes, broden::synth::SCENES.join("\n") + "\n")?;
    let dissector = Dissector::cpu();
    let model = Model::random_init(Arch::ResNet18, 6, 7, dissector.device())?;
    let weights = work.join("resnet18.safetensors");
    models::save_safetensors(&model, &weights)?;
    let data = crate::bench::ensure_dataset(&args.out, args.images)?;
    // The units' labels: a dissection of the first 200 images.
    let results = work.join("run");
    dissect_into(&dissector, &model, &data, &results)?;
    let job = |layer: &str, dataset: &Path, method: Method, units: Vec<usize>| AblateJob {
        results: results.clone(),
        weights: weights.clone(),
        dataset: dataset.to_path_buf(),
        classes: Some(classes.clone()),
        layer: Some(layer.into()),
        to: AblateTo::Zero,
        method,
        sizes: Vec::new(),
        units,
        concept: None,
        out: Some(work.join(format!("out-{layer}"))),
        batch: 32,
        backend: Backend::Cpu,
    };
    let mut timings = Vec::new();
    let mut cases = vec![("layer4", data.clone(), Method::ClosedForm, args.images)];
    if args.rerun_images > 0 {
        let small = crate::bench::ensure_dataset(&args.out, args.rerun_images)?;
        cases.push(("layer3", small, Method::Rerun, args.rerun_images));
    }
    for (layer, dataset, method, images) in cases {
        eprintln!(
            "bench-ablate: {layer} over {images} images ({})",
            method.name()
        );
        let forward = forward_pass(&model, layer, &dataset)?;
        let started = Instant::now();
        app::ablate(&job(layer, &dataset, method, vec![1]), &mut Silent)?;
        let one_set = started.elapsed().as_secs_f64();
        let started = Instant::now();
        app::ablate(&job(layer, &dataset, method, Vec::new()), &mut Silent)?;
        let all = started.elapsed().as_secs_f64();
        let units = model.taps()[model.tap(layer)?.index].channels;
        timings.push(Timing {
            layer: layer.into(),
            method: method.name().into(),
            images,
            units,
            forward,
            one_set,
            all,
            sets: units + 1 + 6 * app::DEFAULT_SIZES.len(),
        });
    }
    let findings = default_model_findings(&work)?;
    let md = render(&timings, &findings);
    std::fs::write(args.out.join("ablation.md"), &md)?;
    std::fs::write(
        args.out.join("ablation.json"),
        serde_json::to_vec_pretty(&(&timings, &findings))?,
    )?;
    print!("{md}");
    Ok(())
}

/// Dissects `layer3,layer4` over the first 200 images into `out`.
fn dissect_into(dissector: &Dissector, model: &Model, data: &Path, out: &Path) -> Result<()> {
    let opts_ds = DatasetOptions {
        max_images: Some(200),
        ..DatasetOptions::default()
    };
    let ds = Dataset::open(data, &opts_ds)?;
    let opts = Options::preset(Preset::Original, &Arch::ResNet18.default_preprocess_spec());
    let layers = ["layer3".to_string(), "layer4".to_string()];
    let o = dissector.run(model, &layers, &ds, &opts, &mut |_| {})?;
    std::fs::create_dir_all(out)?;
    report::output::write_all(out, &o.dissection, &o.top_maps, &o.ious)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Seconds for one pass over the dataset's images to `layer`, decoded as
/// `ablate` decodes them, 32 at a time.
fn forward_pass(model: &Model, layer: &str, data: &Path) -> Result<f64> {
    let ds = Dataset::open(data, &DatasetOptions::default())?;
    let p = Arch::ResNet18.default_preprocess_spec();
    let tap = model.tap(layer)?;
    let root = ds.root.join("images");
    let paths: Vec<PathBuf> = ds.images.iter().map(|r| root.join(&r.image)).collect();
    let device = models::gpu::cpu_device();
    let started = Instant::now();
    for chunk in paths.chunks(32) {
        let pixels: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|path| broden::load_image(path, &p).map(|(_, px)| px))
            .collect::<Result<_, _>>()?;
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels.concat(), [chunk.len(), 3, 224, 224]),
            &device,
        );
        let f = model.forward_taps(x, &[tap])?.remove(0);
        let _ = f.into_data();
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The default model's classes with their top 20 and 50 units removed.
fn default_model_findings(work: &Path) -> Result<Vec<Finding>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default");
    let dissector = Dissector::cpu();
    let model = Model::load(
        &root.join("model.safetensors"),
        models::ArchChoice::Named(Arch::TinyResNet),
        dissector.device(),
    )?;
    let results = work.join("default-run");
    let ds = Dataset::open(&root.join("probe"), &DatasetOptions::default())?;
    let opts = Options::preset(
        Preset::Original,
        &Arch::TinyResNet.default_preprocess_spec(),
    );
    let o = dissector.run(&model, &["layer4".to_string()], &ds, &opts, &mut |_| {})?;
    std::fs::create_dir_all(&results)?;
    report::output::write_all(&results, &o.dissection, &o.top_maps, &o.ious)?;
    let out = work.join("default-ablation");
    app::ablate(
        &AblateJob {
            results,
            weights: root.join("model.safetensors"),
            dataset: root.join("probe"),
            classes: Some(root.join("classes.txt")),
            layer: None,
            to: AblateTo::Zero,
            method: Method::Auto,
            sizes: vec![20, 50],
            units: Vec::new(),
            concept: None,
            out: Some(out.clone()),
            batch: 32,
            backend: Backend::Cpu,
        },
        &mut Silent,
    )?;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("ablation.json"))?)?;
    let empty = Vec::new();
    let classes = json["classes"].as_array().unwrap_or(&empty);
    Ok(classes
        .iter()
        .map(|c| {
            let at = |i: usize, key: &str| c["curve"][i][key].as_f64().unwrap_or(f64::NAN);
            Finding {
                class: c["name"].as_str().unwrap_or_default().to_string(),
                intact: at(0, "accuracy"),
                top20: at(1, "accuracy"),
                top50: at(2, "accuracy"),
                others20: at(1, "others_accuracy") - at(0, "others_accuracy"),
                others50: at(2, "others_accuracy") - at(0, "others_accuracy"),
            }
        })
        .collect())
}

fn render(timings: &[Timing], findings: &[Finding]) -> String {
    let mut s = String::from(
        "| layer | path | images | units | sets | forward pass (s) | one set (s) | all (s) | extra over the forward pass |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for t in timings {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2}x |\n",
            t.layer,
            t.method,
            t.images,
            t.units,
            t.sets,
            t.forward,
            t.one_set,
            t.all,
            (t.all - t.forward) / t.forward
        ));
    }
    s.push_str("\nThe default model (tiny-resnet, 6 scenes), layer4 (128 units), on its probe set:\n\n| class | accuracy | top 20 removed | top 50 removed | others' change (20) | others' change (50) |\n|---|---|---|---|---|---|\n");
    for f in findings {
        s.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:+.3} | {:+.3} |\n",
            f.class, f.intact, f.top20, f.top50, f.others20, f.others50
        ));
    }
    s
}
