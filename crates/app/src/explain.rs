//! `netdissect explain`: the units behind a classifier's predictions.
//!
//! For each image, the model (with the run's preprocessing) predicts its
//! top classes; each class's logit splits over the units of the dissected
//! last layer ([`models::Attribution`]), and the units with the largest
//! contributions are listed with the concepts dissection gave them.
//! Writes `explain.json` and a self-contained `explain.html` (images
//! inlined) with each top unit's thresholded region outlined, upsampled as
//! the run upsampled it.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::{Path, PathBuf};

use broden::{Dataset, DatasetOptions, Preprocess};
use dissect::{Dissection, Dissector, LayerResult};
use image::RgbImage;
use models::burn::tensor::{Tensor, TensorData};
use models::{ArchChoice, ClassTerms, Model};
use report::strips::{MapGeometry, PixelClass, overlay, region_classes};
use serde::Serialize;

use crate::engine::{Backend, EngineSpec};
use crate::error::{Error, Kind, Result};
use crate::events::Events;

/// One unit's share of a class score.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnitTerm {
    /// 1-based, as files show units.
    pub unit: usize,
    pub contribution: f64,
    /// Share of all units' absolute contributions (signed: a unit that
    /// lowers the score has a negative share).
    pub share: f64,
    /// The unit's label, or `unlabelled` when its best IoU is at or below
    /// the run's threshold.
    pub label: String,
    pub category: String,
    pub iou: f64,
    pub detector: bool,
    /// Whether some pixel of the unit's map on this image, upsampled onto
    /// the thumbnail, is above its threshold T_k; where none is, the
    /// picture shows its activation as a heat map instead of a region.
    pub above_threshold: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    pub class: usize,
    pub name: String,
    pub logit: f64,
    pub bias: f64,
    pub units: Vec<UnitTerm>,
    /// The sum of every other unit's contribution.
    pub other_units: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Explained {
    pub image: String,
    pub predictions: Vec<Prediction>,
}

#[derive(Debug, Clone, Serialize)]
struct ExplainFile<'a> {
    model: &'a str,
    layer: &'a str,
    attribution: &'a str,
    images: &'a [Explained],
}

/// What `explain` is asked.
#[derive(Debug, Clone)]
pub struct ExplainJob {
    /// The results folder of a dissection of the network's last layer.
    pub results: PathBuf,
    pub weights: PathBuf,
    pub images: Vec<PathBuf>,
    /// A dataset and how many of its first images to explain as well.
    pub dataset: Option<(PathBuf, usize)>,
    /// Class names, one per line.
    pub classes: Option<PathBuf>,
    /// Default: `explain/` in the results folder.
    pub out: Option<PathBuf>,
    pub top_classes: usize,
    pub top_units: usize,
    pub backend: Backend,
}

/// Explains the images of `job`; returns the page written.
pub fn explain(job: &ExplainJob, events: &mut dyn Events) -> Result<PathBuf> {
    let mut images = job.images.clone();
    if let Some((dir, n)) = &job.dataset {
        let ds = Dataset::open(dir, &DatasetOptions::default()).map_err(Error::input)?;
        let root = ds.root.join("images");
        images.extend(ds.images.iter().take(*n).map(|r| root.join(&r.image)));
    }
    if images.is_empty() {
        return Err(Error::usage(
            "nothing to explain: give --image IMG or --dataset D --images N",
        ));
    }
    if job.top_classes == 0 || job.top_units == 0 {
        return Err(Error::usage(
            "--top-classes and --top-units must be at least 1",
        ));
    }
    let dissector = EngineSpec::of(job.backend).dissector(events)?;
    let (d, model) = load_dissected(&job.results, &job.weights, &dissector)?;
    let req = Request {
        images,
        classes: job.classes.as_deref(),
        out: (job.out.clone()).unwrap_or_else(|| job.results.join("explain")),
        top_classes: job.top_classes,
        top_units: job.top_units,
    };
    explain_with(&d, &model, &req, &dissector)
}

