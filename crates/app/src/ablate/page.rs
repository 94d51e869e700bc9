//! `ablation.html`: per class, its accuracy against the number of its top
//! units removed beside the mean of the other classes (the paper's
//! picture), and its top units with their concepts, top images and drops;
//! or every class's change with a chosen set removed.

use std::fmt::Write;
use std::path::Path;

use dissect::LayerResult;
use report::html::escape;
use report::svg::{LineChart, line_chart};

use super::{Ablation, ClassAblation};

/// Top units shown per class (the JSON has them all).
const SHOWN: usize = 10;

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;max-width:1100px}table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;vertical-align:middle}.unl{color:#888}section{margin-bottom:2em}svg text{font-size:11px}.line{stroke-width:2}.l0,.s0{stroke:#c0392b;fill:#c0392b}.l1,.s1{stroke:#2e6fb7;fill:#2e6fb7}polyline.line{fill:none}img{height:56px}";

/// The whole page.
pub(crate) fn render(a: &Ablation, layer: &LayerResult, results: &Path, out: &Path) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Ablation: {} {}</title><style>{STYLE}</style></head><body>\n<h1>Which units of <code>{}</code> <code>{}</code> the network needs</h1>\n<p>{} images. A removed unit's map is set to {} ({}). Units of a class are ranked by the mean drop, over the class's images, of its logit minus the largest other logit when the unit alone is removed; then its top units are removed together. Accuracy: the share of the class's images predicted as the class; balanced: the mean of that and of the share of other images not predicted as the class.</p>\n",
        escape(&a.model),
        escape(&a.layer),
        escape(&a.model),
        escape(&a.layer),
        a.images,
        if a.ablate_to == "mean" {
            "its dataset mean"
        } else {
            "zero"
        },
        if a.method == "closed-form" {
            "exact, in closed form from the pooled features"
        } else {
            "the network after the layer run again for each set"
        },
    );
    let strips = Strips::new(layer, results, out);
    chosen_table(&mut s, a, &strips);
    for c in &a.classes {
        class_section(&mut s, c, &strips);
    }
    s.push_str("</body></html>\n");
    s
}

/// Where the report's unit strips are, as the page links them.
struct Strips {
    /// `strips/<layer>/` in the results folder, relative to the page where
    /// the page is in the results folder.
    base: String,
    dir: std::path::PathBuf,
}

impl Strips {
    fn new(layer: &LayerResult, results: &Path, out: &Path) -> Strips {
        let folder = report::strips::layer_folder_name(&layer.name);
        let dir = results.join(report::run_folder::STRIPS_DIR).join(&folder);
        let inside = out.parent() == Some(results);
        let base = if inside {
            format!("../{}/{folder}/", report::run_folder::STRIPS_DIR)
        } else {
            let abs = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            format!("{}/", abs.display())
        };
        Strips { base, dir }
    }

    /// An `<img>` of unit `unit`'s (1-based) top images, if the report
    /// drew them.
    fn img(&self, unit: usize) -> String {
        let name = format!("unit-{unit:04}.jpg");
        if self.dir.join(&name).is_file() {
            format!(
                "<img src=\"{}{}\" alt=\"top images of unit {unit}\">",
                escape(&self.base),
                name
            )
        } else {
            String::new()
        }
    }
}

fn class_section(s: &mut String, c: &ClassAblation, strips: &Strips) {
    let _ = writeln!(
        s,
        "<section class=\"class\" data-class=\"{}\"><h2>{} <small>({} images)</small></h2>",
        c.class,
        escape(&c.name),
        c.images
    );
    let chart = LineChart {
        chart: "ablation",
        title: &format!("{}: accuracy with its top units removed", c.name),
        xs: (c.curve.iter().enumerate())
            .map(|(i, p)| (p.removed.to_string(), i as f64))
            .collect(),
        series: [(
            format!("{} accuracy", c.name),
            c.curve.iter().map(|p| p.score.accuracy).collect(),
        )]
        .into_iter()
        .chain(
            (c.curve.iter().map(|p| p.score.others_accuracy))
                .collect::<Option<Vec<f64>>>()
                .map(|others| ("other classes (mean)".to_string(), others)),
        )
        .collect(),
        top: Some(1.0),
    };
    s.push_str(&line_chart(&chart));
    s.push_str("<table><tr><th>rank</th><th>unit</th><th>drop</th><th>concept</th><th>IoU</th><th>top images</th></tr>\n");
    for (rank, u) in c.units.iter().take(SHOWN).enumerate() {
        let concept = if u.label == "unlabelled" {
            "<span class=\"unl\">unlabelled</span>".to_string()
        } else {
            format!(
                "{} <small>({})</small>",
                escape(&u.label),
                escape(&u.category)
            )
        };
        let _ = writeln!(
            s,
            "<tr class=\"unit\"><td>{}</td><td>{}</td><td>{:.4}</td><td>{concept}</td><td>{:.3}</td><td>{}</td></tr>",
            rank + 1,
            u.unit,
            u.drop,
            u.iou,
            strips.img(u.unit)
        );
    }
    s.push_str("</table></section>\n");
}

fn chosen_table(s: &mut String, a: &Ablation, strips: &Strips) {
    let Some(chosen) = &a.chosen else {
        return;
    };
    let what = match &chosen.concept {
        Some(c) => format!("every unit labelled <code>{}</code>", escape(c)),
        None => "the units asked for".to_string(),
    };
    let _ = write!(
        s,
        "<section class=\"chosen\"><h2>{} removed: {}</h2><p>",
        chosen.units.len(),
        what
    );
    for &u in &chosen.units {
        let _ = write!(s, "<span title=\"unit {u}\">{u} {}</span> ", strips.img(u));
    }
    s.push_str("</p><table><tr><th>class</th><th>images</th><th>accuracy</th><th>removed</th><th>change</th><th>balanced</th><th>removed</th></tr>\n");
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    for c in &chosen.classes {
        let _ = writeln!(
            s,
            "<tr class=\"class\"><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:+.3}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.name),
            c.images,
            c.intact.accuracy,
            c.ablated.accuracy,
            c.ablated.accuracy - c.intact.accuracy,
            opt(c.intact.balanced_accuracy),
            opt(c.ablated.balanced_accuracy)
        );
    }
    s.push_str("</table></section>\n");
}
