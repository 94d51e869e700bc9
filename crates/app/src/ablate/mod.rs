//! `netdissect ablate`: which units the network needs (Bau et al., PNAS
//! 2020, "the importance of a unit to a class"). Units of a dissected
//! layer are removed (their maps set to zero or to their dataset mean) and
//! each class's accuracy is measured before and after.
//!
//! Per class, the units are ranked by what removing each one alone costs
//! the class: the mean, over the class's images, of the drop of its logit
//! minus the largest other logit (continuous, so that ties in accuracy do
//! not decide). Then the class's top units are removed together, for each
//! size asked, and every class is measured. Or one chosen set (`--units`,
//! `--concept`) is removed and every class's change reported.
//!
//! Writes `ablation.json`, `ablation.csv` and `ablation.html` (by default
//! into `<results>/ablation/`, which the report then links to).

mod effects;
mod labelled;
mod page;
mod passes;

use std::path::{Path, PathBuf};

use dissect::{Dissection, LayerResult};
use models::Model;
use serde::Serialize;

pub use effects::ClassScore;
use effects::{Outcome, ranked, scores, single_drops};
pub use passes::AblateTo;
use passes::{ClosedForm, Rerun, Setup};

use crate::engine::{Backend, EngineSpec};
use crate::error::{Error, Kind, Result};
use crate::events::Events;
use crate::explain::{class_names, load_dissected, unit_concept, write_files};

/// How the logits with units removed are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// The closed form where the layer feeds a pooled linear head, else
    /// the re-run.
    #[default]
    Auto,
    /// Exact from the pooled features (the network's last layer, under a
    /// global average pool and one linear layer).
    ClosedForm,
    /// The network after the layer run again for each set of units.
    Rerun,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::ClosedForm => "closed-form",
            Method::Rerun => "re-run",
        }
    }
}

/// The numbers of top units removed together, by default.
pub const DEFAULT_SIZES: [usize; 7] = [1, 2, 5, 10, 20, 50, 100];

/// What `ablate` is asked.
#[derive(Debug, Clone)]
pub struct AblateJob {
    /// A results folder of `netdissect dissect`.
    pub results: PathBuf,
    /// The checkpoint that was dissected.
    pub weights: PathBuf,
    /// Labelled images: an ImageFolder tree, a CSV of `image,class`, or a
    /// Broden folder (its `scene` column).
    pub dataset: PathBuf,
    /// Class names, one per line, in class order.
    pub classes: Option<PathBuf>,
    /// The layer (default: the results' last).
    pub layer: Option<String>,
    pub to: AblateTo,
    pub method: Method,
    /// Numbers of each class's top units removed together (default
    /// [`DEFAULT_SIZES`]), capped at the layer's units.
    pub sizes: Vec<usize>,
    /// A chosen set to remove instead of each class's top units: units as
    /// files number them (1-based)...
    pub units: Vec<usize>,
    /// ...or every unit labelled with this concept.
    pub concept: Option<String>,
    /// Default: `ablation/` in the results folder.
    pub out: Option<PathBuf>,
    /// Images per forward pass.
    pub batch: usize,
    pub backend: Backend,
}

/// One class's units ranked by the margin removing each alone costs it.
#[derive(Debug, Clone, Serialize)]
pub struct RankedUnit {
    /// 1-based, as files show units.
    pub unit: usize,
    /// The mean drop of the class's margin when this unit alone is removed.
    pub drop: f64,
    pub label: String,
    pub category: String,
    pub iou: f64,
}

/// A class's scores with `units` removed together.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub removed: usize,
    /// 1-based.
    pub units: Vec<usize>,
    #[serde(flatten)]
    pub score: ClassScore,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassAblation {
    pub class: usize,
    pub name: String,
    pub images: usize,
    /// The class's top units, as many as the largest size.
    pub units: Vec<RankedUnit>,
    /// `removed` = 0 first (the intact network), then each size.
    pub curve: Vec<Point>,
}

/// Every class's change with one chosen set removed.
#[derive(Debug, Clone, Serialize)]
pub struct Chosen {
    /// 1-based.
    pub units: Vec<usize>,
    pub concept: Option<String>,
    pub classes: Vec<ChosenClass>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChosenClass {
    pub class: usize,
    pub name: String,
    pub images: usize,
    pub intact: ClassScore,
    pub ablated: ClassScore,
}

/// What `ablation.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Ablation {
    pub model: String,
    pub layer: String,
    pub method: &'static str,
    pub ablate_to: &'static str,
    pub images: usize,
    /// Per class with images, in class order (empty with a chosen set).
    pub classes: Vec<ClassAblation>,
    pub chosen: Option<Chosen>,
}

