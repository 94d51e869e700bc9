//! `Counts`: the dataset totals of a count, and how shards of them add up.

use crate::error::KernelError;

/// Dataset totals of a count (see [`crate::count`] for the definitions); matrices are unit-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub n_units: u32,
    pub n_labels: u32,
    pub n_categories: u32,
    /// `[unit * n_labels + label]`
    pub intersect: Vec<u64>,
    /// `[label]`
    pub label_pixels: Vec<u64>,
    /// `[unit]`
    pub unit_pixels: Vec<u64>,
    /// `[unit * n_categories + category]`
    pub unit_category_original: Vec<u64>,
    /// `[unit * n_categories + category]`
    pub unit_category_lite: Vec<u64>,
}

impl Counts {
    /// All-zero counts of the given dimensions.
    pub fn zeros(n_units: u32, n_labels: u32, n_categories: u32) -> Counts {
        let (u, l, c) = (n_units as usize, n_labels as usize, n_categories as usize);
        Counts {
            n_units,
            n_labels,
            n_categories,
            intersect: vec![0; u * l],
            label_pixels: vec![0; l],
            unit_pixels: vec![0; u],
            unit_category_original: vec![0; u * c],
            unit_category_lite: vec![0; u * c],
        }
    }

    /// Adds `other` (for example another shard of the dataset); dimensions must match.
    pub fn merge(&mut self, other: &Counts) -> Result<(), KernelError> {
        let dims = |c: &Counts| {
            format!(
                "{} units, {} labels, {} categories",
                c.n_units, c.n_labels, c.n_categories
            )
        };
        if (self.n_units, self.n_labels, self.n_categories)
            != (other.n_units, other.n_labels, other.n_categories)
        {
            return Err(KernelError::Shape {
                what: "counts merge",
                expected: dims(self),
                got: dims(other),
            });
        }
        let add = |a: &mut Vec<u64>, b: &Vec<u64>| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.intersect, &other.intersect);
        add(&mut self.label_pixels, &other.label_pixels);
        add(&mut self.unit_pixels, &other.unit_pixels);
        add(
            &mut self.unit_category_original,
            &other.unit_category_original,
        );
        add(&mut self.unit_category_lite, &other.unit_category_lite);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_counts_of_other_dimensions_is_an_error() {
        let mut a = Counts::zeros(1, 2, 3);
        assert!(a.merge(&Counts::zeros(1, 3, 3)).is_err());
    }
}
