//! Exact per-unit quantile thresholds, streamed over batches by radix select on the device.
//!
//! Definition (rank rule): for unit `k`, take all `N` values of its raw maps over every image and
//! position, sorted descending `v_1 >= v_2 >= ... >= v_N` (NaN below every number, `-0.0 == +0.0`).
//! The threshold is `T_k = v_r` with `r = floor(q * N) + 1` clamped to `[1, N]`, so at most
//! `floor(q * N)` values are strictly greater than `T_k`: `P(a > T_k) <= q`, with equality up to
//! ties and the rounding of `q * N`. Returned values are canonical: `+0.0` for a zero and the quiet
//! NaN `0x7fc00000` when the rank falls on NaNs. This replaces the KLL sketch of both reference
//! implementations by an exact answer.
//!
//! Streaming: each value maps to a u32 key whose order is the order above. The key is found digit
//! by digit in exactly three passes over the data (11, 11 and 10 bits); each pass builds a
//! per-unit histogram of the next digit among the keys that match the digits chosen so far, and a
//! small kernel then picks each unit's bin on the device. Memory is `n_units * 2048` u32 counters
//! whatever `N`; only the final thresholds are ever read back.

use crate::error::KernelError;
use crate::gpu::{ActivationView, Gpu, dispatch, linear_groups, view_entry, whole};
use crate::registry::QuantileKernel;

/// The number of passes over the data a [`QuantileSketch`] needs.
pub const PASSES: u32 = 3;

const BINS: u64 = 2048;

/// What the caller does after [`QuantileSketch::finish_round`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundResult {
    /// Feed the same data again, in any batch order, then call `finish_round` again.
    NeedsAnotherPass,
    /// The thresholds are in [`QuantileSketch::thresholds_buffer`].
    Done,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) elem_offset: u32,
    pub(crate) n_elems: u32,
    pub(crate) n_units: u32,
    pub(crate) plane: u32,
    pub(crate) round: u32,
    pub(crate) pad: [u32; 3],
}

/// Streaming exact quantile of every unit (see the module docs for the definition).
#[derive(Debug)]
pub struct QuantileSketch {
    n_units: u32,
    q: f64,
    round: u32,
    /// Values per unit seen in the current round, and in the first round (every round must match).
    seen: u64,
    first_round_seen: Option<u64>,
    hist: wgpu::Buffer,
    state: wgpu::Buffer,
    thresholds: wgpu::Buffer,
}

impl QuantileSketch {
    /// A sketch for `n_units` units and upper-tail fraction `q` (0.005 in the paper), in `[0, 1]`.
    pub fn new(gpu: &Gpu, n_units: u32, q: f64) -> Result<QuantileSketch, KernelError> {
        if n_units == 0 {
            return Err(KernelError::Config(
                "quantile sketch needs at least one unit".into(),
            ));
        }
        if !(0.0..=1.0).contains(&q) {
            return Err(KernelError::Config(format!(
                "quantile {q} is outside [0, 1]"
            )));
        }
        let hist_bytes = n_units as u64 * BINS * 4;
        let max = gpu.device.limits().max_storage_buffer_binding_size;
        if hist_bytes > max {
            return Err(KernelError::Config(format!(
                "{n_units} units need a {hist_bytes}-byte histogram, above the device binding limit {max}"
            )));
        }
        Ok(QuantileSketch {
            n_units,
            q,
            round: 0,
            seen: 0,
            first_round_seen: None,
            hist: gpu.storage("quantile-hist", hist_bytes),
            state: gpu.storage("quantile-state", n_units as u64 * 8),
            thresholds: gpu.storage("quantile-thresholds", n_units as u64 * 4),
        })
    }