/// Runs the ablation of `job`; returns the page written.
pub fn ablate(job: &AblateJob, events: &mut dyn Events) -> Result<PathBuf> {
    if job.sizes.contains(&0) {
        return Err(Error::usage("--sizes must be at least 1 each"));
    }
    if job.batch == 0 {
        return Err(Error::usage("--batch-size must be at least 1"));
    }
    let dissector = EngineSpec::of(job.backend).dissector(events)?;
    let (d, model) = load_dissected(&job.results, &job.weights, &dissector)?;
    let layer = pick_layer(&d, job.layer.as_deref(), &job.results)?;
    let names = class_names(job.classes.as_deref(), model.num_classes())?;
    let data = labelled::read(&job.dataset, &names, job.classes.is_some())?;
    if let Some(line) = &data.skipped {
        events.note(&format!("{}: {line}", job.dataset.display()));
    }
    let chosen = chosen_units(job, &d, layer)?;
    let tap = model.tap(&layer.tap).map_err(Error::input)?;
    let channels = model.taps()[tap.index].channels;
    if channels != layer.n_units {
        return Err(Error::new(
            Kind::Input,
            format!(
                "{}: layer {} has {} units, but {} of the weights {} has {channels}: are these the weights that were dissected?",
                job.results.display(),
                layer.name,
                layer.n_units,
                layer.tap,
                job.weights.display()
            ),
        ));
    }
    let setup = Setup {
        model: &model,
        tap,
        paths: &data.paths,
        labels: &data.class,
        preprocess: &d.options.preprocess,
        device: dissector.device(),
        batch: job.batch,
    };
    let study = Study {
        d: &d,
        layer,
        names: &names,
        labels: &data.class,
        measured: measured_classes(&data.class),
    };
    let mut engine = Engine::new(
        &setup,
        (job.method, job.to),
        (layer.n_units, &layer.name),
        events,
    )?;
    events.note(&format!(
        "ablating units of {} ({} units, {}) over {} images of {} classes",
        layer.name,
        layer.n_units,
        engine.method().name(),
        data.paths.len(),
        study.measured.len()
    ));
    let ablation = match chosen {
        Some(units) => study.chosen(&mut engine, units, job.concept.clone(), events)?,
        None => study.curves(&mut engine, &sizes(job, layer.n_units), events)?,
    };
    let ablation = Ablation {
        model: d.model.clone(),
        layer: layer.name.clone(),
        method: engine.method().name(),
        ablate_to: match job.to {
            AblateTo::Zero => "zero",
            AblateTo::Mean => "mean",
        },
        images: data.paths.len(),
        ..ablation
    };
    let out = job
        .out
        .clone()
        .unwrap_or_else(|| job.results.join(report::run_folder::ABLATION_DIR));
    let page = write(&ablation, layer, &job.results, &out)?;
    if job.out.is_none()
        && let Err(e) = report::html::link_ablation(&job.results)
    {
        events.note(&format!(
            "warning: the report does not link to the ablation: {e}"
        ));
    }
    Ok(page)
}

/// The layer asked for (by name or tap name), or the results' last.
fn pick_layer<'a>(
    d: &'a Dissection,
    name: Option<&str>,
    results: &Path,
) -> Result<&'a LayerResult> {
    match name {
        None => d.layers.last().ok_or_else(|| {
            Error::new(
                Kind::Input,
                format!("{}: the results have no layers", results.display()),
            )
        }),
        Some(name) => (d.layers.iter())
            .find(|l| l.name == name || l.tap == name)
            .ok_or_else(|| {
                let had: Vec<String> = d.layers.iter().map(|l| format!("`{}`", l.name)).collect();
                Error::usage(format!(
                    "--layer {name}: the results in {} have {}",
                    results.display(),
                    had.join(", ")
                ))
            }),
    }
}

