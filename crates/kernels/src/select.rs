//! Exact per-unit thresholds in one pass on the device (`shaders/select.wgsl`): the device twin of
//! [`crate::CpuRankSelect`], with the same rank rule as [`crate::quantile`] and the same answer.
//!
//! A dissection knows how many values each unit will see before its first batch (images times map
//! size), so the rank `r` of the threshold is known too. Each unit keeps candidate keys above a
//! floor that rises whenever it holds `2r` of them (a workgroup per unit then selects the `r`-th
//! largest in workgroup memory and keeps `r`). Device memory: `units * (3r + B)` u32, where `B` is
//! the most values of one unit in a batch. Nothing is read back but the thresholds.

use crate::error::KernelError;
use crate::gpu::{
    ActivationView, Gpu, dispatch, dispatch_indirect, linear_groups, view_entry, whole,
};
use crate::quantile::rank_from_top;
use crate::registry::SelectKernel;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) elem_offset: u32,
    pub(crate) n_images: u32,
    pub(crate) n_units: u32,
    pub(crate) plane: u32,
    pub(crate) cap: u32,
    pub(crate) rank: u32,
    pub(crate) last: u32,
    pub(crate) group_images: u32,
}

/// Values a workgroup of `collect` takes at least: its images are `ceil(GROUP_VALUES / plane)`
/// whole maps of one unit. Fewer, larger workgroups measured faster on lavapipe, where each one
/// costs a fixed set-up (2.1e7 values/s at one map of 196 values per workgroup, 5.1e7 at 42);
/// a batch of 256 ResNet-18 layer3 maps still makes 7 x 256 workgroups for a GPU.
const GROUP_VALUES: u32 = 8192;

/// One-pass exact thresholds on the device (see the module docs).
#[derive(Debug)]
pub struct RankSelect {
    n_units: u32,
    rank: u32,
    cap: u32,
    /// Values per unit announced, seen so far, and the most in one batch.
    total: u64,
    seen: u64,
    batch_max: u64,
    done: bool,
    cand: wgpu::Buffer,
    state: wgpu::Buffer,
    scratch: wgpu::Buffer,
    thresholds: wgpu::Buffer,
    /// The units whose candidates reached `2r` in the batch (a count, then
    /// the units), and the indirect workgroup counts `compact` runs with.
    pending: wgpu::Buffer,
    compact_args: wgpu::Buffer,
}

impl RankSelect {
    /// Device bytes a select of these sizes needs (see [`RankSelect::new`]).
    pub fn bytes_needed(
        n_units: u32,
        q: f64,
        values_per_unit: u64,
        batch_values_per_unit: u64,
    ) -> u64 {
        let r = rank_from_top(q, values_per_unit);
        u64::from(n_units) * (3 * r + batch_values_per_unit) * 4
    }

    /// Thresholds at quantile `q` of `n_units` units that will each see `values_per_unit` values,
    /// at most `batch_values_per_unit` of them in one batch. Errors when the buffers exceed the
    /// device's binding limit (the caller can fall back to [`crate::QuantileSketch`]).
    pub fn new(
        gpu: &Gpu,
        n_units: u32,
        q: f64,
        values_per_unit: u64,
        batch_values_per_unit: u64,
    ) -> Result<RankSelect, KernelError> {
        Self::shard(
            gpu,
            n_units,
            q,
            values_per_unit,
            values_per_unit,
            batch_values_per_unit,
        )
    }