    /// The round in progress, from 0 to [`PASSES`]` - 1` (equal to `PASSES` once done).
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Records one batch of the current round and submits it.
    pub fn observe(&mut self, gpu: &Gpu, view: &ActivationView) -> Result<(), KernelError> {
        if self.round >= PASSES {
            return Err(KernelError::Rounds(
                "observe called after the last round finished".into(),
            ));
        }
        let [n, c, h, w] = view.shape;
        if c != self.n_units {
            return Err(KernelError::Shape {
                what: "quantile batch units",
                expected: self.n_units.to_string(),
                got: c.to_string(),
            });
        }
        let bound = view.bind(gpu)?;
        let n_elems = view.len();
        if n_elems + bound.elem_offset as u64 > u32::MAX as u64 {
            return Err(KernelError::Overflow {
                what: "quantile batch elements",
                value: n_elems,
                limit: u32::MAX as u64,
            });
        }
        let per_unit = n as u64 * h as u64 * w as u64;
        // Histogram bins are u32: a unit's total over the dataset must fit.
        if self.seen + per_unit > u32::MAX as u64 {
            return Err(KernelError::Overflow {
                what: "quantile values per unit",
                value: self.seen + per_unit,
                limit: u32::MAX as u64,
            });
        }
        self.seen += per_unit;
        let params = gpu.uniform(
            "quantile-params",
            &Params {
                elem_offset: bound.elem_offset,
                n_elems: n_elems as u32,
                n_units: self.n_units,
                plane: h * w,
                round: self.round,
                pad: [0; 3],
            },
        );
        let pipeline = gpu.pipeline(QuantileKernel::Histogram);
        gpu.record(|encoder| {
            dispatch(
                gpu,
                encoder,
                &pipeline,
                &[
                    whole(0, &params),
                    view_entry(1, view, &bound),
                    whole(2, &self.hist),
                    whole(3, &self.state),
                ],
                linear_groups(n_elems, 256),
            );
        });
        Ok(())
    }

    /// Ends the current round: picks every unit's digit on the device and says whether the caller
    /// must feed the same data again. Errors when a round saw a different number of values.
    pub fn finish_round(&mut self, gpu: &Gpu) -> Result<RoundResult, KernelError> {
        if check_round(self.round, self.seen, &mut self.first_round_seen)? {
            let rank = rank_from_top(self.q, self.seen);
            let init: Vec<u32> = (0..self.n_units)
                .flat_map(|_| [0u32, rank as u32])
                .collect();
            gpu.queue
                .write_buffer(&self.state, 0, bytemuck::cast_slice(&init));
        }
        let params = gpu.uniform(
            "quantile-params",
            &Params {
                elem_offset: 0,
                n_elems: 0,
                n_units: self.n_units,
                plane: 1,
                round: self.round,
                pad: [0; 3],
            },
        );
        let pipeline = gpu.pipeline(QuantileKernel::SelectBin);
        gpu.record(|encoder| {
            dispatch(
                gpu,
                encoder,
                &pipeline,
                &[
                    whole(0, &params),
                    whole(2, &self.hist),
                    whole(3, &self.state),
                    whole(4, &self.thresholds),
                ],
                [self.n_units.div_ceil(64), 1, 1],
            );
            encoder.clear_buffer(&self.hist, 0, None);
        });
        self.round += 1;
        self.seen = 0;
        Ok(if self.round == PASSES {
            RoundResult::Done
        } else {
            RoundResult::NeedsAnotherPass
        })
    }

    /// f32 threshold per unit, on the device (valid once `finish_round` returned `Done`).
    pub fn thresholds_buffer(&self) -> &wgpu::Buffer {
        &self.thresholds
    }

    /// Reads the thresholds back; errors before the last round finished.
    pub fn read_thresholds(&self, gpu: &Gpu) -> Result<Vec<f32>, KernelError> {
        if self.round < PASSES {
            return Err(KernelError::Rounds(format!(
                "thresholds read after {} of {PASSES} rounds",
                self.round
            )));
        }
        gpu.read_buffer(&self.thresholds, 0, self.n_units as usize)
    }
}

/// The checks both sketches make when a round ends: not past the last
/// round, some values seen, and as many as in round 0. Records round 0's
/// count; returns `true` when this was round 0 (the caller then sets up the
/// rank to find).
pub(crate) fn check_round(
    round: u32,
    seen: u64,
    first_round_seen: &mut Option<u64>,
) -> Result<bool, KernelError> {
    if round >= PASSES {
        return Err(KernelError::Rounds(
            "finish_round called after the last round".into(),
        ));
    }
    if seen == 0 {
        return Err(KernelError::Rounds(format!(
            "round {round} observed no values"
        )));
    }
    match *first_round_seen {
        None => {
            *first_round_seen = Some(seen);
            Ok(true)
        }
        Some(first) if first != seen => Err(KernelError::Rounds(format!(
            "round {round} saw {seen} values per unit but round 0 saw {first}: feed the same data every round"
        ))),
        Some(_) => Ok(false),
    }
}

