//! The per-layer accumulators of a run, behind one trait: on the device
//! (WGSL kernels over Burn's buffers, nothing read back but results) or on
//! the host (the kernels' multi-threaded CPU twins over activations of
//! Burn's CPU backend). The backend is chosen once, when the engine is
//! made; the run drives either through [`Accumulator`], so the two share
//! every step but the arithmetic.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use burn::tensor::Tensor;
use kernels::{
    ActivationView, CountConfig, Counter, Counts, CpuRankSelect, CpuTopK, Gpu, HostLabels,
    QuantileSketch, RankSelect, RoundResult, TopK, UnitTops,
};
use models::gpu;

use crate::DissectError;

/// Segmentation size `(sh, sw)`: one counter per size a dataset mixes.
pub(crate) type Seg = (u32, u32);

/// Makes the counter's configuration for a new segmentation size from the
/// activations' shape.
pub(crate) type ConfigFn<'a> = dyn Fn([u32; 4]) -> Result<CountConfig, DissectError> + 'a;

/// What the counting pass knows of a batch besides the activations.
pub(crate) struct CountBatch<'a> {
    pub labels: &'a HostLabels,
    pub seg: Seg,
    pub config: &'a ConfigFn<'a>,
}

/// What a pass does to one layer's accumulators.
pub(crate) trait Accumulator: std::fmt::Debug {
    /// First pass over a batch: quantile round 0 and top-k.
    fn observe_first(&mut self, act: &Tensor<4>, first_image: u32) -> Result<(), DissectError>;
    /// A later quantile round over a batch.
    fn observe_quantile(&mut self, act: &Tensor<4>) -> Result<(), DissectError>;
    /// Ends a quantile round over the whole dataset.
    fn finish_round(&mut self) -> Result<RoundResult, DissectError>;
    /// The counting pass over a batch.
    fn count(&mut self, act: &Tensor<4>, batch: &CountBatch<'_>) -> Result<(), DissectError>;
    /// Per unit, the top images and their maxima.
    fn top_k(&self) -> Result<UnitTops, DissectError>;
    fn thresholds(&self) -> Result<Vec<f32>, DissectError>;
    /// Dataset totals, merged over segmentation sizes, into `total`.
    fn counts(&self, total: &mut Counts) -> Result<(), DissectError>;
    /// Passes over the data the thresholds take.
    fn threshold_passes(&self) -> u32;
    /// Per unit, the largest keys seen (at most the rank's number),
    /// descending: a shard's share of the thresholds (see
    /// [`crate::shard`]). Only for [`Thresholding::Shard`].
    fn candidates(&self) -> Result<Vec<Vec<u32>>, DissectError>;
    /// Ends the threshold pass early, after the batches observed so far (a
    /// run stopped on request): [`Accumulator::candidates`] then gives
    /// those of the images observed.
    fn end_early(&mut self);
}

/// Where a layer's thresholds come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Thresholding<'a> {
    /// Selected from the values this run sees, `values_per_unit` per unit.
    Select,
    /// This run is a shard of one whose units each see `run_values`
    /// values: keep the candidates, select nothing. On the host, `floors`
    /// (per unit, where an earlier part of the run already holds the
    /// rank's number of keys: the smallest of them) leave out what cannot
    /// change the thresholds.
    Shard {
        run_values: u64,
        floors: Option<&'a [Option<u32>]>,
    },
    /// Given (merged from a sharded run's candidates): no select at all.
    Given(&'a [f32]),
}

/// Where accumulators live; picked once per engine.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Device(Arc<Gpu>),
    Host,
}