/// The dissection in `results` and the zoo network it dissected, loaded
/// from `weights` onto the dissector's device.
pub(crate) fn load_dissected(
    results: &Path,
    weights: &Path,
    dissector: &Dissector,
) -> Result<(Dissection, Model)> {
    let d = report::output::read_dissection(results).map_err(|e| {
        let shown = format!("reading the results in {}", results.display());
        Error::context(Kind::Input, shown, e)
    })?;
    let choice: ArchChoice = d.model.parse().map_err(|e| {
        Error::new(
            Kind::Input,
            format!(
                "{}: model `{}` is not one the zoo can load ({e})",
                results.display(),
                d.model
            ),
        )
    })?;
    let model = Model::load(weights, choice, dissector.device()).map_err(Error::input)?;
    Ok((d, model))
}

/// What dissection says of one unit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UnitConcept {
    /// The unit's label, or `unlabelled` when its best IoU is at or below
    /// the run's threshold.
    pub label: String,
    pub category: String,
    pub iou: f64,
    pub detector: bool,
}

/// Unit `k` (0-based) of `layer` as dissection labelled it.
pub(crate) fn unit_concept(d: &Dissection, layer: &LayerResult, k: usize) -> UnitConcept {
    let score = layer.units.get(k);
    let best = score.and_then(|u| u.best());
    let iou = score.map_or(0.0, |u| u.score());
    let detector = best.is_some() && iou > layer.summary.iou_threshold;
    UnitConcept {
        label: if detector {
            best.map_or(String::new(), |b| b.name.clone())
        } else {
            "unlabelled".into()
        },
        category: score
            .and_then(|u| u.category)
            .filter(|_| detector)
            .and_then(|c| d.categories.get(c).cloned())
            .unwrap_or_default(),
        iou,
        detector,
    }
}

/// What one explanation needs beside the model and its dissection.
struct Request<'a> {
    images: Vec<PathBuf>,
    classes: Option<&'a Path>,
    out: PathBuf,
    top_classes: usize,
    top_units: usize,
}

/// Probe images the report's example explanation shows.
const EXAMPLE_IMAGES: usize = 3;

/// When a zoo model's last layer was dissected with its checkpoint
/// (`model`, the network the run loaded), explains the first probe images
/// into `<out>/explain/` for the report to link to. A failure there costs
/// the run nothing but the example: it is noted as a warning.
pub(crate) fn example(
    model: Option<&Model>,
    d: &Dissection,
    dataset: &Dataset,
    dissector: &Dissector,
    out: &Path,
    events: &mut dyn Events,
) {
    let Some(model) = model else {
        return;
    };
    if explained_layer(d, model).is_err() {
        return;
    }
    let root = dataset.root.join("images");
    let req = Request {
        images: (dataset.images.iter().take(EXAMPLE_IMAGES))
            .map(|r| root.join(&r.image))
            .collect(),
        classes: None,
        out: out.join("explain"),
        top_classes: 5,
        top_units: 5,
    };
    if let Err(e) = explain_with(d, model, &req, dissector) {
        events.note(&format!("warning: no example explanation: {e}"));
    }
}

/// The zoo model `d` dissected, loaded from `weights`; `None` when there
/// are none or it does not load (no example then).
pub(crate) fn model_of(
    weights: Option<&Path>,
    d: &Dissection,
    dissector: &Dissector,
) -> Option<Model> {
    let (Some(weights), Ok(choice)) = (weights, d.model.parse::<ArchChoice>()) else {
        return None;
    };
    Model::load(weights, choice, dissector.device()).ok()
}