    /// The candidates of one shard of a run whose units each see `run_values` values,
    /// `values_per_unit` of them in this shard: the device twin of [`crate::CpuRankSelect::shard`],
    /// read with [`RankSelect::read_candidates`].
    pub fn shard(
        gpu: &Gpu,
        n_units: u32,
        q: f64,
        run_values: u64,
        values_per_unit: u64,
        batch_values_per_unit: u64,
    ) -> Result<RankSelect, KernelError> {
        if n_units == 0
            || values_per_unit == 0
            || batch_values_per_unit == 0
            || run_values < values_per_unit
            || !(0.0..=1.0).contains(&q)
        {
            return Err(KernelError::Config(format!(
                "rank select needs units, values (no more than the run's) and q in [0, 1], got \
                 {n_units} units, {values_per_unit} values of {run_values} \
                 ({batch_values_per_unit} per batch), q = {q}"
            )));
        }
        let rank = rank_from_top(q, run_values);
        // A unit never holds more keys than it sees.
        let cap =
            (2 * rank + batch_values_per_unit).min(values_per_unit.max(batch_values_per_unit));
        let max = gpu.device.limits().max_storage_buffer_binding_size;
        let cand_bytes = u64::from(n_units) * cap * 4;
        if cand_bytes > max
            || cap > u64::from(u32::MAX)
            || values_per_unit > u64::from(u32::MAX)
            // The shaders compare counts with 2r in u32.
            || 2 * rank > u64::from(u32::MAX)
        {
            return Err(KernelError::Config(format!(
                "{n_units} units need {cand_bytes} bytes of threshold candidates, above the device \
                 binding limit {max}"
            )));
        }
        let max_groups = gpu.device.limits().max_compute_workgroups_per_dimension;
        if n_units > max_groups {
            return Err(KernelError::Config(format!(
                "{n_units} units exceed the device's {max_groups} workgroups per dimension"
            )));
        }
        Ok(RankSelect {
            n_units,
            rank: rank as u32,
            cap: cap as u32,
            total: values_per_unit,
            seen: 0,
            batch_max: batch_values_per_unit,
            done: false,
            cand: gpu.storage("select-candidates", cand_bytes),
            state: gpu.storage("select-state", u64::from(n_units) * 12),
            // Compaction (the only user) needs 2r keys, so r at most what a unit sees.
            scratch: gpu.storage(
                "select-scratch",
                u64::from(n_units) * rank.min(values_per_unit) * 4,
            ),
            thresholds: gpu.storage("select-thresholds", u64::from(n_units) * 4),
            pending: gpu.storage("select-pending", (u64::from(n_units) + 1) * 4),
            compact_args: gpu.indirect_args("select-compact-args"),
        })
    }

    fn params(&self, elem_offset: u32, n_images: u32, plane: u32, last: bool) -> Params {
        Params {
            elem_offset,
            n_images,
            n_units: self.n_units,
            plane,
            cap: self.cap,
            rank: self.rank,
            last: u32::from(last),
            group_images: GROUP_VALUES.div_ceil(plane).max(1),
        }
    }

    /// Records `compact`: over every unit with `params.last`, else over the
    /// units `collect` listed, sized on the device.
    fn compact(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        params: &wgpu::Buffer,
        last: bool,
    ) {
        let entries = [
            whole(0, params),
            whole(2, &self.cand),
            whole(3, &self.state),
            whole(4, &self.scratch),
            whole(5, &self.thresholds),
            whole(6, &self.pending),
        ];
        let pipeline = gpu.pipeline(SelectKernel::Compact);
        if last {
            let groups = linear_groups(u64::from(self.n_units), 1);
            dispatch(gpu, encoder, &pipeline, &entries, groups);
            return;
        }
        dispatch(
            gpu,
            encoder,
            &gpu.pipeline(SelectKernel::CompactDispatch),
            &[whole(6, &self.pending), whole(7, &self.compact_args)],
            [1, 1, 1],
        );
        dispatch_indirect(gpu, encoder, &pipeline, &entries, &self.compact_args);
    }

