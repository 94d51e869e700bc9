//! The page of `explain`: one self-contained `explain.html` with each
//! image's top units outlined on inlined JPEG thumbnails and the table of
//! its top classes and their units.

use std::fmt::Write as _;

use dissect::{Dissection, LayerResult};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::explain::{Explained, Prediction, THUMB, UnitTerm};

/// The page for `explained` images of `layer`.
pub(crate) fn render(
    d: &Dissection,
    layer: &LayerResult,
    attribution: &str,
    explained: &[Explained],
    pictures: &[Vec<RgbImage>],
) -> Result<String> {
    let esc = report::html::escape;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Explanations: {}</title><style>body{{font:14px system-ui,sans-serif;margin:1.5em}}figure{{display:inline-block;margin:0 8px 8px 0;font-size:.85em;max-width:{THUMB}px}}img{{display:block}}table{{border-collapse:collapse}}td,th{{padding:2px 8px;text-align:left}}.unl{{color:#888}}</style></head><body>\n<h1>Why <code>{}</code> decided</h1>\n<p>Layer <code>{}</code>; contributions are {}. Units whose IoU is at or below {} are shown as <span class=\"unl\">unlabelled</span>: their share is real, but dissection found no concept for them. Regions: the unit's map above its threshold T_k, upsampled as the run did; a unit with nothing above T_k on the image shows its activation as a heat map instead.</p>\n",
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
                let threshold = layer.thresholds.get(u.unit - 1).copied();
                figure(&mut s, u, thumb, threshold)?;
            }
        }
        table(&mut s, &e.predictions);
        s.push_str("</section>\n");
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

/// One unit's thumbnail with its caption, which says so when nothing of
/// the unit passed its `threshold` and the picture is a heat map.
fn figure(s: &mut String, u: &UnitTerm, thumb: &RgbImage, threshold: Option<f32>) -> Result<()> {
    let esc = report::html::escape;
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(thumb)
        .map_err(Error::run)?;
    let _ = write!(
        s,
        "<figure data-unit=\"{}\"><img src=\"data:image/jpeg;base64,{}\" width=\"{}\" height=\"{}\" alt=\"unit {}\"><figcaption>unit {} <span class=\"{}\">{}</span> {:.0}%{}</figcaption></figure>",
        u.unit,
        base64(&jpeg),
        thumb.width(),
        thumb.height(),
        u.unit,
        u.unit,
        if u.detector { "lab" } else { "unl" },
        esc(&u.label),
        100.0 * u.share,
        heat_note(u, threshold)
    );
    Ok(())
}

/// The caption's note on a unit with nothing above its threshold.
fn heat_note(u: &UnitTerm, threshold: Option<f32>) -> String {
    if u.above_threshold {
        return String::new();
    }
    let shown = threshold.map_or_else(|| "T_k".to_string(), |t| format!("T_k = {t}"));
    format!(
        " <span class=\"heat\">nothing above the threshold {shown}: heat map of its activation</span>"
    )
}

/// The table of an image's top classes and their units.
fn table(s: &mut String, predictions: &[Prediction]) {
    let esc = report::html::escape;
    s.push_str("<table><tr><th>class</th><th>logit</th><th>bias</th><th>units (contribution, share)</th><th>other units</th></tr>");
    for p in predictions {
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
    s.push_str("</table>");
}

/// Standard base64, for inlined images.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit term as `explain` lists it.
    fn term(above_threshold: bool) -> UnitTerm {
        UnitTerm {
            unit: 3,
            contribution: 1.5,
            share: 0.25,
            label: "sky".into(),
            category: "object".into(),
            iou: 0.1,
            detector: true,
            above_threshold,
        }
    }

    #[test]
    fn a_unit_with_nothing_above_its_threshold_says_its_picture_is_a_heat_map() {
        let thumb = RgbImage::new(8, 8);
        let mut heat = String::new();
        figure(&mut heat, &term(false), &thumb, Some(0.5)).unwrap();
        assert!(
            heat.contains("nothing above the threshold T_k = 0.5: heat map of its activation"),
            "{heat}"
        );
        let mut region = String::new();
        figure(&mut region, &term(true), &thumb, Some(0.5)).unwrap();
        assert!(!region.contains("heat map"), "{region}");
    }
}