/// Class names: one per line, or `class N`. The file must name exactly
/// the head's `n` classes, none of them blank.
pub(crate) fn class_names(path: Option<&Path>, n: usize) -> Result<Vec<String>> {
    let Some(path) = path else {
        return Ok((0..n).map(|c| format!("class {c}")).collect());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        let shown = format!("reading class names from {}", path.display());
        Error::context(Kind::Input, shown, e)
    })?;
    let bad = |m: String| Error::new(Kind::Input, format!("{}: {m}", path.display()));
    // `lines` ends at the final newline, so a file's trailing newline adds
    // no class; any other empty line would be a class with no name.
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if let Some(i) = names.iter().position(String::is_empty) {
        return Err(bad(format!(
            "line {} is blank: every class needs a name",
            i + 1
        )));
    }
    if names.len() != n {
        return Err(bad(format!(
            "{} class names for a classifier of {n} classes",
            names.len()
        )));
    }
    Ok(names)
}

/// The layer explained: the results' last layer, which must be the
/// network's last tap (or, for VGG and AlexNet, the ReLU before the last
/// max pool: the pool keeps channels, so contributions are the same).
fn explained_layer<'a>(d: &'a Dissection, model: &Model) -> Result<&'a LayerResult> {
    let taps = model.taps();
    let last = taps.last().map(|t| t.name.clone()).unwrap_or_default();
    let before = (model.attribution() == models::Attribution::GradientTimesInput)
        .then(|| taps.len().checked_sub(2).map(|i| taps[i].name.clone()))
        .flatten();
    d.layers
        .iter()
        .rev()
        .find(|l| l.tap == last || Some(&l.tap) == before.as_ref())
        .ok_or_else(|| {
            let had: Vec<String> = d.layers.iter().map(|l| format!("`{}`", l.tap)).collect();
            Error::usage(format!(
                "explaining needs a dissection of the network's last layer `{last}`; the results have {}",
                had.join(", ")
            ))
        })
}

/// The model with the layer explained, ready to explain images.
struct Explainer<'a> {
    d: &'a Dissection,
    model: &'a Model,
    layer: &'a LayerResult,
    names: Vec<String>,
    tap: models::TapId,
    last: models::TapId,
    preprocess: Preprocess,
    geometry: MapGeometry,
    dissector: &'a Dissector,
}

/// Explains `req.images` with `model`, the network `d` dissected, and
/// writes `explain.json` and `explain.html` into `req.out`.
fn explain_with(
    d: &Dissection,
    model: &Model,
    req: &Request<'_>,
    dissector: &Dissector,
) -> Result<PathBuf> {
    let layer = explained_layer(d, model)?;
    let last_name = model
        .taps()
        .last()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    let explainer = Explainer {
        d,
        model,
        layer,
        names: class_names(req.classes, model.num_classes())?,
        tap: model.tap(&layer.tap).map_err(Error::input)?,
        last: model.tap(&last_name).map_err(Error::input)?,
        preprocess: d.options.preprocess.clone(),
        geometry: MapGeometry::of(layer, &d.options),
        dissector,
    };
    let mut explained = Vec::new();
    let mut pictures = Vec::new();
    for path in &req.images {
        let (e, thumbs) = explainer.image(path, req)?;
        explained.push(e);
        pictures.push(thumbs);
    }
    write(d, layer, model, &explained, &pictures, &req.out)
}

