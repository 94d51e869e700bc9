//! A deterministic generator of synthetic Broden datasets with structure in
//! all six categories, for tests and demos that need no downloaded data.
//!
//! Each image is a scene (`street-s`, `forest-s`, ...; image-level) that
//! governs the background colours, the background texture pattern
//! (`striped`, `dotted`, ...; image-level texture label), and which objects
//! (`disc`, `triangle`, ...) appear where, in which materials (`wood`,
//! `brick`, ...: procedural surface patterns). Objects have parts (`rim`,
//! `hub`, `apex`, ...). Every segmentation pixel also gets the Broden colour
//! name (`red-c`, ...) nearest to the pixel actually drawn.
//!
//! With [`SynthOptions::swatch_percent`] above zero the dataset mixes its
//! sources as Broden does: scene images (as ADE20K's) carry a scene label
//! but no texture label, and texture swatches (as DTD's: one background
//! pattern over the whole image, no objects) carry a texture label and
//! colours only. Each image-level concept then covers a small share of
//! all pixels, as in Broden, so a unit active on 0.5% of pixels can reach
//! a high IoU with it.
//!
//! Image `i` depends only on the seed and `i` (its own ChaCha stream), so
//! [`render`] reproduces any image's pixels and ground truth without the
//! others, and [`generate`] renders in parallel yet writes byte-identical
//! output for a seed.

mod paint;
mod shaped;
mod staged;

pub use paint::COLOR_RGB;
pub use shaped::{BRODEN_LABELS, Inventory, ShapedImage, ShapedOptions, render as render_shaped};

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::BrodenError;
use crate::write::{ImageData, LabelSpec, PlaneData, WriteSummary, Writer};

/// The categories, in `index.csv` column order; label numbers are assigned
/// in this order too.
pub const CATEGORIES: [&str; 6] = ["color", "object", "part", "material", "scene", "texture"];
/// The 11 Broden colour names (pixel-level).
pub const COLORS: [&str; 11] = [
    "black-c", "blue-c", "brown-c", "grey-c", "green-c", "orange-c", "pink-c", "purple-c", "red-c",
    "white-c", "yellow-c",
];
/// Object kinds (pixel-level): each a distinct shape.
pub const OBJECTS: [&str; 8] = [
    "disc", "square", "triangle", "ring", "cross", "diamond", "star", "bar",
];
/// Object parts (pixel-level): `rim` (border band of disc, square,
/// diamond), `hub` (centre of disc, square, cross, star), `apex` (top of
/// triangle, diamond), `base` (bottom band of triangle), `arm` (arms of
/// cross, points of star), `end` (ends of bar). Rings have no parts.
pub const PARTS: [&str; 6] = ["rim", "hub", "apex", "base", "arm", "end"];
/// Materials (pixel-level, on objects): procedural surface patterns.
pub const MATERIALS: [&str; 6] = ["wood", "metal", "fabric", "stone", "brick", "glass"];
/// Scenes (image-level).
pub const SCENES: [&str; 6] = [
    "street-s",
    "kitchen-s",
    "forest-s",
    "beach-s",
    "office-s",
    "bedroom-s",
];
/// Textures (image-level): the background pattern.
pub const TEXTURES: [&str; 6] = [
    "striped",
    "checkered",
    "dotted",
    "zigzagged",
    "grid",
    "marbled",
];

const COLOR: usize = 0;
const OBJECT: usize = 1;
const PART: usize = 2;
const MATERIAL: usize = 3;
const SCENE: usize = 4;
const TEXTURE: usize = 5;

/// The concept names of each category, in [`CATEGORIES`] order.
const NAMES: [&[&str]; 6] = [&COLORS, &OBJECTS, &PARTS, &MATERIALS, &SCENES, &TEXTURES];

/// One concept of the synthetic dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concept {
    /// Global label number (1-based, as in `label.csv`).
    pub number: u32,
    pub category: &'static str,
    pub name: &'static str,
}

/// The first label number of category `cat` (index into [`CATEGORIES`]).
fn first_number(cat: usize) -> u32 {
    1 + NAMES[..cat].iter().map(|n| n.len() as u32).sum::<u32>()
}

/// Every concept, by label number.
pub fn concepts() -> Vec<Concept> {
    let mut out = Vec::new();
    for (cat, names) in NAMES.iter().enumerate() {
        let first = first_number(cat);
        for (k, &name) in names.iter().enumerate() {
            out.push(Concept {
                number: first + k as u32,
                category: CATEGORIES[cat],
                name,
            });
        }
    }
    out
}

