//! `netdissect compare`: the paper's comparison figures for several result
//! folders (models, layers, training snapshots), as one self-contained HTML
//! page with SVG and a CSV of every number drawn.
//!
//! - Unique detectors per category, stacked, one bar per run and layer, by
//!   the per-category rule (the paper's figures: a unit counts in every
//!   category where its best IoU exceeds the threshold).
//! - Detectors and the share of interpretable units (detectors / units)
//!   per layer, one bar per run.
//! - When the runs are ordered, a line over them per layer: unique
//!   detectors per category and in all. Runs of one model whose names all
//!   carry a number (`snapshot-5000`, `epoch_12.pth`) are snapshots, ordered
//!   by that step; `ordered` keeps the given order instead.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use dissect::{Dissection, LayerResult};

use crate::html::escape;
use crate::svg::{BarChart, LineChart, StackedChart, bar_chart, line_chart, stacked_chart};
use crate::{ReportError, write_atomic};

/// File names of the comparison in its output folder.
pub const COMPARE_HTML: &str = "compare.html";
pub const COMPARE_CSV: &str = "compare.csv";

/// One results folder in a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub dir: PathBuf,
    /// The name it is shown under.
    pub label: String,
    /// The training step its name carries, if any.
    pub step: Option<u64>,
    pub dissection: Dissection,
}

/// How the runs are laid out along the line figure's axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Snapshots of one model, sorted by step.
    Steps,
    /// The order given.
    Given,
    /// Rotations of one network's basis (`--rotate`), in the order given,
    /// drawn against the power of the rotation.
    Rotation,
    /// No order: bars only.
    Unordered,
}

/// Runs to compare, in the order they are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub runs: Vec<Run>,
    pub order: Order,
}