impl Explainer<'_> {
    /// One image: its top classes, their top units, and the top class's
    /// units outlined on thumbnails.
    fn image(&self, path: &Path, req: &Request<'_>) -> Result<(Explained, Vec<RgbImage>)> {
        let p = &self.preprocess;
        let (rgb, pixels) = broden::load_image(path, p).map_err(Error::input)?;
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels, [1, 3, p.height as usize, p.width as usize]),
            self.dissector.device(),
        );
        let acts = (self.model)
            .forward_taps(x, &[self.tap, self.last])
            .map_err(Error::input)?;
        let [maps, features]: [Tensor<4>; 2] = acts
            .try_into()
            .map_err(|_| Error::new(Kind::Run, "two taps asked, other than two returned"))?;
        let terms = (self.model)
            .class_terms(features, req.top_classes)
            .map_err(Error::input)?;
        let [_, units, h, w] = maps.dims();
        let maps = (maps.into_data().try_to_vec::<f32>())
            .map_err(|e| Error::new(Kind::Run, format!("reading the maps: {e:?}")))?;
        let mut predictions: Vec<Prediction> = (terms.into_iter().next().unwrap_or_default())
            .into_iter()
            .map(|t| self.prediction(&t, req.top_units))
            .collect();
        let maps = UnitMaps {
            values: &maps,
            units,
            plane: h * w,
        };
        let regions = self.regions(&predictions, &maps);
        for u in predictions.iter_mut().flat_map(|p| p.units.iter_mut()) {
            u.above_threshold = (regions.get(&(u.unit - 1))).is_some_and(|r| any_inside(r));
        }
        let thumbs = match predictions.first() {
            Some(first) => self.outlines(&rgb, first, &maps, &regions),
            None => Vec::new(),
        };
        let explained = Explained {
            image: path.display().to_string(),
            predictions,
        };
        Ok((explained, thumbs))
    }

    /// One class's score split over its `top_units` largest units.
    fn prediction(&self, t: &ClassTerms, top_units: usize) -> Prediction {
        let mut order: Vec<usize> = (0..t.contributions.len()).collect();
        order.sort_by(|&a, &b| {
            t.contributions[b]
                .total_cmp(&t.contributions[a])
                .then(a.cmp(&b))
        });
        let top: Vec<usize> = order.iter().copied().take(top_units).collect();
        let explained_sum: f64 = t.contributions.iter().sum();
        let scale: f64 = t.contributions.iter().map(|c| c.abs()).sum();
        let units: Vec<UnitTerm> = (top.iter())
            .map(|&k| self.unit_term(k, t.contributions[k], scale))
            .collect();
        let listed: f64 = top.iter().map(|&k| t.contributions[k]).sum();
        Prediction {
            class: t.class,
            name: self.names.get(t.class).cloned().unwrap_or_default(),
            logit: f64::from(t.logit),
            bias: t.bias,
            units,
            other_units: explained_sum - listed,
        }
    }

    /// Unit `k`'s contribution with the concept dissection gave it.
    fn unit_term(&self, k: usize, contribution: f64, scale: f64) -> UnitTerm {
        let c = unit_concept(self.d, self.layer, k);
        UnitTerm {
            unit: k + 1,
            contribution,
            share: if scale == 0.0 {
                0.0
            } else {
                contribution / scale
            },
            label: c.label,
            category: c.category,
            iou: c.iou,
            detector: c.detector,
            above_threshold: false,
        }
    }

    /// The size of the thumbnails: [`THUMB`] wide, with the aspect of the
    /// model input.
    fn thumb_size(&self) -> (u32, u32) {
        let p = &self.preprocess;
        (THUMB, THUMB * p.height / p.width.max(1))
    }

    /// The region of every unit listed in `predictions` on a thumbnail, by
    /// 0-based unit.
    fn regions(
        &self,
        predictions: &[Prediction],
        maps: &UnitMaps<'_>,
    ) -> BTreeMap<usize, Vec<PixelClass>> {
        let (width, height) = self.thumb_size();
        let mut regions = BTreeMap::new();
        for u in predictions.iter().flat_map(|p| &p.units) {
            let k = u.unit - 1;
            if let (Some(map), Entry::Vacant(slot)) = (maps.unit(k), regions.entry(k)) {
                let threshold = self.layer.thresholds.get(k).copied().unwrap_or(f32::NAN);
                slot.insert(region_classes(
                    map,
                    &self.geometry,
                    threshold,
                    width,
                    height,
                ));
            }
        }
        regions
    }

    /// The top prediction's units, each drawn on a thumbnail of the image
    /// ([`draw_unit`]).
    fn outlines(
        &self,
        rgb: &RgbImage,
        first: &Prediction,
        maps: &UnitMaps<'_>,
        regions: &BTreeMap<usize, Vec<PixelClass>>,
    ) -> Vec<RgbImage> {
        let (width, height) = self.thumb_size();
        let mut thumbs = Vec::new();
        for u in &first.units {
            let k = u.unit - 1;
            let (Some(map), Some(region)) = (maps.unit(k), regions.get(&k)) else {
                continue;
            };
            let mut thumb =
                image::imageops::resize(rgb, width, height, image::imageops::FilterType::Triangle);
            draw_unit(&mut thumb, region, map, self.geometry.feature);
            thumbs.push(thumb);
        }
        thumbs
    }
}

