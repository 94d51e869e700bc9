//! The two ways to see a network with units removed.
//!
//! - **Closed form**, for the last layer of a network whose head is a
//!   global average pool and one linear layer (ResNet, GoogLeNet,
//!   DenseNet): logit `c` is `b_c + Σ_k W_ck p_k` over the pooled units
//!   `p_k`, so a unit removed (its map set to `a_k`: 0, or its dataset
//!   mean) changes it by exactly `-W_ck (p_k - a_k)`. One forward pass
//!   gives every ablation.
//! - **Re-run**, anywhere else: per batch, the network runs once up to the
//!   layer; the layer's activations are edited for each set of units and
//!   the network after the layer ([`Model::forward_from`]) gives the
//!   logits.

use std::ops::Range;
use std::path::PathBuf;

use broden::Preprocess;
use dissect::{Pass, Progress};
use models::burn::tensor::{Device, Tensor, TensorData};
use models::{Model, PooledHead, TapId};
use rayon::prelude::*;

use super::effects::Outcome;
use crate::error::{Error, Kind, Result};
use crate::events::Events;

/// What to set a removed unit's map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AblateTo {
    /// Zero, as the paper's main experiment.
    #[default]
    Zero,
    /// The unit's mean over the dataset's images and positions.
    Mean,
}

/// The network, the layer, and the images an ablation runs over.
pub(crate) struct Setup<'a> {
    pub model: &'a Model,
    pub tap: TapId,
    pub paths: &'a [PathBuf],
    pub labels: &'a [usize],
    pub preprocess: &'a Preprocess,
    pub device: &'a Device,
    pub batch: usize,
}

impl Setup<'_> {
    /// Calls `each` with every batch of images, decoded in parallel, and
    /// their index range; reports progress as `pass`.
    fn sweep(
        &self,
        pass: (Pass, u32, u32),
        events: &mut dyn Events,
        mut each: impl FnMut(Tensor<4>, Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let p = self.preprocess;
        let (h, w) = (p.height as usize, p.width as usize);
        let n = self.paths.len();
        let mut start = 0;
        while start < n {
            let range = start..(start + self.batch.max(1)).min(n);
            let pixels: Vec<Vec<f32>> = self.paths[range.clone()]
                .par_iter()
                .map(|path| broden::load_image(path, p).map(|(_, px)| px))
                .collect::<std::result::Result<_, _>>()
                .map_err(Error::input)?;
            let b = range.len();
            let flat: Vec<f32> = pixels.concat();
            let x = Tensor::<4>::from_data(TensorData::new(flat, [b, 3, h, w]), self.device);
            start = range.end;
            each(x, range)?;
            events.progress(&Progress {
                pass: pass.0,
                pass_index: pass.1,
                passes: pass.2,
                images_done: start,
                images_total: n,
            });
        }
        Ok(())
    }
}

fn host(t: Tensor<2>) -> Result<Vec<f32>> {
    (t.into_data().try_to_vec::<f32>())
        .map_err(|e| Error::new(Kind::Run, format!("reading logits: {e:?}")))
}

/// The closed form over the pooled features of every image.
pub(crate) struct ClosedForm {
    head: PooledHead,
    /// `[n][channels]` as the head sees them.
    pooled: Vec<f32>,
    /// The head's weights by unit: `[channels][classes]`.
    by_unit: Vec<f32>,
    /// What a removed unit's pooled value becomes.
    fill: Vec<f32>,
    base: Vec<f32>,
}

