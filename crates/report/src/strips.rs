//! Image strips of the report: each unit's top images as thumbnails with the
//! unit's thresholded activation region highlighted (inside kept, outside
//! dimmed, a 1-px outline on the boundary), rendered on the CPU from the
//! saved top-k maps, one JPEG per unit, units in parallel. Where the
//! dataset's segmentation can be read, a second strip per unit also tints
//! the unit's best label's mask ([`crate::concepts`]).
//!
//! Maps are upsampled as the run upsampled them, from the geometry saved
//! with the results ([`dissect::geometry`]); results saved before the
//! geometry was fall back to half-pixel centres.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use dissect::{Alignment, FieldMap, LayerResult, TopMaps};
use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use kernels::Upsample;
use rayon::prelude::*;

use crate::concepts::ConceptMasks;
use crate::run_folder::STRIPS_DIR;
use crate::{ReportError, write_atomic};

/// Default thumbnail height in pixels.
pub const THUMB_HEIGHT: u32 = 96;
/// Pixels between thumbnails in a strip.
pub const GAP: u32 = 2;
/// Default JPEG quality of the strips.
pub const JPEG_QUALITY: u8 = 80;
/// Brightness factor applied outside the unit's region.
pub const DIM: f32 = 0.3;
/// Colour of the outline drawn on the region's boundary.
pub const OUTLINE: [u8; 3] = [255, 214, 0];
/// Tint of the concept's mask in the concept strips.
pub const CONCEPT: [u8; 3] = [0, 190, 255];
/// How much of [`CONCEPT`] a masked pixel takes.
pub const CONCEPT_ALPHA: f32 = 0.5;
/// Background of the gaps between thumbnails.
const GAP_COLOR: [u8; 3] = [255, 255, 255];
/// Stand-in for an image that could not be read, so the region still shows.
const MISSING_COLOR: [u8; 3] = [150, 150, 150];

/// How strips are drawn and where the dataset's images are.
#[derive(Debug, Clone, PartialEq)]
pub struct StripOptions {
    /// The dataset's `images/` folder; [`dissect::TopImage::path`] is
    /// relative to it.
    pub images_root: PathBuf,
    pub thumb_width: u32,
    pub thumb_height: u32,
    /// JPEG quality, 1..=100.
    pub quality: u8,
}

impl StripOptions {
    /// Thumbnails [`THUMB_HEIGHT`] high with the aspect of the model input
    /// (`input_height x input_width`), which is what the maps cover.
    pub fn new(images_root: PathBuf, input_height: u32, input_width: u32) -> Self {
        let thumb_width = if input_height == 0 || input_width == 0 {
            THUMB_HEIGHT
        } else {
            let w = f64::from(THUMB_HEIGHT) * f64::from(input_width) / f64::from(input_height);
            (w.round() as u32).clamp(1, 4 * THUMB_HEIGHT)
        };
        Self {
            images_root,
            thumb_width,
            thumb_height: THUMB_HEIGHT,
            quality: JPEG_QUALITY,
        }
    }
}

/// Where a thumbnail pixel falls relative to the unit's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelClass {
    /// Above the threshold: drawn as is.
    Inside,
    /// Above the threshold with a 4-neighbour below it: drawn in [`OUTLINE`].
    Outline,
    /// At or below the threshold (or NaN): dimmed by [`DIM`].
    Outside,
}

/// How a layer's maps are upsampled onto a picture of the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapGeometry {
    pub alignment: Alignment,
    /// The tap's receptive fields (receptive-field alignment falls back to
    /// half-pixel without them, as in results saved before they were).
    pub field: Option<FieldMap>,
    /// `[height, width]` of the model input.
    pub input: [u32; 2],
    /// `[h, w]` of the maps.
    pub feature: [u32; 2],
}

impl MapGeometry {
    /// The geometry of `layer` in a run with `options`.
    pub fn of(layer: &LayerResult, options: &dissect::Options) -> Self {
        Self {
            alignment: options.alignment,
            field: layer.field.map(FieldMap::from),
            input: [options.preprocess.height, options.preprocess.width],
            feature: layer.feature_size,
        }
    }
}

