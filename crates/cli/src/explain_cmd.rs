//! `netdissect explain`: the units behind a classifier's predictions.
//!
//! For each image, the model (with the run's preprocessing) predicts its
//! top classes; each class's logit splits over the units of the dissected
//! last layer ([`models::Attribution`]), and the units with the largest
//! contributions are listed with the concepts dissection gave them.
//! Writes `explain.json` and a self-contained `explain.html` (images
//! inlined) with each top unit's thresholded region outlined, upsampled as
//! the run upsampled it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use dissect::{Dissection, Dissector, LayerResult};
use image::RgbImage;
use models::burn::tensor::{Tensor, TensorData};
use models::{ArchChoice, Model};
use report::strips::{MapGeometry, overlay, region_classes};
use serde::Serialize;

use crate::{EXIT_INPUT, EXIT_USAGE, Failure, fail, input};

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

/// What `explain` was asked.
pub struct Request<'a> {
    pub results: &'a Path,
    pub weights: &'a Path,
    pub images: Vec<PathBuf>,
    pub classes: Option<&'a Path>,
    pub out: PathBuf,
    pub top_classes: usize,
    pub top_units: usize,
}

/// Class names: one per line, or `class N`.
fn class_names(path: Option<&Path>, n: usize) -> Result<Vec<String>, Failure> {
    let Some(path) = path else {
        return Ok((0..n).map(|c| format!("class {c}")).collect());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading class names from {}", path.display()))
        .map_err(fail(EXIT_INPUT))?;
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if names.len() < n {
        return Err(fail(EXIT_INPUT)(anyhow!(
            "{}: {} class names for a classifier of {n} classes",
            path.display(),
            names.len()
        )));
    }
    Ok(names)
}

/// The layer explained: the results' last layer, which must be the
/// network's last tap (or, for VGG and AlexNet, the ReLU before the last
/// max pool: the pool keeps channels, so contributions are the same).
pub fn explained_layer<'a>(d: &'a Dissection, model: &Model) -> Result<&'a LayerResult, Failure> {
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
            fail(EXIT_USAGE)(anyhow!(
                "explaining needs a dissection of the network's last layer `{last}`; the results have {}",
                d.layers
                    .iter()
                    .map(|l| format!("`{}`", l.tap))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

pub fn run(req: &Request<'_>, dissector: &Dissector) -> Result<PathBuf, Failure> {
    let d = report::output::read_dissection(req.results)
        .with_context(|| format!("reading the results in {}", req.results.display()))
        .map_err(fail(EXIT_INPUT))?;
    let choice: ArchChoice = d.model.parse().map_err(|e| {
        fail(EXIT_INPUT)(anyhow!(
            "{}: model `{}` is not one the zoo can load ({e})",
            req.results.display(),
            d.model
        ))
    })?;
    let model = Model::load(req.weights, choice, dissector.device()).map_err(input)?;
    explain(&d, &model, req, dissector)
}

/// Explains `req.images` with `model`, the network `d` dissected.
pub fn explain(
    d: &Dissection,
    model: &Model,
    req: &Request<'_>,
    dissector: &Dissector,
) -> Result<PathBuf, Failure> {
    let layer = explained_layer(d, model)?;
    let names = class_names(req.classes, model.num_classes())?;
    let tap = model.tap(&layer.tap).map_err(input)?;
    let last = model
        .tap(
            &model
                .taps()
                .last()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
        )
        .map_err(input)?;
    let p = d.options.preprocess.to_preprocess();
    let geometry = MapGeometry::of(layer, &d.options);
    let mut explained = Vec::new();
    let mut pictures = Vec::new();
    for path in &req.images {
        let (rgb, pixels) = broden::load_image(path, &p).map_err(input)?;
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels, [1, 3, p.height as usize, p.width as usize]),
            dissector.device(),
        );
        let acts = model.forward_taps(x, &[tap, last]).map_err(input)?;
        let [maps, features]: [Tensor<4>; 2] = acts.try_into().map_err(|_| {
            fail(crate::EXIT_RUN)(anyhow!("two taps asked, other than two returned"))
        })?;
        let terms = model.explain(features, req.top_classes).map_err(input)?;
        let [_, units, h, w] = maps.dims();
        let maps = maps
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| fail(crate::EXIT_RUN)(anyhow!("reading the maps: {e:?}")))?;
        let plane = h * w;
        let mut predictions = Vec::new();
        for t in terms.into_iter().next().unwrap_or_default() {
            let mut order: Vec<usize> = (0..t.contributions.len()).collect();
            order.sort_by(|&a, &b| {
                t.contributions[b]
                    .total_cmp(&t.contributions[a])
                    .then(a.cmp(&b))
            });
            let top: Vec<usize> = order.iter().copied().take(req.top_units).collect();
            let explained_sum: f64 = t.contributions.iter().sum();
            let scale: f64 = t.contributions.iter().map(|c| c.abs()).sum();
            let unit_terms: Vec<UnitTerm> = top
                .iter()
                .map(|&k| {
                    let score = layer.units.get(k);
                    let best = score.and_then(|u| u.best());
                    let iou = score.map_or(0.0, |u| u.score());
                    let detector = best.is_some() && iou > layer.summary.iou_threshold;
                    UnitTerm {
                        unit: k + 1,
                        contribution: t.contributions[k],
                        share: if scale == 0.0 {
                            0.0
                        } else {
                            t.contributions[k] / scale
                        },
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
                })
                .collect();
            let listed: f64 = top.iter().map(|&k| t.contributions[k]).sum();
            predictions.push(Prediction {
                class: t.class,
                name: names.get(t.class).cloned().unwrap_or_default(),
                logit: f64::from(t.logit),
                bias: t.bias,
                units: unit_terms,
                other_units: explained_sum - listed,
            });
        }
        // The top prediction's units, each outlined on the image.
        let mut thumbs = Vec::new();
        if let Some(first) = predictions.first() {
            for u in &first.units {
                let k = u.unit - 1;
                if k >= units {
                    continue;
                }
                let map = &maps[k * plane..(k + 1) * plane];
                let mut thumb = image::imageops::resize(
                    &rgb,
                    THUMB,
                    THUMB * p.height / p.width.max(1),
                    image::imageops::FilterType::Triangle,
                );
                let classes = region_classes(
                    map,
                    &geometry,
                    layer.thresholds.get(k).copied().unwrap_or(f32::NAN),
                    thumb.width(),
                    thumb.height(),
                );
                overlay(&mut thumb, &classes);
                thumbs.push(thumb);
            }
        }
        pictures.push(thumbs);
        explained.push(Explained {
            image: path.display().to_string(),
            predictions,
        });
    }
    let attribution = model.attribution().describe();
    let json = serde_json::to_vec_pretty(&ExplainFile {
        model: &d.model,
        layer: &layer.name,
        attribution,
        images: &explained,
    })
    .map_err(|e| fail(crate::EXIT_RUN)(e.into()))?;
    std::fs::create_dir_all(&req.out)
        .with_context(|| format!("creating {}", req.out.display()))
        .map_err(fail(crate::EXIT_RUN))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = req.out.join(name);
        report::write_atomic(&path, bytes)
            .with_context(|| format!("writing {}", path.display()))
            .map_err(fail(crate::EXIT_RUN))
    };
    write("explain.json", &json)?;
    let html = render(d, layer, attribution, &explained, &pictures)?;
    write("explain.html", html.as_bytes())?;
    Ok(req.out.join("explain.html"))
}