/// One image's maps of the explained layer: `units` planes of `plane`
/// values each.
struct UnitMaps<'a> {
    values: &'a [f32],
    units: usize,
    plane: usize,
}

impl UnitMaps<'_> {
    /// Unit `k`'s map, if the layer has that unit.
    fn unit(&self, k: usize) -> Option<&[f32]> {
        (k < self.units)
            .then(|| self.values.get(k * self.plane..(k + 1) * self.plane))
            .flatten()
    }
}

/// Whether some pixel of `region` is above the threshold.
fn any_inside(region: &[PixelClass]) -> bool {
    region.iter().any(|c| *c != PixelClass::Outside)
}

/// Draws a unit on `thumb`: its `region` outlined (outside dimmed) when
/// some pixel is above its threshold; otherwise, since dimming everything
/// would show nothing, its `map` (`[h, w]`) as a heat map.
fn draw_unit(thumb: &mut RgbImage, region: &[PixelClass], map: &[f32], hw: [u32; 2]) {
    if any_inside(region) {
        overlay(thumb, region);
    } else {
        heat_map(thumb, map, hw);
    }
}

/// Colour of the heat map of a unit with nothing above its threshold.
const HEAT: [u8; 3] = [255, 0, 0];
/// How much of [`HEAT`] a pixel at the map's maximum takes.
const HEAT_ALPHA: f32 = 0.7;

/// Paints `map` (`[h, w]`, upsampled bilinearly with half-pixel centres)
/// over `thumb` in [`HEAT`], each pixel's alpha its value over the map's
/// maximum; values at or below zero (and NaN) leave the pixel as it is.
fn heat_map(thumb: &mut RgbImage, map: &[f32], [h, w]: [u32; 2]) {
    let max = (map.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max);
    if max <= 0.0 || h == 0 || w == 0 || map.len() != h as usize * w as usize {
        return;
    }
    let (tw, th) = thumb.dimensions();
    for (x, y, pixel) in thumb.enumerate_pixels_mut() {
        let sy = axis_sample(y, th, h);
        let sx = axis_sample(x, tw, w);
        let at = |i: usize, j: usize| map[i * w as usize + j];
        let top = at(sy.0, sx.0) * (1.0 - sx.2) + at(sy.0, sx.1) * sx.2;
        let bottom = at(sy.1, sx.0) * (1.0 - sx.2) + at(sy.1, sx.1) * sx.2;
        let value = top * (1.0 - sy.2) + bottom * sy.2;
        let share = value / max;
        let alpha = if share.is_nan() {
            0.0
        } else {
            HEAT_ALPHA * share.clamp(0.0, 1.0)
        };
        for (c, t) in pixel.0.iter_mut().zip(HEAT) {
            *c = (f32::from(*c) * (1.0 - alpha) + f32::from(t) * alpha).round() as u8;
        }
    }
}

/// The two source indices and the weight of the second for pixel `t` of
/// `out` pixels sampling `n` (half-pixel centres, clamped at the edges).
fn axis_sample(t: u32, out: u32, n: u32) -> (usize, usize, f32) {
    let s = ((t as f32 + 0.5) * n as f32 / out.max(1) as f32 - 0.5).clamp(0.0, (n - 1) as f32);
    let i0 = s.floor() as usize;
    (i0, (i0 + 1).min(n as usize - 1), s - i0 as f32)
}

