//! `report.html`: a self-contained page (inline CSS, SVG and a little JS; no
//! network) with, per layer, the detector headline, bar charts of unique
//! detectors per category by both counting rules, per-category counts, and a
//! card per unit with its image strip; a layer comparison when the run has
//! several layers; filters by category, label and free text.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use dissect::{Alignment, Dissection, LayerResult, TopMaps, UnitScore};

use crate::concepts::ConceptSource;
use crate::strips::{self, LayerStrips, MapGeometry, StripOptions, UnitStrip};
use crate::svg::{BarChart, bar_chart};
use crate::{ReportError, write_atomic};

pub use crate::run_folder::REPORT_HTML;

/// Knobs of [`write_report_with`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportOptions {
    /// The dataset's `images/` folder; by default found from
    /// [`Dissection::dataset`] (see [`images_root`]).
    pub images_root: Option<PathBuf>,
    /// Thumbnail height (default [`strips::THUMB_HEIGHT`]).
    pub thumb_height: Option<u32>,
    /// JPEG quality of the strips (default [`strips::JPEG_QUALITY`]).
    pub quality: Option<u8>,
    /// Draw no concept strips (they need the dataset's segmentation).
    pub no_concepts: bool,
}

/// Where a run's example explanation is, relative to its folder: the page
/// in [`crate::run_folder::EXPLAIN_DIR`]. The report links to it when it is
/// there.
pub const EXPLANATION: &str = "explain/explain.html";

/// The page `netdissect ablate` writes into a results folder by default;
/// the report links to it when it is there.
pub const ABLATION: &str = "ablation/ablation.html";

/// The report's paragraph that links to the ablation page at `href`.
fn ablation_link(href: &str) -> String {
    format!(
        "<p id=\"ablation-link\">Which units the network needs: <a href=\"{}\">each class's accuracy with its most important units removed</a> (<code>netdissect ablate</code>).</p>\n",
        escape(href)
    )
}

/// Adds the link to the ablation page ([`ABLATION`]) to the report in
/// `dir` without drawing it again (its strips and options stay as the run
/// made them); nothing when it links there already.
pub fn link_ablation(dir: &Path) -> Result<(), ReportError> {
    let path = dir.join(REPORT_HTML);
    let io = |source| ReportError::Io {
        path: path.clone(),
        source,
    };
    let html = std::fs::read_to_string(&path).map_err(io)?;
    if html.contains("id=\"ablation-link\"") {
        return Ok(());
    }
    let Some(h1) = html.find("</h1>\n") else {
        return Err(io(std::io::Error::other(
            "no heading to put the link under",
        )));
    };
    let at = h1 + "</h1>\n".len();
    let linked = format!("{}{}{}", &html[..at], ablation_link(ABLATION), &html[at..]);
    write_atomic(&path, linked.as_bytes())
}

/// The pages beside the report that it links to, where they exist.
#[derive(Debug, Clone, Copy, Default)]
pub struct Links<'a> {
    pub explanation: Option<&'a str>,
    pub ablation: Option<&'a str>,
}

/// Writes `report.html` and its strips (`strips/<layer>/unit-NNNN.jpg`) into
/// `dir`; returns the report's path. Images that cannot be read are drawn as
/// grey placeholders and listed in the report, not errors.
/// `top_maps` is parallel to `dissection.layers`.
pub fn write_report(
    dir: &Path,
    dissection: &Dissection,
    top_maps: &[TopMaps],
) -> Result<PathBuf, ReportError> {
    write_report_with(dir, dissection, top_maps, &ReportOptions::default())
}

/// [`write_report`] with explicit options.
pub fn write_report_with(
    dir: &Path,
    dissection: &Dissection,
    top_maps: &[TopMaps],
    opts: &ReportOptions,
) -> Result<PathBuf, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let root = opts
        .images_root
        .clone()
        .unwrap_or_else(|| images_root(dir, dissection));
    let pre = &dissection.options.preprocess;
    let mut strip_opts = StripOptions::new(root, pre.height, pre.width);
    if let Some(h) = opts.thumb_height.filter(|&h| h > 0) {
        strip_opts.thumb_width = (u64::from(strip_opts.thumb_width) * u64::from(h)
            / u64::from(strip_opts.thumb_height.max(1)))
        .clamp(1, u64::from(4 * h)) as u32;
        strip_opts.thumb_height = h;
    }
    if let Some(q) = opts.quality {
        strip_opts.quality = q;
    }
    let none = TopMaps::default();
    let source = if opts.no_concepts {
        Err("not asked for".to_string())
    } else {
        ConceptSource::open(&strip_opts.images_root)
    };
    let strips = dissection
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let maps = top_maps.get(i).unwrap_or(&none);
            let geometry = MapGeometry::of(layer, &dissection.options);
            let masks = source
                .as_ref()
                .ok()
                .map(|s| s.layer_masks(layer, strip_opts.thumb_width, strip_opts.thumb_height));
            strips::write_layer_strips(dir, layer, maps, &geometry, masks.as_ref(), &strip_opts)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let unavailable = source.err().filter(|_| !opts.no_concepts);
    let links = Links {
        explanation: dir.join(EXPLANATION).is_file().then_some(EXPLANATION),
        ablation: dir.join(ABLATION).is_file().then_some(ABLATION),
    };
    let html = render_html(
        dissection,
        &strips,
        &strip_opts.images_root,
        unavailable.as_deref(),
        links,
    );
    let path = dir.join(REPORT_HTML);
    write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

