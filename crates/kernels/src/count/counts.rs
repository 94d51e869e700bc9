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
    /// The moments the significance null needs (see [`crate::count`], "Moments").
    pub moments: Moments,
}

/// The per-block sums and Gram matrices of the masks, for the significance null of
/// `dissect::significance` (definitions in [`crate::count`], "Moments").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Moments {
    /// The seg grid of one image, `[sh, sw]` (`[0, 0]` before anything is counted; then every
    /// list is empty).
    pub seg: [u32; 2],
    /// The block grid `[rows, columns]` (see [`Moments::grid_of`]).
    pub grid: [u32; 2],
    /// Images counted.
    pub images: u64,
    /// `[unit * blocks + block]`: the unit's masked pixels in the block, over all images.
    pub unit_blocks: Vec<u64>,
    /// `[unit * triangle + pair]`: over all images, the product of the unit's masked pixels in
    /// two blocks, for each pair of blocks `b <= b'` (`blocks::triangle_index`).
    pub unit_gram: Vec<u64>,
    /// `[unit]`: the unit's most masked pixels in one image.
    pub unit_max: Vec<u64>,
    /// `[label * blocks + block]`: the label's pixels in the block, over all images.
    pub label_blocks: Vec<u64>,
    /// `[label * triangle + pair]`: the same products of the label's pixels.
    pub label_gram: Vec<u64>,
    /// `[label]`: the label's most pixels in one image.
    pub label_max: Vec<u64>,
    /// `[label]`: the most layers that carry the label in one image (its
    /// planes there, and 1 if it is also an image-level label): how many
    /// times one masked pixel can count in the label's intersection.
    pub label_layers: Vec<u64>,
}

/// The most blocks along either axis of the grid.
pub const GRID_MAX: u32 = 7;

impl Moments {
    /// The block grid of a `h x w` feature map on a `sh x sw` seg grid: the feature grid, at
    /// most [`GRID_MAX`] blocks along an axis and at most one block per seg pixel.
    pub fn grid_of(h: u32, w: u32, sh: u32, sw: u32) -> [u32; 2] {
        [h.min(sh).min(GRID_MAX), w.min(sw).min(GRID_MAX)]
    }

    /// Blocks of one image.
    pub fn blocks(&self) -> usize {
        self.grid[0] as usize * self.grid[1] as usize
    }

    /// Entries of one Gram triangle.
    pub fn triangle(&self) -> usize {
        super::blocks::triangle_len(self.blocks())
    }

    /// Seg pixels of one image (0 before anything is counted).
    pub fn seg_pixels(&self) -> u64 {
        u64::from(self.seg[0]) * u64::from(self.seg[1])
    }

    /// The pixels of each block.
    pub fn block_sizes(&self) -> Vec<u64> {
        let mut sizes = vec![0u64; self.blocks()];
        for b in super::blocks::block_of_pixels(self.seg[0], self.seg[1], self.grid) {
            sizes[b as usize] += 1;
        }
        sizes
    }

    /// Empty moments of a geometry, sized for the given dimensions.
    pub(crate) fn sized(n_units: u32, n_labels: u32, seg: [u32; 2], grid: [u32; 2]) -> Moments {
        let (u, l) = (n_units as usize, n_labels as usize);
        let b = grid[0] as usize * grid[1] as usize;
        let t = super::blocks::triangle_len(b);
        Moments {
            seg,
            grid,
            images: 0,
            unit_blocks: vec![0; u * b],
            unit_gram: vec![0; u * t],
            unit_max: vec![0; u],
            label_blocks: vec![0; l * b],
            label_gram: vec![0; l * t],
            label_max: vec![0; l],
            label_layers: vec![0; l],
        }
    }

    /// Adds `other`: moments of nothing counted take the other's; otherwise the geometries
    /// must agree. Nothing is added on an error.
    pub(crate) fn merge(&mut self, other: &Moments) -> Result<(), KernelError> {
        if other.seg_pixels() == 0 {
            return Ok(());
        }
        if self.seg_pixels() == 0 {
            *self = other.clone();
            return Ok(());
        }
        self.check_geometry(other)?;
        self.images += other.images;
        add(&mut self.unit_blocks, &other.unit_blocks);
        add(&mut self.unit_gram, &other.unit_gram);
        add(&mut self.label_blocks, &other.label_blocks);
        add(&mut self.label_gram, &other.label_gram);
        let max =
            |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x = (*x).max(*y));
        max(&mut self.unit_max, &other.unit_max);
        max(&mut self.label_max, &other.label_max);
        max(&mut self.label_layers, &other.label_layers);
        Ok(())
    }

    /// Errors unless both counted the same geometry (or one counted nothing).
    pub(crate) fn check_geometry(&self, other: &Moments) -> Result<(), KernelError> {
        let geometry = |m: &Moments| (m.seg, m.grid);
        if self.seg_pixels() != 0 && other.seg_pixels() != 0 && geometry(self) != geometry(other) {
            return Err(KernelError::Shape {
                what: "counts merge (seg grid, block grid)",
                expected: format!("{:?}", geometry(self)),
                got: format!("{:?}", geometry(other)),
            });
        }
        Ok(())
    }
}

fn add(a: &mut [u64], b: &[u64]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y)
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
            moments: Moments::default(),
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
        self.moments.check_geometry(&other.moments)?;
        add(&mut self.intersect, &other.intersect);
        add(&mut self.label_pixels, &other.label_pixels);
        add(&mut self.unit_pixels, &other.unit_pixels);
        add(
            &mut self.unit_category_original,
            &other.unit_category_original,
        );
        add(&mut self.unit_category_lite, &other.unit_category_lite);
        self.moments.merge(&other.moments)
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