    /// Adds one batch and submits it (one submission: collect, then compact).
    pub fn observe(&mut self, gpu: &Gpu, view: &ActivationView) -> Result<(), KernelError> {
        let [n, c, h, w] = view.shape;
        if c != self.n_units {
            return Err(KernelError::Shape {
                what: "rank-select batch units",
                expected: self.n_units.to_string(),
                got: c.to_string(),
            });
        }
        let per_unit = u64::from(n) * u64::from(h) * u64::from(w);
        if self.done || per_unit > self.batch_max || self.seen + per_unit > self.total {
            return Err(KernelError::Rounds(format!(
                "a batch of {per_unit} values per unit after {} of {} (at most {} per batch{})",
                self.seen,
                self.total,
                self.batch_max,
                if self.done { ", after the last" } else { "" }
            )));
        }
        let bound = view.bind(gpu)?;
        let n_elems = view.len();
        if n_elems + u64::from(bound.elem_offset) > u64::from(u32::MAX) {
            return Err(KernelError::Overflow {
                what: "rank-select batch elements",
                value: n_elems,
                limit: u64::from(u32::MAX),
            });
        }
        let params = self.params(bound.elem_offset, n, h * w, false);
        let groups = [n.div_ceil(params.group_images), self.n_units, 1];
        let max_groups = gpu.device.limits().max_compute_workgroups_per_dimension;
        if groups[0] > max_groups {
            return Err(KernelError::Overflow {
                what: "rank-select workgroups per unit of a batch",
                value: u64::from(groups[0]),
                limit: u64::from(max_groups),
            });
        }
        self.seen += per_unit;
        let params = gpu.uniform("select-params", &params);
        gpu.record(|encoder| {
            encoder.clear_buffer(&self.pending, 0, Some(4));
            dispatch(
                gpu,
                encoder,
                &gpu.pipeline(SelectKernel::Collect),
                &[
                    whole(0, &params),
                    view_entry(1, view, &bound),
                    whole(2, &self.cand),
                    whole(3, &self.state),
                    whole(6, &self.pending),
                ],
                groups,
            );
            self.compact(gpu, encoder, &params, false);
        });
        Ok(())
    }

    /// Ends the values early, after those seen so far (a stopped shard):
    /// the candidates are then those of the values seen, as a shard of
    /// just those gives.
    pub fn end_early(&mut self) {
        self.total = self.seen;
    }

    /// Selects every unit's threshold, once every announced value was observed.
    pub fn finish(&mut self, gpu: &Gpu) -> Result<(), KernelError> {
        if self.done || self.seen != self.total {
            return Err(KernelError::Rounds(format!(
                "thresholds selected after {} of {} values per unit",
                self.seen, self.total
            )));
        }
        let params = gpu.uniform("select-params", &self.params(0, 0, 1, true));
        gpu.record(|encoder| {
            self.compact(gpu, encoder, &params, true);
        });
        self.done = true;
        Ok(())
    }

    /// f32 threshold per unit, on the device (valid after [`RankSelect::finish`]).
    pub fn thresholds_buffer(&self) -> &wgpu::Buffer {
        &self.thresholds
    }

    /// Reads the thresholds back; errors before [`RankSelect::finish`].
    pub fn read_thresholds(&self, gpu: &Gpu) -> Result<Vec<f32>, KernelError> {
        if !self.done {
            return Err(KernelError::Rounds("thresholds read before finish".into()));
        }
        gpu.read_buffer(&self.thresholds, 0, self.n_units as usize)
    }

    /// The rank from the top of the threshold, 1-based.
    pub fn rank(&self) -> u64 {
        u64::from(self.rank)
    }

