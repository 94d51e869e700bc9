//! `cargo xtask train-default`: trains the embedded default model (`tiny-resnet`) on scene
//! classification of a generated synthetic Broden set with Burn's autodiff on the CPU
//! (`flex`) backend, then writes its weights and a separately seeded probe set.
//!
//! Everything is seeded (image sets, initial weights, shuffling, flips); the remaining
//! nondeterminism is Burn's floating-point summation order. With the defaults it takes about
//! 14 minutes on an idle 2-core machine and 25 minutes on one busy with other builds (about
//! 45 ms per training image; see `assets/default/README.md` for the measured run).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use broden::Preprocess;
use broden::synth::{self, SCENES, SynthOptions};
use models::burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use models::burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use models::burn::prelude::Module;
use models::burn::tensor::{Device, Int, Tensor, TensorData};
use models::nets::Net;
use models::{Arch, Model, SeededInit, save_safetensors};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// What to train on and for how long; [`Default`] is what made `assets/default`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Training images (rendered in memory, never written).
    pub train_images: usize,
    pub train_seed: u64,
    /// Held-out images for the per-epoch validation accuracy.
    pub val_images: usize,
    pub val_seed: u64,
    /// Images of the probe set written beside the weights (the dissection's dataset).
    pub probe_images: usize,
    pub probe_seed: u64,
    /// Share of the probe set that is texture swatches (see
    /// `broden::synth::SynthOptions::swatch_percent`); training and
    /// validation sets have none.
    pub probe_swatch_percent: u8,
    /// Seed of the initial weights ([`SeededInit`]) and of shuffling and flips.
    pub init_seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's peak learning rate; it follows a cosine decay to zero over all steps.
    pub learning_rate: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            train_images: 4000,
            train_seed: 1001,
            val_images: 400,
            val_seed: 1002,
            probe_images: 500,
            probe_seed: 7,
            probe_swatch_percent: 10,
            init_seed: 42,
            epochs: 6,
            batch_size: 32,
            learning_rate: 2e-3,
        }
    }
}

/// Images of one generated set, kept as 8-bit RGB, with their scene class (0-based).
struct Images {
    rgb: Vec<Vec<u8>>,
    class: Vec<usize>,
}

fn render_set(images: usize, seed: u64, size: u32) -> Result<Images> {
    let opts = SynthOptions {
        images,
        seed,
        size,
        swatch_percent: 0,
    };
    let first = synth::concept_number("scene", SCENES[0])
        .context("the synthetic generator has no scene labels")?;
    let rendered: Vec<(Vec<u8>, Option<u32>)> = (0..images)
        .into_par_iter()
        .map(|i| synth::render(&opts, i).map(|img| (img.rgb, img.scene)))
        .collect::<Result<_, _>>()
        .with_context(|| format!("rendering {images} synthetic images with seed {seed}"))?;
    let mut out = Images {
        rgb: Vec::with_capacity(images),
        class: Vec::with_capacity(images),
    };
    for (i, (rgb, scene)) in rendered.into_iter().enumerate() {
        let class = scene
            .and_then(|s| s.checked_sub(first))
            .map(|c| c as usize)
            .filter(|&c| c < SCENES.len())
            .with_context(|| format!("image {i} of seed {seed} has scene label {scene:?}"))?;
        out.rgb.push(rgb);
        out.class.push(class);
    }
    Ok(out)
}

/// The input tensor of `indices`, normalised as the dissection will (the model's default
/// preprocessing), each image mirrored left-right where `flips` says so.
fn batch_input(
    set: &Images,
    indices: &[usize],
    flips: &[bool],
    prep: &Preprocess,
    device: &Device,
) -> Tensor<4> {
    let (h, w) = (prep.height as usize, prep.width as usize);
    let per = 3 * h * w;
    let mut data = vec![0f32; indices.len() * per];
    let mut mirrored = vec![0u8; h * w * 3];
    for ((&i, &flip), out) in indices.iter().zip(flips).zip(data.chunks_exact_mut(per)) {
        let rgb = if flip {
            for y in 0..h {
                for x in 0..w {
                    let (s, d) = ((y * w + x) * 3, (y * w + (w - 1 - x)) * 3);
                    mirrored[d..d + 3].copy_from_slice(&set.rgb[i][s..s + 3]);
                }
            }
            &mirrored
        } else {
            &set.rgb[i]
        };
        prep.apply(rgb, out);
    }
    Tensor::from_data(TensorData::new(data, [indices.len(), 3, h, w]), device)
}

