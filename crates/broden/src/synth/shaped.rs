//! A probe set of Broden's shape, for measuring at the size people dissect
//! without downloading Broden: any number of images (63,305 is Broden's),
//! Broden's label inventory per category (the paper's Table 1: color 11,
//! object 584, part 234, material 32, scene 468, texture 47; some part and
//! material labels are objects too, 1,197 labels in all), long-tailed
//! label frequencies, several part files per image and multi-label scenes
//! and textures. Deterministic from a seed: image `i` depends only on the
//! seed and `i`, so images render in parallel and the files are the same
//! on every run.
//!
//! The sources mix as Broden's do: texture swatches (DTD: one pattern over
//! the image, one or two texture labels, colours only), surface images
//! (OpenSurfaces: regions of materials) and scene images (ADE20K, Pascal:
//! one or two scene labels, objects, their parts in one or two layers and
//! their materials). The pictures are simple (filled shapes whose colour
//! and pattern follow their label); what matters here is the shape of the
//! data: how many labels, how often each occurs, how many files an image
//! has.
//!
//! Frequencies: the label of rank `r` (from 1) of a category is drawn with
//! weight `r^-a`, with `a` per category ([`ZIPF`]) fitted by least squares
//! to log(total pixels) against log(rank) of the labels that the paper's
//! per-unit results name with their `-truth` pixel counts (CSAILVision
//! NetDissect `plot/*.csv`, all five networks): object 1.64, part 1.47,
//! material 2.00, scene 0.89, texture 0.20, color 1.17.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::paint::{COLOR_RGB, nearest_color};
use super::{CATEGORIES, COLOR, COLORS, MATERIAL, OBJECT, PART, SCENE, SynthReport, TEXTURE};
use crate::BrodenError;
use crate::write::{ImageData, LabelSpec, PlaneData, Writer};

/// Label entries per category, in [`CATEGORIES`] order (the small set's
/// too): the paper's Table 1.
pub const BRODEN_LABELS: [usize; 6] = [11, 584, 234, 32, 468, 47];
/// Part entries that are object labels too (`wheel`, `door`, ...), and
/// material entries that are (`fabric`, ...): 1,376 entries, 1,197 labels.
const PARTS_ALSO_OBJECTS: usize = 155;
const MATERIALS_ALSO_OBJECTS: usize = 24;
/// Zipf exponent of each category's label frequencies (see the module docs).
const ZIPF: [f64; 6] = [1.17, 1.64, 1.47, 2.00, 0.89, 0.20];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapedOptions {
    pub images: usize,
    pub seed: u64,
    /// Image side in pixels; segmentations are half of it.
    pub size: u32,
}

/// The labels: every category's entries in rank order, as label numbers,
/// with the cumulative weights to draw them by.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// `label.csv`'s labels, by number less one.
    pub labels: Vec<LabelSpec>,
    /// Per category, the label number of each entry by rank.
    pub ranked: Vec<Vec<u32>>,
    cumulative: Vec<Vec<f64>>,
}