/// The last group of digits in `name`, as a step.
pub fn step_of(name: &str) -> Option<u64> {
    let digits: String = name
        .chars()
        .rev()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// The file or folder name of `path`, lossy.
fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl Comparison {
    /// Reads each folder's `results.json`. A run's label is `labels[i]`
    /// when given, else its model name when that is unique among the runs,
    /// else its folder name. Its step comes from its checkpoint's file name,
    /// else its folder name.
    pub fn load(dirs: &[PathBuf], labels: &[String], ordered: bool) -> Result<Self, ReportError> {
        let runs = dirs
            .iter()
            .map(|dir| {
                let dissection = crate::output::read_dissection(dir)?;
                check_counts(dir, &dissection)?;
                Ok(Run {
                    dir: dir.clone(),
                    label: String::new(),
                    step: None,
                    dissection,
                })
            })
            .collect::<Result<Vec<_>, ReportError>>()?;
        Ok(Self::new(runs, labels, ordered))
    }

    /// Labels, steps and order for runs read elsewhere (see [`Self::load`]).
    pub fn new(mut runs: Vec<Run>, labels: &[String], ordered: bool) -> Self {
        let models: BTreeSet<String> = runs.iter().map(|r| r.dissection.model.clone()).collect();
        let unique_models = models.len() == runs.len();
        let named: Vec<String> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| match labels.get(i) {
                Some(l) => l.clone(),
                None if unique_models => r.dissection.model.clone(),
                None => name_of(&r.dir),
            })
            .collect();
        for (run, label) in runs.iter_mut().zip(named) {
            let weights = run.dissection.weights.as_deref().map(Path::new);
            run.step = weights
                .and_then(|w| step_of(&name_of(w)))
                .or_else(|| step_of(&name_of(&run.dir)));
            run.label = label;
        }
        let one_model = models.len() == 1;
        let snapshots = runs.len() > 1 && one_model && runs.iter().all(|r| r.step.is_some());
        let rotated = runs.len() > 1 && runs.iter().all(|r| r.dissection.options.rotate.is_some());
        let order = if ordered && rotated {
            let power = |r: &Run| r.dissection.options.rotate.map_or(0.0, |q| q.power);
            runs.sort_by(|a, b| power(a).total_cmp(&power(b)));
            Order::Rotation
        } else if ordered {
            Order::Given
        } else if snapshots {
            runs.sort_by_key(|r| r.step);
            Order::Steps
        } else {
            Order::Unordered
        };
        Self { runs, order }
    }

    /// Category names of every run, in first-seen order.
    fn categories(&self) -> Vec<String> {
        first_seen(self.runs.iter().flat_map(|r| &r.dissection.categories))
    }

    /// Layer names of every run, in first-seen order.
    fn layers(&self) -> Vec<String> {
        first_seen(
            self.runs
                .iter()
                .flat_map(|r| r.dissection.layers.iter().map(|l| &l.name)),
        )
    }

    /// The CSV: one row per run, layer and category, then an `all` row per
    /// run and layer.
    pub fn csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "run",
            "label",
            "step",
            "model",
            "layer",
            "units",
            "detectors",
            "interpretable_share",
            "category",
            "category_detectors",
            "unique_top_label",
            "unique_per_category",
        ])
        .expect("in-memory csv");
        let categories = self.categories();
        for (i, run) in self.runs.iter().enumerate() {
            for layer in &run.dissection.layers {
                let m = &layer.summary;
                let fixed = [
                    (i + 1).to_string(),
                    run.label.clone(),
                    run.step.map_or(String::new(), |s| s.to_string()),
                    run.dissection.model.clone(),
                    layer.name.clone(),
                    m.n_units.to_string(),
                    m.detectors.to_string(),
                    format!("{:.6}", share(layer)),
                ];
                for c in &categories {
                    let (d, top, per) = category_counts(layer, c);
                    let mut row = fixed.to_vec();
                    row.extend([c.clone(), d.to_string(), top.to_string(), per.to_string()]);
                    w.write_record(&row).expect("in-memory csv");
                }
                let mut row = fixed.to_vec();
                row.extend([
                    "all".to_string(),
                    m.detectors.to_string(),
                    m.unique_top_label.to_string(),
                    m.unique_per_category.to_string(),
                ]);
                w.write_record(&row).expect("in-memory csv");
            }
        }
        String::from_utf8(w.into_inner().expect("in-memory csv")).expect("utf-8 csv")
    }

    /// The page.
    pub fn html(&self) -> String {
        let mut s = String::with_capacity(32 * 1024);
        let _ = write!(
            s,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Network dissection: {} runs compared</title><style>{STYLE}</style></head><body>\n<h1>Network dissection: {} runs compared</h1>\n",
            self.runs.len(),
            self.runs.len()
        );
        self.run_table(&mut s);
        let categories = self.categories();
        s.push_str("<section id=\"unique\"><h2>Unique detectors per category</h2><p class=\"meta\">Distinct concepts detected (IoU above each run's threshold), by the per-category rule of the paper's figures: a unit counts in every category where its best IoU exceeds the threshold.</p><div class=\"charts\">");
        let categories_ref = &categories;
        let groups = self
            .runs
            .iter()
            .flat_map(|r| {
                let several = r.dissection.layers.len() > 1;
                r.dissection.layers.iter().map(move |l| {
                    let name = if several {
                        format!("{} {}", r.label, l.name)
                    } else {
                        r.label.clone()
                    };
                    let values = categories_ref
                        .iter()
                        .map(|c| category_counts(l, c).2)
                        .collect();
                    (name, values)
                })
            })
            .collect();
        s.push_str(&stacked_chart(&StackedChart {
            chart: "unique",
            title: "Unique detectors per category",
            series: &categories,
            groups,
        }));
        s.push_str("</div></section>\n");
        self.per_layer(&mut s);
        if self.order != Order::Unordered {
            self.over_runs(&mut s, &categories);
        }
        s.push_str("</body></html>\n");
        s
    }

    fn run_table(&self, s: &mut String) {
        s.push_str("<table class=\"counts\" id=\"runs\"><tr><th>#</th><th>run</th><th>step</th><th>model</th><th>layers</th><th>images</th><th>folder</th></tr>");
        for (i, r) in self.runs.iter().enumerate() {
            let d = &r.dissection;
            let layers: Vec<&str> = d.layers.iter().map(|l| l.name.as_str()).collect();
            let _ = write!(
                s,
                "<tr data-run=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                escape(&r.label),
                i + 1,
                escape(&r.label),
                r.step.map_or(String::new(), |s| s.to_string()),
                escape(&d.model),
                escape(&layers.join(", ")),
                d.n_images,
                escape(&r.dir.display().to_string()),
            );
        }
        s.push_str("</table>\n");
        let order = match self.order {
            Order::Steps => "Runs are snapshots of one model, ordered by the step in their names.",
            Order::Given => "Runs are in the order given.",
            Order::Rotation => {
                "Runs are one network dissected in rotated bases Q^A (the paper's test of whether interpretability is axis-aligned), drawn against A."
            }
            Order::Unordered => {
                "Runs are not ordered (snapshots of one model whose names carry a step, or --ordered, add a figure over runs)."
            }
        };
        let _ = writeln!(s, "<p class=\"meta\" id=\"order\">{order}</p>");
    }

    /// Per layer, detectors and the share of interpretable units, one bar
    /// per run.
    fn per_layer(&self, s: &mut String) {
        s.push_str("<section id=\"layers\"><h2>Detectors per layer</h2><div class=\"charts\">");
        let series: Vec<&str> = self.runs.iter().map(|r| r.label.as_str()).collect();
        let layers = self.layers();
        let pick = |f: &dyn Fn(&LayerResult) -> usize| -> Vec<(String, Vec<usize>)> {
            layers
                .iter()
                .map(|name| {
                    let values = self
                        .runs
                        .iter()
                        .map(|r| layer_of(&r.dissection, name).map_or(0, f))
                        .collect();
                    (name.clone(), values)
                })
                .collect()
        };
        s.push_str(&bar_chart(&BarChart {
            chart: "detectors",
            layer: "",
            title: "Detectors (units with IoU above the threshold)",
            series: &series,
            groups: pick(&|l| l.summary.detectors),
        }));
        s.push_str(&bar_chart(&BarChart {
            chart: "share",
            layer: "",
            title: "Interpretable units, % of the layer",
            series: &series,
            groups: pick(&|l| (share(l) * 100.0).round() as usize),
        }));
        s.push_str("</div></section>\n");
    }

    /// Per layer, unique detectors over the ordered runs.
    fn over_runs(&self, s: &mut String, categories: &[String]) {
        let (title, axis) = match self.order {
            Order::Steps => ("Interpretability over training", "step"),
            Order::Rotation => ("Interpretability against the rotation", "power A of Q^A"),
            _ => ("Interpretability over runs", "run"),
        };
        let _ = write!(
            s,
            "<section id=\"over-runs\"><h2>{title}</h2><p class=\"meta\">Unique detectors (per-category rule){} against the {axis}.</p><div class=\"charts\">",
            if self.order == Order::Rotation {
                ", and detectors,"
            } else {
                ""
            }
        );
        let xs: Vec<(String, f64)> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| match (self.order, r.step) {
                (Order::Steps, Some(step)) => (step.to_string(), step as f64),
                (Order::Rotation, _) => {
                    let power = r.dissection.options.rotate.map_or(0.0, |q| q.power);
                    (format!("{power}"), power)
                }
                _ => (r.label.clone(), i as f64),
            })
            .collect();
        for layer in self.layers() {
            let count = |c: Option<&str>| -> Vec<f64> {
                self.runs
                    .iter()
                    .map(|r| {
                        layer_of(&r.dissection, &layer).map_or(0.0, |l| match c {
                            Some(c) => category_counts(l, c).2 as f64,
                            None => l.summary.unique_per_category as f64,
                        })
                    })
                    .collect()
            };
            let mut series: Vec<(String, Vec<f64>)> = categories
                .iter()
                .map(|c| (c.clone(), count(Some(c))))
                .collect();
            series.push(("all".into(), count(None)));
            if self.order == Order::Rotation {
                let detectors = (self.runs.iter())
                    .map(|r| {
                        layer_of(&r.dissection, &layer).map_or(0.0, |l| l.summary.detectors as f64)
                    })
                    .collect();
                series.push(("detectors".into(), detectors));
            }
            let chart_title = format!("{layer}: unique detectors");
            s.push_str(&line_chart(&LineChart {
                chart: &format!("over-runs {layer}"),
                title: &chart_title,
                xs: xs.clone(),
                series,
                top: None,
            }));
        }
        s.push_str("</div></section>\n");
    }

    /// Writes `compare.html` and `compare.csv` into `out` (created if
    /// missing), each atomically; returns their paths.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
        crate::output::check_is_folder(out)?;
        store::create_dir_all(out).map_err(|source| ReportError::Io {
            path: out.to_path_buf(),
            source,
        })?;
        let html = out.join(COMPARE_HTML);
        write_atomic(&html, self.html().as_bytes())?;
        let csv = out.join(COMPARE_CSV);
        write_atomic(&csv, self.csv().as_bytes())?;
        Ok(vec![html, csv])
    }
}