/// Where each pixel of a `width x height` thumbnail falls relative to the
/// unit's region: the map upsampled as the run did ([`dissect::geometry`])
/// and thresholded strictly at `threshold`. With receptive-field alignment
/// the region is found on the input's own grid (where the original's rule
/// is exact) and each thumbnail pixel takes the input pixel under its
/// centre.
pub fn region_classes(
    map: &[f32],
    geometry: &MapGeometry,
    threshold: f32,
    width: u32,
    height: u32,
) -> Vec<PixelClass> {
    let [h, w] = geometry.feature;
    let (wu, hu) = (width as usize, height as usize);
    let upsampled = |grid: [u32; 2]| {
        let up = match geometry.field {
            Some(field) => dissect::geometry::upsampling(
                geometry.alignment,
                Some(&field),
                geometry.input,
                [h, w],
                grid,
            )
            .ok()?,
            None => Upsample::half_pixel(h, w, grid[0], grid[1]),
        };
        Some(inside_mask(map, &up, threshold))
    };
    let inside = if h == 0 || w == 0 || map.len() != (h as usize) * (w as usize) {
        None
    } else if geometry.alignment == Alignment::ReceptiveField && geometry.field.is_some() {
        let [ih, iw] = geometry.input;
        upsampled(geometry.input).map(|grid| {
            let pick = |t: usize, n: u32, of: u32| {
                (((t as f64 + 0.5) * f64::from(of) / f64::from(n)) as usize).min(of as usize - 1)
            };
            (0..hu)
                .flat_map(|y| (0..wu).map(move |x| (y, x)))
                .map(|(y, x)| grid[pick(y, height, ih) * iw as usize + pick(x, width, iw)])
                .collect()
        })
    } else {
        upsampled([height, width])
    };
    match inside {
        Some(inside) => classes_of(&inside, wu, hu),
        None => vec![PixelClass::Outside; wu * hu],
    }
}

/// The upsampled map above `threshold`, row-major on `up`'s grid.
fn inside_mask(map: &[f32], up: &Upsample, threshold: f32) -> Vec<bool> {
    let (taps_y, taps_x) = (up.taps_y(), up.taps_x());
    let mut inside = Vec::with_capacity(taps_y.len() * taps_x.len());
    for ty in &taps_y {
        for tx in &taps_x {
            inside.push(kernels::cpu::upsample_value(map, up.w, *ty, *tx) > threshold);
        }
    }
    inside
}

/// Outline, inside or outside for each pixel of a `wu x hu` mask.
fn classes_of(inside: &[bool], wu: usize, hu: usize) -> Vec<PixelClass> {
    (0..hu)
        .flat_map(|y| (0..wu).map(move |x| (y, x)))
        .map(|(y, x)| {
            if !inside[y * wu + x] {
                return PixelClass::Outside;
            }
            // Neighbours beyond the thumbnail's edge do not make an outline:
            // a region touching the border stays open there.
            let out = |yy: usize, xx: usize| !inside[yy * wu + xx];
            let edge = (y > 0 && out(y - 1, x))
                || (y + 1 < hu && out(y + 1, x))
                || (x > 0 && out(y, x - 1))
                || (x + 1 < wu && out(y, x + 1));
            if edge {
                PixelClass::Outline
            } else {
                PixelClass::Inside
            }
        })
        .collect()
}

/// Draws the classes onto `thumb` (same size, row-major classes).
pub fn overlay(thumb: &mut RgbImage, classes: &[PixelClass]) {
    for (pixel, class) in thumb.pixels_mut().zip(classes) {
        match class {
            PixelClass::Inside => {}
            PixelClass::Outline => *pixel = Rgb(OUTLINE),
            PixelClass::Outside => {
                for c in &mut pixel.0 {
                    *c = (f32::from(*c) * DIM).round() as u8;
                }
            }
        }
    }
}