/// The concept names of a category, or `None` for an unknown category.
pub fn category_concepts(category: &str) -> Option<&'static [&'static str]> {
    CATEGORIES
        .iter()
        .position(|&c| c == category)
        .map(|cat| NAMES[cat])
}

/// The label number of concept `name` in `category`, e.g.
/// `concept_number("color", "red-c")`.
pub fn concept_number(category: &str, name: &str) -> Option<u32> {
    let cat = CATEGORIES.iter().position(|&c| c == category)?;
    let k = NAMES[cat].iter().position(|&n| n == name)?;
    Some(first_number(cat) + k as u32)
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOptions {
    pub images: usize,
    pub seed: u64,
    /// Image side in pixels; segmentations are `size / 2` (as broden1_224
    /// pairs 224 with 112).
    pub size: u32,
    /// Percentage of images (drawn per image) that are texture swatches; at
    /// 0 every image is a scene image with both a scene and a texture label
    /// (the mix the default model was trained on), otherwise scene images
    /// carry no texture label. See the module docs.
    pub swatch_percent: u8,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            images: 200,
            seed: 1,
            size: 224,
            swatch_percent: 0,
        }
    }
}

impl SynthOptions {
    /// Segmentation side in pixels.
    pub fn seg_size(&self) -> u32 {
        self.size / 2
    }

    fn check(&self) -> Result<(), BrodenError> {
        let message = if self.images == 0 {
            "images must be at least 1".to_owned()
        } else if !(8..=4096).contains(&self.size) {
            format!("size {} is not in 8..=4096", self.size)
        } else if self.swatch_percent > 100 {
            format!("swatch percentage {} is over 100", self.swatch_percent)
        } else {
            return Ok(());
        };
        Err(BrodenError::InvalidOptions { message })
    }
}

/// One synthetic image and its ground truth. Label maps hold global label
/// numbers at the segmentation size (`seg_size * seg_size`, row-major;
/// 0 = unlabelled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthImage {
    pub index: usize,
    /// Path relative to `images/`, e.g. `synth/000001.png` for index 0.
    pub path: String,
    pub size: u32,
    pub seg_size: u32,
    /// 8-bit RGB, `size * size * 3`, row-major.
    pub rgb: Vec<u8>,
    /// Every pixel labelled.
    pub color: Vec<u32>,
    pub object: Vec<u32>,
    pub part: Vec<u32>,
    pub material: Vec<u32>,
    /// The scene label; `None` for a texture swatch.
    pub scene: Option<u32>,
    /// The texture label; `None` for a scene image of a dataset with
    /// swatches.
    pub texture: Option<u32>,
}

impl SynthImage {
    /// The pixel-level planes written to the dataset, as `(index into
    /// [`CATEGORIES`], labels)`: those with at least one labelled pixel (an
    /// image without parts has an empty `part` cell, as in Broden).
    pub fn planes(&self) -> Vec<(usize, &[u32])> {
        [
            (COLOR, &self.color),
            (OBJECT, &self.object),
            (PART, &self.part),
            (MATERIAL, &self.material),
        ]
        .into_iter()
        .filter(|(_, l)| l.iter().any(|&v| v != 0))
        .map(|(c, l)| (c, l.as_slice()))
        .collect()
    }

    /// The image-level labels, as `(index into [`CATEGORIES`], number)`.
    pub fn image_labels(&self) -> Vec<(usize, u32)> {
        [(SCENE, self.scene), (TEXTURE, self.texture)]
            .into_iter()
            .filter_map(|(category, label)| label.map(|l| (category, l)))
            .collect()
    }
}

