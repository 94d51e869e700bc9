//! Exact per-unit thresholds in one pass over host activations.
//!
//! The threshold of a unit is its `r`-th largest value, with
//! `r = rank_from_top(q, N)` ([`crate::quantile`]'s rule) and `N` the
//! number of values the unit will see, which a dissection knows before its
//! first batch (images times map size). So one pass can keep, per unit,
//! only the candidates that can still be among the `r` largest: every key
//! (the order-preserving [`key_of`], NaN lowest, `-0` equal to `+0`) until
//! the unit holds `2r`; then it keeps the `r` largest and their minimum
//! becomes the unit's floor, and from then on a key enters only when it is
//! above the floor. The floor only rises.
//!
//! Why this is exact: after a compaction the unit holds `r` keys, each at
//! or above the floor; every key it drops (then or later) is at or below
//! the floor. Adding keys no larger than the `r`-th largest of a set does
//! not change its `r`-th largest, so the `r`-th largest of what is kept is
//! the `r`-th largest of everything seen. Memory is at most `2r` keys per
//! unit, `8 q N` bytes.

use rayon::prelude::*;

use crate::error::KernelError;
use crate::quantile::{key_of, rank_from_top, value_of};

/// One-pass exact thresholds (see the module docs).
#[derive(Debug)]
pub struct CpuRankSelect {
    /// Values each unit will see in all.
    total: u64,
    seen: u64,
    /// The rank from the top of the threshold, 1-based.
    rank: usize,
    /// Per unit: candidate keys, and the floor once set.
    units: Vec<(Vec<u32>, Option<u32>)>,
}

impl CpuRankSelect {
    /// Thresholds at quantile `q` of `n_units` units that will each see
    /// `values_per_unit` values.
    pub fn new(n_units: u32, q: f64, values_per_unit: u64) -> Result<Self, KernelError> {
        Self::shard(n_units, q, values_per_unit, values_per_unit)
    }

    /// The candidates of one shard of a run whose units each see
    /// `run_values` values, `values_per_unit` of them in this shard: the
    /// rank is the run's, and [`CpuRankSelect::candidates`] gives the
    /// shard's share of the threshold's inputs.
    pub fn shard(
        n_units: u32,
        q: f64,
        run_values: u64,
        values_per_unit: u64,
    ) -> Result<Self, KernelError> {
        if n_units == 0
            || values_per_unit == 0
            || run_values < values_per_unit
            || !(0.0..=1.0).contains(&q)
        {
            return Err(KernelError::Config(format!(
                "rank select needs units, values (no more than the run's) and q in [0, 1], got \
                 {n_units} units, {values_per_unit} values of {run_values}, q = {q}"
            )));
        }
        let rank = usize::try_from(rank_from_top(q, run_values))
            .map_err(|_| KernelError::Config(format!("rank too large for {run_values} values")))?;
        Ok(Self {
            total: values_per_unit,
            seen: 0,
            rank,
            units: vec![(Vec::new(), None); n_units as usize],
        })
    }

    /// Starts each unit with a floor (`None`: none): only keys above it
    /// are kept. Exact where the floor is the `r`-th largest key of values
    /// seen elsewhere in the run (an earlier part's candidates holding `r`
    /// keys): a key at or below it cannot change the run's `r`-th largest,
    /// so this part's candidates then hold only what can.
    pub fn with_floors(mut self, floors: &[Option<u32>]) -> Result<Self, KernelError> {
        if floors.len() != self.units.len() {
            return Err(KernelError::Config(format!(
                "{} floors for {} units",
                floors.len(),
                self.units.len()
            )));
        }
        for ((_, floor), given) in self.units.iter_mut().zip(floors) {
            *floor = *given;
        }
        Ok(self)
    }

    /// Bytes held for candidates now.
    pub fn candidate_bytes(&self) -> usize {
        self.units.iter().map(|(keys, _)| keys.capacity() * 4).sum()
    }