/// Tints the pixels of `thumb` under `mask` with [`CONCEPT`], leaving the
/// region's outline as drawn.
pub fn tint(thumb: &mut RgbImage, mask: &[bool], classes: Option<&[PixelClass]>) {
    for (i, (pixel, &on)) in thumb.pixels_mut().zip(mask).enumerate() {
        let outline = classes.is_some_and(|c| c.get(i) == Some(&PixelClass::Outline));
        if on && !outline {
            for (c, t) in pixel.0.iter_mut().zip(CONCEPT) {
                *c = (f32::from(*c) * (1.0 - CONCEPT_ALPHA) + f32::from(t) * CONCEPT_ALPHA).round()
                    as u8;
            }
        }
    }
}

/// The thumbnails of a layer's top images, each decoded and resized once
/// however many units share the image (`None`: it could not be read).
pub type Thumbs = HashMap<String, Option<RgbImage>>;

/// Loads the thumbnail of every image among `layer`'s top images, in
/// parallel.
pub fn load_thumbs(layer: &LayerResult, opts: &StripOptions) -> Thumbs {
    let paths: HashSet<&str> = layer
        .top_images
        .iter()
        .flatten()
        .map(|t| t.path.as_str())
        .collect();
    let (tw, th) = (opts.thumb_width.max(1), opts.thumb_height.max(1));
    paths
        .into_par_iter()
        .map(|p| (p.to_string(), load_thumb(&opts.images_root.join(p), tw, th)))
        .collect()
}

/// Reads an image and resizes it to the thumbnail size; `None` when it
/// cannot be read or decoded.
fn load_thumb(path: &Path, width: u32, height: u32) -> Option<RgbImage> {
    let image = image::ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?
        .decode()
        .ok()?;
    Some(
        image
            .resize_exact(width, height, FilterType::Triangle)
            .to_rgb8(),
    )
}

/// A unit's strip before encoding.
#[derive(Debug, Clone)]
pub struct RenderedStrip {
    pub image: RgbImage,
    /// The same strip with the unit's best label's mask tinted, when
    /// concept masks were given and the unit has a best label.
    pub concept: Option<RgbImage>,
    /// Thumbnails in the strip.
    pub n_images: usize,
    /// Image paths (relative to the images folder) that could not be read;
    /// their thumbnails show the region on a plain grey background.
    pub missing: Vec<String>,
}

/// Renders the strip of `unit`: its top images (at most `top_k`) left to
/// right, each with the region overlay, and with `concepts` the concept
/// strip beside it. `None` when the unit has no images.
pub fn render_unit_strip(
    layer: &LayerResult,
    maps: &TopMaps,
    geometry: &MapGeometry,
    thumbs: &Thumbs,
    concepts: Option<&ConceptMasks>,
    unit: usize,
    opts: &StripOptions,
) -> Option<RenderedStrip> {
    let images = layer.top_images.get(unit)?;
    let n = images.len();
    if n == 0 {
        return None;
    }
    let (tw, th) = (opts.thumb_width.max(1), opts.thumb_height.max(1));
    let strip_w = tw * n as u32 + GAP * (n as u32 - 1);
    let mut strip = RgbImage::from_pixel(strip_w, th, Rgb(GAP_COLOR));
    let label = layer
        .units
        .get(unit)
        .and_then(|u| u.best())
        .and_then(|b| b.label);
    let concepts = concepts
        .filter(|c| (c.width, c.height) == (tw, th))
        .zip(label);
    let mut concept_strip = concepts.map(|_| strip.clone());
    let threshold = layer.thresholds.get(unit).copied().unwrap_or(f32::NAN);
    let mut missing = Vec::new();
    for (slot, top) in images.iter().take(n).enumerate() {
        let loaded = thumbs.get(&top.path).cloned().flatten();
        let mut thumb = loaded.unwrap_or_else(|| {
            missing.push(top.path.clone());
            RgbImage::from_pixel(tw, th, Rgb(MISSING_COLOR))
        });
        // Without saved maps the thumbnails are shown plain.
        let classes = maps
            .map(unit, slot)
            .map(|map| region_classes(map, geometry, threshold, tw, th));
        if let Some(classes) = &classes {
            overlay(&mut thumb, classes);
        }
        let x = i64::from(slot as u32 * (tw + GAP));
        if let (Some(out), Some((masks, label))) = (&mut concept_strip, concepts) {
            let mut tinted = thumb.clone();
            if let Some(mask) = masks.get(&top.path, label) {
                tint(&mut tinted, mask, classes.as_deref());
            }
            image::imageops::replace(out, &tinted, x, 0);
        }
        image::imageops::replace(&mut strip, &thumb, x, 0);
    }
    Some(RenderedStrip {
        image: strip,
        concept: concept_strip,
        n_images: n,
        missing,
    })
}

