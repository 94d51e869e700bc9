//! Concept masks for the report's toggle: where a unit's best label lies in
//! the dataset's segmentation of each of its top images, at thumbnail size,
//! so a reader can set the label's mask beside the unit's region when
//! checking a label.
//!
//! A pixel is in label `L`'s mask when any segmentation PNG of the image
//! holds `L` there, or when `L` is one of the image's image-level labels
//! (scene, texture), which cover the whole image; this is what the counts
//! took as the label's pixels. The segmentation covers the whole image, as
//! the thumbnail does, and each thumbnail pixel takes the segmentation pixel
//! under its centre.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use broden::{Dataset, DatasetOptions, ImageLabels};
use dissect::LayerResult;
use rayon::prelude::*;

/// Masks by image path, then label number, each `width * height`
/// row-major; an image whose labels could not be read has no entries.
#[derive(Debug, Default)]
pub struct ConceptMasks {
    pub width: u32,
    pub height: u32,
    masks: HashMap<String, HashMap<u32, Vec<bool>>>,
}

impl ConceptMasks {
    /// The mask of `label` on the image at `path`, if it was read.
    pub fn get(&self, path: &str, label: u32) -> Option<&[bool]> {
        self.masks.get(path)?.get(&label).map(Vec::as_slice)
    }
}

/// The dataset of a run and where each of its images is, by path.
#[derive(Debug)]
pub struct ConceptSource {
    dataset: Dataset,
    by_path: HashMap<String, usize>,
}

impl ConceptSource {
    /// Opens the dataset folder (the parent of `images_root`) with all its
    /// splits and categories; an error says why masks cannot be drawn.
    pub fn open(images_root: &Path) -> Result<Self, String> {
        let root = images_root
            .parent()
            .ok_or_else(|| format!("{} has no parent folder", images_root.display()))?;
        let dataset = Dataset::open(root, &DatasetOptions::default()).map_err(|e| e.to_string())?;
        let by_path = dataset
            .images
            .iter()
            .enumerate()
            .map(|(i, rec)| (rec.image.clone(), i))
            .collect();
        Ok(Self { dataset, by_path })
    }

    /// The masks of every unit's best label over the unit's top images,
    /// each image decoded once, images in parallel.
    pub fn layer_masks(&self, layer: &LayerResult, width: u32, height: u32) -> ConceptMasks {
        let mut wanted: HashMap<&str, BTreeSet<u32>> = HashMap::new();
        for (unit, images) in layer.units.iter().zip(&layer.top_images) {
            let Some(label) = unit.best().and_then(|b| b.label) else {
                continue;
            };
            for top in images {
                wanted.entry(top.path.as_str()).or_default().insert(label);
            }
        }
        let masks = wanted
            .into_par_iter()
            .filter_map(|(path, labels)| {
                let index = *self.by_path.get(path)?;
                let rec = &self.dataset.images[index];
                let decoded = self.dataset.image_labels(index).ok()?;
                let seg = [rec.sh, rec.sw];
                let per_label = labels
                    .into_iter()
                    .map(|label| (label, label_mask(&decoded, label, seg, width, height)))
                    .collect();
                Some((path.to_string(), per_label))
            })
            .collect();
        ConceptMasks {
            width,
            height,
            masks,
        }
    }
}

/// `label`'s mask on a `width x height` picture of an image whose
/// segmentation is `seg = [sh, sw]`.
pub fn label_mask(
    labels: &ImageLabels,
    label: u32,
    seg: [u32; 2],
    width: u32,
    height: u32,
) -> Vec<bool> {
    let n = width as usize * height as usize;
    if labels.image_labels.iter().any(|&(_, l)| l == label) {
        return vec![true; n];
    }
    let [sh, sw] = seg;
    if sh == 0 || sw == 0 {
        return vec![false; n];
    }
    let pick = |t: u32, size: u32, of: u32| {
        ((((f64::from(t) + 0.5) * f64::from(of)) / f64::from(size)) as usize).min(of as usize - 1)
    };
    let rows: Vec<usize> = (0..height).map(|y| pick(y, height, sh)).collect();
    let cols: Vec<usize> = (0..width).map(|x| pick(x, width, sw)).collect();
    let mut mask = Vec::with_capacity(n);
    for &sy in &rows {
        for &sx in &cols {
            let p = sy * sw as usize + sx;
            mask.push(
                labels
                    .planes
                    .iter()
                    .any(|plane| plane.labels.get(p) == Some(&label)),
            );
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use broden::LabelPlane;

    #[test]
    fn masks_take_the_segmentation_pixel_under_each_centre_and_image_labels_cover_all() {
        // A 4x4 segmentation with label 7 in its top-left 2x2 block, drawn
        // on 8x2: rows 0 (seg rows 0-1) and 1 (seg rows 2-3); columns 0-3
        // fall on seg columns 0-1.
        let mut seg = vec![0u32; 16];
        for (y, x) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            seg[y * 4 + x] = 7;
        }
        let labels = ImageLabels {
            planes: vec![
                LabelPlane {
                    category: 0,
                    labels: vec![3; 16],
                },
                LabelPlane {
                    category: 1,
                    labels: seg,
                },
            ],
            image_labels: vec![(2, 9)],
        };
        let mask = label_mask(&labels, 7, [4, 4], 8, 2);
        let want: Vec<bool> = (0..16).map(|i| i / 8 == 0 && i % 8 < 4).collect();
        assert_eq!(mask, want);
        assert_eq!(label_mask(&labels, 3, [4, 4], 8, 2), vec![true; 16]);
        assert_eq!(label_mask(&labels, 9, [4, 4], 3, 3), vec![true; 9]);
        assert_eq!(label_mask(&labels, 5, [4, 4], 3, 3), vec![false; 9]);
    }
}