    /// Adds one batch `[n, units, h, w]`.
    pub fn observe(&mut self, data: &[f32], shape: [u32; 4]) -> Result<(), KernelError> {
        let [n, c, h, w] = shape.map(|v| v as usize);
        if c != self.units.len() || data.len() != n * c * h * w {
            return Err(KernelError::Shape {
                what: "cpu rank-select batch",
                expected: format!("[n, {}, h, w] with n*c*h*w values", self.units.len()),
                got: format!("{shape:?} with {} values", data.len()),
            });
        }
        let plane = h * w;
        let seen = self.seen + (n * plane) as u64;
        if seen > self.total {
            return Err(KernelError::Rounds(format!(
                "{seen} values per unit observed, more than the {} announced",
                self.total
            )));
        }
        let r = self.rank;
        self.units
            .par_iter_mut()
            .enumerate()
            .for_each(|(u, (keys, floor))| {
                for b in 0..n {
                    let map = &data[(b * c + u) * plane..(b * c + u + 1) * plane];
                    match *floor {
                        Some(f) => keys.extend(map.iter().map(|&v| key_of(v)).filter(|&k| k > f)),
                        None => keys.extend(map.iter().map(|&v| key_of(v))),
                    }
                    if keys.len() >= 2 * r {
                        *floor = Some(keep_largest(keys, r));
                    }
                }
            });
        self.seen = seen;
        Ok(())
    }

    /// The thresholds, once every announced value has been observed.
    pub fn thresholds(&self) -> Result<Vec<f32>, KernelError> {
        self.check_done("thresholds")?;
        let r = self.rank;
        if self.units.iter().any(|(keys, _)| keys.len() < r) {
            return Err(KernelError::Rounds(format!(
                "a shard's select has fewer than the rank's {r} values: merge its candidates"
            )));
        }
        Ok(self
            .units
            .par_iter()
            .map(|(keys, _)| {
                let mut keys = keys.clone();
                value_of(keep_largest(&mut keys, r))
            })
            .collect())
    }
}

impl CpuRankSelect {
    /// The rank from the top of the threshold, 1-based.
    pub fn rank(&self) -> u64 {
        self.rank as u64
    }

    /// Per unit, the `min(r, seen)` largest keys seen, descending: the
    /// only values of this shard that can be among any unit's `r` largest
    /// over the whole run, so the `r`-th largest of every shard's
    /// candidates together is the run's threshold ([`threshold_of`]).
    pub fn candidates(&self) -> Result<Vec<Vec<u32>>, KernelError> {
        self.check_done("candidates")?;
        let r = self.rank;
        Ok(self
            .units
            .par_iter()
            .map(|(keys, _)| largest_descending(keys.clone(), r))
            .collect())
    }

    /// Ends the values early, after those seen so far (a stopped shard):
    /// the candidates are then those of the values seen, as a shard of
    /// just those gives.
    pub fn end_early(&mut self) {
        self.total = self.seen;
    }

    fn check_done(&self, what: &str) -> Result<(), KernelError> {
        if self.seen != self.total {
            return Err(KernelError::Rounds(format!(
                "{what} read after {} of {} values per unit",
                self.seen, self.total
            )));
        }
        Ok(())
    }
}

/// The `r` largest of `keys` (all of them when fewer), descending.
pub fn largest_descending(mut keys: Vec<u32>, r: usize) -> Vec<u32> {
    if keys.len() > r && r > 0 {
        keep_largest(&mut keys, r);
    }
    keys.truncate(r);
    keys.sort_unstable_by(|a, b| b.cmp(a));
    keys
}

/// The threshold of a unit from the candidates of every shard (each
/// descending, from [`CpuRankSelect::candidates`] or its device twin): the
/// `rank`-th largest of them all, or `None` when they hold fewer keys.
pub fn threshold_of(shards: &[&[u32]], rank: u64) -> Option<f32> {
    let mut all: Vec<u32> = shards.iter().flat_map(|s| s.iter().copied()).collect();
    let r = usize::try_from(rank).ok()?;
    if r == 0 || all.len() < r {
        return None;
    }
    Some(value_of(keep_largest(&mut all, r)))
}