/// Thumbnail width of the pictures.
const THUMB: u32 = 160;

fn render(
    d: &Dissection,
    layer: &LayerResult,
    attribution: &str,
    explained: &[Explained],
    pictures: &[Vec<RgbImage>],
) -> Result<String, Failure> {
    let esc = report::html::escape;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Explanations: {}</title><style>body{{font:14px system-ui,sans-serif;margin:1.5em}}figure{{display:inline-block;margin:0 8px 8px 0;font-size:.85em;max-width:{THUMB}px}}img{{display:block}}table{{border-collapse:collapse}}td,th{{padding:2px 8px;text-align:left}}.unl{{color:#888}}</style></head><body>\n<h1>Why <code>{}</code> decided</h1>\n<p>Layer <code>{}</code>; contributions are {}. Units whose IoU is at or below {} are shown as <span class=\"unl\">unlabelled</span>: their share is real, but dissection found no concept for them. Regions: the unit's map above its threshold T_k, upsampled as the run did.</p>\n",
        esc(&d.model),
        esc(&d.model),
        esc(&layer.name),
        esc(attribution),
        layer.summary.iou_threshold
    );
    for (i, (e, thumbs)) in explained.iter().zip(pictures).enumerate() {
        let _ = write!(
            s,
            "<section class=\"image\" data-image=\"{i}\"><h2>{}</h2>",
            esc(&e.image)
        );
        if let Some(first) = e.predictions.first() {
            for (u, thumb) in first.units.iter().zip(thumbs) {
                let mut jpeg = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
                    .encode_image(thumb)
                    .map_err(|e| fail(crate::EXIT_RUN)(e.into()))?;
                let _ = write!(
                    s,
                    "<figure data-unit=\"{}\"><img src=\"data:image/jpeg;base64,{}\" width=\"{}\" height=\"{}\" alt=\"unit {}\"><figcaption>unit {} <span class=\"{}\">{}</span> {:.0}%</figcaption></figure>",
                    u.unit,
                    base64(&jpeg),
                    thumb.width(),
                    thumb.height(),
                    u.unit,
                    u.unit,
                    if u.detector { "lab" } else { "unl" },
                    esc(&u.label),
                    100.0 * u.share
                );
            }
        }
        s.push_str("<table><tr><th>class</th><th>logit</th><th>bias</th><th>units (contribution, share)</th><th>other units</th></tr>");
        for p in &e.predictions {
            let units: Vec<String> = p
                .units
                .iter()
                .map(|u| {
                    format!(
                        "<span class=\"{}\" data-unit=\"{}\" data-contribution=\"{:.6}\">{} {} ({:.3}, {:.0}%)</span>",
                        if u.detector { "lab" } else { "unl" },
                        u.unit,
                        u.contribution,
                        u.unit,
                        esc(&u.label),
                        u.contribution,
                        100.0 * u.share
                    )
                })
                .collect();
            let _ = write!(
                s,
                "<tr data-class=\"{}\"><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{:.3}</td></tr>",
                p.class,
                esc(&p.name),
                p.logit,
                p.bias,
                units.join(", "),
                p.other_units
            );
        }
        s.push_str("</table></section>\n");
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