impl Inventory {
    /// Broden's inventory ([`BRODEN_LABELS`]).
    pub fn broden() -> Self {
        // Entries as (category, name); shared entries name an object.
        let object_name = |r: usize| format!("object-{:03}", r + 1);
        let entries: Vec<Vec<String>> = (0..6)
            .map(|c| {
                (0..BRODEN_LABELS[c])
                    .map(|r| match c {
                        COLOR => COLORS[r].to_string(),
                        OBJECT => object_name(r),
                        PART if r < PARTS_ALSO_OBJECTS => object_name(3 * r + 2),
                        PART => format!("part-{:03}", r + 1),
                        MATERIAL if r < MATERIALS_ALSO_OBJECTS => object_name(3 * r + 1),
                        MATERIAL => format!("material-{:02}", r + 1),
                        SCENE => format!("scene-{:03}-s", r + 1),
                        _ => format!("texture-{:02}", r + 1),
                    })
                    .collect()
            })
            .collect();
        let weights: Vec<Vec<f64>> = (0..6)
            .map(|c| {
                let w: Vec<f64> = (1..=BRODEN_LABELS[c])
                    .map(|r| (r as f64).powf(-ZIPF[c]))
                    .collect();
                let total: f64 = w.iter().sum();
                w.into_iter().map(|x| x / total).collect()
            })
            .collect();
        // Label numbers by expected frequency over all categories, most
        // frequent first, as NetDissect's joinseg.py numbers them.
        let mut by_name: Vec<(String, usize, f64)> = Vec::new();
        for (c, names) in entries.iter().enumerate() {
            for (r, name) in names.iter().enumerate() {
                match by_name.iter_mut().find(|(n, _, _)| n == name) {
                    Some(known) => known.2 += weights[c][r],
                    None => by_name.push((name.clone(), c, weights[c][r])),
                }
            }
        }
        by_name.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        let number = |name: &str| {
            let at = by_name.iter().position(|(n, _, _)| n == name);
            at.map_or(0, |i| i as u32 + 1)
        };
        let ranked = entries
            .iter()
            .map(|names| names.iter().map(|n| number(n)).collect())
            .collect();
        let cumulative = weights
            .iter()
            .map(|w| {
                w.iter()
                    .scan(0.0, |sum, x| {
                        *sum += x;
                        Some(*sum)
                    })
                    .collect()
            })
            .collect();
        let labels = by_name
            .into_iter()
            .map(|(name, category, _)| LabelSpec {
                name,
                category,
                syns: Vec::new(),
            })
            .collect();
        Self {
            labels,
            ranked,
            cumulative,
        }
    }

    /// A label of category `c`, drawn by its weight; and its rank.
    fn draw(&self, c: usize, rng: &mut ChaCha8Rng) -> (u32, usize) {
        let u: f64 = rng.random();
        let cum = &self.cumulative[c];
        let r = cum.partition_point(|&x| x < u).min(cum.len() - 1);
        (self.ranked[c][r], r)
    }
}

/// One generated image: pixels, label planes and image-level labels.
#[derive(Debug, Clone)]
pub struct ShapedImage {
    pub path: String,
    pub rgb: Vec<u8>,
    pub seg_size: u32,
    /// `(category, labels)`, several of one category for part layers.
    pub planes: Vec<(usize, Vec<u32>)>,
    pub image_labels: Vec<(usize, u32)>,
}

/// A filled shape on the segmentation grid: an axis-aligned ellipse or
/// rectangle, in cells.
#[derive(Debug, Clone, Copy)]
struct Shape {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    round: bool,
}

impl Shape {
    fn random(rng: &mut ChaCha8Rng, seg: f32, scale: f32) -> Self {
        let rx = seg * scale * rng.random_range(0.3..1.0);
        let ry = seg * scale * rng.random_range(0.3..1.0);
        Self {
            cx: rng.random_range(0.0..seg),
            cy: rng.random_range(0.0..seg),
            rx,
            ry,
            round: rng.random_bool(0.5),
        }
    }

    /// The shape scaled about its centre, moved by `dy` of its height.
    fn inner(self, scale: f32, dy: f32) -> Self {
        Self {
            cy: self.cy + dy * self.ry,
            rx: self.rx * scale,
            ry: self.ry * scale,
            ..self
        }
    }

    fn holds(&self, x: f32, y: f32) -> bool {
        let (dx, dy) = ((x - self.cx) / self.rx, (y - self.cy) / self.ry);
        if self.round {
            dx * dx + dy * dy <= 1.0
        } else {
            dx.abs() <= 1.0 && dy.abs() <= 1.0
        }
    }
}

