//! Streaming CPU twins of [`crate::QuantileSketch`] and [`crate::TopK`], for
//! the engine's CPU backend: the same radix select (three passes, 11, 11
//! and 10 bits of the order-preserving key) and the same top-k order, on
//! host activations, multi-threaded over units. Memory is independent of the
//! number of values, as on the device.

use rayon::prelude::*;

use crate::error::KernelError;
use crate::quantile::{PASSES, RoundResult, check_round, key_of, rank_from_top, value_of};

/// Digit widths of the three rounds, most significant first.
const DIGITS: [u32; 3] = [11, 11, 10];

/// Bits of the key below the digit of `round`.
fn shift(round: u32) -> u32 {
    32 - DIGITS[..=round as usize].iter().sum::<u32>()
}

/// Exact per-unit thresholds over batches of host activations (the rank
/// rule of [`crate::quantile`]).
#[derive(Debug)]
pub struct CpuQuantileSketch {
    n_units: usize,
    q: f64,
    round: u32,
    seen: u64,
    first_round_seen: Option<u64>,
    /// Per unit: the key digits chosen so far, and the rank still to find
    /// among the keys that share them.
    prefix: Vec<u32>,
    rank: Vec<u64>,
    hist: Vec<u64>,
}

impl CpuQuantileSketch {
    pub fn new(n_units: u32, q: f64) -> Result<Self, KernelError> {
        if n_units == 0 || !(0.0..=1.0).contains(&q) {
            return Err(KernelError::Config(format!(
                "quantile sketch needs units and q in [0, 1], got {n_units} units, q = {q}"
            )));
        }
        let n = n_units as usize;
        Ok(Self {
            n_units: n,
            q,
            round: 0,
            seen: 0,
            first_round_seen: None,
            prefix: vec![0; n],
            rank: vec![0; n],
            hist: vec![0; n << DIGITS[0]],
        })
    }

    /// Adds one batch `[n, units, h, w]` to the current round.
    pub fn observe(&mut self, data: &[f32], shape: [u32; 4]) -> Result<(), KernelError> {
        let [n, c, h, w] = shape.map(|v| v as usize);
        if c != self.n_units || data.len() != n * c * h * w {
            return Err(KernelError::Shape {
                what: "cpu quantile batch",
                expected: format!("[n, {}, h, w] with n*c*h*w values", self.n_units),
                got: format!("{shape:?} with {} values", data.len()),
            });
        }
        if self.round >= PASSES {
            return Err(KernelError::Rounds("observe after the last round".into()));
        }
        let plane = h * w;
        let bins = 1usize << DIGITS[self.round as usize];
        let (round, prefix) = (self.round, &self.prefix);
        let low = shift(round);
        self.hist
            .par_chunks_mut(bins)
            .enumerate()
            .for_each(|(u, hist)| {
                for b in 0..n {
                    let map = &data[(b * c + u) * plane..(b * c + u + 1) * plane];
                    for &v in map {
                        let key = key_of(v);
                        // Only keys whose higher digits match those chosen.
                        let high = if round == 0 {
                            0
                        } else {
                            key >> shift(round - 1)
                        };
                        if high == prefix[u] {
                            hist[((key >> low) as usize) & (bins - 1)] += 1;
                        }
                    }
                }
            });
        self.seen += (n * plane) as u64;
        Ok(())
    }

    /// Picks every unit's digit; says whether the same data must be fed
    /// again.
    pub fn finish_round(&mut self) -> Result<RoundResult, KernelError> {
        if check_round(self.round, self.seen, &mut self.first_round_seen)? {
            let r = rank_from_top(self.q, self.seen);
            self.rank.iter_mut().for_each(|x| *x = r);
        }
        let bits = DIGITS[self.round as usize];
        let bins = 1usize << bits;
        for u in 0..self.n_units {
            let hist = &self.hist[u * bins..(u + 1) * bins];
            let mut above = 0u64;
            let mut chosen = 0usize;
            // Walk from the highest bin down to the one holding the rank.
            for bin in (0..bins).rev() {
                chosen = bin;
                if above + hist[bin] >= self.rank[u] {
                    break;
                }
                above += hist[bin];
            }
            self.rank[u] -= above;
            self.prefix[u] = (self.prefix[u] << bits) | chosen as u32;
        }
        self.round += 1;
        self.seen = 0;
        if self.round < PASSES {
            let next = 1usize << DIGITS[self.round as usize];
            self.hist.clear();
            self.hist.resize(self.n_units * next, 0);
            Ok(RoundResult::NeedsAnotherPass)
        } else {
            Ok(RoundResult::Done)
        }
    }

    /// The thresholds, once the last round is done.
    pub fn thresholds(&self) -> Result<Vec<f32>, KernelError> {
        if self.round < PASSES {
            return Err(KernelError::Rounds(format!(
                "thresholds read after {} of {PASSES} rounds",
                self.round
            )));
        }
        Ok(self.prefix.iter().map(|&k| value_of(k)).collect())
    }
}