/// The distinct names of `names`, in the order they first come.
/// Refuses results whose layer summaries contradict themselves (an edited
/// or corrupted `results.json`), since every figure is drawn from them.
fn check_counts(dir: &Path, d: &Dissection) -> Result<(), ReportError> {
    for layer in &d.layers {
        if let Some(problem) = summary_problem(layer) {
            return Err(ReportError::Malformed {
                path: dir.join(crate::run_folder::RESULTS_JSON),
                row: 0,
                message: format!("layer `{}`: {problem}", layer.name),
            });
        }
    }
    Ok(())
}

/// What in `layer`'s summary cannot hold by the definitions of
/// [`dissect::Summary`]: every detector is a unit and has one category,
/// each distinct label needs a unit of its own, and the totals are the sums
/// over the categories.
fn summary_problem(layer: &LayerResult) -> Option<String> {
    let m = &layer.summary;
    let n = layer.n_units;
    let sum = |f: fn(&dissect::results::CategorySummary) -> usize| -> usize {
        m.per_category.iter().map(f).fold(0, usize::saturating_add)
    };
    if m.n_units != n || layer.units.len() != n {
        return Some(format!(
            "{n} units, but its summary counts {} and it scores {}",
            m.n_units,
            layer.units.len()
        ));
    }
    let totals = [
        ("detectors", m.detectors, sum(|c| c.detectors)),
        (
            "unique top-label detectors",
            m.unique_top_label,
            sum(|c| c.unique_top_label),
        ),
        (
            "unique per-category detectors",
            m.unique_per_category,
            sum(|c| c.unique_per_category),
        ),
    ];
    if let Some((what, total, summed)) = totals.iter().find(|(_, t, s)| t != s) {
        return Some(format!(
            "{total} {what}, but its categories add up to {summed}"
        ));
    }
    if m.detectors > n {
        return Some(format!("{} detectors on {n} units", m.detectors));
    }
    m.per_category.iter().find_map(|c| {
        if c.unique_top_label > c.detectors {
            Some(format!(
                "category `{}`: {} unique top-label detectors among {} detectors",
                c.name, c.unique_top_label, c.detectors
            ))
        } else if c.unique_per_category > n {
            Some(format!(
                "category `{}`: {} unique per-category detectors on {n} units",
                c.name, c.unique_per_category
            ))
        } else {
            None
        }
    })
}