/// The chosen set of `--units` or `--concept` (0-based), if any.
fn chosen_units(
    job: &AblateJob,
    d: &Dissection,
    layer: &LayerResult,
) -> Result<Option<Vec<usize>>> {
    if !job.units.is_empty() && job.concept.is_some() {
        return Err(Error::usage("give --units or --concept, not both"));
    }
    if let Some(concept) = &job.concept {
        let units: Vec<usize> = (0..layer.n_units)
            .filter(|&k| {
                let c = unit_concept(d, layer, k);
                c.detector && c.label == *concept
            })
            .collect();
        if units.is_empty() {
            let mut labels: Vec<String> = (0..layer.n_units)
                .map(|k| unit_concept(d, layer, k))
                .filter(|c| c.detector)
                .map(|c| c.label)
                .collect();
            labels.sort();
            labels.dedup();
            let had = if labels.is_empty() {
                "it has no detectors".to_string()
            } else {
                format!("its detectors' concepts: {}", labels.join(", "))
            };
            return Err(Error::usage(format!(
                "--concept {concept}: no unit of {} is labelled `{concept}` above the run's IoU threshold; {had}",
                layer.name
            )));
        }
        return Ok(Some(units));
    }
    if job.units.is_empty() {
        return Ok(None);
    }
    let mut units = Vec::new();
    for &u in &job.units {
        if u == 0 || u > layer.n_units {
            return Err(Error::usage(format!(
                "--units: unit {u} is out of range: {} has units 1-{}",
                layer.name, layer.n_units
            )));
        }
        if !units.contains(&(u - 1)) {
            units.push(u - 1);
        }
    }
    Ok(Some(units))
}

/// The sizes asked, capped at the layer's units, ascending, once each.
fn sizes(job: &AblateJob, units: usize) -> Vec<usize> {
    let asked = if job.sizes.is_empty() {
        DEFAULT_SIZES.to_vec()
    } else {
        job.sizes.clone()
    };
    let mut sizes: Vec<usize> = asked.into_iter().map(|s| s.min(units)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The classes with images, ascending.
fn measured_classes(labels: &[usize]) -> Vec<usize> {
    let mut m = labels.to_vec();
    m.sort_unstable();
    m.dedup();
    m
}

/// The closed form or the re-run, behind one call.
enum Engine<'a> {
    Closed(ClosedForm),
    Rerun(Rerun<'a>, u32),
}

impl<'a> Engine<'a> {
    /// The engine `method` asks for over `setup`'s layer (`units` wide,
    /// shown as `name`).
    fn new(
        setup: &'a Setup<'a>,
        (method, to): (Method, AblateTo),
        (units, name): (usize, &str),
        events: &mut dyn Events,
    ) -> Result<Engine<'a>> {
        let model: &Model = setup.model;
        let last = model.taps().len().checked_sub(1);
        let head = model.pooled_head().map_err(Error::input)?;
        let closed = match (head, Some(setup.tap.index) == last) {
            (Some(head), true) if method != Method::Rerun => Some(head),
            _ => None,
        };
        if closed.is_none() && method == Method::ClosedForm {
            return Err(Error::usage(format!(
                "--method closed-form needs the network's last layer under a pooled linear head; {name} of {} is not (use --method re-run)",
                model.arch()
            )));
        }
        Ok(match closed {
            Some(head) => Engine::Closed(ClosedForm::collect(setup, head, to, events)?),
            None => Engine::Rerun(Rerun::new(setup, units, to, events)?, 0),
        })
    }

    fn method(&self) -> Method {
        match self {
            Engine::Closed(_) => Method::ClosedForm,
            Engine::Rerun(..) => Method::Rerun,
        }
    }

    /// Each set's outcome over every image.
    fn outcomes(
        &mut self,
        sets: &[Vec<usize>],
        labels: &[usize],
        passes: u32,
        events: &mut dyn Events,
    ) -> Result<Vec<Outcome>> {
        match self {
            Engine::Closed(c) => Ok(c.outcomes(sets, labels)),
            Engine::Rerun(r, done) => {
                *done += 1;
                r.outcomes(sets, (*done, passes), events)
            }
        }
    }
}

/// The dissection and the labelled images an ablation is measured on.
struct Study<'a> {
    d: &'a Dissection,
    layer: &'a LayerResult,
    names: &'a [String],
    labels: &'a [usize],
    measured: Vec<usize>,
}