/// A colour and a stripe pattern that follow a label.
fn look(label: u32) -> ([f32; 3], f32) {
    let h = (label as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let c = |k: u32| ((h >> (8 * k)) & 0xff) as f32;
    ([c(1), c(2), c(3)], 2.0 + (h >> 40 & 7) as f32)
}

/// The segmentation-grid drawing of one image: per cell its colour, and
/// the label planes.
struct Canvas {
    seg: u32,
    rgb: Vec<[f32; 3]>,
    planes: Vec<(usize, Vec<u32>)>,
}

impl Canvas {
    fn new(seg: u32, rng: &mut ChaCha8Rng) -> Self {
        let base = COLOR_RGB[rng.random_range(0..COLOR_RGB.len())].map(f32::from);
        Self {
            seg,
            rgb: vec![base; (seg * seg) as usize],
            planes: Vec::new(),
        }
    }

    /// Paints `shape` with `label`'s look into plane `plane` (made for
    /// `category` when new) and, unless `labels_only`, into the colours.
    fn paint(&mut self, shape: Shape, label: u32, plane: (usize, usize), labels_only: bool) {
        let (category, k) = plane;
        let n = (self.seg * self.seg) as usize;
        let at = (self.planes.iter().enumerate())
            .filter(|(_, (c, _))| *c == category)
            .map(|(i, _)| i)
            .nth(k);
        let at = at.unwrap_or_else(|| {
            self.planes.push((category, vec![0; n]));
            self.planes.len() - 1
        });
        let (color, stripes) = look(label);
        for y in 0..self.seg {
            for x in 0..self.seg {
                if !shape.holds(x as f32 + 0.5, y as f32 + 0.5) {
                    continue;
                }
                let i = (y * self.seg + x) as usize;
                self.planes[at].1[i] = label;
                if !labels_only {
                    let band = ((x + y) as f32 / stripes).floor() as u32 % 2;
                    let shade = if band == 0 { 1.0 } else { 0.8 };
                    self.rgb[i] = color.map(|v| v * shade);
                }
            }
        }
    }
}

/// Renders image `index` of the set `opts` describes.
pub fn render(opts: &ShapedOptions, inv: &Inventory, index: usize) -> ShapedImage {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5348_4150_4544);
    rng.set_stream(index as u64);
    let seg = (opts.size / 2).max(1);
    let mut canvas = Canvas::new(seg, &mut rng);
    let mut image_labels = Vec::new();
    let kind: f64 = rng.random();
    if kind < 0.09 {
        // A texture swatch: one or two textures, the first over all.
        let (t, _) = inv.draw(TEXTURE, &mut rng);
        image_labels.push((TEXTURE, t));
        if rng.random_bool(0.15) {
            let (u, _) = inv.draw(TEXTURE, &mut rng);
            if u != t {
                image_labels.push((TEXTURE, u));
            }
        }
        let whole = Shape {
            cx: seg as f32 / 2.0,
            cy: seg as f32 / 2.0,
            rx: seg as f32,
            ry: seg as f32,
            round: false,
        };
        canvas.paint(whole, t, (TEXTURE, 0), false);
        canvas.planes.clear();
    } else if kind < 0.39 {
        // Surfaces: a few regions of materials.
        for _ in 0..rng.random_range(1..=4) {
            let (m, _) = inv.draw(MATERIAL, &mut rng);
            canvas.paint(
                Shape::random(&mut rng, seg as f32, 0.5),
                m,
                (MATERIAL, 0),
                false,
            );
        }
    } else {
        scene(&mut canvas, inv, &mut rng, &mut image_labels);
    }
    finish(opts, inv, index, canvas, image_labels)
}