fn first_seen<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for n in names {
        if !seen.contains(n) {
            seen.push(n.clone());
        }
    }
    seen
}

fn layer_of<'a>(d: &'a Dissection, name: &str) -> Option<&'a LayerResult> {
    d.layers.iter().find(|l| l.name == name)
}

/// Detectors / units (0 for an empty layer).
fn share(layer: &LayerResult) -> f64 {
    let m = &layer.summary;
    if m.n_units == 0 {
        0.0
    } else {
        m.detectors as f64 / m.n_units as f64
    }
}

/// `(detectors, unique top-label, unique per-category)` of category `name`
/// in `layer`; zeros where the run did not score it.
fn category_counts(layer: &LayerResult, name: &str) -> (usize, usize, usize) {
    layer
        .summary
        .per_category
        .iter()
        .find(|c| c.name == name)
        .map_or((0, 0, 0), |c| {
            (c.detectors, c.unique_top_label, c.unique_per_category)
        })
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 3em;color:#222;background:#fafafa}
h1{font-size:1.5em;margin:.8em 0 .2em}h2{font-size:1.25em;margin:1.6em 0 .3em;border-bottom:1px solid #ccc}
.meta{color:#555;font-size:.9em}code{background:#eee;padding:0 .2em}
table.counts{border-collapse:collapse;margin:.5em 0}table.counts td,table.counts th{border:1px solid #ddd;padding:2px 8px;text-align:right}
table.counts td:nth-child(2),table.counts th:nth-child(2){text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
svg.chart{background:#fff;border:1px solid #ddd}
svg .s0{fill:#4c78a8}svg .s1{fill:#f58518}svg .s2{fill:#54a24b}svg .s3{fill:#e45756}svg .s4{fill:#72b7b2}svg .s5{fill:#b279a2}svg .s6{fill:#9d755d}svg .s7{fill:#555}
svg .l0{stroke:#4c78a8}svg .l1{stroke:#f58518}svg .l2{stroke:#54a24b}svg .l3{stroke:#e45756}svg .l4{stroke:#72b7b2}svg .l5{stroke:#b279a2}svg .l6{stroke:#9d755d}svg .l7{stroke:#555}
svg polyline{stroke-width:2}
svg .axis{stroke:#333}svg .grid{stroke:#ddd;stroke-dasharray:3 3}
svg text{font-size:11px;fill:#333}svg .title{font-weight:600;font-size:12px}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn steps_are_the_last_number_in_a_name() {
        assert_eq!(step_of("snapshot-0500"), Some(500));
        assert_eq!(step_of("epoch_12.pth"), Some(12));
        assert_eq!(step_of("run3-final"), Some(3));
        assert_eq!(step_of("final"), None);
    }

    /// Three runs of one model in folders named by step, given out of order.
    fn snapshots(root: &Path) -> Vec<Run> {
        [(3000, 2), (1000, 0), (2000, 1)]
            .into_iter()
            .map(|(step, salt)| {
                let (d, _) = fixture::dissection(root, vec![fixture::layer("conv1", 6, salt)]);
                Run {
                    dir: root.join(format!("snap-{step}")),
                    label: String::new(),
                    step: None,
                    dissection: d,
                }
            })
            .collect()
    }

    #[test]
    fn a_file_where_the_folder_goes_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = snapshots(tmp.path());
        let labels: Vec<String> = (0..runs.len()).map(|i| format!("run {i}")).collect();
        let c = Comparison::new(runs, &labels, false);
        let file = tmp.path().join("compare-here");
        std::fs::write(&file, b"mine").unwrap();
        let err = c.write(&file).unwrap_err();
        assert!(
            matches!(&err, ReportError::NotAFolder { path } if path == &file),
            "{err}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"mine");
        let written = c.write(&tmp.path().join("new/compare")).unwrap();
        assert_eq!(written.len(), 2);
    }

    #[test]
    fn rotated_runs_are_drawn_against_the_power_with_detectors() {
        let tmp = tempfile::tempdir().unwrap();
        let runs: Vec<Run> = [1.0, 0.0, 0.5]
            .into_iter()
            .map(|power| {
                let mut run = snapshots(tmp.path()).remove(0);
                run.dissection.options.rotate = Some(dissect::options::Rotate { power, seed: 3 });
                run
            })
            .collect();
        let labels: Vec<String> = ["Q^1", "Q^0", "Q^0.5"].map(String::from).to_vec();
        let c = Comparison::new(runs, &labels, true);
        assert_eq!(c.order, Order::Rotation);
        let order: Vec<&str> = c.runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(order, ["Q^0", "Q^0.5", "Q^1"], "sorted by power");
        let html = c.html();
        assert!(html.contains("Interpretability against the rotation"));
        assert!(html.contains("and detectors"));
    }

    #[test]
    fn runs_are_labelled_and_ordered() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Comparison::new(snapshots(tmp.path()), &[], false);
        assert_eq!(c.order, Order::Steps);
        let labels: Vec<&str> = c.runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            ["snap-1000", "snap-2000", "snap-3000"],
            "one model: folder names"
        );
        let given = Comparison::new(snapshots(tmp.path()), &["a".into(), "b".into()], true);
        assert_eq!(given.order, Order::Given);
        let labels: Vec<&str> = given.runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["a", "b", "snap-2000"]);
        // Different models are not snapshots, and keep their model names.
        let mut runs = snapshots(tmp.path());
        for (i, r) in runs.iter_mut().enumerate() {
            r.dissection.model = format!("net{i}");
        }
        let c = Comparison::new(runs, &[], false);
        assert_eq!(c.order, Order::Unordered);
        assert_eq!(c.runs[0].label, "net0");
        assert!(!c.html().contains("id=\"over-runs\""));
    }

    /// Per category (color, object): `(detectors, unique top-label, unique
    /// per-category)`.
    type Counts = [(usize, usize, usize); 2];

    /// Sets a layer's summary to the given counts.
    fn set_counts(layer: &mut LayerResult, counts: Counts) {
        let m = &mut layer.summary;
        for (c, (d, top, per)) in m.per_category.iter_mut().zip(counts) {
            c.detectors = d;
            c.unique_top_label = top;
            c.unique_per_category = per;
        }
        m.detectors = counts.iter().map(|c| c.0).sum();
        m.unique_top_label = counts.iter().map(|c| c.1).sum();
        m.unique_per_category = counts.iter().map(|c| c.2).sum();
    }

    /// An edit of a layer's results.
    type Edit = fn(&mut LayerResult);

    #[test]
    fn impossible_counts_are_refused_naming_the_file_and_the_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let dataset = tmp.path().join("data");
        fixture::write_images(&dataset);
        // (what is edited, the words of the error)
        let cases: [(Edit, &str); 7] = [
            (
                |l| set_counts(l, [(1000, 0, 0), (0, 0, 0)]),
                "1000 detectors on 6 units",
            ),
            (|l| l.summary.detectors += 1, "but its categories add up to"),
            (
                |l| l.summary.unique_per_category += 1,
                "unique per-category",
            ),
            (
                |l| set_counts(l, [(1, 2, 0), (0, 0, 0)]),
                "2 unique top-label detectors among 1",
            ),
            (
                |l| set_counts(l, [(0, 0, 7), (0, 0, 0)]),
                "7 unique per-category detectors on 6",
            ),
            (
                |l| l.summary.n_units = 64,
                "6 units, but its summary counts 64",
            ),
            (|l| l.n_units = 64, "64 units, but its summary counts 6"),
        ];
        let mut failures = Vec::new();
        for (i, (edit, words)) in cases.iter().enumerate() {
            let (mut layer, maps) = fixture::layer("conv1", 6, 0);
            edit(&mut layer);
            let (d, maps) = fixture::dissection(&dataset, vec![(layer, maps)]);
            let dir = tmp.path().join(format!("run-{i}"));
            crate::output::begin(&dir, false).unwrap();
            crate::output::write_all(&dir, &d, &maps, &[]).unwrap();
            let shown = match Comparison::load(std::slice::from_ref(&dir), &[], false) {
                Ok(_) => "accepted".to_string(),
                Err(e) => e.to_string(),
            };
            let file = dir.join(crate::run_folder::RESULTS_JSON);
            let named = shown.contains(&file.display().to_string()) && shown.contains("`conv1`");
            if !(named && shown.contains(words)) {
                failures.push(format!("case {i}: {shown}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        // The fixture's own counts, as written, load.
        let (layer, maps) = fixture::layer("conv1", 6, 0);
        let (d, maps) = fixture::dissection(&dataset, vec![(layer, maps)]);
        let dir = tmp.path().join("clean");
        crate::output::begin(&dir, false).unwrap();
        crate::output::write_all(&dir, &d, &maps, &[]).unwrap();
        Comparison::load(&[dir], &[], false).unwrap();
    }

    #[test]
    fn three_runs_give_the_known_numbers_in_the_csv_and_the_rendered_bars() {
        let tmp = tempfile::tempdir().unwrap();
        let dataset = tmp.path().join("data");
        fixture::write_images(&dataset);
        // Three snapshots of 6 units with hand-set counts per category:
        // (detectors, unique top-label, unique per-category).
        let known: [(u64, Counts); 3] = [
            (100, [(1, 1, 1), (0, 0, 1)]),
            (200, [(2, 1, 2), (1, 1, 1)]),
            (300, [(2, 2, 2), (3, 2, 3)]),
        ];
        let mut dirs = Vec::new();
        for (step, counts) in known.iter().rev() {
            let (mut layer, maps) = fixture::layer("conv1", 6, 0);
            set_counts(&mut layer, *counts);
            let (mut d, maps) = fixture::dissection(&dataset, vec![(layer, maps)]);
            d.weights = Some(format!("/ckpt/iter_{step}.pth"));
            let dir = tmp.path().join(format!("run-{step}"));
            crate::output::begin(&dir, false).unwrap();
            crate::output::write_all(&dir, &d, &maps, &[]).unwrap();
            dirs.push(dir);
        }
        let c = Comparison::load(&dirs, &[], false).unwrap();
        assert_eq!(c.order, Order::Steps, "steps from the checkpoints' names");
        let out = tmp.path().join("cmp");
        let written = c.write(&out).unwrap();
        assert_eq!(written, [out.join(COMPARE_HTML), out.join(COMPARE_CSV)]);

        // The CSV: a row per run and category plus `all`, runs by step.
        let mut reader = csv::Reader::from_path(out.join(COMPARE_CSV)).unwrap();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3 * 3);
        for (i, (step, counts)) in known.iter().enumerate() {
            let run = &rows[i * 3..i * 3 + 3];
            let detectors: usize = counts.iter().map(|c| c.0).sum();
            for (row, category) in run.iter().zip(["color", "object", "all"]) {
                assert_eq!(&row[0], (i + 1).to_string(), "run number");
                assert_eq!(&row[1], format!("run-{step}"));
                assert_eq!(&row[2], step.to_string());
                assert_eq!(&row[4], "conv1");
                assert_eq!(&row[5], "6");
                assert_eq!(&row[6], detectors.to_string());
                assert_eq!(&row[7], format!("{:.6}", detectors as f64 / 6.0));
                assert_eq!(&row[8], category);
            }
            for (row, (d, top, per)) in run.iter().zip(counts) {
                assert_eq!(
                    (&row[9], &row[10], &row[11]),
                    (&*d.to_string(), &*top.to_string(), &*per.to_string())
                );
            }
            let per_all: usize = counts.iter().map(|c| c.2).sum();
            assert_eq!(&run[2][11], per_all.to_string());
        }

        // The page as Chromium renders it: stacked segments, bars and line
        // points carry the known numbers.
        let dom_file = tmp.path().join("dom.html");
        fixture::run_chromium(
            &tmp.path().join("profile"),
            &["--dump-dom".into()],
            &format!("file://{}", out.join(COMPARE_HTML).display()),
            &dom_file,
        );
        let dom = std::fs::read_to_string(&dom_file).unwrap();
        // Each drawn element's attributes, by tag.
        let attr = |tag: &str, name: &str| -> Option<String> {
            let key = format!(" {name}=\"");
            let start = tag.find(&key)? + key.len();
            Some(tag[start..start + tag[start..].find('"')?].to_string())
        };
        let value_of = |prefix: &str, chart: &str, group: &str, series: &str| -> String {
            let found: Vec<String> = dom
                .match_indices(prefix)
                .map(|(i, _)| &dom[i..i + dom[i..].find('>').unwrap()])
                .filter(|t| {
                    attr(t, "data-chart").as_deref() == Some(chart)
                        && attr(t, "data-group").as_deref() == Some(group)
                        && attr(t, "data-series").as_deref() == Some(series)
                })
                .filter_map(|t| attr(t, "data-value"))
                .collect();
            assert_eq!(found.len(), 1, "{prefix} {chart} {group} {series}");
            found[0].clone()
        };
        for (step, counts) in &known {
            let run = format!("run-{step}");
            for (category, (d, _, per)) in ["color", "object"].iter().zip(counts) {
                assert_eq!(
                    value_of("<g class=\"seg\"", "unique", &run, category),
                    per.to_string()
                );
                let _ = d;
                assert_eq!(
                    value_of("<circle", "over-runs conv1", &step.to_string(), category)
                        .parse::<f64>()
                        .unwrap(),
                    *per as f64
                );
            }
            let detectors: usize = counts.iter().map(|c| c.0).sum();
            assert_eq!(
                value_of("<g class=\"bar\"", "detectors", "conv1", &run),
                detectors.to_string()
            );
            assert_eq!(
                value_of("<g class=\"bar\"", "share", "conv1", &run),
                ((detectors as f64 / 6.0 * 100.0).round() as usize).to_string()
            );
        }
        assert_eq!(dom.matches("<g class=\"seg\"").count(), 3 * 2);
        assert!(dom.contains("Interpretability over training"));
    }
}