/// Renders image `index` of the dataset that `opts` describes (its pixels
/// and ground truth), independently of every other image.
pub fn render(opts: &SynthOptions, index: usize) -> Result<SynthImage, BrodenError> {
    opts.check()?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    rng.set_stream(index as u64);
    let layout = paint::sample(&mut rng, opts.size, opts.swatch_percent);
    let drawn = paint::draw(&layout, opts.size);

    let (size, seg) = (opts.size, opts.seg_size());
    let n = (seg * seg) as usize;
    let mut out = SynthImage {
        index,
        path: format!("synth/{:06}.png", index + 1),
        size,
        seg_size: seg,
        color: vec![0; n],
        object: vec![0; n],
        part: vec![0; n],
        material: vec![0; n],
        scene: (!layout.swatch).then(|| first_number(SCENE) + layout.scene as u32),
        texture: (layout.swatch || opts.swatch_percent == 0)
            .then(|| first_number(TEXTURE) + layout.texture as u32),
        rgb: Vec::new(),
    };
    // Segmentation pixel (sx, sy) takes the labels of the image pixel under
    // its centre, so that every label describes a pixel actually drawn.
    let sample = |s: u32| ((2 * s as u64 + 1) * size as u64 / (2 * seg as u64)) as usize;
    let first_color = first_number(COLOR);
    let bases = [OBJECT, PART, MATERIAL].map(|c| first_number(c) - 1);
    let label = |v: u8, base: u32| if v == 0 { 0 } else { base + u32::from(v) };
    for sy in 0..seg {
        for sx in 0..seg {
            let j = (sy * seg + sx) as usize;
            let i = sample(sy) * size as usize + sample(sx);
            out.color[j] = first_color + paint::nearest_color(&drawn.rgb[i * 3..i * 3 + 3]) as u32;
            out.object[j] = label(drawn.object[i], bases[0]);
            out.part[j] = label(drawn.part[i], bases[1]);
            out.material[j] = label(drawn.material[i], bases[2]);
        }
    }
    out.rgb = drawn.rgb;
    Ok(out)
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthReport {
    pub images: usize,
    pub size: u32,
    pub seg_size: u32,
    /// Label statistics per category (indexed as [`CATEGORIES`]) and label
    /// number, as written to `label.csv` and the `c_*.csv` files.
    pub labels: WriteSummary,
}

/// Images rendered and encoded in parallel before they are recorded in
/// order; bounds memory whatever the dataset size.
const CHUNK: usize = 64;

/// Writes a synthetic Broden dataset to `out` (which must not exist or be
/// empty): `index.csv`, `category.csv`, `label.csv`, `c_*.csv` and
/// `images/synth/NNNNNN.png` with `_color`, `_object`, `_part` and
/// `_material` segmentation PNGs. The same options give byte-identical
/// files. The dataset is written beside `out` and renamed into place
/// when complete: a failure leaves nothing behind.
pub fn generate(out: &Path, opts: &SynthOptions) -> Result<SynthReport, BrodenError> {
    opts.check()?;
    staged::staged(out, |dir| write_dataset(dir, opts))
}

/// Writes a probe set of Broden's shape ([`shaped`]: its label inventory,
/// long-tailed frequencies, part layers, multi-label scenes) to `out`, as
/// [`generate`] writes the small one: the same options give the same
/// files, written through a staging folder. `progress` is called with the
/// images done as they are written.
pub fn generate_shaped(
    out: &Path,
    opts: &ShapedOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<SynthReport, BrodenError> {
    let check = SynthOptions {
        images: opts.images,
        seed: opts.seed,
        size: opts.size,
        swatch_percent: 0,
    };
    check.check()?;
    staged::staged(out, |dir| shaped::write(dir, opts, progress))
}

/// Writes the dataset of `opts` into the empty folder `out`.
fn write_dataset(out: &Path, opts: &SynthOptions) -> Result<SynthReport, BrodenError> {
    let labels = NAMES
        .iter()
        .enumerate()
        .flat_map(|(category, names)| {
            names.iter().map(move |name| LabelSpec {
                name: (*name).to_owned(),
                category,
                syns: Vec::new(),
            })
        })
        .collect();
    let mut writer = Writer::create(out, CATEGORIES.map(str::to_owned).to_vec(), labels)?;
    for start in (0..opts.images).step_by(CHUNK) {
        let end = (start + CHUNK).min(opts.images);
        let written: Vec<_> = (start..end)
            .into_par_iter()
            .map(|i| {
                let image = render(opts, i)?;
                let planes = image
                    .planes()
                    .into_iter()
                    .map(|(category, labels)| PlaneData { category, labels })
                    .collect();
                writer.write_image(&ImageData {
                    path: &image.path,
                    split: "train",
                    width: image.size,
                    height: image.size,
                    rgb: &image.rgb,
                    seg_width: image.seg_size,
                    seg_height: image.seg_size,
                    planes,
                    image_labels: image.image_labels(),
                })
            })
            .collect();
        for w in written {
            writer.push(w?)?;
        }
    }
    let labels = writer.finish()?;
    Ok(SynthReport {
        images: opts.images,
        size: opts.size,
        seg_size: opts.seg_size(),
        labels,
    })
}