fn argmax_rows(logits: Tensor<2>) -> Result<Vec<usize>> {
    let [n, k] = logits.dims();
    let values: Vec<f32> = logits
        .into_data()
        .try_into_vec()
        .map_err(|e| anyhow::anyhow!("reading logits back: {e:?}"))?;
    Ok((0..n)
        .map(|r| {
            let row = &values[r * k..(r + 1) * k];
            (0..k)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0)
        })
        .collect())
}

/// Accuracy of `net` (in eval mode, on a plain device) over all of `set`.
fn accuracy(net: &Net, set: &Images, prep: &Preprocess, device: &Device) -> Result<f64> {
    let indices: Vec<usize> = (0..set.class.len()).collect();
    let mut correct = 0usize;
    for chunk in indices.chunks(64) {
        let x = batch_input(set, chunk, &vec![false; chunk.len()], prep, device);
        let logits = Model::logits(net, x).context("the forward pass stopped early")?;
        let predicted = argmax_rows(logits)?;
        correct += chunk
            .iter()
            .zip(&predicted)
            .filter(|&(&i, &p)| set.class[i] == p)
            .count();
    }
    Ok(correct as f64 / set.class.len().max(1) as f64)
}

/// Trains `tiny-resnet` and writes `out/model.safetensors` and the probe set `out/probe/`.
pub fn train_default(out: &Path, opts: &TrainOptions) -> Result<()> {
    check_options(opts)?;
    let arch = Arch::TinyResNet;
    let size = arch.input_size();
    let prep = arch.default_preprocess_spec();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let started = Instant::now();
    let train = render_set(opts.train_images, opts.train_seed, size)?;
    let val = render_set(opts.val_images.max(1), opts.val_seed, size)?;
    eprintln!(
        "rendered {} training and {} validation images at {size} px in {:.1} s",
        train.class.len(),
        val.class.len(),
        started.elapsed().as_secs_f64()
    );

    let device = Device::flex();
    let autodiff = device.clone().autodiff();
    let model = Model::from_source(
        arch,
        SCENES.len(),
        &mut SeededInit::new(opts.init_seed),
        Path::new("<seeded init>"),
        &autodiff,
    )?;
    let mut net = model.into_net();
    let mut trainer = Trainer::new(opts, autodiff, train.class.len());
    for epoch in 1..=opts.epochs {
        let epoch_start = Instant::now();
        let (trained, sums) = trainer.epoch(net, &train, &prep)?;
        net = trained;
        let n = train.class.len() as f64;
        let val_acc = accuracy(&net.valid(), &val, &prep, &device)?;
        println!(
            "epoch {epoch}/{}: train loss {:.4}, train acc {:.3}, val acc {:.3} ({:.0} s, {:.0} s total)",
            opts.epochs,
            sums.loss / n,
            sums.correct as f64 / n,
            val_acc,
            epoch_start.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    save(
        out,
        opts,
        arch,
        Model::from_net(arch, SCENES.len(), net.valid()),
        started,
    )
}

/// Refuses options that would train on nothing or probe with training images.
fn check_options(opts: &TrainOptions) -> Result<()> {
    if opts.train_images == 0 || opts.batch_size == 0 || opts.epochs == 0 {
        bail!("train images, batch size and epochs must be at least 1");
    }
    if opts.probe_seed == opts.train_seed || opts.probe_seed == opts.val_seed {
        bail!(
            "the probe seed {} must differ from the training and validation seeds",
            opts.probe_seed
        );
    }
    Ok(())
}

/// The training loss and the correct predictions of one epoch, summed over
/// its images.
#[derive(Debug, Clone, Copy, Default)]
struct EpochSums {
    loss: f64,
    correct: usize,
}

/// Adam with a cosine learning-rate decay over all steps, on shuffled and
/// randomly flipped batches.
struct Trainer {
    optim: ModuleOptimizer,
    loss_fn: CrossEntropyLoss,
    /// Shuffles the training set and draws the flips.
    rng: ChaCha8Rng,
    /// The autodiff device the training batches go to.
    device: Device,
    batch_size: usize,
    learning_rate: f64,
    step: usize,
    total_steps: f64,
}

impl Trainer {
    /// A trainer for `opts.epochs` epochs over `train_images` images.
    fn new(opts: &TrainOptions, device: Device, train_images: usize) -> Trainer {
        let optim = AdamConfig::new().init();
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let steps_per_epoch = train_images.div_ceil(opts.batch_size);
        Trainer {
            optim,
            loss_fn,
            rng: ChaCha8Rng::seed_from_u64(opts.init_seed),
            device,
            batch_size: opts.batch_size,
            learning_rate: opts.learning_rate,
            step: 0,
            total_steps: (steps_per_epoch * opts.epochs) as f64,
        }
    }

    /// One pass over `train` in a fresh random order, one optimiser step per
    /// batch; returns the updated network and the epoch's sums.
    fn epoch(
        &mut self,
        mut net: Net,
        train: &Images,
        prep: &Preprocess,
    ) -> Result<(Net, EpochSums)> {
        let mut order: Vec<usize> = (0..train.class.len()).collect();
        order.shuffle(&mut self.rng);
        let mut sums = EpochSums::default();
        for chunk in order.chunks(self.batch_size) {
            let flips: Vec<bool> = chunk.iter().map(|_| self.rng.random::<bool>()).collect();
            let x = batch_input(train, chunk, &flips, prep, &self.device);
            let targets: Vec<i64> = chunk.iter().map(|&i| train.class[i] as i64).collect();
            let targets =
                Tensor::<1, Int>::from_data(TensorData::new(targets, [chunk.len()]), &self.device);
            let logits = Model::logits(&net, x).context("the forward pass stopped early")?;
            let loss = self.loss_fn.forward(logits.clone(), targets);
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            let lr = self.next_learning_rate();
            net = self.optim.step(lr, net, grads);
            sums.loss += f64::from(loss.into_scalar::<f32>()) * chunk.len() as f64;
            let predicted = argmax_rows(logits)?;
            sums.correct += chunk
                .iter()
                .zip(&predicted)
                .filter(|&(&i, &p)| train.class[i] == p)
                .count();
        }
        Ok((net, sums))
    }

    /// The learning rate of this step on the cosine decay, and one step on.
    fn next_learning_rate(&mut self) -> f64 {
        let lr = 0.5
            * self.learning_rate
            * (1.0 + (std::f64::consts::PI * self.step as f64 / self.total_steps).cos());
        self.step += 1;
        lr
    }
}

/// Writes the `trained` weights and a freshly generated probe set under `out`.
fn save(
    out: &Path,
    opts: &TrainOptions,
    arch: Arch,
    trained: Model,
    started: Instant,
) -> Result<()> {
    let weights = out.join("model.safetensors");
    save_safetensors(&trained, &weights)?;
    let probe = out.join("probe");
    let probe_opts = SynthOptions {
        images: opts.probe_images,
        seed: opts.probe_seed,
        size: arch.input_size(),
        swatch_percent: opts.probe_swatch_percent,
    };
    synth::generate(&probe, &probe_opts)
        .with_context(|| format!("generating the probe set in {}", probe.display()))?;
    println!(
        "wrote {} and {} ({} images, seed {}) in {:.0} s",
        weights.display(),
        probe.display(),
        opts.probe_images,
        opts.probe_seed,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