/// Keeps the `r` largest of `keys` (at least `r` of them) and returns the
/// smallest kept, the `r`-th largest.
fn keep_largest(keys: &mut Vec<u32>, r: usize) -> u32 {
    let (_, &mut nth, _) = keys.select_nth_unstable_by(r - 1, |a, b| b.cmp(a));
    keys.truncate(r);
    nth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::rank_cases;

    #[test]
    fn random_and_adversarial_batches_match_the_full_sort() {
        for case in rank_cases(21) {
            let (values, _) = case.values_per_unit();
            let mut select = CpuRankSelect::new(case.units, case.q, values).unwrap();
            for (data, shape) in case.batches.iter().zip(case.shapes()) {
                select.observe(data, shape).unwrap();
            }
            case.check(&select.thresholds().unwrap());
        }
    }

    #[test]
    fn shard_candidates_merge_to_the_full_sort() {
        for case in rank_cases(22) {
            let (values, _) = case.values_per_unit();
            let shapes = case.shapes();
            // Uneven shards of the batches: one batch, then the rest in
            // two, with the run's rank in each.
            let n = case.batches.len();
            let cuts = [0, 1.min(n), n.div_ceil(2), n];
            let mut shards = Vec::new();
            for w in cuts.windows(2) {
                if w[0] == w[1] {
                    continue;
                }
                let plane = u64::from(case.plane[0] * case.plane[1]);
                let mine: u64 = shapes[w[0]..w[1]].iter().map(|s| u64::from(s[0])).sum();
                let mut s = CpuRankSelect::shard(case.units, case.q, values, mine * plane).unwrap();
                for (data, &shape) in case.batches[w[0]..w[1]].iter().zip(&shapes[w[0]..w[1]]) {
                    s.observe(data, shape).unwrap();
                }
                assert_eq!(s.rank(), rank_from_top(case.q, values));
                shards.push(s.candidates().unwrap());
            }
            let rank = rank_from_top(case.q, values);
            let got: Vec<f32> = (0..case.units as usize)
                .map(|u| {
                    let lists: Vec<&[u32]> = shards.iter().map(|s| s[u].as_slice()).collect();
                    threshold_of(&lists, rank).unwrap()
                })
                .collect();
            case.check(&got);
        }
    }

    /// As a resumable run takes its parts: each part starts from the floors
    /// of the candidates joined so far, which stay exact and small.
    #[test]
    fn parts_floored_by_the_candidates_so_far_merge_to_the_full_sort() {
        for case in rank_cases(23) {
            let (values, _) = case.values_per_unit();
            let shapes = case.shapes();
            let plane = u64::from(case.plane[0] * case.plane[1]);
            let rank = rank_from_top(case.q, values);
            let units = case.units as usize;
            let mut so_far: Vec<Vec<u32>> = vec![Vec::new(); units];
            for (data, &shape) in case.batches.iter().zip(&shapes) {
                let floors: Vec<Option<u32>> = (so_far.iter())
                    .map(|k| {
                        (k.len() as u64 >= rank)
                            .then(|| k.last().copied())
                            .flatten()
                    })
                    .collect();
                let mine = u64::from(shape[0]) * plane;
                let s = CpuRankSelect::shard(case.units, case.q, values, mine).unwrap();
                let mut s = s.with_floors(&floors).unwrap();
                s.observe(data, shape).unwrap();
                let part = s.candidates().unwrap();
                for (u, (keys, new)) in so_far.iter_mut().zip(part).enumerate() {
                    if let Some(f) = floors[u] {
                        assert!(
                            new.iter().all(|&k| k > f),
                            "unit {u}: a key at or below the floor"
                        );
                    }
                    let mut all = std::mem::take(keys);
                    all.extend(new);
                    *keys = largest_descending(all, rank as usize);
                }
            }
            let got: Vec<f32> = (so_far.iter())
                .map(|k| threshold_of(&[k.as_slice()], rank).unwrap())
                .collect();
            case.check(&got);
        }
        let s = CpuRankSelect::shard(2, 0.1, 10, 10).unwrap();
        assert!(s.with_floors(&[None]).is_err(), "one floor per unit");
    }

    #[test]
    fn counts_are_checked() {
        let mut s = CpuRankSelect::new(1, 0.1, 8).unwrap();
        assert!(s.thresholds().is_err(), "nothing seen yet");
        s.observe(&[1.0; 4], [1, 1, 2, 2]).unwrap();
        assert!(
            s.observe(&[1.0; 8], [2, 1, 2, 2]).is_err(),
            "more than announced"
        );
        assert!(s.observe(&[1.0; 3], [1, 1, 2, 2]).is_err(), "wrong shape");
        assert!(CpuRankSelect::new(0, 0.1, 8).is_err());
        assert!(CpuRankSelect::new(1, 0.1, 0).is_err());
        assert!(
            CpuRankSelect::shard(1, 0.1, 4, 8).is_err(),
            "more than the run"
        );
        let mut small = CpuRankSelect::shard(1, 0.5, 100, 4).unwrap();
        small.observe(&[4.0, 1.0, 3.0, 2.0], [1, 1, 2, 2]).unwrap();
        assert!(small.thresholds().is_err(), "4 values for rank 51");
        let keys = small.candidates().unwrap();
        assert_eq!(keys[0], [4.0, 3.0, 2.0, 1.0].map(key_of));
        assert_eq!(threshold_of(&[&keys[0]], 51), None);
    }
}
