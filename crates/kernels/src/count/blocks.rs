//! The block grid of the significance moments (see [`crate::count`], "Moments"): which block a
//! seg pixel is in, and the upper triangle of a Gram matrix of per-block counts.

/// The block of every seg pixel of a `sh x sw` grid, row-major, on a `grid` of blocks:
/// pixel `(y, x)` is in block `(y * rows / sh, x * cols / sw)`.
pub(crate) fn block_of_pixels(sh: u32, sw: u32, grid: [u32; 2]) -> Vec<u32> {
    let (sh, sw) = (sh as usize, sw as usize);
    let (rows, cols) = (grid[0] as usize, grid[1] as usize);
    (0..sh * sw)
        .map(|p| ((p / sw * rows / sh) * cols + p % sw * cols / sw) as u32)
        .collect()
}

/// Entries of the upper triangle (diagonal included) of a Gram matrix of `blocks` blocks.
pub fn triangle_len(blocks: usize) -> usize {
    blocks * (blocks + 1) / 2
}

/// Where blocks `b <= b2` sit in the upper triangle of `blocks` blocks, row by row (the
/// shader's `triangle_index`).
pub fn triangle_index(b: usize, b2: usize, blocks: usize) -> usize {
    b * (2 * blocks - b + 1) / 2 + (b2 - b)
}

/// Adds the per-block counts `nonzero` (block, count; each block once, in increasing block
/// order) to `sums` and their outer product's upper triangle to `gram`.
pub(crate) fn add_gram(blocks: usize, nonzero: &[(u32, u64)], sums: &mut [u64], gram: &mut [u64]) {
    for (i, &(b, cb)) in nonzero.iter().enumerate() {
        sums[b as usize] += cb;
        for &(b2, cb2) in &nonzero[i..] {
            gram[triangle_index(b as usize, b2 as usize, blocks)] += cb * cb2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cut_the_seg_grid_evenly() {
        // 4x6 pixels on 2x2 blocks: 2 rows by 3 columns each.
        let b = block_of_pixels(4, 6, [2, 2]);
        assert_eq!(&b[..6], &[0, 0, 0, 1, 1, 1]);
        assert_eq!(b[23], 3);
        // 5 pixels on 2 blocks: 3 and 2 (rows of y * 2 / 5).
        let b = block_of_pixels(5, 1, [2, 1]);
        assert_eq!(b, vec![0, 0, 0, 1, 1]);
    }

    #[test]
    fn the_triangle_is_numbered_row_by_row() {
        let blocks = 4;
        let mut want = 0;
        for b in 0..blocks {
            for b2 in b..blocks {
                assert_eq!(triangle_index(b, b2, blocks), want);
                want += 1;
            }
        }
        assert_eq!(want, triangle_len(blocks));
    }

    #[test]
    fn gram_adds_the_outer_product() {
        // Blocks 0 (count 2) and 2 (count 3) of 3: the triangle is
        // (0,0) (0,1) (0,2) (1,1) (1,2) (2,2).
        let (mut sums, mut gram) = (vec![0; 3], vec![0; 6]);
        add_gram(3, &[(0, 2), (2, 3)], &mut sums, &mut gram);
        assert_eq!(sums, vec![2, 0, 3]);
        assert_eq!(gram, vec![4, 0, 6, 0, 0, 9]);
    }
}
