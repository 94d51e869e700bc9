//! The per-layer accumulators of a run, on the device (WGSL kernels over
//! Burn's buffers, nothing read back but results) or on the host (the
//! kernels' multi-threaded CPU twins over activations of Burn's CPU
//! backend). The engine drives both through this one interface, so the two
//! backends share every step but the arithmetic.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use kernels::{
    ActivationView, CountConfig, Counter, Counts, CpuQuantileSketch, CpuTopK, Gpu, HostLabels,
    QuantileSketch, RoundResult, TopK,
};
use models::gpu;

use crate::DissectError;

/// Segmentation size `(sh, sw)`: one counter per size a dataset mixes.
type Seg = (u32, u32);

/// The accumulators of one layer.
#[derive(Debug)]
pub(crate) enum LayerState {
    Gpu {
        sketch: QuantileSketch,
        top_k: TopK,
        counters: BTreeMap<Seg, Counter>,
    },
    Cpu {
        sketch: CpuQuantileSketch,
        top_k: CpuTopK,
        counters: BTreeMap<Seg, (CountConfig, Counts)>,
        thresholds: Vec<f32>,
    },
}

/// A layer's activations as the CPU path needs them.
fn host(act: &Tensor<4>) -> Result<(Vec<f32>, [u32; 4]), DissectError> {
    let d = act.dims();
    let data =
        act.clone().into_data().try_to_vec::<f32>().map_err(|e| {
            DissectError::Option(format!("internal: activations are not f32: {e:?}"))
        })?;
    Ok((data, [d[0] as u32, d[1] as u32, d[2] as u32, d[3] as u32]))
}

/// Runs `f` on the device view of `act`.
fn with_view<T>(
    act: &Tensor<4>,
    f: impl FnOnce(&ActivationView) -> Result<T, DissectError>,
) -> Result<T, DissectError> {
    let buf = gpu::tensor_buffer(act.clone())?;
    let s = buf.shape();
    let view = ActivationView {
        buffer: buf.buffer(),
        offset_bytes: buf.offset(),
        shape: [s[0] as u32, s[1] as u32, s[2] as u32, s[3] as u32],
    };
    f(&view)
}

impl LayerState {
    pub fn new(gpu: Option<&Gpu>, units: u32, q: f64, k: u32) -> Result<Self, DissectError> {
        Ok(match gpu {
            Some(gpu) => LayerState::Gpu {
                sketch: QuantileSketch::new(gpu, units, q)?,
                top_k: TopK::new(gpu, units, k)?,
                counters: BTreeMap::new(),
            },
            None => LayerState::Cpu {
                sketch: CpuQuantileSketch::new(units, q)?,
                top_k: CpuTopK::new(units, k),
                counters: BTreeMap::new(),
                thresholds: Vec::new(),
            },
        })
    }

    /// First pass over a batch: quantile round 0 and top-k.
    pub fn observe_first(
        &mut self,
        gpu: Option<&Gpu>,
        act: &Tensor<4>,
        first_image: u32,
    ) -> Result<(), DissectError> {
        match (self, gpu) {
            (LayerState::Gpu { sketch, top_k, .. }, Some(gpu)) => with_view(act, |view| {
                sketch.observe(gpu, view)?;
                top_k.observe(gpu, view, first_image)?;
                Ok(())
            }),
            (LayerState::Cpu { sketch, top_k, .. }, _) => {
                let (data, shape) = host(act)?;
                sketch.observe(&data, shape)?;
                top_k.observe(&data, shape, first_image)?;
                Ok(())
            }
            _ => Err(missing_gpu()),
        }
    }