/// The 1-based rank from the top of the threshold among `n` values: `floor(q * n) + 1` in `[1, n]`.
pub fn rank_from_top(q: f64, n: u64) -> u64 {
    let r = (q * n as f64).floor() as u64 + 1;
    r.clamp(1, n.max(1))
}

/// Order-preserving u32 key of a float: NaN lowest (0), `-0.0` equal to `+0.0`.
pub fn key_of(v: f32) -> u32 {
    if v.is_nan() {
        return 0;
    }
    let mut b = v.to_bits();
    if b == 0x8000_0000 {
        b = 0;
    }
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The canonical float of a key (inverse of [`key_of`] up to NaN payloads and the sign of zero).
pub fn value_of(k: u32) -> f32 {
    if k == 0 {
        f32::from_bits(0x7fc0_0000)
    } else if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7fff_ffff)
    } else {
        f32::from_bits(!k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;
    use crate::gpu::tests::gpu;
    use crate::testutil::{Rng, bits, upload_padded};

    #[test]
    fn keys_follow_float_order_with_nan_lowest() {
        let ordered = [
            f32::NAN,
            f32::NEG_INFINITY,
            f32::MIN,
            -1.0,
            -f32::MIN_POSITIVE,
            -1e-45,
            0.0,
            1e-45,
            1.0,
            f32::MAX,
            f32::INFINITY,
        ];
        let keys: Vec<u32> = ordered.iter().map(|&v| key_of(v)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:x?}");
        assert_eq!(key_of(-0.0), key_of(0.0));
        assert_eq!(
            key_of(f32::from_bits(0xffff_ffff)),
            0,
            "negative NaN is NaN too"
        );
        for v in &ordered[1..] {
            assert_eq!(value_of(key_of(*v)).to_bits(), v.to_bits());
        }
        assert_eq!(value_of(key_of(-0.0)).to_bits(), 0);
    }

    #[test]
    fn rank_rule() {
        // r = floor(q * N) + 1 clamped to [1, N].
        assert_eq!(rank_from_top(0.005, 1000), 6);
        assert_eq!(rank_from_top(0.005, 199), 1);
        assert_eq!(rank_from_top(0.0, 10), 1);
        assert_eq!(rank_from_top(1.0, 10), 10);
        // Values 1..=10, q = 0.25: floor(2.5) + 1 = 3rd largest = 8; two values (9, 10) are above it.
        let t = cpu::quantile_thresholds(&[(1..=10).map(|v| v as f32).collect()], 0.25);
        assert_eq!(t, vec![8.0]);
    }

    /// Streams `batches` (NCHW data, shape) through the sketch with all three rounds and compares
    /// the thresholds with the full-sort reference bit for bit.
    fn check(batches: &[(Vec<f32>, [u32; 4])], q: f64) {
        let gpu = gpu();
        let n_units = batches[0].1[1];
        let bufs: Vec<wgpu::Buffer> = batches
            .iter()
            .enumerate()
            .map(|(i, (d, _))| upload_padded(gpu, d, 3 + i))
            .collect();
        let mut sketch = QuantileSketch::new(gpu, n_units, q).expect("sketch");
        let mut rounds = 0;
        loop {
            // Batches in a different order each round: the result must not depend on it.
            let mut order: Vec<usize> = (0..batches.len()).collect();
            if rounds % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let view = ActivationView {
                    buffer: &bufs[i],
                    offset_bytes: 4 * (3 + i as u64),
                    shape: batches[i].1,
                };
                sketch.observe(gpu, &view).expect("observe");
            }
            rounds += 1;
            if sketch.finish_round(gpu).expect("round") == RoundResult::Done {
                break;
            }
        }
        assert_eq!(rounds, PASSES);
        let got = sketch.read_thresholds(gpu).expect("read");
        let refs: Vec<(&[f32], [u32; 4])> =
            batches.iter().map(|(d, s)| (d.as_slice(), *s)).collect();
        let want = cpu::quantile_thresholds(&cpu::values_per_unit(&refs), q);
        assert_eq!(
            bits(&got),
            bits(&want),
            "q {q}, shapes {:?}",
            batches.iter().map(|b| b.1).collect::<Vec<_>>()
        );
    }

    fn random(rng: &mut Rng, shape: [u32; 4], lo: f32, hi: f32) -> (Vec<f32>, [u32; 4]) {
        (
            rng.floats(shape.iter().product::<u32>() as usize, lo, hi),
            shape,
        )
    }

    #[test]
    fn streaming_matches_full_sort_on_awkward_shapes() {
        let mut rng = Rng::new(1);
        // 1x1 maps, one unit, several batches.
        check(
            &[
                random(&mut rng, [5, 1, 1, 1], -1.0, 1.0),
                random(&mut rng, [3, 1, 1, 1], -1.0, 1.0),
            ],
            0.2,
        );
        // 7x7 maps, three units, three batches of different sizes.
        let b: Vec<_> = [2, 1, 3]
            .iter()
            .map(|&n| random(&mut rng, [n, 3, 7, 7], -5.0, 5.0))
            .collect();
        check(&b, 0.005);
        check(&b, 0.0);
        check(&b, 1.0);
        // 2048 units, tiny maps.
        check(&[random(&mut rng, [2, 2048, 2, 3], -1.0, 1.0)], 0.1);
        // 56x56, one image, two units.
        check(&[random(&mut rng, [1, 2, 56, 56], 0.0, 3.0)], 0.005);
    }

    #[test]
    fn streaming_handles_ties_nan_signs_and_huge_values() {
        let mut rng = Rng::new(2);
        // All equal: the threshold is that value.
        check(&[(vec![0.25; 2 * 3 * 5 * 5], [2, 3, 5, 5])], 0.005);
        // Heavy ties, negative zero, NaN, infinities and extremes mixed into few distinct values.
        let pool = [
            f32::NAN,
            -0.0,
            0.0,
            1.0,
            1.0,
            1.0,
            -1.0,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-45,
            -3.5,
        ];
        let data: Vec<f32> = (0..4 * 5 * 9 * 4)
            .map(|_| pool[rng.below(pool.len() as u32) as usize])
            .collect();
        for q in [0.0, 0.01, 0.3, 0.5, 0.9, 1.0] {
            check(&[(data.clone(), [4, 5, 9, 4])], q);
        }
        // Mostly NaN: high ranks fall on NaN.
        let nan_heavy: Vec<f32> = (0..64)
            .map(|i| if i % 8 == 0 { i as f32 } else { f32::NAN })
            .collect();
        check(&[(nan_heavy, [4, 2, 2, 4])], 0.5);
        // Values equal in the top 21 bits of their key, so rounds 2 and 3 decide.
        let close: Vec<f32> = (0..3 * 7 * 7)
            .map(|_| f32::from_bits(0x3f80_0000 + rng.below(4096)))
            .collect();
        check(&[(close, [3, 1, 7, 7])], 0.05);
    }

    #[test]
    fn misuse_is_an_error() {
        let gpu = gpu();
        let buf = gpu.storage_init("q", &[1.0f32; 16]);
        let mut sketch = QuantileSketch::new(gpu, 2, 0.1).expect("sketch");
        let wrong_units = ActivationView {
            buffer: &buf,
            offset_bytes: 0,
            shape: [1, 4, 2, 2],
        };
        assert!(matches!(
            sketch.observe(gpu, &wrong_units),
            Err(KernelError::Shape { .. })
        ));
        assert!(
            matches!(sketch.finish_round(gpu), Err(KernelError::Rounds(_))),
            "empty round"
        );
        assert!(matches!(
            sketch.read_thresholds(gpu),
            Err(KernelError::Rounds(_))
        ));
        let two = ActivationView {
            buffer: &buf,
            offset_bytes: 0,
            shape: [2, 2, 2, 2],
        };
        let one = ActivationView {
            buffer: &buf,
            offset_bytes: 0,
            shape: [1, 2, 2, 2],
        };
        sketch.observe(gpu, &two).expect("observe");
        sketch.finish_round(gpu).expect("round 0");
        sketch.observe(gpu, &one).expect("observe");
        assert!(
            matches!(sketch.finish_round(gpu), Err(KernelError::Rounds(_))),
            "different data in round 1"
        );
        assert!(QuantileSketch::new(gpu, 1, 1.5).is_err());
        assert!(QuantileSketch::new(gpu, 0, 0.1).is_err());
    }
}