impl ClosedForm {
    /// One forward pass to the last layer, pooled.
    pub fn collect(
        setup: &Setup<'_>,
        head: PooledHead,
        to: AblateTo,
        events: &mut dyn Events,
    ) -> Result<ClosedForm> {
        let (mut pooled, mut raw) = (Vec::new(), Vec::new());
        setup.sweep((Pass::Features, 1, 1), events, |x, _| {
            let features = (setup.model.forward_taps(x, &[setup.tap]))
                .map_err(Error::input)?
                .remove(0);
            let p = setup.model.pooled(features).map_err(Error::input)?;
            pooled.extend(p.head);
            raw.extend(p.raw);
            Ok(())
        })?;
        let (k, c) = (head.channels, head.classes);
        let n = pooled.len() / k.max(1);
        let fill = match to {
            AblateTo::Zero => vec![0.0; k],
            AblateTo::Mean => (0..k)
                .map(|u| {
                    let m = (0..n).map(|i| f64::from(raw[i * k + u])).sum::<f64>() / n as f64;
                    let m = m as f32;
                    if head.relu_first { m.max(0.0) } else { m }
                })
                .collect(),
        };
        let mut by_unit = vec![0f32; k * c];
        for class in 0..c {
            for u in 0..k {
                by_unit[u * c + class] = head.weight[class * k + u];
            }
        }
        let (weight, bias, features) = (&head.weight, &head.bias, &pooled);
        let base = (0..n)
            .into_par_iter()
            .flat_map_iter(|i| {
                let p = &features[i * k..(i + 1) * k];
                (0..c).map(move |class| {
                    let row = &weight[class * k..(class + 1) * k];
                    let dot: f64 = (row.iter().zip(p))
                        .map(|(w, x)| f64::from(*w) * f64::from(*x))
                        .sum();
                    (f64::from(bias[class]) + dot) as f32
                })
            })
            .collect();
        Ok(ClosedForm {
            head,
            pooled,
            by_unit,
            fill,
            base,
        })
    }

    /// Each set's outcome.
    pub fn outcomes(&self, sets: &[Vec<usize>], labels: &[usize]) -> Vec<Outcome> {
        let (k, c) = (self.head.channels, self.head.classes);
        sets.par_iter()
            .map(|set| {
                let mut out = Outcome::default();
                let mut row = vec![0f32; c];
                for (i, &y) in labels.iter().enumerate() {
                    row.copy_from_slice(&self.base[i * c..(i + 1) * c]);
                    for &u in set {
                        let d = self.pooled[i * k + u] - self.fill[u];
                        let w = &self.by_unit[u * c..(u + 1) * c];
                        row.iter_mut().zip(w).for_each(|(r, w)| *r -= w * d);
                    }
                    out.push(&row, c, &[y]);
                }
                out
            })
            .collect()
    }
}

/// The re-run path: the layer's activations edited, the rest run.
pub(crate) struct Rerun<'a> {
    setup: &'a Setup<'a>,
    classes: usize,
    units: usize,
    /// What a removed unit's map becomes.
    fill: Vec<f32>,
    /// Every batch's activations of the layer, once a pass kept them all
    /// within [`CACHE_BYTES`]: later passes neither decode nor run the
    /// layers before it again.
    cached: Option<Vec<(Tensor<4>, Range<usize>)>>,
    /// Whether a pass found the activations larger than the cache.
    too_large: bool,
}

/// The most bytes of a layer's activations the re-run keeps between its
/// passes (ResNet-18 `layer3` over 1,500 images is 300 MB).
const CACHE_BYTES: usize = 1 << 30;