/// The dataset's images folder: `<dataset>/images`, or, when the dataset
/// path is relative and not found from the working directory, the same path
/// taken relative to the results folder.
pub fn images_root(results_dir: &Path, dissection: &Dissection) -> PathBuf {
    let dataset = Path::new(&dissection.dataset);
    let direct = dataset.join("images");
    if direct.is_dir() || dataset.is_absolute() {
        return direct;
    }
    let beside = results_dir.join(dataset).join("images");
    if beside.is_dir() { beside } else { direct }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 3em;color:#222;background:#fafafa}
h1{font-size:1.5em;margin:.8em 0 .2em}h2{font-size:1.25em;margin:1.6em 0 .3em;border-bottom:1px solid #ccc}
.meta{color:#555;font-size:.9em}.meta code{background:#eee;padding:0 .2em}
.headline{font-size:1.1em;font-weight:600}
table.counts{border-collapse:collapse;margin:.5em 0}table.counts td,table.counts th{border:1px solid #ddd;padding:2px 8px;text-align:right}
table.counts td:first-child,table.counts th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
svg.chart{background:#fff;border:1px solid #ddd}
svg .s0{fill:#4c78a8}svg .s1{fill:#f58518}svg .s2{fill:#54a24b}
svg .axis{stroke:#333}svg .grid{stroke:#ddd;stroke-dasharray:3 3}
svg text{font-size:11px;fill:#333}svg .title{font-weight:600;font-size:12px}
#filters{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ddd;z-index:1;display:flex;gap:1em;flex-wrap:wrap;align-items:center}
.units{display:flex;flex-direction:column;gap:6px}
.unit{background:#fff;border:1px solid #ddd;padding:4px 6px}
.unit .head{display:flex;gap:1em;align-items:baseline}
.unit .label{font-weight:600}.unit .cat{color:#666}.unit .iou{font-variant-numeric:tabular-nums}
.unit.detector{border-left:4px solid #4c78a8}
.unit img{display:block;max-width:100%;height:auto;margin-top:3px}
.noimg{color:#888;font-style:italic}
.warn{color:#a33}
.unit ol.top{margin:2px 0 0;padding:0;list-style:none;display:flex;gap:1.2em;color:#444;font-size:.92em}
.unit ol.top li:first-child{font-weight:600}.unit ol.top .cat{color:#888}
.unit .formula{margin:2px 0 0;color:#333}.unit .formula .gain{color:#2a7a2a}
.swatch{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;background:rgb(0,190,255);border:1px solid #888}
[hidden]{display:none !important}
"#;

const SCRIPT: &str = r#"
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('[data-unit]'));
  var cat = document.getElementById('f-category');
  var lab = document.getElementById('f-label');
  var q = document.getElementById('f-search');
  var det = document.getElementById('f-detectors');
  var gain = document.getElementById('f-formula');
  var shown = document.getElementById('shown');
  function apply() {
    var text = q.value.trim().toLowerCase();
    var n = 0;
    var perLayer = {};
    cards.forEach(function (c) {
      var ok = (!cat.value || c.dataset.category === cat.value) &&
        (!lab.value || c.dataset.label === lab.value) &&
        (!text || c.dataset.search.indexOf(text) >= 0) &&
        (!det.checked || c.dataset.detector === '1') &&
        (!gain || !gain.checked || c.dataset.formulaGain === '1');
      c.hidden = !ok;
      if (ok) { n++; perLayer[c.dataset.layer] = (perLayer[c.dataset.layer] || 0) + 1; }
    });
    shown.textContent = String(n);
    document.querySelectorAll('[data-shown-layer]').forEach(function (e) {
      e.textContent = String(perLayer[e.dataset.shownLayer] || 0);
    });
  }
  // Filters may come from the address: report.html#category=object&label=dog&q=12&detectors=1&formula=1
  var p = new URLSearchParams(location.hash.slice(1));
  if (p.has('category')) cat.value = p.get('category');
  if (p.has('label')) lab.value = p.get('label');
  if (p.has('q')) q.value = p.get('q');
  if (p.get('detectors') === '1') det.checked = true;
  if (gain && p.get('formula') === '1') gain.checked = true;
  [cat, lab, q, det, gain].filter(Boolean).forEach(function (e) { e.addEventListener('input', apply); e.addEventListener('change', apply); });
  apply();
  // The concept-mask toggle swaps every strip for its concept twin.
  var masks = document.getElementById('f-masks');
  if (masks) {
    var swap = function () {
      document.querySelectorAll('img[data-concept-src]').forEach(function (img) {
        if (!img.dataset.regionSrc) img.dataset.regionSrc = img.getAttribute('src');
        img.setAttribute('src', masks.checked ? img.dataset.conceptSrc : img.dataset.regionSrc);
      });
    };
    if (p.get('masks') === '1') masks.checked = true;
    masks.addEventListener('change', swap);
    swap();
  }
})();
"#;

/// The best label's category name and label name of a unit (empty strings
/// when it has none).
fn best_names<'a>(unit: &'a UnitScore, categories: &'a [String]) -> (&'a str, &'a str) {
    match unit.best() {
        Some(best) => (
            unit.category
                .and_then(|c| categories.get(c))
                .map_or("", String::as_str),
            best.name.as_str(),
        ),
        None => ("", ""),
    }
}

/// Units in report order: IoU descending, then unit number.
fn sorted_units(layer: &LayerResult) -> Vec<&UnitScore> {
    let mut units: Vec<&UnitScore> = layer.units.iter().collect();
    units.sort_by(|a, b| b.score().total_cmp(&a.score()).then(a.unit.cmp(&b.unit)));
    units
}

/// Renders the page; `strips` is parallel to `dissection.layers` (a layer
/// without an entry shows no images). `concepts_unavailable` says why no
/// concept strips could be drawn, when that was asked for and failed.
pub fn render_html(
    dissection: &Dissection,
    strips: &[LayerStrips],
    images_root: &Path,
    concepts_unavailable: Option<&str>,
    links: Links<'_>,
) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Network dissection: {}</title><style>{STYLE}</style></head><body>\n",
        escape(&dissection.model)
    );
    let _ = writeln!(
        s,
        "<h1>Network dissection of <code>{}</code></h1>",
        escape(&dissection.model)
    );
    if let Some(href) = links.explanation {
        let _ = writeln!(
            s,
            "<p id=\"explain-link\">Why the network decided, by these units: <a href=\"{}\">example explanations</a> of a few probe images (<code>netdissect explain</code> explains any image).</p>",
            escape(href)
        );
    }
    if let Some(href) = links.ablation {
        s.push_str(&ablation_link(href));
    }
    run_meta(&mut s, dissection);
    warnings(&mut s, strips, images_root, concepts_unavailable);
    if dissection.layers.len() > 1 {
        comparison(&mut s, dissection);
    }
    let has_concepts = strips
        .iter()
        .flat_map(|l| &l.units)
        .any(|u| u.concept_file.is_some());
    filters(&mut s, dissection, has_concepts);
    for (i, layer) in dissection.layers.iter().enumerate() {
        layer_section(&mut s, dissection, layer, strips.get(i));
    }
    let _ = write!(s, "<script>{SCRIPT}</script>\n</body></html>\n");
    s
}

/// The line under the title: the dataset, the run's options, its cost and
/// how the strips were aligned.
fn run_meta(s: &mut String, dissection: &Dissection) {
    let o = &dissection.options;
    let _ = writeln!(
        s,
        "<p class=\"meta\">dataset <code>{}</code> ({} images) · adapter {} · quantile {} · IoU threshold {} · union: {} · upsampling: {} · top {} images · {} passes over the data ({}) · {:.1} s · netdissect {}<br>{}</p>",
        escape(&dissection.dataset),
        dissection.n_images,
        escape(&dissection.adapter),
        o.quantile,
        o.iou_threshold,
        match o.union {
            dissect::UnionRule::Original => "category present in the image (original NetDissect)",
            dissect::UnionRule::Lite => "category under the unit's mask (NetDissect-Lite)",
        },
        match o.alignment {
            Alignment::ReceptiveField => "receptive-field centres (original NetDissect)",
            Alignment::HalfPixel => "half-pixel centres (NetDissect-Lite)",
        },
        o.top_k,
        dissection.passes,
        match dissection.mode {
            dissect::CacheMode::Cached => "activations cached between passes",
            dissect::CacheMode::Recomputed => "the network re-run for each pass",
        },
        dissection.duration_secs,
        escape(&dissection.tool_version),
        alignment_note(dissection),
    );
    if let Some(r) = o.rotate {
        let _ = writeln!(
            s,
            "<p class=\"meta\"><strong>Rotated basis:</strong> every layer's activations were \
             multiplied, pixel by pixel, by Q<sup>{}</sup>, Q a random rotation of its units \
             (seed {}): \"units\" here are directions of the layer's space, not its channels \
             (Bau et al. 2017, sec. 3.2).</p>",
            r.power, r.seed
        );
    }
}

/// How the strips place each map on its images, given the run's alignment
/// and whether the results saved the geometry that needs.
fn alignment_note(dissection: &Dissection) -> &'static str {
    let geometry_saved = dissection.layers.iter().all(|l| l.field.is_some());
    let recorded = dissection.layers.iter().all(|l| l.field.is_none())
        && dissection.model.starts_with("recorded activations");
    match dissection.options.alignment {
        Alignment::HalfPixel if recorded => {
            "maps were upsampled with half-pixel centres: the receptive fields of recorded activations are unknown"
        }
        Alignment::HalfPixel => "strips use the run's half-pixel upsampling",
        Alignment::ReceptiveField if geometry_saved => {
            "strips place each map at its receptive-field centres, as the run counted"
        }
        Alignment::ReceptiveField => {
            "the run aligned maps by receptive-field centres; these results predate saved geometry, so strips use half-pixel centres and region edges may shift by up to about half a feature cell"
        }
    }
}

/// What the page cannot show: top images that could not be read, and why
/// there are no concept strips when they were asked for.
fn warnings(
    s: &mut String,
    strips: &[LayerStrips],
    images_root: &Path,
    concepts_unavailable: Option<&str>,
) {
    let missing: BTreeSet<&str> = strips
        .iter()
        .flat_map(|l| &l.units)
        .flat_map(|u| &u.missing)
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"warn\" id=\"missing\" data-missing=\"{}\">{} top images could not be read under <code>{}</code>; they show as grey placeholders (first: <code>{}</code>)</p>",
            missing.len(),
            missing.len(),
            escape(&images_root.display().to_string()),
            escape(missing.first().copied().unwrap_or("")),
        );
    }
    if let Some(why) = concepts_unavailable {
        let _ = writeln!(
            s,
            "<p class=\"meta\" id=\"no-concepts\">Concept masks are not shown: the dataset's segmentation could not be read ({}).</p>",
            escape(why)
        );
    }
}

/// Detectors and unique detectors per layer, side by side.
fn comparison(s: &mut String, dissection: &Dissection) {
    s.push_str("<section id=\"comparison\"><h2>Layers compared</h2><div class=\"charts\">");
    let chart = BarChart {
        chart: "layers",
        layer: "",
        title: "Detectors and unique detectors per layer",
        series: &["detectors", "unique (top-label)", "unique (per-category)"],
        groups: dissection
            .layers
            .iter()
            .map(|l| {
                let m = &l.summary;
                (
                    l.name.clone(),
                    vec![m.detectors, m.unique_top_label, m.unique_per_category],
                )
            })
            .collect(),
    };
    s.push_str(&bar_chart(&chart));
    s.push_str("<table class=\"counts\"><tr><th>layer</th><th>units</th><th>detectors</th><th>unique (top-label)</th><th>unique (per-category)</th></tr>");
    for l in &dissection.layers {
        let m = &l.summary;
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&l.name),
            m.n_units,
            m.detectors,
            m.unique_top_label,
            m.unique_per_category
        );
    }
    s.push_str("</table></div></section>\n");
}

/// The filter bar: category, label, free text, detectors only, and the
/// concept-mask toggle when there are concept strips.
fn filters(s: &mut String, dissection: &Dissection, has_concepts: bool) {
    let labels: BTreeSet<&str> = dissection
        .layers
        .iter()
        .flat_map(|l| &l.units)
        .map(|u| best_names(u, &dissection.categories).1)
        .filter(|l| !l.is_empty())
        .collect();
    let total: usize = dissection.layers.iter().map(|l| l.units.len()).sum();
    s.push_str("<div id=\"filters\"><label>category <select id=\"f-category\"><option value=\"\">all</option>");
    for c in &dissection.categories {
        let _ = write!(s, "<option>{}</option>", escape(c));
    }
    s.push_str(
        "</select></label><label>label <select id=\"f-label\"><option value=\"\">all</option>",
    );
    for l in &labels {
        let _ = write!(s, "<option>{}</option>", escape(l));
    }
    s.push_str("</select></label><label>search <input id=\"f-search\" type=\"search\" placeholder=\"label, category or unit\"></label><label><input id=\"f-detectors\" type=\"checkbox\"> detectors only</label>");
    if dissection.options.formula.is_some() {
        s.push_str("<label title=\"Units whose formula of concepts scores a higher IoU than their best single concept\"><input id=\"f-formula\" type=\"checkbox\"> formula beats label</label>");
    }
    if has_concepts {
        s.push_str("<label title=\"Tints, in each top image, the pixels the dataset labels with the unit's best concept; the yellow outline stays the unit's region\"><input id=\"f-masks\" type=\"checkbox\"> show concept masks <span class=\"swatch\"></span></label>");
    }
    let _ = writeln!(
        s,
        "<span><span id=\"shown\">{total}</span> of {total} units shown</span></div>"
    );
}

/// A layer's section: its headline, the formula search's gains when there
/// was one, the per-category chart and counts, then a card per unit.
fn layer_section(
    s: &mut String,
    dissection: &Dissection,
    layer: &LayerResult,
    strips: Option<&LayerStrips>,
) {
    let m = &layer.summary;
    let name = escape(&layer.name);
    let _ = writeln!(
        s,
        "<section class=\"layer\" data-layer-section=\"{name}\"><h2>Layer <code>{name}</code> <span class=\"meta\">(tap <code>{}</code>, maps {}x{})</span></h2>",
        escape(&layer.tap),
        layer.feature_size[0],
        layer.feature_size[1]
    );
    let _ = write!(
        s,
        "<p class=\"headline\" data-layer=\"{name}\" data-detectors=\"{}\" data-units=\"{}\" data-unique-top-label=\"{}\" data-unique-per-category=\"{}\">{}/{} units covering {} concepts with IoU &gt; {}</p>\n<p class=\"meta\">{} distinct concepts by the per-category rule (a unit counts in every category where its best IoU exceeds the threshold)</p>\n",
        m.detectors,
        m.n_units,
        m.unique_top_label,
        m.unique_per_category,
        m.detectors,
        m.n_units,
        m.unique_top_label,
        m.iou_threshold,
        m.unique_per_category,
    );
    if let Some(search) = dissection.options.formula {
        formula_gains(s, layer, search);
    }
    if let Some(sig) = &m.significance {
        significance_line(s, layer, sig);
    }
    category_counts(s, layer);
    let _ = writeln!(
        s,
        "<p class=\"meta\"><span data-shown-layer=\"{name}\">{}</span> units shown, sorted by IoU</p><div class=\"units\">",
        layer.units.len()
    );
    for unit in sorted_units(layer) {
        unit_card(s, dissection, layer, unit, strips);
    }
    s.push_str("</div></section>\n");
}

/// The significance rule beside the IoU rule: how many units each passes,
/// and which units pass one and not the other (1-based, as on the cards).
fn significance_line(s: &mut String, layer: &LayerResult, sig: &dissect::SignificanceSummary) {
    let list = |units: &[usize]| {
        if units.is_empty() {
            "none".to_string()
        } else {
            let shown: Vec<String> = units.iter().take(40).map(|u| (u + 1).to_string()).collect();
            let more = units.len().saturating_sub(40);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{}{tail}", shown.join(", "))
        }
    };
    let cut = sig
        .p_cut
        .map_or("no discovery".to_string(), |p| format!("p ≤ {p:.3e}"));
    let _ = writeln!(
        s,
        "<p class=\"meta significance\" data-significant=\"{}\" data-both=\"{}\" data-iou-only=\"{}\" data-significance-only=\"{}\">{} of {} units have a significant best label (Benjamini-Hochberg at {}% over {} unit-label tests, {cut}; the null is in the README, \"Is it chance?\"). {} are detectors by both rules. IoU &gt; {} only: {}. Significant only: {}.</p>",
        sig.detectors,
        sig.both,
        sig.iou_only.len(),
        sig.significance_only.len(),
        sig.detectors,
        layer.summary.n_units,
        sig.fdr * 100.0,
        sig.tests,
        sig.both,
        layer.summary.iou_threshold,
        list(&sig.iou_only),
        list(&sig.significance_only),
    );
}

/// How many of the layer's units a formula of concepts (found by `search`)
/// explains better than their best single concept, and by how much.
fn formula_gains(s: &mut String, layer: &LayerResult, search: dissect::FormulaSearch) {
    let gains: Vec<f64> = (layer.units.iter())
        .map(UnitScore::formula_gain)
        .filter(|&g| g > 0.0)
        .collect();
    let mean = gains.iter().sum::<f64>() / gains.len().max(1) as f64;
    let _ = writeln!(
        s,
        "<p class=\"meta\" data-formula-gains=\"{}\">{} of {} units are explained better by a formula of up to {} concepts (beam {}) than by their best single concept, by {mean:.3} IoU on average</p>",
        gains.len(),
        gains.len(),
        layer.summary.n_units,
        search.length,
        search.beam,
    );
}

/// The layer's unique detectors per category by both rules, as a bar
/// chart and as a table with the detectors and a total row.
fn category_counts(s: &mut String, layer: &LayerResult) {
    let m = &layer.summary;
    s.push_str("<div class=\"charts\">");
    let chart = BarChart {
        chart: "unique",
        layer: &layer.name,
        title: "Unique detectors per category",
        series: &["top-label", "per-category"],
        groups: m
            .per_category
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    vec![c.unique_top_label, c.unique_per_category],
                )
            })
            .collect(),
    };
    s.push_str(&bar_chart(&chart));
    s.push_str("<table class=\"counts\"><tr><th>category</th><th>detectors</th><th>unique (top-label)</th><th>unique (per-category)</th></tr>");
    for c in &m.per_category {
        let _ = write!(
            s,
            "<tr data-category-row=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.name),
            escape(&c.name),
            c.detectors,
            c.unique_top_label,
            c.unique_per_category
        );
    }
    let _ = writeln!(
        s,
        "<tr><th>all</th><th>{}</th><th>{}</th><th>{}</th></tr></table></div>",
        m.detectors, m.unique_top_label, m.unique_per_category
    );
}

/// A unit's card: its head (number, best label, category, IoU) with the
/// data the filters read, its top concepts, its formula, and its strip.
fn unit_card(
    s: &mut String,
    dissection: &Dissection,
    layer: &LayerResult,
    unit: &UnitScore,
    strips: Option<&LayerStrips>,
) {
    let (category, label) = best_names(unit, &dissection.categories);
    let number = unit.unit + 1;
    let iou = unit.score();
    let detector = unit.best().is_some() && iou > layer.summary.iou_threshold;
    let mut search = format!("unit {number} {label} {category}").to_lowercase();
    // Only a run with a formula search marks its cards for the filter.
    let mut gains = String::new();
    if let Some(f) = unit.formula() {
        search = format!("{search} {}", f.formula.to_lowercase());
    }
    if dissection.options.formula.is_some() {
        gains = format!(
            " data-formula-gain=\"{}\"",
            u8::from(unit.formula_gain() > 0.0)
        );
    }
    let _ = write!(
        s,
        "<div class=\"unit{}\" data-unit=\"{number}\" data-layer=\"{}\" data-category=\"{}\" data-label=\"{}\" data-iou=\"{iou}\" data-detector=\"{}\"{gains} data-search=\"{}\"><div class=\"head\"><span class=\"num\">unit {number}</span><span class=\"label\">{}</span><span class=\"cat\">{}</span><span class=\"iou\">IoU {iou:.4}</span></div>",
        if detector { " detector" } else { "" },
        escape(&layer.name),
        escape(category),
        escape(label),
        u8::from(detector),
        escape(&search),
        if label.is_empty() {
            "-".to_string()
        } else {
            escape(label)
        },
        escape(category),
    );
    top_labels(s, dissection, unit);
    if let Some(sig) = &unit.significance {
        let _ = write!(
            s,
            "<p class=\"sig\">p {:.1e}{}</p>",
            sig.p_value,
            if sig.significant { ", significant" } else { "" }
        );
    }
    if let Some(f) = unit.formula() {
        formula_line(s, f, unit.formula_gain());
    }
    let strip = strips.and_then(|l| l.units.get(unit.unit));
    match strip.and_then(|st| st.file.as_ref().map(|f| (st, f))) {
        Some((st, file)) => strip_image(s, layer, unit, st, file),
        None => s.push_str("<span class=\"noimg\">no top images</span>"),
    }
    s.push_str("</div>\n");
}

/// A unit's best formula `f` with its IoU and its `gain` over the label.
fn formula_line(s: &mut String, f: &dissect::FormulaScore, gain: f64) {
    let _ = write!(
        s,
        "<p class=\"formula\" data-formula-iou=\"{:.6}\" data-gain=\"{gain:.6}\">formula <b>{}</b> IoU {:.3} {}</p>",
        f.iou,
        escape(&f.formula),
        f.iou,
        if gain > 0.0 {
            format!("<span class=\"gain\">(+{gain:.3} over the label)</span>")
        } else {
            "(no gain over the label)".to_string()
        },
    );
}

/// A unit's strip (`file`, drawn as `st` says), lazily loaded, with its
/// concept twin for the mask toggle and its images' paths as the title.
fn strip_image(s: &mut String, layer: &LayerResult, unit: &UnitScore, st: &UnitStrip, file: &str) {
    let title: Vec<String> = layer
        .top_images
        .get(unit.unit)
        .map(|imgs| {
            imgs.iter()
                .take(st.n_images)
                .map(|t| format!("{} ({:.3})", t.path, t.max))
                .collect()
        })
        .unwrap_or_default();
    let concept = st.concept_file.as_ref().map_or(String::new(), |c| {
        format!(" data-concept-src=\"{}\"", escape(c))
    });
    let _ = write!(
        s,
        "<img src=\"{}\"{concept} width=\"{}\" height=\"{}\" loading=\"lazy\" alt=\"top images of unit {}\" title=\"{}\">",
        escape(file),
        st.width,
        st.height,
        unit.unit + 1,
        escape(&title.join("\n")),
    );
}

/// The unit's top concepts over all categories with their IoUs; results
/// saved before the list was kept show each category's best instead.
fn top_labels(s: &mut String, dissection: &Dissection, unit: &UnitScore) {
    let category = |c: usize| dissection.categories.get(c).map_or("", String::as_str);
    let entries: Vec<(&str, &str, f64)> = if unit.top.is_empty() {
        let mut bests: Vec<(&str, &str, f64)> = unit
            .per_category
            .iter()
            .enumerate()
            .filter(|(_, b)| b.label.is_some() && b.iou > 0.0)
            .map(|(c, b)| (b.name.as_str(), category(c), b.iou))
            .collect();
        bests.sort_by(|a, b| b.2.total_cmp(&a.2));
        bests.truncate(dissect::TOP_LABELS);
        bests
    } else {
        unit.top
            .iter()
            .map(|t| (t.name.as_str(), category(t.category), t.iou))
            .collect()
    };
    if entries.is_empty() {
        return;
    }
    s.push_str("<ol class=\"top\">");
    for (name, cat, iou) in entries {
        let _ = write!(
            s,
            "<li data-iou=\"{iou:.6}\">{} <span class=\"cat\">{}</span> {iou:.3}</li>",
            escape(name),
            escape(cat),
        );
    }
    s.push_str("</ol>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, run_chromium};
    use crate::strips::UnitStrip;

    /// A results folder with generated images and a two-layer dissection
    /// (5 and 7 units, different scores) of them.
    fn two_layers(root: &Path) -> (Dissection, Vec<TopMaps>) {
        let dataset = root.join("data");
        fixture::write_images(&dataset);
        fixture::dissection(
            &dataset,
            vec![fixture::layer("conv1", 5, 0), fixture::layer("conv2", 7, 3)],
        )
    }

    /// The value of attribute `name` in the first tag of `tag_text`.
    fn attr<'a>(tag_text: &'a str, name: &str) -> Option<&'a str> {
        let key = format!(" {name}=\"");
        let start = tag_text.find(&key)? + key.len();
        let len = tag_text[start..].find('"')?;
        Some(&tag_text[start..start + len])
    }

    /// Every `<tag ...>` opening with `prefix`, as its text up to `>`.
    fn tags<'a>(html: &'a str, prefix: &str) -> Vec<&'a str> {
        html.match_indices(prefix)
            .map(|(i, _)| {
                let end = html[i..].find('>').map_or(html.len(), |e| i + e);
                &html[i..end]
            })
            .collect()
    }

    /// Checks the bar values and headline numbers of a page (as written or
    /// as Chromium's DOM) against the dissection's summaries.
    fn check_numbers(html: &str, d: &Dissection) {
        let bars = tags(html, "<g class=\"bar\"");
        let per_layer_bars = d.layers.len() * 2 * d.categories.len();
        assert_eq!(bars.len(), per_layer_bars + 3 * d.layers.len(), "bar count");
        let value = |chart: &str, layer: &str, group: &str, series: &str| -> usize {
            let found: Vec<&&str> = bars
                .iter()
                .filter(|b| {
                    attr(b, "data-chart") == Some(chart)
                        && attr(b, "data-layer") == Some(layer)
                        && attr(b, "data-group") == Some(group)
                        && attr(b, "data-series") == Some(series)
                })
                .collect();
            assert_eq!(found.len(), 1, "{chart} {layer} {group} {series}");
            attr(found[0], "data-value").unwrap().parse().unwrap()
        };
        for l in &d.layers {
            for c in &l.summary.per_category {
                assert_eq!(
                    value("unique", &l.name, &c.name, "top-label"),
                    c.unique_top_label
                );
                assert_eq!(
                    value("unique", &l.name, &c.name, "per-category"),
                    c.unique_per_category
                );
            }
            let m = &l.summary;
            assert_eq!(value("layers", "", &l.name, "detectors"), m.detectors);
            assert_eq!(
                value("layers", "", &l.name, "unique (top-label)"),
                m.unique_top_label
            );
            assert_eq!(
                value("layers", "", &l.name, "unique (per-category)"),
                m.unique_per_category
            );
            let headline = format!(
                "{}/{} units covering {} concepts with IoU &gt; 0.04",
                m.detectors, m.n_units, m.unique_top_label
            );
            assert!(html.contains(&headline), "missing headline {headline}");
            // The significance rule beside it, each list as the summary counts it.
            let sig = m
                .significance
                .as_ref()
                .expect("the fixture has significance");
            let line = tags(html, "<p class=\"meta significance\"")
                .into_iter()
                .find(|t| attr(t, "data-significant") == Some(&sig.detectors.to_string()))
                .unwrap_or_else(|| {
                    panic!("no significance line of {} for {}", sig.detectors, l.name)
                });
            assert_eq!(attr(line, "data-both"), Some(sig.both.to_string().as_str()));
            assert_eq!(
                attr(line, "data-iou-only"),
                Some(sig.iou_only.len().to_string().as_str())
            );
            assert_eq!(
                attr(line, "data-significance-only"),
                Some(sig.significance_only.len().to_string().as_str())
            );
        }
    }

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape(r#"a<b>&"c"'d"#),
            "a&lt;b&gt;&amp;&quot;c&quot;&#39;d"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn report_has_headlines_charts_sorted_escaped_cards_and_no_network() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, maps) = two_layers(tmp.path());
        // The fixture must exercise both counting rules differently, or the
        // chart check below could not tell them apart.
        assert!(
            d.layers
                .iter()
                .any(|l| l.summary.unique_top_label != l.summary.unique_per_category)
        );
        let out = tmp.path().join("run");
        let path = write_report(&out, &d, &maps).unwrap();
        assert_eq!(path, out.join(REPORT_HTML));
        let html = std::fs::read_to_string(&path).unwrap();
        check_numbers(&html, &d);
        assert_eq!(html.matches(" data-unit=\"").count(), 12);
        assert!(html.contains("id=\"comparison\""));
        // Cards of each layer run by IoU, highest first.
        for l in &d.layers {
            let ious: Vec<f64> = tags(&html, "<div class=\"unit")
                .iter()
                .filter(|t| attr(t, "data-layer") == Some(l.name.as_str()))
                .map(|t| attr(t, "data-iou").unwrap().parse().unwrap())
                .collect();
            assert_eq!(ious.len(), l.n_units);
            assert!(ious.windows(2).all(|w| w[0] >= w[1]), "{ious:?}");
            let best = l.units.iter().map(UnitScore::score).fold(0.0, f64::max);
            assert_eq!(ious[0], best);
        }
        // User-supplied names are escaped everywhere.
        assert!(html.contains("cat &lt;&amp;&gt; &quot;hat&quot;"));
        assert!(!html.contains("cat <&>"));
        assert!(html.contains("tiny&lt;net&gt;") && !html.contains("tiny<net>"));
        // Self-contained: nothing is fetched from the network.
        for needle in ["src=\"http", "href=\"http", "src=\"//", "@import", "url("] {
            assert!(!html.contains(needle), "{needle}");
        }
        // Every linked strip exists; the unit without images has none; the
        // unreadable image is reported.
        let srcs: Vec<&str> = tags(&html, "<img ")
            .iter()
            .filter_map(|t| attr(t, "src"))
            .collect();
        assert_eq!(srcs.len(), 12 - 2);
        for src in srcs {
            assert!(out.join(src).is_file(), "{src}");
        }
        assert_eq!(html.matches("no top images").count(), 2);
        let missing = tags(&html, "<p class=\"warn\" id=\"missing\"");
        assert_eq!(attr(missing[0], "data-missing"), Some("1"));
        // Each card lists the unit's top concepts, best first.
        let cards: Vec<&str> = html.split("<div class=\"unit").skip(1).collect();
        for l in &d.layers {
            for u in &l.units {
                let card = cards
                    .iter()
                    .find(|c| {
                        attr(c, "data-layer") == Some(l.name.as_str())
                            && attr(c, "data-unit") == Some((u.unit + 1).to_string().as_str())
                    })
                    .unwrap();
                let card = &card[..card.find("</div>\n").unwrap_or(card.len())];
                let ious: Vec<f64> = tags(card, "<li data-iou")
                    .iter()
                    .map(|t| attr(t, "data-iou").unwrap().parse().unwrap())
                    .collect();
                let want: Vec<f64> = u.top.iter().map(|t| (t.iou * 1e6).round() / 1e6).collect();
                assert_eq!(ious, want, "{} unit {}", l.name, u.unit);
            }
        }
        // Units with a best label and images have a concept strip on disk;
        // the toggle is offered.
        let concept_srcs: Vec<&str> = tags(&html, "<img ")
            .iter()
            .filter_map(|t| attr(t, "data-concept-src"))
            .collect();
        assert_eq!(
            concept_srcs.len(),
            12 - 2 - 2,
            "units with images and a label"
        );
        for src in concept_srcs {
            assert!(out.join(src).is_file(), "{src}");
        }
        assert!(html.contains("id=\"f-masks\"") && !html.contains("id=\"no-concepts\""));
    }

    #[test]
    fn formulas_show_beside_labels_with_their_gain_and_filter_in_chromium() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut d, maps) = two_layers(tmp.path());
        fixture::add_formulas(&mut d);
        let out = tmp.path().join("run");
        let path = write_report(&out, &d, &maps).unwrap();
        let html = std::fs::read_to_string(&path).unwrap();
        let gaining: Vec<(&str, usize)> = d
            .layers
            .iter()
            .flat_map(|l| l.units.iter().map(move |u| (l, u)))
            .filter(|(_, u)| u.formula_gain() > 0.0)
            .map(|(l, u)| (l.name.as_str(), u.unit + 1))
            .collect();
        let with_formula = d
            .layers
            .iter()
            .flat_map(|l| &l.units)
            .filter(|u| u.formula().is_some())
            .count();
        assert!(!gaining.is_empty() && gaining.len() < with_formula);
        assert_eq!(html.matches("<p class=\"formula\"").count(), with_formula);
        assert!(html.contains("AND NOT cat &lt;&amp;&gt; &quot;hat&quot;</b>"));
        assert!(html.contains("(+0.050 over the label)"));
        assert!(html.contains("id=\"f-formula\""));
        for l in &d.layers {
            let n = gaining.iter().filter(|(name, _)| *name == l.name).count();
            assert!(
                html.contains(&format!("data-formula-gains=\"{n}\"")),
                "{}",
                l.name
            );
        }
        // The tally carries the formula columns and reads them back.
        let csv = crate::tally::render(&d.layers[0].units, &d.categories);
        assert!(
            csv.lines()
                .next()
                .unwrap()
                .ends_with(",formula,formula-iou")
        );
        let file = tmp.path().join("t.csv");
        std::fs::write(&file, &csv).unwrap();
        let back = crate::tally::read(&file).unwrap();
        for u in &back.units {
            let want = &d.layers[0].units[u.unit];
            assert_eq!(
                u.formula().map(|f| (&f.formula, f.iou)),
                want.formula().map(|f| (&f.formula, f.iou))
            );
        }

        // `#formula=1` shows exactly the units whose formula gains.
        let dom_file = tmp.path().join("dom.html");
        run_chromium(
            &tmp.path().join("profile"),
            &["--dump-dom".into()],
            &format!("file://{}#formula=1", path.display()),
            &dom_file,
        );
        let dom = std::fs::read_to_string(&dom_file).unwrap();
        let shown: Vec<(String, usize)> = tags(&dom, "<div class=\"unit")
            .iter()
            .filter(|t| attr(t, "data-unit").is_some() && !t.contains(" hidden"))
            .map(|t| {
                (
                    attr(t, "data-layer").unwrap().to_string(),
                    attr(t, "data-unit").unwrap().parse().unwrap(),
                )
            })
            .collect();
        let mut want: Vec<(String, usize)> =
            gaining.iter().map(|(l, u)| (l.to_string(), *u)).collect();
        let mut shown = shown;
        shown.sort();
        want.sort();
        assert_eq!(shown, want);
        assert!(dom.contains(&format!("<span id=\"shown\">{}</span>", want.len())));
    }

    #[test]
    fn a_single_layer_has_no_comparison_and_a_moved_dataset_is_found_beside_the_results() {
        let tmp = tempfile::tempdir().unwrap();
        let dataset = tmp.path().join("data");
        fixture::write_images(&dataset);
        // The dataset path as given at run time, relative to the results.
        let (d, maps) =
            fixture::dissection(Path::new("../data"), vec![fixture::layer("only", 4, 1)]);
        let out = tmp.path().join("run");
        std::fs::create_dir_all(&out).unwrap();
        assert_eq!(images_root(&out, &d), out.join("../data/images"));
        let html = std::fs::read_to_string(write_report(&out, &d, &maps).unwrap()).unwrap();
        assert!(!html.contains("id=\"comparison\""));
        // Only the fixture's deliberately missing image is missing.
        let missing = tags(&html, "<p class=\"warn\" id=\"missing\"");
        assert_eq!(attr(missing[0], "data-missing"), Some("1"));
        assert!(html.contains("id=\"f-masks\""));

        // Without the dataset's index the page says why no masks are shown.
        std::fs::remove_file(dataset.join("index.csv")).unwrap();
        let html = std::fs::read_to_string(write_report(&out, &d, &maps).unwrap()).unwrap();
        assert!(
            html.contains("id=\"no-concepts\""),
            "the missing index is named"
        );
        assert!(html.contains("index.csv"));
        assert!(!html.contains("id=\"f-masks\"") && !html.contains("data-concept-src=\""));
    }

    #[test]
    fn the_report_regenerates_identically_from_saved_results() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, maps) = two_layers(tmp.path());
        let out = tmp.path().join("run");
        crate::output::begin(&out, false).unwrap();
        crate::output::write_all(&out, &d, &maps, &[]).unwrap();
        let direct = std::fs::read(write_report(&out, &d, &maps).unwrap()).unwrap();
        let strip = std::fs::read(out.join("strips/conv1/unit-0001.jpg")).unwrap();
        std::fs::remove_dir_all(out.join("strips")).unwrap();
        let (saved, saved_maps) = crate::output::read_results(&out).unwrap();
        assert_eq!(saved, d);
        assert_eq!(saved_maps.len(), maps.len());
        for (a, b) in saved_maps.iter().zip(&maps) {
            // NaN slots compare by bits.
            let bits = |m: &TopMaps| m.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
        }
        let again = std::fs::read(write_report(&out, &saved, &saved_maps).unwrap()).unwrap();
        assert_eq!(direct, again);
        assert_eq!(
            strip,
            std::fs::read(out.join("strips/conv1/unit-0001.jpg")).unwrap()
        );
    }

    #[test]
    fn a_512_unit_layer_page_stays_small() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut d, _) = fixture::dissection(tmp.path(), vec![fixture::layer("layer4", 512, 0)]);
        // Strips as written for 10 thumbnails of 96 px, with long image paths.
        for images in &mut d.layers[0].top_images {
            for t in images.iter_mut() {
                t.path = format!("ade20k/ADE_train_{:08}.jpg", t.image);
            }
        }
        let strips = LayerStrips {
            layer: "layer4".into(),
            units: (0..512)
                .map(|unit| UnitStrip {
                    unit,
                    file: Some(format!("strips/layer4/unit-{:04}.jpg", unit + 1)),
                    concept_file: Some(format!("strips/layer4/unit-{:04}-concept.jpg", unit + 1)),
                    width: 978,
                    height: 96,
                    n_images: 10,
                    missing: Vec::new(),
                })
                .collect(),
            bytes: 0,
        };
        let html = render_html(&d, &[strips], tmp.path(), None, Links::default());
        assert_eq!(html.matches(" data-unit=\"").count(), 512);
        // Measured: about 400 KB, and 420 KB with each unit's p-value; the
        // strips load lazily beside it.
        assert!(html.len() < 440_000, "{} bytes", html.len());
    }

    #[test]
    fn chromium_renders_the_report_and_its_script_filters_cards() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, maps) = two_layers(tmp.path());
        let out = tmp.path().join("run");
        let path = write_report(&out, &d, &maps).unwrap();
        let url = format!("file://{}", path.display());

        let shot = tmp.path().join("shot.png");
        run_chromium(
            &tmp.path().join("profile1"),
            &[
                format!("--screenshot={}", shot.display()),
                "--window-size=1280,1600".into(),
                "--hide-scrollbars".into(),
            ],
            &url,
            &tmp.path().join("shot.log"),
        );
        let png = image::open(&shot)
            .expect("chromium wrote a screenshot")
            .to_rgb8();
        assert_eq!(png.dimensions(), (1280, 1600));
        // A blank or error page is nearly one colour; the report has text,
        // bars in two series colours and dimmed strips.
        let mut colours = std::collections::HashSet::new();
        let mut non_white = 0usize;
        for p in png.pixels() {
            colours.insert(p.0);
            if p.0.iter().any(|&c| c < 240) {
                non_white += 1;
            }
        }
        assert!(colours.len() > 50, "{} colours", colours.len());
        assert!(non_white > 20_000, "{non_white} non-white pixels");
        let series0 = png.pixels().filter(|p| p.0 == [0x4c, 0x78, 0xa8]).count();
        assert!(
            series0 > 100,
            "the first series' bars are drawn ({series0} pixels)"
        );

        // The DOM after the script ran, filtered to colour units by the hash.
        let dom_file = tmp.path().join("dom.html");
        run_chromium(
            &tmp.path().join("profile2"),
            &["--dump-dom".into()],
            &format!("{url}#category=color"),
            &dom_file,
        );
        let dom = std::fs::read_to_string(&dom_file).unwrap();
        assert_eq!(
            dom.matches(" data-unit=\"").count(),
            12,
            "every card is in the DOM"
        );
        check_numbers(&dom, &d);
        let color_units = d
            .layers
            .iter()
            .flat_map(|l| &l.units)
            .filter(|u| u.category == Some(0))
            .count();
        assert!(color_units > 0 && color_units < 12);
        assert!(
            dom.contains(&format!("<span id=\"shown\">{color_units}</span>")),
            "the filter shows the {color_units} colour units"
        );
        let hidden = tags(&dom, "<div class=\"unit")
            .iter()
            .filter(|t| t.contains(" hidden"))
            .count();
        assert_eq!(hidden, 12 - color_units);

        // `#masks=1` ticks the toggle, which swaps every strip for its
        // concept twin.
        let masks_file = tmp.path().join("masks.html");
        run_chromium(
            &tmp.path().join("profile3"),
            &["--dump-dom".into()],
            &format!("{url}#masks=1"),
            &masks_file,
        );
        let dom = std::fs::read_to_string(&masks_file).unwrap();
        let imgs: Vec<&str> = tags(&dom, "<img ")
            .into_iter()
            .filter(|t| t.contains("data-concept-src"))
            .collect();
        assert_eq!(imgs.len(), 8);
        for img in imgs {
            assert_eq!(attr(img, "src"), attr(img, "data-concept-src"), "{img}");
            assert!(attr(img, "src").unwrap().ends_with("-concept.jpg"));
        }
    }
}