/// Per-unit top-k images by maximum activation over batches of host
/// activations: maximum descending, ties by lower image index.
#[derive(Debug)]
pub struct CpuTopK {
    k: usize,
    /// Per unit: `(key of the maximum, image)`, best first.
    lists: Vec<Vec<(u32, u32)>>,
}

impl CpuTopK {
    pub fn new(n_units: u32, k: u32) -> Self {
        Self {
            k: k as usize,
            lists: vec![Vec::new(); n_units as usize],
        }
    }

    /// Adds one batch `[n, units, h, w]` whose first image is `first_image`.
    pub fn observe(
        &mut self,
        data: &[f32],
        shape: [u32; 4],
        first_image: u32,
    ) -> Result<(), KernelError> {
        let [n, c, ..] = shape;
        if c as usize != self.lists.len() {
            return Err(KernelError::Shape {
                what: "cpu top-k batch units",
                expected: self.lists.len().to_string(),
                got: c.to_string(),
            });
        }
        let maxes = crate::cpu::image_max(data, shape);
        let k = self.k;
        self.lists.par_iter_mut().enumerate().for_each(|(u, list)| {
            for b in 0..n as usize {
                list.push((key_of(maxes[b * c as usize + u]), first_image + b as u32));
            }
            list.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            list.truncate(k);
        });
        Ok(())
    }

    /// `(image, max)` per unit, best first.
    pub fn read(&self) -> crate::UnitTops {
        self.lists
            .iter()
            .map(|l| l.iter().map(|&(key, i)| (i, value_of(key))).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn random_batches(
        seed: u64,
        units: u32,
        sizes: &[u32],
        hw: [u32; 2],
    ) -> Vec<(Vec<f32>, [u32; 4])> {
        let mut rng = Rng::new(seed);
        sizes
            .iter()
            .map(|&n| {
                let shape = [n, units, hw[0], hw[1]];
                let len = shape.iter().product::<u32>() as usize;
                let data = (0..len)
                    .map(|i| match i % 97 {
                        // Ties, zeros of both signs, NaN and extremes among
                        // ordinary values.
                        0 => 1.5,
                        1 => -0.0,
                        2 => f32::NAN,
                        3 => f32::MAX,
                        _ => rng.uniform(-4.0, 4.0).round_ties_even() * 0.25,
                    })
                    .collect();
                (data, shape)
            })
            .collect()
    }

    #[test]
    fn streaming_sketch_equals_a_full_sort() {
        for (seed, units, hw, q) in [
            (1, 3, [7, 7], 0.005),
            (2, 1, [1, 1], 0.5),
            (3, 5, [4, 9], 0.0),
            (4, 2, [3, 3], 1.0),
        ] {
            let batches = random_batches(seed, units, &[3, 1, 4], hw);
            let mut sketch = CpuQuantileSketch::new(units, q).unwrap();
            loop {
                for (data, shape) in &batches {
                    sketch.observe(data, *shape).unwrap();
                }
                if sketch.finish_round().unwrap() == RoundResult::Done {
                    break;
                }
            }
            let views: Vec<(&[f32], [u32; 4])> =
                batches.iter().map(|(d, s)| (d.as_slice(), *s)).collect();
            let want = crate::cpu::quantile_thresholds(&crate::cpu::values_per_unit(&views), q);
            let got = sketch.thresholds().unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn streaming_top_k_equals_the_reference() {
        let batches = random_batches(9, 4, &[2, 5, 3], [3, 2]);
        let mut top = CpuTopK::new(4, 3);
        let mut rows = Vec::new();
        let mut first = 0;
        for (data, shape) in &batches {
            top.observe(data, *shape, first).unwrap();
            let maxes = crate::cpu::image_max(data, *shape);
            for b in 0..shape[0] as usize {
                rows.push(maxes[b * 4..(b + 1) * 4].to_vec());
            }
            first += shape[0];
        }
        let got = top.read();
        let want = crate::cpu::top_k(&rows, 3);
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
    }

    #[test]
    fn misuse_is_an_error() {
        let mut s = CpuQuantileSketch::new(2, 0.1).unwrap();
        assert!(s.finish_round().is_err(), "a round with no values");
        assert!(s.observe(&[1.0; 3], [1, 3, 1, 1]).is_err(), "wrong units");
        s.observe(&[1.0, 2.0], [1, 2, 1, 1]).unwrap();
        s.finish_round().unwrap();
        s.observe(&[1.0, 2.0, 3.0, 4.0], [2, 2, 1, 1]).unwrap();
        assert!(s.finish_round().is_err(), "a round with other data");
        assert!(s.thresholds().is_err());
    }
}