impl Study<'_> {
    fn images_of(&self, class: usize) -> usize {
        self.labels.iter().filter(|&&y| y == class).count()
    }

    /// Every class's change with `units` removed.
    fn chosen(
        &self,
        engine: &mut Engine<'_>,
        units: Vec<usize>,
        concept: Option<String>,
        events: &mut dyn Events,
    ) -> Result<Ablation> {
        let sets = [Vec::new(), units.clone()];
        let out = engine.outcomes(&sets, self.labels, 1, events)?;
        let before = scores(&out[0].pred, self.labels, &self.measured);
        let after = scores(&out[1].pred, self.labels, &self.measured);
        let classes = (self.measured.iter().zip(before.iter().zip(after)))
            .map(|(&c, (b, a))| ChosenClass {
                class: c,
                name: self.names[c].clone(),
                images: self.images_of(c),
                intact: *b,
                ablated: a,
            })
            .collect();
        Ok(self.ablation(
            Vec::new(),
            Some(Chosen {
                units: units.iter().map(|u| u + 1).collect(),
                concept,
                classes,
            }),
        ))
    }

    /// Each class's units ranked, then its top units removed together for
    /// each of `sizes`.
    fn curves(
        &self,
        engine: &mut Engine<'_>,
        sizes: &[usize],
        events: &mut dyn Events,
    ) -> Result<Ablation> {
        let n_units = self.layer.n_units;
        let mut sets: Vec<Vec<usize>> = vec![Vec::new()];
        sets.extend((0..n_units).map(|k| vec![k]));
        let mut singles = engine.outcomes(&sets, self.labels, 2, events)?;
        let base = singles.remove(0);
        let drops = single_drops(&base, &singles, self.labels, &self.measured);
        drop(singles);
        let orders: Vec<Vec<usize>> = drops.iter().map(|d| ranked(d)).collect();
        let top_sets: Vec<Vec<usize>> = (orders.iter())
            .flat_map(|order| sizes.iter().map(|&s| order[..s].to_vec()))
            .collect();
        let removed = engine.outcomes(&top_sets, self.labels, 2, events)?;
        let intact = scores(&base.pred, self.labels, &self.measured);
        let largest = sizes.last().copied().unwrap_or(0);
        let classes = (self.measured.iter().enumerate())
            .map(|(slot, &c)| {
                let mut curve = vec![Point {
                    removed: 0,
                    units: Vec::new(),
                    score: intact[slot],
                }];
                for (i, &s) in sizes.iter().enumerate() {
                    let out = &removed[slot * sizes.len() + i];
                    curve.push(Point {
                        removed: s,
                        units: orders[slot][..s].iter().map(|u| u + 1).collect(),
                        score: scores(&out.pred, self.labels, &self.measured)[slot],
                    });
                }
                ClassAblation {
                    class: c,
                    name: self.names[c].clone(),
                    images: self.images_of(c),
                    units: (orders[slot].iter().take(largest))
                        .map(|&k| self.ranked_unit(k, drops[slot][k]))
                        .collect(),
                    curve,
                }
            })
            .collect();
        Ok(self.ablation(classes, None))
    }

    fn ranked_unit(&self, k: usize, drop: f64) -> RankedUnit {
        let c = unit_concept(self.d, self.layer, k);
        RankedUnit {
            unit: k + 1,
            drop,
            label: c.label,
            category: c.category,
            iou: c.iou,
        }
    }

    /// The record, less what `ablate` fills in itself.
    fn ablation(&self, classes: Vec<ClassAblation>, chosen: Option<Chosen>) -> Ablation {
        Ablation {
            model: String::new(),
            layer: String::new(),
            method: "",
            ablate_to: "",
            images: self.labels.len(),
            classes,
            chosen,
        }
    }
}

/// A CSV cell, quoted where it must be.
fn cell(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `ablation.csv`: one row per class and number of units removed.
fn csv(a: &Ablation) -> String {
    let mut s = String::from("class,removed,units,accuracy,others_accuracy,balanced_accuracy\n");
    let mut row = |name: &str, units: &[usize], score: &ClassScore| {
        let joined: Vec<String> = units.iter().map(usize::to_string).collect();
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        s.push_str(&format!(
            "{},{},{},{:.6},{},{}\n",
            cell(name),
            units.len(),
            joined.join(";"),
            score.accuracy,
            opt(score.others_accuracy),
            opt(score.balanced_accuracy)
        ));
    };
    for c in &a.classes {
        for p in &c.curve {
            row(&c.name, &p.units, &p.score);
        }
    }
    if let Some(chosen) = &a.chosen {
        for c in &chosen.classes {
            row(&c.name, &[], &c.intact);
            row(&c.name, &chosen.units, &c.ablated);
        }
    }
    s
}

/// Writes the three files into `out`; returns the page.
fn write(a: &Ablation, layer: &LayerResult, results: &Path, out: &Path) -> Result<PathBuf> {
    let json = serde_json::to_vec_pretty(a).map_err(Error::run)?;
    let html = page::render(a, layer, results, out);
    write_files(
        out,
        &[
            ("ablation.json", &json),
            ("ablation.csv", csv(a).as_bytes()),
            ("ablation.html", html.as_bytes()),
        ],
    )?;
    Ok(out.join("ablation.html"))
}

#[cfg(test)]
mod tests;
