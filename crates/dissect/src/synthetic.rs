//! Planted layers for tests: synthetic Broden-like images (random object
//! rectangles, one scene label per image) with units of noise and units
//! planted to detect chosen labels, counted by the CPU reference count and
//! scored as a run scores them. Everything is drawn from a seed.

use kernels::{CountConfig, Counts, HostLabels, ImageLabel, LabelPlane, Upsample, cpu};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::options::UnionRule;
use crate::results::UnitScore;
use crate::score::{LabelInfo, layer_counts, score_units};

pub const IMAGES: u32 = 200;
pub const FEATURE: u32 = 7;
pub const SEG: u32 = 28;
/// Labels 1..=8 are objects (category 0), 9..=12 scenes (category 1).
pub const OBJECTS: u32 = 8;
pub const SCENES: u32 = 4;

/// What a unit of a planted layer is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// Independent standard normal per feature cell.
    Noise,
    /// Noise summed over each cell's 3 x 3 neighbourhood: masks are blobs
    /// of several blocks and, being sums of fewer cells at the borders,
    /// prefer the centre of the image, as the objects do.
    Smooth,
    /// `0.5 x noise + 3 x` the share of the cell that carries the label (an
    /// object), or `+ 3` on the whole image when it has the label (a scene).
    Planted(u32),
}

/// The labels as scoring sees them.
pub fn infos() -> Vec<LabelInfo> {
    (0..=OBJECTS + SCENES)
        .map(|l| LabelInfo {
            name: format!("l{l}"),
            category: (l > 0).then_some(usize::from(l > OBJECTS)),
        })
        .collect()
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

/// `map` (FEATURE x FEATURE) summed over each cell's 3 x 3 neighbourhood.
fn smoothed(map: &[f32]) -> Vec<f32> {
    let f = FEATURE as i32;
    (0..f * f)
        .map(|c| {
            let (y, x) = (c / f, c % f);
            let mut sum = 0.0;
            for (dy, dx) in (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dy, dx))) {
                let (yy, xx) = (y + dy, x + dx);
                if (0..f).contains(&yy) && (0..f).contains(&xx) {
                    sum += map[(yy * f + xx) as usize];
                }
            }
            sum
        })
        .collect()
}

/// A planted layer: its images' labels and its units' activations,
/// `[image][unit][cell]`.
pub struct Layer {
    pub labels: HostLabels,
    pub acts: Vec<f32>,
    pub n_units: usize,
}

impl Layer {
    /// The layer of `units` over seeded images.
    pub fn new(seed: u64, units: &[Unit]) -> Layer {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut labels = HostLabels {
            n_images: IMAGES,
            ..Default::default()
        };
        let n_units = units.len();
        let cells = (FEATURE * FEATURE) as usize;
        let mut acts = vec![0f32; IMAGES as usize * n_units * cells];
        let block = (SEG / FEATURE) as usize;
        for image in 0..IMAGES {
            let mut plane = vec![0u32; (SEG * SEG) as usize];
            for _ in 0..rng.random_range(1..=3) {
                let label = rng.random_range(1..=OBJECTS);
                let (h, w) = (rng.random_range(4..15), rng.random_range(4..15));
                let (y0, x0) = (rng.random_range(0..SEG - h), rng.random_range(0..SEG - w));
                for y in y0..y0 + h {
                    plane[(y * SEG) as usize..][x0 as usize..(x0 + w) as usize].fill(label);
                }
            }
            let scene = rng.random_range(OBJECTS + 1..=OBJECTS + SCENES);
            let maps = &mut acts[image as usize * n_units * cells..][..n_units * cells];
            for v in maps.iter_mut() {
                *v = normal(&mut rng);
            }
            for (unit, kind) in units.iter().enumerate() {
                let map = &mut maps[unit * cells..][..cells];
                match *kind {
                    Unit::Noise => {}
                    Unit::Smooth => {
                        let smooth = smoothed(map);
                        map.copy_from_slice(&smooth);
                    }
                    Unit::Planted(target) => {
                        for (cell, v) in map.iter_mut().enumerate() {
                            let (cy, cx) = (cell / FEATURE as usize, cell % FEATURE as usize);
                            let covered = if target > OBJECTS {
                                f32::from(u8::from(scene == target))
                            } else {
                                let hits = (0..block * block)
                                    .filter(|i| {
                                        let (y, x) =
                                            (cy * block + i / block, cx * block + i % block);
                                        plane[y * SEG as usize + x] == target
                                    })
                                    .count();
                                hits as f32 / (block * block) as f32
                            };
                            *v = 0.5 * *v + 3.0 * covered;
                        }
                    }
                }
            }
            labels.planes.push(LabelPlane {
                image,
                category: 0,
                labels: plane,
            });
            labels.image_labels.push(ImageLabel {
                image,
                category: 1,
                label: scene,
            });
        }
        Layer {
            labels,
            acts,
            n_units,
        }
    }

    /// Each pixel's unit vector `x` replaced by `q x`, `q` row-major.
    pub fn rotate(&mut self, q: &[f32]) {
        let (n, cells) = (self.n_units, (FEATURE * FEATURE) as usize);
        for maps in self.acts.chunks_mut(n * cells) {
            let before = maps.to_vec();
            for k in 0..n {
                for c in 0..cells {
                    maps[k * cells + c] =
                        (0..n).map(|j| q[k * n + j] * before[j * cells + c]).sum();
                }
            }
        }
    }

    /// Counts the layer with thresholds at quantile `q` and scores it.
    pub fn count(&self, q: f64) -> (Counts, Vec<UnitScore>) {
        let n_labels = 1 + OBJECTS + SCENES;
        let config = CountConfig {
            n_units: self.n_units as u32,
            n_labels,
            n_categories: 2,
            label_category: (0..n_labels).map(|l| u32::from(l > OBJECTS)).collect(),
            upsample: Upsample::half_pixel(FEATURE, FEATURE, SEG, SEG),
            max_images: IMAGES,
        };
        let shape = [IMAGES, self.n_units as u32, FEATURE, FEATURE];
        let thresholds = cpu::quantile_thresholds(&cpu::values_per_unit(&[(&self.acts, shape)]), q);
        let counts = cpu::count(&config, &self.acts, &thresholds, &self.labels).expect("count");
        let scored = layer_counts(&counts, UnionRule::Original, &[0, 1]);
        let units = score_units(&scored, &infos());
        (counts, units)
    }
}