/// A scene image: scene labels (most images one, some two, Pascal's none),
/// objects with their parts in one or two layers and their materials.
fn scene(
    canvas: &mut Canvas,
    inv: &Inventory,
    rng: &mut ChaCha8Rng,
    image_labels: &mut Vec<(usize, u32)>,
) {
    if rng.random_bool(0.6) {
        let (s, _) = inv.draw(SCENE, rng);
        image_labels.push((SCENE, s));
        if rng.random_bool(0.2) {
            let (t, _) = inv.draw(SCENE, rng);
            if t != s {
                image_labels.push((SCENE, t));
            }
        }
    }
    let seg = canvas.seg as f32;
    for _ in 0..rng.random_range(2..=8) {
        let (object, rank) = inv.draw(OBJECT, rng);
        let shape = Shape::random(rng, seg, 0.35);
        canvas.paint(shape, object, (OBJECT, 0), false);
        // A third of the objects have parts: one, or a second inside it in
        // its own layer (a second part file).
        if rank % 3 == 0 {
            let parts = &inv.ranked[PART];
            let first = parts[(rank * 7) % parts.len()];
            canvas.paint(shape.inner(0.6, -0.3), first, (PART, 0), false);
            if rank % 2 == 0 {
                let second = parts[(rank * 7 + 1) % parts.len()];
                canvas.paint(shape.inner(0.3, -0.3), second, (PART, 1), false);
            }
        }
        if rng.random_bool(0.5) {
            let (m, _) = inv.draw(MATERIAL, rng);
            canvas.paint(shape, m, (MATERIAL, 0), true);
        }
    }
}

/// The image's pixels (each cell 2 x 2 pixels, with grain) and its colour
/// plane: the named colour nearest to each cell.
fn finish(
    opts: &ShapedOptions,
    inv: &Inventory,
    index: usize,
    canvas: Canvas,
    image_labels: Vec<(usize, u32)>,
) -> ShapedImage {
    let (size, seg) = (opts.size as usize, canvas.seg as usize);
    let mut rgb = vec![0u8; size * size * 3];
    let mut color = vec![0u32; seg * seg];
    for y in 0..size {
        for x in 0..size {
            let cell = (y * seg / size) * seg + x * seg / size;
            let grain = ((x * 7 + y * 13) % 9) as f32 - 4.0;
            for k in 0..3 {
                let v = canvas.rgb[cell][k] + grain;
                rgb[(y * size + x) * 3 + k] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    for (i, c) in color.iter_mut().enumerate() {
        let px = canvas.rgb[i].map(|v| v.clamp(0.0, 255.0) as u8);
        *c = inv.ranked[COLOR][nearest_color(&px)];
    }
    let mut planes = vec![(COLOR, color)];
    planes.extend(canvas.planes);
    ShapedImage {
        path: format!("shaped/{:06}.jpg", index + 1),
        rgb,
        seg_size: canvas.seg,
        planes,
        image_labels,
    }
}

/// Images rendered and written in parallel before they are recorded in
/// order.
const CHUNK: usize = 256;

/// Writes the set `opts` describes into the empty folder `out`, calling
/// `progress` with the images done after each chunk.
pub(super) fn write(
    out: &Path,
    opts: &ShapedOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<SynthReport, BrodenError> {
    let inv = Inventory::broden();
    let categories = CATEGORIES.map(str::to_owned).to_vec();
    let mut writer = Writer::create(out, categories, inv.labels.clone())?;
    for start in (0..opts.images).step_by(CHUNK) {
        let end = (start + CHUNK).min(opts.images);
        let written: Vec<_> = (start..end)
            .into_par_iter()
            .map(|i| {
                let image = render(opts, &inv, i);
                let planes = (image.planes.iter())
                    .map(|(category, labels)| PlaneData {
                        category: *category,
                        labels,
                    })
                    .collect();
                writer.write_image(&ImageData {
                    path: &image.path,
                    split: "train",
                    width: opts.size,
                    height: opts.size,
                    rgb: &image.rgb,
                    seg_width: image.seg_size,
                    seg_height: image.seg_size,
                    planes,
                    image_labels: image.image_labels.clone(),
                })
            })
            .collect();
        for w in written {
            writer.push(w?)?;
        }
        progress(end);
    }
    let labels = writer.finish()?;
    Ok(SynthReport {
        images: opts.images,
        size: opts.size,
        seg_size: (opts.size / 2).max(1),
        labels,
    })
}
