//! The label model: the count's configuration, the label planes and image-level labels of a batch,
//! and their validation.

use crate::error::KernelError;

use super::blocks::{add_gram, block_of_pixels};
use super::counts::Moments;
use super::upsample::Upsample;

/// The most categories a configuration may have (they are bits of one u32 on the device).
pub const MAX_CATEGORIES: u32 = 32;

/// Everything a [`Counter`] needs once.
#[derive(Debug, Clone)]
pub struct CountConfig {
    pub n_units: u32,
    /// Labels are `0..n_labels`; 0 is unlabelled.
    pub n_labels: u32,
    pub n_categories: u32,
    /// Primary category of every label (`n_labels` entries; the entry of label 0 is ignored).
    pub label_category: Vec<u32>,
    pub upsample: Upsample,
    /// Largest batch (images) that will be counted.
    pub max_images: u32,
}

impl CountConfig {
    /// Checks sizes and the label→category table.
    pub fn validate(&self) -> Result<(), KernelError> {
        self.upsample.validate()?;
        if self.n_units == 0 || self.n_labels == 0 || self.max_images == 0 {
            return Err(KernelError::Config(format!(
                "count needs units, labels and images, got {} units, {} labels, max {} images",
                self.n_units, self.n_labels, self.max_images
            )));
        }
        if self.n_categories == 0 || self.n_categories > MAX_CATEGORIES {
            return Err(KernelError::Config(format!(
                "{} categories: need 1 to {MAX_CATEGORIES}",
                self.n_categories
            )));
        }
        if self.label_category.len() != self.n_labels as usize {
            return Err(KernelError::Shape {
                what: "label category table",
                expected: self.n_labels.to_string(),
                got: self.label_category.len().to_string(),
            });
        }
        if let Some((label, cat)) = self
            .label_category
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, c)| **c >= self.n_categories)
        {
            return Err(KernelError::Config(format!(
                "label {label} has category {cat}, but there are {} categories",
                self.n_categories
            )));
        }
        Ok(())
    }

    /// Pixels of the seg grid, `sh * sw`.
    pub(crate) fn seg_pixels(&self) -> usize {
        self.upsample.sh as usize * self.upsample.sw as usize
    }
}

/// A label plane of one image: `sh * sw` labels, row-major (one PNG of one category in Broden).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelPlane {
    /// Image index within the batch.
    pub image: u32,
    /// Category the plane came from (informational: counting uses the labels' primary category).
    pub category: u32,
    pub labels: Vec<u32>,
}

/// An image-level label (scene, texture): covers every pixel of the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageLabel {
    /// Image index within the batch.
    pub image: u32,
    /// Category the label came from (informational, as for planes).
    pub category: u32,
    /// Label number; 0 counts nothing.
    pub label: u32,
}

/// The labels of one batch, as the engine converts them from the dataset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostLabels {
    pub n_images: u32,
    pub planes: Vec<LabelPlane>,
    pub image_labels: Vec<ImageLabel>,
}

impl HostLabels {
    /// Checks every plane and label against the configuration; errors name image, plane and value.
    pub fn validate(&self, config: &CountConfig) -> Result<(), KernelError> {
        for (i, plane) in self.planes.iter().enumerate() {
            self.validate_plane(i, plane, config)?;
        }
        for il in &self.image_labels {
            self.validate_image_label(il, config)?;
        }
        // A batch intersect counter is bounded by the label entries of all images times the grid.
        let entries = (self.planes.len() + self.image_labels.len()) as u64;
        let bound = entries * config.seg_pixels() as u64;
        if bound > u32::MAX as u64 {
            return Err(KernelError::Overflow {
                what: "batch intersection counter",
                value: bound,
                limit: u32::MAX as u64,
            });
        }
        Ok(())
    }