impl<'a> Rerun<'a> {
    /// For `to` = mean, one pass to the layer for its units' means.
    pub fn new(
        setup: &'a Setup<'a>,
        units: usize,
        to: AblateTo,
        events: &mut dyn Events,
    ) -> Result<Rerun<'a>> {
        let mut rerun = Rerun {
            setup,
            classes: setup.model.num_classes(),
            units,
            fill: vec![0f32; units],
            cached: None,
            too_large: false,
        };
        if to == AblateTo::Mean {
            let mut sums = vec![0f64; units];
            let mut count = 0usize;
            rerun.each_batch((Pass::Features, 1, 1), events, |acts, _| {
                let [b, ch, h, w] = acts.dims();
                let per_unit = acts.swap_dims(0, 1).reshape([ch, b * h * w]).sum_dim(1);
                let v = host(per_unit.reshape([1, ch]))?;
                sums.iter_mut().zip(v).for_each(|(s, x)| *s += f64::from(x));
                count += b * h * w;
                Ok(())
            })?;
            rerun.fill = sums
                .iter()
                .map(|s| (s / count.max(1) as f64) as f32)
                .collect();
        }
        Ok(rerun)
    }

    /// Calls `each` with every batch's activations of the layer and their
    /// images, from the cache where a pass filled it.
    fn each_batch(
        &mut self,
        pass: (Pass, u32, u32),
        events: &mut dyn Events,
        mut each: impl FnMut(Tensor<4>, Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let s = self.setup;
        if let Some(cached) = &self.cached {
            for (acts, range) in cached {
                each(acts.clone(), range.clone())?;
                events.progress(&Progress {
                    pass: pass.0,
                    pass_index: pass.1,
                    passes: pass.2,
                    images_done: range.end,
                    images_total: s.paths.len(),
                });
            }
            return Ok(());
        }
        let mut kept = (!self.too_large).then(Vec::new);
        let mut bytes = 0usize;
        s.sweep(pass, events, |x, range| {
            let acts = (s.model.forward_taps(x, &[s.tap]))
                .map_err(Error::input)?
                .remove(0);
            bytes += acts.shape().num_elements() * 4;
            if bytes > CACHE_BYTES {
                kept = None;
            }
            if let Some(kept) = &mut kept {
                kept.push((acts.clone(), range.clone()));
            }
            each(acts, range)
        })?;
        self.too_large = kept.is_none();
        self.cached = kept;
        Ok(())
    }

    /// Each set's outcome, in one pass over the images (pass `index` of
    /// `passes`, for progress). Sets go through the network after the
    /// layer together, [`GROUP_IMAGES`] images' worth at a time: one
    /// forward pass for several sets.
    pub fn outcomes(
        &mut self,
        sets: &[Vec<usize>],
        pass: (u32, u32),
        events: &mut dyn Events,
    ) -> Result<Vec<Outcome>> {
        let s = self.setup;
        let mut out = vec![Outcome::default(); sets.len()];
        let group = (GROUP_IMAGES / s.batch.max(1)).max(1);
        let (classes, units, fill) = (self.classes, self.units, self.fill.clone());
        let device = s.device;
        self.each_batch((Pass::Ablations, pass.0, pass.1), events, |acts, range| {
            let b = range.len();
            let labels = &s.labels[range.clone()];
            for (chunk, outs) in sets.chunks(group).zip(out.chunks_mut(group)) {
                let (keep, add) = edits(chunk, b, units, &fill, device);
                let edited = acts.clone().repeat_dim(0, chunk.len()) * keep + add;
                let logits = host(s.model.forward_from(s.tap, edited).map_err(Error::input)?)?;
                for (j, outcome) in outs.iter_mut().enumerate() {
                    let rows = &logits[j * b * classes..(j + 1) * b * classes];
                    outcome.push(rows, classes, labels);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The per-channel factor and offset that remove each of `sets` (units
/// set to `fill`), each repeated for `b` images: `[sets * b, units, 1, 1]`.
fn edits(
    sets: &[Vec<usize>],
    b: usize,
    units: usize,
    fill: &[f32],
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let k = units;
    let mut keep = vec![1f32; sets.len() * b * k];
    let mut add = vec![0f32; sets.len() * b * k];
    for (j, set) in sets.iter().enumerate() {
        for i in 0..b {
            let row = (j * b + i) * k;
            for &u in set {
                keep[row + u] = 0.0;
                add[row + u] = fill[u];
            }
        }
    }
    let t =
        |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [sets.len() * b, k, 1, 1]), device);
    (t(keep), t(add))
}

/// Images' worth of edited activations the re-run sends through the
/// network after the layer at once (sets times the batch).
const GROUP_IMAGES: usize = 256;