/// Encodes an RGB image as JPEG.
pub fn encode_jpeg(image: &RgbImage, quality: u8, path: &Path) -> Result<Vec<u8>, ReportError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100))
        .encode_image(image)
        .map_err(|e| ReportError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    Ok(bytes)
}

/// The strip written for one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitStrip {
    /// 0-based unit index.
    pub unit: usize,
    /// Path relative to the report folder, `/`-separated; `None` when the
    /// unit has no top images.
    pub file: Option<String>,
    /// The concept strip beside it, when one was drawn.
    pub concept_file: Option<String>,
    pub width: u32,
    pub height: u32,
    pub n_images: usize,
    /// Image paths that could not be read.
    pub missing: Vec<String>,
}

/// The strips of one layer, indexed by unit.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStrips {
    pub layer: String,
    pub units: Vec<UnitStrip>,
    /// Total bytes of the strip files written.
    pub bytes: u64,
}

/// Folder name (under `strips/`) of a layer: characters other than letters,
/// digits, `-`, `_` and `.` become `_`, and dot-only names are prefixed so
/// they cannot climb out of `strips/`.
pub fn layer_folder_name(layer: &str) -> String {
    let safe = crate::output::safe_name(layer);
    if safe.chars().all(|c| c == '.') {
        format!("layer{safe}")
    } else {
        safe
    }
}