impl Backend {
    /// The accumulators of a layer of `units` units, each of which will see
    /// `values_per_unit` activations in a pass, at most `batch_values` in
    /// one batch. On the device the thresholds take one pass where the
    /// candidates fit the binding limit, else three radix rounds.
    pub fn accumulator(
        &self,
        units: u32,
        q: f64,
        k: u32,
        values_per_unit: u64,
        batch_values: u64,
        thresholding: Thresholding<'_>,
    ) -> Result<Box<dyn Accumulator>, DissectError> {
        if let Thresholding::Given(t) = thresholding
            && t.len() != units as usize
        {
            return Err(DissectError::Internal(format!(
                "{} thresholds given for {units} units",
                t.len()
            )));
        }
        Ok(match self {
            Backend::Device(gpu) => {
                let thresholds = match thresholding {
                    Thresholding::Select => {
                        match RankSelect::new(gpu, units, q, values_per_unit, batch_values) {
                            Ok(select) => DeviceThresholds::OnePass(select),
                            Err(_) => DeviceThresholds::Radix(QuantileSketch::new(gpu, units, q)?),
                        }
                    }
                    Thresholding::Shard { run_values, .. } => DeviceThresholds::OnePass(
                        RankSelect::shard(gpu, units, q, run_values, values_per_unit, batch_values)
                            .map_err(|e| {
                                DissectError::Usage(format!(
                                    "a shard keeps the run's threshold candidates on the device \
                                     in one pass, and here they do not fit ({e}); how many follows \
                                     from the whole run, not the shard: run this layer's shards \
                                     with --backend cpu, or dissect it unsharded"
                                ))
                            })?,
                    ),
                    Thresholding::Given(t) => {
                        DeviceThresholds::Given(gpu.upload("given-thresholds", t), t.to_vec())
                    }
                };
                Box::new(DeviceLayer {
                    thresholds,
                    // No top images asked for: nothing to keep.
                    top_k: if k == 0 {
                        None
                    } else {
                        Some(TopK::new(gpu, units, k)?)
                    },
                    units,
                    counters: BTreeMap::new(),
                    gpu: gpu.clone(),
                })
            }
            Backend::Host => {
                let (select, thresholds) = match thresholding {
                    Thresholding::Select => (
                        Some(CpuRankSelect::new(units, q, values_per_unit)?),
                        Vec::new(),
                    ),
                    Thresholding::Shard { run_values, floors } => {
                        let select = CpuRankSelect::shard(units, q, run_values, values_per_unit)?;
                        let select = match floors {
                            Some(f) => select.with_floors(f)?,
                            None => select,
                        };
                        (Some(select), Vec::new())
                    }
                    Thresholding::Given(t) => (None, t.to_vec()),
                };
                Box::new(HostLayer {
                    select,
                    top_k: CpuTopK::new(units, k),
                    counters: BTreeMap::new(),
                    thresholds,
                })
            }
        })
    }
}

/// How a device layer finds its thresholds.
#[derive(Debug)]
enum DeviceThresholds {
    OnePass(RankSelect),
    Radix(QuantileSketch),
    /// Uploaded from the host.
    Given(gpu::wgpu::Buffer, Vec<f32>),
}

impl DeviceThresholds {
    fn buffer(&self) -> &gpu::wgpu::Buffer {
        match self {
            DeviceThresholds::OnePass(s) => s.thresholds_buffer(),
            DeviceThresholds::Radix(s) => s.thresholds_buffer(),
            DeviceThresholds::Given(b, _) => b,
        }
    }
}

/// A layer's accumulators on the device.
#[derive(Debug)]
struct DeviceLayer {
    gpu: Arc<Gpu>,
    thresholds: DeviceThresholds,
    top_k: Option<TopK>,
    units: u32,
    counters: BTreeMap<Seg, Counter>,
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

impl Accumulator for DeviceLayer {
    fn observe_first(&mut self, act: &Tensor<4>, first_image: u32) -> Result<(), DissectError> {
        with_view(act, |view| {
            match &mut self.thresholds {
                DeviceThresholds::OnePass(s) => s.observe(&self.gpu, view)?,
                DeviceThresholds::Radix(s) => s.observe(&self.gpu, view)?,
                DeviceThresholds::Given(..) => return Err(given()),
            }
            if let Some(top_k) = &mut self.top_k {
                top_k.observe(&self.gpu, view, first_image)?;
            }
            Ok(())
        })
    }

    fn observe_quantile(&mut self, act: &Tensor<4>) -> Result<(), DissectError> {
        match &mut self.thresholds {
            DeviceThresholds::Radix(s) => with_view(act, |view| Ok(s.observe(&self.gpu, view)?)),
            DeviceThresholds::OnePass(_) => Err(one_pass()),
            DeviceThresholds::Given(..) => Err(given()),
        }
    }

    fn finish_round(&mut self) -> Result<RoundResult, DissectError> {
        match &mut self.thresholds {
            DeviceThresholds::OnePass(s) => {
                s.finish(&self.gpu)?;
                Ok(RoundResult::Done)
            }
            DeviceThresholds::Radix(s) => Ok(s.finish_round(&self.gpu)?),
            DeviceThresholds::Given(..) => Ok(RoundResult::Done),
        }
    }

    fn count(&mut self, act: &Tensor<4>, batch: &CountBatch<'_>) -> Result<(), DissectError> {
        with_view(act, |view| {
            let counter = match self.counters.entry(batch.seg) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(Counter::new(&self.gpu, (batch.config)(view.shape)?)?),
            };
            let thresholds = self.thresholds.buffer();
            Ok(counter.count(&self.gpu, view, thresholds, batch.labels)?)
        })
    }