    /// Checks plane `i`: its image, its category, its size and every label on it.
    fn validate_plane(
        &self,
        i: usize,
        plane: &LabelPlane,
        config: &CountConfig,
    ) -> Result<(), KernelError> {
        let n_pixels = config.seg_pixels();
        if plane.image >= self.n_images {
            return Err(KernelError::Shape {
                what: "label plane image index",
                expected: format!("< {}", self.n_images),
                got: plane.image.to_string(),
            });
        }
        if plane.category >= config.n_categories {
            return Err(KernelError::Config(format!(
                "label plane {i} of image {} has category {}, but there are {} categories",
                plane.image, plane.category, config.n_categories
            )));
        }
        if plane.labels.len() != n_pixels {
            return Err(KernelError::Shape {
                what: "label plane pixels",
                expected: n_pixels.to_string(),
                got: plane.labels.len().to_string(),
            });
        }
        if let Some((pixel, &label)) = plane
            .labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l >= config.n_labels)
        {
            return Err(KernelError::PixelLabel {
                image: plane.image,
                plane: i,
                pixel,
                label,
                n_labels: config.n_labels,
            });
        }
        Ok(())
    }

    /// Checks an image-level label: its image, its label and its category.
    fn validate_image_label(
        &self,
        il: &ImageLabel,
        config: &CountConfig,
    ) -> Result<(), KernelError> {
        let reason = if il.image >= self.n_images {
            format!("the batch has {} images", self.n_images)
        } else if il.label >= config.n_labels {
            format!("n_labels is {}", config.n_labels)
        } else if il.category >= config.n_categories {
            format!("category {} of {}", il.category, config.n_categories)
        } else {
            return Ok(());
        };
        Err(KernelError::ImageLabel {
            image: il.image,
            label: il.label,
            reason,
        })
    }

    /// Bits of the primary categories present in each image (original rule), and of the
    /// categories of its image-level labels.
    pub(crate) fn category_bits(&self, config: &CountConfig) -> (Vec<u32>, Vec<u32>) {
        let mut present = vec![0u32; self.n_images as usize];
        let mut scalar = vec![0u32; self.n_images as usize];
        for plane in &self.planes {
            let bits = plane
                .labels
                .iter()
                .filter(|&&l| l != 0)
                .fold(0u32, |acc, &l| acc | 1 << config.label_category[l as usize]);
            present[plane.image as usize] |= bits;
        }
        for il in self.image_labels.iter().filter(|il| il.label != 0) {
            let bit = 1 << config.label_category[il.label as usize];
            present[il.image as usize] |= bit;
            scalar[il.image as usize] |= bit;
        }
        (present, scalar)
    }

    /// The label side of this batch's [`Moments`] (see [`crate::count`], "Moments"), with the
    /// unit side sized and zero.
    pub(crate) fn label_moments(&self, config: &CountConfig) -> Moments {
        let up = &config.upsample;
        let grid = Moments::grid_of(up.h, up.w, up.sh, up.sw);
        let mut out = Moments::sized(config.n_units, config.n_labels, [up.sh, up.sw], grid);
        out.images = u64::from(self.n_images);
        let n_blocks = out.blocks();
        let block_of = block_of_pixels(up.sh, up.sw, grid);
        let mut block_size = vec![0u64; n_blocks];
        block_of.iter().for_each(|&b| block_size[b as usize] += 1);
        let mut tally = ImageTally::new(config.n_labels as usize, n_blocks);
        let mut layers = vec![0u64; config.n_labels as usize];
        let mut seen = vec![false; config.n_labels as usize];
        for image in 0..self.n_images {
            for plane in self.planes.iter().filter(|p| p.image == image) {
                for (p, &l) in plane.labels.iter().enumerate().filter(|(_, l)| **l != 0) {
                    tally.add(l as usize, block_of[p] as usize, 1);
                    seen[l as usize] = true;
                }
                count_layers(&mut seen, &mut layers);
            }
            for il in (self.image_labels.iter()).filter(|il| il.image == image && il.label != 0) {
                (0..n_blocks).for_each(|b| tally.add(il.label as usize, b, block_size[b]));
                seen[il.label as usize] = true;
                count_layers(&mut seen, &mut layers);
            }
            for (most, n) in out.label_layers.iter_mut().zip(&mut layers) {
                *most = (*most).max(std::mem::take(n));
            }
            tally.flush_into(&mut out);
        }
        out
    }

    /// Truth counts of this batch (label pixels).
    pub(crate) fn label_pixels(&self, config: &CountConfig) -> Vec<u64> {
        let mut out = vec![0u64; config.n_labels as usize];
        for plane in &self.planes {
            for &l in plane.labels.iter().filter(|&&l| l != 0) {
                out[l as usize] += 1;
            }
        }
        for il in self.image_labels.iter().filter(|il| il.label != 0) {
            out[il.label as usize] += config.seg_pixels() as u64;
        }
        out
    }
}