/// Renders and writes every unit's strip of `layer` to
/// `report_dir/strips/<layer>/unit-NNNN.jpg` (1-based unit number), and
/// with `concepts` its concept strip to `unit-NNNN-concept.jpg`, units in
/// parallel, each file written atomically.
pub fn write_layer_strips(
    report_dir: &Path,
    layer: &LayerResult,
    maps: &TopMaps,
    geometry: &MapGeometry,
    concepts: Option<&ConceptMasks>,
    opts: &StripOptions,
) -> Result<LayerStrips, ReportError> {
    let folder = layer_folder_name(&layer.name);
    let dir = report_dir.join(STRIPS_DIR).join(&folder);
    std::fs::create_dir_all(&dir).map_err(|source| ReportError::Io {
        path: dir.clone(),
        source,
    })?;
    let thumbs = load_thumbs(layer, opts);
    let units = (0..layer.n_units)
        .into_par_iter()
        .map(|unit| {
            let Some(rendered) =
                render_unit_strip(layer, maps, geometry, &thumbs, concepts, unit, opts)
            else {
                return Ok((
                    UnitStrip {
                        unit,
                        file: None,
                        concept_file: None,
                        width: 0,
                        height: 0,
                        n_images: 0,
                        missing: Vec::new(),
                    },
                    0u64,
                ));
            };
            let name = format!("unit-{:04}.jpg", unit + 1);
            let path = dir.join(&name);
            let bytes = encode_jpeg(&rendered.image, opts.quality, &path)?;
            write_atomic(&path, &bytes)?;
            let mut written = bytes.len() as u64;
            let concept_file = match &rendered.concept {
                Some(image) => {
                    let name = format!("unit-{:04}-concept.jpg", unit + 1);
                    let path = dir.join(&name);
                    let bytes = encode_jpeg(image, opts.quality, &path)?;
                    write_atomic(&path, &bytes)?;
                    written += bytes.len() as u64;
                    Some(format!("{STRIPS_DIR}/{folder}/{name}"))
                }
                None => None,
            };
            Ok((
                UnitStrip {
                    unit,
                    file: Some(format!("{STRIPS_DIR}/{folder}/{name}")),
                    concept_file,
                    width: rendered.image.width(),
                    height: rendered.image.height(),
                    n_images: rendered.n_images,
                    missing: rendered.missing,
                },
                written,
            ))
        })
        .collect::<Result<Vec<_>, ReportError>>()?;
    let bytes = units.iter().map(|(_, b)| b).sum();
    Ok(LayerStrips {
        layer: layer.name.clone(),
        units: units.into_iter().map(|(u, _)| u).collect(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, FEATURE, GREY, TOP_K};

    /// Half-pixel maps of `feature` cells on a 224 input.
    fn half(feature: u32) -> MapGeometry {
        MapGeometry {
            alignment: Alignment::HalfPixel,
            field: None,
            input: [224, 224],
            feature: [feature, feature],
        }
    }

    /// Half-pixel linear interpolation, in f64, of the 0/1 indicator of
    /// cells `lo..hi` of an 8-cell axis, at output pixel `d` of `8 * scale`.
    fn profile(scale: usize, lo: usize, hi: usize, d: usize) -> f64 {
        let src = ((d as f64 + 0.5) / scale as f64 - 0.5).clamp(0.0, 7.0);
        let i0 = src.floor() as usize;
        let f = src - i0 as f64;
        let ind = |i: usize| f64::from(u8::from((lo..hi).contains(&i)));
        ind(i0) * (1.0 - f) + ind((i0 + 1).min(7)) * f
    }

    /// The expected classes of a `size x size` thumbnail for a map that is 1
    /// on feature rows `r0..r1`, columns `c0..c1` and 0 elsewhere,
    /// thresholded at 0.5. The map is separable, so its bilinear upsampling
    /// is the product of two 1-D profiles; each crosses 0.5 exactly on the
    /// cell boundaries (fractions are odd multiples of 1/24, so never a
    /// tie), and the region is the scaled rectangle with its corners cut
    /// where the product of the two edge ramps falls to 0.5 or below.
    fn expected_all(scale: usize, rect: [usize; 4], size: usize) -> Vec<PixelClass> {
        let [r0, r1, c0, c1] = rect;
        let inside: Vec<bool> = (0..size * size)
            .map(|i| profile(scale, r0, r1, i / size) * profile(scale, c0, c1, i % size) > 0.5)
            .collect();
        (0..size * size)
            .map(|i| {
                let (y, x) = (i / size, i % size);
                if !inside[i] {
                    return PixelClass::Outside;
                }
                let out = |yy: usize, xx: usize| !inside[yy * size + xx];
                let edge = (y > 0 && out(y - 1, x))
                    || (y + 1 < size && out(y + 1, x))
                    || (x > 0 && out(y, x - 1))
                    || (x + 1 < size && out(y, x + 1));
                if edge {
                    PixelClass::Outline
                } else {
                    PixelClass::Inside
                }
            })
            .collect()
    }

    /// Asserts equal class maps, reporting counts and the first difference
    /// rather than 9,216 entries.
    fn assert_classes(got: &[PixelClass], want: &[PixelClass], size: usize) {
        assert_eq!(got.len(), want.len());
        let diff: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
        if let Some(&i) = diff.first() {
            panic!(
                "{} of {} pixels differ; first at (y {}, x {}): got {:?}, want {:?}",
                diff.len(),
                want.len(),
                i / size,
                i % size,
                got[i],
                want[i]
            );
        }
    }

    #[test]
    fn planted_rectangle_is_exactly_the_highlighted_region() {
        let map = fixture::rect_map(2, 6, 2, 5);
        let classes = region_classes(&map, &half(FEATURE), 0.5, 96, 96);
        // 96 / 8 = 12 thumbnail pixels per feature cell: rows 24..72, columns 24..60.
        assert_classes(&classes, &expected_all(12, [2, 6, 2, 5], 96), 96);
        // Independently of the profile arithmetic: the region lies within
        // the scaled rectangle, fills it away from the corners, and each cut
        // corner loses 14 pixels (the pairs of ramp values (2a+1)(2b+1)/576
        // that are at most 0.5).
        let lit = |y: usize, x: usize| classes[y * 96 + x] != PixelClass::Outside;
        let in_rect = |y: usize, x: usize| (24..72).contains(&y) && (24..60).contains(&x);
        let near_corner = |y: usize, x: usize| !(30..66).contains(&y) && !(30..54).contains(&x);
        for y in 0..96 {
            for x in 0..96 {
                if !in_rect(y, x) {
                    assert!(
                        !lit(y, x),
                        "({y}, {x}) is lit outside the planted rectangle"
                    );
                } else if !near_corner(y, x) {
                    assert!(lit(y, x), "({y}, {x}) is dark inside the planted rectangle");
                }
            }
        }
        let n_lit = classes
            .iter()
            .filter(|c| **c != PixelClass::Outside)
            .count();
        assert_eq!(n_lit, 48 * 36 - 4 * 14);
        assert_eq!(classes[48 * 96 + 24], PixelClass::Outline);
        assert_eq!(classes[48 * 96 + 40], PixelClass::Inside);
    }

    #[test]
    fn receptive_field_regions_sit_where_the_run_upsampled() {
        // 8 cells of a field (offset -4, size 28, step 28) on a 224 input:
        // by the original rule on the input's grid (reduction 1), cell i is
        // at input pixel 28 // 2 - 4 + 28 i = 10 + 28 i. Row 3 alone is
        // high, so the upsampled value at input row j is
        // 1 - |(j - 10) / 28 - 3| and exceeds 0.5 exactly for |j - 94| < 14.
        // Thumbnail row y shows input row floor((y + 0.5) * 224 / 96).
        let map = fixture::rect_map(3, 4, 0, 8);
        let geometry = MapGeometry {
            alignment: Alignment::ReceptiveField,
            field: Some(FieldMap {
                offset: [-4, -4],
                size: [28, 28],
                step: [28, 28],
            }),
            input: [224, 224],
            feature: [FEATURE, FEATURE],
        };
        let classes = region_classes(&map, &geometry, 0.5, 96, 96);
        for y in 0..96 {
            let j = ((y as f64 + 0.5) * 224.0 / 96.0) as i64;
            let want = (j - 94).abs() < 14;
            for x in 0..96 {
                let lit = classes[y * 96 + x] != PixelClass::Outside;
                assert_eq!(lit, want, "thumbnail pixel ({y}, {x}), input row {j}");
            }
        }
        // Half-pixel centres sit at 14 + 28 i: the region moves down.
        let other = region_classes(&map, &half(FEATURE), 0.5, 96, 96);
        let first_lit = |c: &[PixelClass]| c.iter().position(|p| *p != PixelClass::Outside);
        assert!(
            first_lit(&other) > first_lit(&classes),
            "{:?} {:?}",
            first_lit(&other),
            first_lit(&classes)
        );
    }

    #[test]
    fn regions_touching_the_border_are_open_there_and_thresholds_are_strict() {
        let map = fixture::rect_map(0, 2, 4, 8);
        let classes = region_classes(&map, &half(FEATURE), 0.5, 96, 96);
        assert_classes(&classes, &expected_all(12, [0, 2, 4, 8], 96), 96);
        assert_eq!(classes[0], PixelClass::Outside);
        assert_eq!(
            classes[95],
            PixelClass::Inside,
            "the corner is not outlined"
        );
        // A map equal to its threshold everywhere has no region (strict `>`),
        // and NaN never passes.
        let flat = vec![0.5; 64];
        assert!(
            region_classes(&flat, &half(8), 0.5, 20, 20)
                .iter()
                .all(|c| *c == PixelClass::Outside)
        );
        let nan = vec![f32::NAN; 64];
        assert!(
            region_classes(&nan, &half(8), 0.0, 20, 20)
                .iter()
                .all(|c| *c == PixelClass::Outside)
        );
        // A map of the wrong size draws no region rather than panicking.
        assert!(
            region_classes(&flat[..10], &half(8), 0.0, 4, 4)
                .iter()
                .all(|c| *c == PixelClass::Outside)
        );
    }

    /// Class of a rendered pixel by its nearest reference colour: the grey
    /// image kept, the grey dimmed, or the outline.
    fn pixel_class(p: &Rgb<u8>) -> PixelClass {
        let dimmed = (f32::from(GREY) * DIM).round() as u8;
        let refs = [
            (PixelClass::Inside, [GREY; 3]),
            (PixelClass::Outside, [dimmed; 3]),
            (PixelClass::Outline, OUTLINE),
        ];
        let dist = |a: [u8; 3]| -> i32 {
            a.iter()
                .zip(p.0)
                .map(|(&a, b)| (i32::from(a) - i32::from(b)).pow(2))
                .sum()
        };
        refs.iter()
            .min_by_key(|(_, c)| dist(*c))
            .map(|(k, _)| *k)
            .unwrap()
    }

    fn thumb_classes(strip: &RgbImage, slot: u32, size: u32) -> Vec<PixelClass> {
        let x0 = slot * (size + GAP);
        (0..size * size)
            .map(|i| pixel_class(strip.get_pixel(x0 + i % size, i / size)))
            .collect()
    }

    #[test]
    fn written_strips_highlight_the_planted_regions_of_each_slot() {
        let tmp = tempfile::tempdir().unwrap();
        let dataset = tmp.path().join("data");
        fixture::write_images(&dataset);
        let (layer, maps) = fixture::layer("conv/5", 6, 0);
        let opts = StripOptions::new(dataset.join("images"), 224, 224);
        assert_eq!((opts.thumb_width, opts.thumb_height), (96, 96));

        // In memory the classes are exact, slot by slot.
        let rendered = render_unit_strip(
            &layer,
            &maps,
            &half(FEATURE),
            &load_thumbs(&layer, &opts),
            None,
            0,
            &opts,
        )
        .unwrap();
        assert!(rendered.concept.is_none());
        assert_eq!(rendered.n_images, TOP_K);
        assert!(rendered.missing.is_empty());
        assert_eq!(rendered.image.width(), 3 * 96 + 2 * GAP);
        assert_classes(
            &thumb_classes(&rendered.image, 0, 96),
            &expected_all(12, [2, 6, 2, 5], 96),
            96,
        );
        assert_classes(
            &thumb_classes(&rendered.image, 1, 96),
            &expected_all(12, [0, 2, 4, 8], 96),
            96,
        );
        // Kept pixels keep the image's colour; dimmed ones are darker.
        assert_eq!(rendered.image.get_pixel(40, 40).0, [GREY; 3]);
        assert_eq!(rendered.image.get_pixel(5, 5).0, [60; 3]);

        // The JPEG on disk agrees but for compression noise at the edges.
        let strips =
            write_layer_strips(tmp.path(), &layer, &maps, &half(FEATURE), None, &opts).unwrap();
        assert_eq!(strips.units.len(), 6);
        let file = strips.units[0].file.as_deref().unwrap();
        assert_eq!(file, "strips/conv_5/unit-0001.jpg");
        let decoded = image::open(tmp.path().join(file)).unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), rendered.image.dimensions());
        let want = expected_all(12, [2, 6, 2, 5], 96);
        let got = thumb_classes(&decoded, 0, 96);
        let agree = want.iter().zip(&got).filter(|(a, b)| a == b).count();
        assert!(
            agree * 100 >= want.len() * 98,
            "{agree} of {} pixels agree",
            want.len()
        );
        let inside_agree = want
            .iter()
            .zip(&got)
            .filter(|(a, b)| **a == PixelClass::Inside && **b == PixelClass::Inside)
            .count();
        assert!(inside_agree * 100 >= 46 * 34 * 95, "{inside_agree}");
    }

    #[test]
    fn short_empty_and_missing_image_lists_are_handled() {
        let tmp = tempfile::tempdir().unwrap();
        let dataset = tmp.path().join("data");
        fixture::write_images(&dataset);
        let (layer, maps) = fixture::layer("l", 6, 0);
        let opts = StripOptions::new(dataset.join("images"), 224, 224);
        let strips =
            write_layer_strips(tmp.path(), &layer, &maps, &half(FEATURE), None, &opts).unwrap();
        // Unit 1 has two images, unit 2 none, unit 3 a missing first image.
        assert_eq!(strips.units[1].n_images, 2);
        assert_eq!(strips.units[1].width, 2 * 96 + GAP);
        assert_eq!(strips.units[2].file, None);
        assert!(!tmp.path().join("strips/l/unit-0003.jpg").exists());
        assert_eq!(
            strips.units[3].missing,
            vec!["missing/nowhere.jpg".to_string()]
        );
        assert!(tmp.path().join("strips/l/unit-0004.jpg").exists());
        assert!(strips.bytes > 0);
    }

    #[test]
    fn thumbnails_follow_the_input_aspect_and_layer_folders_are_safe() {
        let o = StripOptions::new(PathBuf::new(), 224, 448);
        assert_eq!((o.thumb_width, o.thumb_height), (192, 96));
        let o = StripOptions::new(PathBuf::new(), 0, 448);
        assert_eq!(o.thumb_width, 96);
        assert_eq!(layer_folder_name("features.28"), "features.28");
        assert_eq!(layer_folder_name("a/b c"), "a_b_c");
        assert_eq!(layer_folder_name(".."), "layer..");
    }

    #[test]
    fn concept_strips_tint_the_best_labels_mask_and_keep_the_region_outline() {
        let tmp = tempfile::tempdir().unwrap();
        let dataset = tmp.path().join("data");
        fixture::write_images(&dataset);
        let (layer, maps) = fixture::layer("l", 6, 0);
        let opts = StripOptions::new(dataset.join("images"), 224, 224);
        let source = crate::concepts::ConceptSource::open(&opts.images_root).unwrap();
        let masks = source.layer_masks(&layer, 96, 96);
        // Unit 0's best label is the object `dog` (4); its top images are
        // img0 (dog on the left half), img1 and img2.
        assert_eq!(layer.units[0].best().unwrap().label, Some(4));
        let thumbs = load_thumbs(&layer, &opts);
        let rendered = render_unit_strip(
            &layer,
            &maps,
            &half(FEATURE),
            &thumbs,
            Some(&masks),
            0,
            &opts,
        )
        .unwrap();
        let plain = &rendered.image;
        let concept = rendered.concept.as_ref().expect("a concept strip");
        assert_eq!(concept.dimensions(), plain.dimensions());
        for slot in 0..TOP_K {
            let image = slot; // (unit 0 + slot) % N_IMAGES
            let classes = thumb_classes(plain, slot as u32, 96);
            for y in 0..96u32 {
                for x in 0..96u32 {
                    let px = slot as u32 * (96 + GAP) + x;
                    // The segmentation pixel under the thumbnail pixel's centre.
                    let centre =
                        |t: u32| ((f64::from(t) + 0.5) * f64::from(fixture::SEG) / 96.0) as u32;
                    let on = fixture::seg_has(image, 4, centre(y), centre(x));
                    let outline = classes[(y * 96 + x) as usize] == PixelClass::Outline;
                    let (a, b) = (plain.get_pixel(px, y).0, concept.get_pixel(px, y).0);
                    if on && !outline {
                        let want: Vec<u8> = a
                            .iter()
                            .zip(CONCEPT)
                            .map(|(&c, t)| {
                                (f32::from(c) * (1.0 - CONCEPT_ALPHA)
                                    + f32::from(t) * CONCEPT_ALPHA)
                                    .round() as u8
                            })
                            .collect();
                        assert_eq!(b.to_vec(), want, "slot {slot} ({x}, {y})");
                    } else {
                        assert_eq!(a, b, "slot {slot} ({x}, {y}) is not the concept's");
                    }
                }
            }
        }
        // Written beside the plain strip; a unit without a label gets none.
        let strips = write_layer_strips(
            tmp.path(),
            &layer,
            &maps,
            &half(FEATURE),
            Some(&masks),
            &opts,
        )
        .unwrap();
        assert_eq!(
            strips.units[0].concept_file.as_deref(),
            Some("strips/l/unit-0001-concept.jpg")
        );
        assert!(tmp.path().join("strips/l/unit-0001-concept.jpg").exists());
        assert_eq!(
            strips.units[5].concept_file, None,
            "the last unit scores nothing"
        );
    }
}