    fn top_k(&self) -> Result<UnitTops, DissectError> {
        match &self.top_k {
            Some(top_k) => Ok(top_k.read(&self.gpu)?),
            None => Ok(vec![Vec::new(); self.units as usize]),
        }
    }

    fn thresholds(&self) -> Result<Vec<f32>, DissectError> {
        Ok(match &self.thresholds {
            DeviceThresholds::OnePass(s) => s.read_thresholds(&self.gpu)?,
            DeviceThresholds::Radix(s) => s.read_thresholds(&self.gpu)?,
            DeviceThresholds::Given(_, t) => t.clone(),
        })
    }

    fn counts(&self, total: &mut Counts) -> Result<(), DissectError> {
        for c in self.counters.values() {
            total.merge(&c.read(&self.gpu)?)?;
        }
        Ok(())
    }

    fn threshold_passes(&self) -> u32 {
        match self.thresholds {
            DeviceThresholds::OnePass(_) | DeviceThresholds::Given(..) => 1,
            DeviceThresholds::Radix(_) => kernels::quantile::PASSES,
        }
    }

    fn candidates(&self) -> Result<Vec<Vec<u32>>, DissectError> {
        match &self.thresholds {
            DeviceThresholds::OnePass(s) => Ok(s.read_candidates(&self.gpu)?),
            _ => Err(DissectError::Internal("no candidates kept".into())),
        }
    }

    fn end_early(&mut self) {
        if let DeviceThresholds::OnePass(s) = &mut self.thresholds {
            s.end_early();
        }
    }
}

/// A layer's accumulators on the host: the thresholds in one pass.
#[derive(Debug)]
struct HostLayer {
    /// `None` when the thresholds are given.
    select: Option<CpuRankSelect>,
    top_k: CpuTopK,
    counters: BTreeMap<Seg, (CountConfig, Counts)>,
    /// Set when the threshold pass is done.
    thresholds: Vec<f32>,
}

/// A layer's activations as the host path needs them.
pub(crate) fn host(act: &Tensor<4>) -> Result<(Vec<f32>, [u32; 4]), DissectError> {
    let d = act.dims();
    let data = act
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| DissectError::Internal(format!("activations are not f32: {e:?}")))?;
    Ok((data, [d[0] as u32, d[1] as u32, d[2] as u32, d[3] as u32]))
}

impl Accumulator for HostLayer {
    fn observe_first(&mut self, act: &Tensor<4>, first_image: u32) -> Result<(), DissectError> {
        let (data, shape) = host(act)?;
        self.select
            .as_mut()
            .ok_or_else(given)?
            .observe(&data, shape)?;
        self.top_k.observe(&data, shape, first_image)?;
        Ok(())
    }

    fn observe_quantile(&mut self, _act: &Tensor<4>) -> Result<(), DissectError> {
        Err(one_pass())
    }

    fn finish_round(&mut self) -> Result<RoundResult, DissectError> {
        if let Some(select) = &self.select {
            self.thresholds = select.thresholds()?;
        }
        Ok(RoundResult::Done)
    }

    fn count(&mut self, act: &Tensor<4>, batch: &CountBatch<'_>) -> Result<(), DissectError> {
        let (data, shape) = host(act)?;
        let (cfg, total) = match self.counters.entry(batch.seg) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let cfg = (batch.config)(shape)?;
                let zeros = Counts::zeros(cfg.n_units, cfg.n_labels, cfg.n_categories);
                e.insert((cfg, zeros))
            }
        };
        let counts = kernels::cpu::count(cfg, &data, &self.thresholds, batch.labels)?;
        Ok(total.merge(&counts)?)
    }

    fn top_k(&self) -> Result<UnitTops, DissectError> {
        Ok(self.top_k.read())
    }

    fn thresholds(&self) -> Result<Vec<f32>, DissectError> {
        Ok(self.thresholds.clone())
    }

    fn counts(&self, total: &mut Counts) -> Result<(), DissectError> {
        for (_, c) in self.counters.values() {
            total.merge(c)?;
        }
        Ok(())
    }

    fn threshold_passes(&self) -> u32 {
        1
    }

    fn candidates(&self) -> Result<Vec<Vec<u32>>, DissectError> {
        Ok(self.select.as_ref().ok_or_else(given)?.candidates()?)
    }

    fn end_early(&mut self) {
        if let Some(select) = &mut self.select {
            select.end_early();
        }
    }
}

fn one_pass() -> DissectError {
    DissectError::Internal("one-pass thresholds have no refine round".into())
}

fn given() -> DissectError {
    DissectError::Internal("given thresholds are not selected".into())
}