    /// A later quantile round over a batch.
    pub fn observe_quantile(
        &mut self,
        gpu: Option<&Gpu>,
        act: &Tensor<4>,
    ) -> Result<(), DissectError> {
        match (self, gpu) {
            (LayerState::Gpu { sketch, .. }, Some(gpu)) => {
                with_view(act, |view| Ok(sketch.observe(gpu, view)?))
            }
            (LayerState::Cpu { sketch, .. }, _) => {
                let (data, shape) = host(act)?;
                Ok(sketch.observe(&data, shape)?)
            }
            _ => Err(missing_gpu()),
        }
    }

    pub fn finish_round(&mut self, gpu: Option<&Gpu>) -> Result<RoundResult, DissectError> {
        match (self, gpu) {
            (LayerState::Gpu { sketch, .. }, Some(gpu)) => Ok(sketch.finish_round(gpu)?),
            (
                LayerState::Cpu {
                    sketch, thresholds, ..
                },
                _,
            ) => {
                let r = sketch.finish_round()?;
                if r == RoundResult::Done {
                    *thresholds = sketch.thresholds()?;
                }
                Ok(r)
            }
            _ => Err(missing_gpu()),
        }
    }

    /// The counting pass over a batch; `config` makes the counter's
    /// configuration for a new segmentation size from the batch's shape.
    pub fn count(
        &mut self,
        gpu: Option<&Gpu>,
        act: &Tensor<4>,
        labels: &HostLabels,
        seg: Seg,
        config: impl FnOnce([u32; 4]) -> Result<CountConfig, DissectError>,
    ) -> Result<(), DissectError> {
        match (self, gpu) {
            (
                LayerState::Gpu {
                    sketch, counters, ..
                },
                Some(gpu),
            ) => with_view(act, |view| {
                let counter = match counters.entry(seg) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(Counter::new(gpu, config(view.shape)?)?)
                    }
                };
                Ok(counter.count(gpu, view, sketch.thresholds_buffer(), labels)?)
            }),
            (
                LayerState::Cpu {
                    counters,
                    thresholds,
                    ..
                },
                _,
            ) => {
                let (data, shape) = host(act)?;
                let (cfg, total) = match counters.entry(seg) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let cfg = config(shape)?;
                        let zeros = Counts::zeros(cfg.n_units, cfg.n_labels, cfg.n_categories);
                        e.insert((cfg, zeros))
                    }
                };
                let batch = kernels::cpu::count(cfg, &data, thresholds, labels)?;
                Ok(total.merge(&batch)?)
            }
            _ => Err(missing_gpu()),
        }
    }

    pub fn top_k(&self, gpu: Option<&Gpu>) -> Result<Vec<Vec<(u32, f32)>>, DissectError> {
        match (self, gpu) {
            (LayerState::Gpu { top_k, .. }, Some(gpu)) => Ok(top_k.read(gpu)?),
            (LayerState::Cpu { top_k, .. }, _) => Ok(top_k.read()),
            _ => Err(missing_gpu()),
        }
    }

    pub fn thresholds(&self, gpu: Option<&Gpu>) -> Result<Vec<f32>, DissectError> {
        match (self, gpu) {
            (LayerState::Gpu { sketch, .. }, Some(gpu)) => Ok(sketch.read_thresholds(gpu)?),
            (LayerState::Cpu { sketch, .. }, _) => Ok(sketch.thresholds()?),
            _ => Err(missing_gpu()),
        }
    }

    /// Dataset totals, merged over segmentation sizes, into `total`.
    pub fn counts(&self, gpu: Option<&Gpu>, total: &mut Counts) -> Result<(), DissectError> {
        match (self, gpu) {
            (LayerState::Gpu { counters, .. }, Some(gpu)) => {
                for c in counters.values() {
                    total.merge(&c.read(gpu)?)?;
                }
            }
            (LayerState::Cpu { counters, .. }, _) => {
                for (_, c) in counters.values() {
                    total.merge(c)?;
                }
            }
            _ => return Err(missing_gpu()),
        }
        Ok(())
    }
}

fn missing_gpu() -> DissectError {
    DissectError::Option("internal: a device accumulator without a device".into())
}