/// Writes `explain.json` and `explain.html` into `out`; returns the page.
fn write(
    d: &Dissection,
    layer: &LayerResult,
    model: &Model,
    explained: &[Explained],
    pictures: &[Vec<RgbImage>],
    out: &Path,
) -> Result<PathBuf> {
    let attribution = model.attribution().describe();
    let json = serde_json::to_vec_pretty(&ExplainFile {
        model: &d.model,
        layer: &layer.name,
        attribution,
        images: explained,
    })
    .map_err(Error::run)?;
    let html = crate::explain_page::render(d, layer, attribution, explained, pictures)?;
    write_files(
        out,
        &[("explain.json", &json), ("explain.html", html.as_bytes())],
    )?;
    Ok(out.join("explain.html"))
}

/// Writes each `(name, bytes)` into the folder `out` (made if missing),
/// each file atomically.
pub(crate) fn write_files(out: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    std::fs::create_dir_all(out)
        .map_err(|e| Error::context(Kind::Run, format!("creating {}", out.display()), e))?;
    for (name, bytes) in files {
        let path = out.join(name);
        report::write_atomic(&path, bytes)
            .map_err(|e| Error::context(Kind::Run, format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

/// Thumbnail width of the pictures.
pub(crate) const THUMB: u32 = 160;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_files_must_name_every_class_once_and_none_blank() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("classes.txt");
        // (file text, expected names or the error's words)
        let cases: [(&str, Result<&[&str], &str>); 6] = [
            ("cat\ndog\nfox\n", Ok(&["cat", "dog", "fox"])),
            ("cat\ndog\nfox", Ok(&["cat", "dog", "fox"])),
            (
                "cat\ndog\n",
                Err("2 class names for a classifier of 3 classes"),
            ),
            (
                "cat\ndog\nfox\nowl\n",
                Err("4 class names for a classifier of 3 classes"),
            ),
            ("cat\n\nfox\n", Err("line 2 is blank")),
            ("cat\ndog\n  \n", Err("line 3 is blank")),
        ];
        let mut failures = Vec::new();
        for (text, want) in cases {
            std::fs::write(&file, text).unwrap();
            let got = class_names(Some(&file), 3);
            let ok = match (&got, want) {
                (Ok(names), Ok(want)) => names == want,
                (Err(e), Err(words)) => {
                    let shown = e.to_string();
                    e.kind() == Kind::Input
                        && shown.contains(words)
                        && shown.contains(&file.display().to_string())
                }
                _ => false,
            };
            if !ok {
                failures.push(format!("{text:?}: {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn a_map_with_nothing_above_its_threshold_is_drawn_as_a_heat_map() {
        // A 4x4 map high at its bottom-right corner, its threshold above
        // every value.
        let mut map = vec![0.0f32; 16];
        map[15] = 2.0;
        let geometry = MapGeometry {
            alignment: dissect::Alignment::HalfPixel,
            field: None,
            input: [32, 32],
            feature: [4, 4],
        };
        let region = region_classes(&map, &geometry, 5.0, 32, 32);
        assert!(!any_inside(&region));
        let grey = RgbImage::from_pixel(32, 32, image::Rgb([100, 100, 100]));
        let mut thumb = grey.clone();
        draw_unit(&mut thumb, &region, &map, geometry.feature);
        // Red where the map is high, untouched (not dimmed) where it is zero.
        let high = thumb.get_pixel(31, 31).0;
        assert!(high[0] > 200 && high[1] < 50, "{high:?}");
        assert_eq!(thumb.get_pixel(0, 0), grey.get_pixel(0, 0));
        // Below the threshold of 1 the same map shows its region instead.
        let region = region_classes(&map, &geometry, 1.0, 32, 32);
        let mut outlined = grey.clone();
        draw_unit(&mut outlined, &region, &map, geometry.feature);
        assert!(any_inside(&region));
        assert!(outlined.get_pixel(0, 0).0[0] < 100, "dimmed outside");
    }
}
