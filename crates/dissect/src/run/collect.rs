//! What the counting pass sets up and gathers besides the counts: each
//! layer's counter configuration and the maps of every unit's top images.

use std::collections::BTreeMap;

use broden::{Batch, Dataset};
use burn::tensor::Tensor;
use kernels::CountConfig;

use crate::DissectError;
use crate::accel::Seg;
use crate::engine::LayerTap;
use crate::geometry;
use crate::options::Options;
use crate::results::TopMaps;

/// What every counter's configuration shares.
pub(super) struct CountSetup {
    n_labels: u32,
    n_categories: u32,
    label_category: Vec<u32>,
    opts: Options,
}

impl CountSetup {
    pub fn new(dataset: &Dataset, opts: &Options) -> Self {
        let n_categories = dataset.categories.len() as u32;
        Self {
            n_labels: dataset.labels.len() as u32,
            n_categories,
            label_category: dataset.labels.iter().map(|l| l.category as u32).collect(),
            opts: opts.clone(),
        }
    }

    /// The counter for `tap`'s activations of `shape` on a `seg` grid.
    pub fn config(
        &self,
        tap: &LayerTap,
        shape: [u32; 4],
        seg: Seg,
    ) -> Result<CountConfig, DissectError> {
        let [_, units, h, w] = shape;
        let p = &self.opts.preprocess;
        Ok(CountConfig {
            n_units: units,
            n_labels: self.n_labels,
            n_categories: self.n_categories,
            label_category: self.label_category.clone(),
            upsample: geometry::upsampling(
                self.opts.alignment,
                tap.field.as_ref(),
                [p.height, p.width],
                [h, w],
                [seg.0, seg.1],
            )?,
            max_images: self.opts.batch_size as u32,
        })
    }
}

/// Collects the maps of each unit's top images during the counting pass:
/// the only activations read back, k per unit.
pub(super) struct TopCollector {
    /// For each image among some unit's top images, its `(unit, slot)`s.
    by_image: BTreeMap<usize, Vec<(usize, usize)>>,
    pub maps: TopMaps,
}

impl TopCollector {
    pub fn new(lists: &[Vec<(u32, f32)>], shape: [u32; 4], k: usize) -> Self {
        let mut by_image: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for (unit, list) in lists.iter().enumerate() {
            for (slot, &(image, _)) in list.iter().enumerate() {
                by_image
                    .entry(image as usize)
                    .or_default()
                    .push((unit, slot));
            }
        }
        let [_, units, h, w] = shape.map(|v| v as usize);
        Self {
            by_image,
            maps: TopMaps::empty(units, k, [h, w]),
        }
    }

    pub fn collect(&mut self, batch: &Batch, act: &Tensor<4>) -> Result<(), DissectError> {
        let plane = self.maps.size[0] * self.maps.size[1];
        for (b, image) in batch.indices.iter().enumerate() {
            let Some(slots) = self.by_image.get(image) else {
                continue;
            };
            let maps = act
                .clone()
                .narrow(0, b, 1)
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| DissectError::Internal(format!("reading a top map: {e:?}")))?;
            for &(unit, slot) in slots {
                let src = maps.get(unit * plane..(unit + 1) * plane);
                match (self.maps.map_mut(unit, slot), src) {
                    (Some(dst), Some(src)) => dst.copy_from_slice(src),
                    _ => {
                        return Err(DissectError::Internal(format!(
                            "top map of unit {unit}, slot {slot} out of range"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