    /// Per unit, the `min(r, seen)` largest keys seen, descending, once every announced value
    /// was observed (and without [`RankSelect::finish`]): what
    /// [`crate::CpuRankSelect::candidates`] gives, read back from the units' candidate slices.
    pub fn read_candidates(&self, gpu: &Gpu) -> Result<Vec<Vec<u32>>, KernelError> {
        if self.done || self.seen != self.total {
            return Err(KernelError::Rounds(format!(
                "candidates read after {} of {} values per unit{}",
                self.seen,
                self.total,
                if self.done { ", after finish" } else { "" }
            )));
        }
        let units = self.n_units as usize;
        let state: Vec<u32> = gpu.read_buffer(&self.state, 0, units * 3)?;
        let cap = self.cap as usize;
        let cand: Vec<u32> = gpu.read_buffer(&self.cand, 0, units * cap)?;
        Ok((0..units)
            .map(|u| {
                let n = (state[3 * u] as usize).min(cap);
                let keys = cand[u * cap..u * cap + n].to_vec();
                crate::cpu_select::largest_descending(keys, self.rank as usize)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::tests::gpu;
    use crate::testutil::{rank_cases, upload_padded};

    #[test]
    fn random_and_adversarial_batches_match_the_full_sort() {
        let gpu = gpu();
        for case in rank_cases(31) {
            let (total, most) = case.values_per_unit();
            let mut select = RankSelect::new(gpu, case.units, case.q, total, most).unwrap();
            for (data, shape) in case.batches.iter().zip(case.shapes()) {
                let buf = upload_padded(gpu, data, 3);
                let view = ActivationView {
                    buffer: &buf,
                    offset_bytes: 12,
                    shape,
                };
                select.observe(gpu, &view).unwrap();
            }
            select.finish(gpu).unwrap();
            case.check(&select.read_thresholds(gpu).unwrap());
        }
    }

    #[test]
    fn shard_candidates_equal_the_cpu_twins() {
        let gpu = gpu();
        for case in rank_cases(32) {
            let (values, most) = case.values_per_unit();
            let shapes = case.shapes();
            let half = case.batches.len().div_ceil(2);
            let plane = u64::from(case.plane[0] * case.plane[1]);
            for range in [0..half, half..case.batches.len()] {
                if range.is_empty() {
                    continue;
                }
                let mine: u64 = shapes[range.clone()].iter().map(|s| u64::from(s[0])).sum();
                let mut dev =
                    RankSelect::shard(gpu, case.units, case.q, values, mine * plane, most).unwrap();
                let mut cpu =
                    crate::CpuRankSelect::shard(case.units, case.q, values, mine * plane).unwrap();
                for i in range {
                    let buf = upload_padded(gpu, &case.batches[i], 1);
                    let view = ActivationView {
                        buffer: &buf,
                        offset_bytes: 4,
                        shape: shapes[i],
                    };
                    dev.observe(gpu, &view).unwrap();
                    cpu.observe(&case.batches[i], shapes[i]).unwrap();
                }
                assert_eq!(dev.rank(), cpu.rank());
                assert_eq!(
                    dev.read_candidates(gpu).unwrap(),
                    cpu.candidates().unwrap(),
                    "q {}, {} units",
                    case.q,
                    case.units
                );
            }
        }
    }

    /// A select stopped early (a run stopped on request inside a part)
    /// gives the candidates of the batches it saw: on the device as on the
    /// CPU, and as a shard announced with just those values gives.
    #[test]
    fn a_select_ended_early_gives_the_candidates_of_what_it_saw() {
        let gpu = gpu();
        for case in rank_cases(33) {
            let (values, most) = case.values_per_unit();
            let shapes = case.shapes();
            let seen = case.batches.len().div_ceil(2);
            let plane = u64::from(case.plane[0] * case.plane[1]);
            let mine: u64 = shapes[..seen].iter().map(|s| u64::from(s[0])).sum();
            let mut dev = RankSelect::shard(gpu, case.units, case.q, values, values, most).unwrap();
            let mut cpu = crate::CpuRankSelect::shard(case.units, case.q, values, values).unwrap();
            let mut just =
                crate::CpuRankSelect::shard(case.units, case.q, values, mine * plane).unwrap();
            for (batch, &shape) in case.batches.iter().zip(&shapes).take(seen) {
                let buf = upload_padded(gpu, batch, 1);
                let view = ActivationView {
                    buffer: &buf,
                    offset_bytes: 4,
                    shape,
                };
                dev.observe(gpu, &view).unwrap();
                cpu.observe(batch, shape).unwrap();
                just.observe(batch, shape).unwrap();
            }
            if seen < case.batches.len() {
                assert!(cpu.candidates().is_err(), "not ended yet");
                assert!(dev.read_candidates(gpu).is_err(), "not ended yet");
            }
            dev.end_early();
            cpu.end_early();
            let want = just.candidates().unwrap();
            assert_eq!(cpu.candidates().unwrap(), want, "q {}", case.q);
            assert_eq!(dev.read_candidates(gpu).unwrap(), want, "q {}", case.q);
        }
    }

    #[test]
    fn batches_beyond_the_announcement_are_refused() {
        let gpu = gpu();
        let mut s = RankSelect::new(gpu, 1, 0.1, 8, 4).unwrap();
        let buf = upload_padded(gpu, &[1.0; 8], 0);
        let view = |n| ActivationView {
            buffer: &buf,
            offset_bytes: 0,
            shape: [n, 1, 2, 2],
        };
        assert!(
            s.observe(gpu, &view(2)).is_err(),
            "more per batch than announced"
        );
        s.observe(gpu, &view(1)).unwrap();
        assert!(s.finish(gpu).is_err(), "4 of 8 values seen");
        s.observe(gpu, &view(1)).unwrap();
        s.finish(gpu).unwrap();
        assert!(s.observe(gpu, &view(1)).is_err(), "after the last");
    }
}