/// Adds 1 to `layers` for each label `seen` in one layer of an image, and
/// clears `seen`.
fn count_layers(seen: &mut [bool], layers: &mut [u64]) {
    for (s, n) in seen.iter_mut().zip(layers) {
        if std::mem::take(s) {
            *n += 1;
        }
    }
}

/// One image's pixels per (label, block), in a dense array cleared through the list of the
/// cells touched.
struct ImageTally {
    n_blocks: usize,
    per_block: Vec<u64>,
    touched: Vec<usize>,
    /// The label's non-zero blocks, while one label is flushed.
    nonzero: Vec<(u32, u64)>,
}

impl ImageTally {
    fn new(n_labels: usize, n_blocks: usize) -> Self {
        ImageTally {
            n_blocks,
            per_block: vec![0; n_labels * n_blocks],
            touched: Vec::new(),
            nonzero: Vec::new(),
        }
    }

    fn add(&mut self, label: usize, block: usize, m: u64) {
        let at = label * self.n_blocks + block;
        if self.per_block[at] == 0 {
            self.touched.push(at);
        }
        self.per_block[at] += m;
    }

    /// Adds the image's block counts and their products to `out`, and clears the image.
    fn flush_into(&mut self, out: &mut Moments) {
        let (n, t) = (self.n_blocks, out.triangle());
        // Label-major, block-increasing order groups each label's blocks.
        self.touched.sort_unstable();
        for group in self.touched.chunk_by(|a, b| a / n == b / n) {
            let label = group[0] / n;
            self.nonzero.clear();
            for &at in group {
                self.nonzero.push(((at % n) as u32, self.per_block[at]));
                self.per_block[at] = 0;
            }
            add_gram(
                n,
                &self.nonzero,
                &mut out.label_blocks[label * n..][..n],
                &mut out.label_gram[label * t..][..t],
            );
            let total = self.nonzero.iter().map(|&(_, m)| m).sum::<u64>();
            out.label_max[label] = out.label_max[label].max(total);
        }
        self.touched.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One unit, labels 0 to 10 cycling over three categories, a 2x2 map upsampled to 3x3.
    fn config() -> CountConfig {
        CountConfig {
            n_units: 1,
            n_labels: 11,
            n_categories: 3,
            label_category: (0..11).map(|l| l % 3).collect(),
            upsample: Upsample::half_pixel(2, 2, 3, 3),
            max_images: 1,
        }
    }

    #[test]
    fn bad_labels_are_errors() {
        let cfg = config();
        let plane = |labels: Vec<u32>| LabelPlane {
            image: 0,
            category: 0,
            labels,
        };
        let bad_label = HostLabels {
            n_images: 1,
            planes: vec![plane(vec![0, 0, 0, 0, 11, 0, 0, 0, 0])],
            image_labels: vec![],
        };
        assert!(matches!(
            bad_label.validate(&cfg),
            Err(KernelError::PixelLabel {
                image: 0,
                plane: 0,
                pixel: 4,
                label: 11,
                n_labels: 11
            })
        ));
        let short = HostLabels {
            n_images: 1,
            planes: vec![plane(vec![0; 8])],
            image_labels: vec![],
        };
        assert!(matches!(
            short.validate(&cfg),
            Err(KernelError::Shape { .. })
        ));
        let bad_image = HostLabels {
            n_images: 1,
            planes: vec![],
            image_labels: vec![ImageLabel {
                image: 1,
                category: 0,
                label: 1,
            }],
        };
        assert!(matches!(
            bad_image.validate(&cfg),
            Err(KernelError::ImageLabel { image: 1, .. })
        ));
        // 65537 image-level labels on a 256x256 grid could overflow a u32 batch counter.
        let big = CountConfig {
            upsample: Upsample::half_pixel(1, 1, 256, 256),
            ..cfg.clone()
        };
        let many = HostLabels {
            n_images: 1,
            planes: vec![],
            image_labels: vec![
                ImageLabel {
                    image: 0,
                    category: 0,
                    label: 1
                };
                65537
            ],
        };
        assert!(matches!(
            many.validate(&big),
            Err(KernelError::Overflow { .. })
        ));
    }
}
