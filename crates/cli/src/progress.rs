//! Progress bars (rate and ETA per pass) and the end-of-run summary table.

use dissect::{Dissection, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// One bar per pass over the data, drawn on stderr.
#[derive(Debug)]
pub struct Bars {
    quiet: bool,
    current: Option<(u32, ProgressBar)>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            current: None,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        let fresh = self
            .current
            .as_ref()
            .is_none_or(|(i, _)| *i != p.pass_index);
        if fresh {
            if let Some((_, bar)) = self.current.take() {
                bar.finish();
            }
            let bar = ProgressBar::new(p.images_total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>28} [{bar:30}] {pos}/{len} images  {per_sec}  eta {eta}",
                )
                .expect("a valid progress template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!(
                "pass {} of ≤{}: {}",
                p.pass_index, p.passes, p.pass
            ));
            self.current = Some((p.pass_index, bar));
        }
        if let Some((_, bar)) = &self.current {
            bar.set_position(p.images_done as u64);
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.current.take() {
            bar.finish();
        }
    }
}

/// Per layer: units, detectors, unique detectors by both rules, and the
/// categories with the most unique detectors.
pub fn print_summary(d: &Dissection) {
    println!(
        "{} images, {} passes ({}), {:.1} s on {}",
        d.n_images,
        d.passes,
        match d.mode {
            dissect::CacheMode::Cached => "activations cached between passes",
            dissect::CacheMode::Recomputed => "forward pass re-run per pass",
        },
        d.duration_secs,
        d.adapter
    );
    println!(
        "{:<14} {:>6} {:>10} {:>11} {:>13}  top categories (unique, per-category rule)",
        "layer", "units", "detectors", "unique-top", "unique-per-cat"
    );
    for layer in &d.layers {
        let s = &layer.summary;
        let mut cats: Vec<_> = s
            .per_category
            .iter()
            .filter(|c| c.unique_per_category > 0)
            .collect();
        cats.sort_by_key(|c| std::cmp::Reverse(c.unique_per_category));
        let top: Vec<String> = cats
            .iter()
            .take(4)
            .map(|c| format!("{} {}", c.name, c.unique_per_category))
            .collect();
        println!(
            "{:<14} {:>6} {:>10} {:>11} {:>13}  {}",
            layer.name,
            s.n_units,
            s.detectors,
            s.unique_top_label,
            s.unique_per_category,
            if top.is_empty() {
                "-".to_string()
            } else {
                top.join(", ")
            }
        );
    }
    if let Some(search) = d.options.formula {
        for layer in &d.layers {
            let gains: Vec<f64> = (layer.units.iter())
                .map(|u| u.formula_gain())
                .filter(|&g| g > 0.0)
                .collect();
            let best = layer
                .units
                .iter()
                .filter(|u| u.formula_gain() > 0.0)
                .max_by(|a, b| a.formula_gain().total_cmp(&b.formula_gain()));
            println!(
                "{}: {} of {} units gain from a formula (length {}, beam {}), by {:.3} IoU on average{}",
                layer.name,
                gains.len(),
                layer.units.len(),
                search.length,
                search.beam,
                gains.iter().sum::<f64>() / gains.len().max(1) as f64,
                best.and_then(|u| u.formula().map(|f| (u, f))).map_or(
                    String::new(),
                    |(u, f)| format!(
                        "; most, unit {}: {} ({:.3} against {:.3})",
                        u.unit + 1,
                        f.formula,
                        f.iou,
                        u.score()
                    )
                )
            );
        }
    }
}

/// What the CLI shows of a job: bars on stderr (unless quiet), notes on
/// stderr, the summary table on stdout.
#[derive(Debug)]
pub struct Terminal {
    bars: Bars,
}

impl Terminal {
    pub fn new(quiet: bool) -> Self {
        Self {
            bars: Bars::new(quiet),
        }
    }
}

impl app::Events for Terminal {
    fn progress(&mut self, progress: &Progress) {
        self.bars.update(progress);
    }

    fn passes_done(&mut self) {
        self.bars.finish();
    }

    fn note(&mut self, line: &str) {
        eprintln!("{line}");
    }

    fn finished(&mut self, dissection: &Dissection) {
        print_summary(dissection);
    }
}

/// A bar of `len` things counted, drawn on stderr where it is a terminal.
pub fn count_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len}  {per_sec}  eta {eta}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// The bars and notes of `netdissect fetch` and `--weights NAME`: bytes
/// with rate and ETA for a download, files for an unpacking.
#[derive(Debug)]
pub struct FetchBars {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl FetchBars {
    pub fn new(quiet: bool) -> Self {
        Self { quiet, bar: None }
    }
}

impl fetch::Progress for FetchBars {
    fn begin(&mut self, what: &str, total: Option<u64>, done: u64, unit: fetch::Unit) {
        if self.quiet {
            return;
        }
        let template = match (unit, total.is_some()) {
            (fetch::Unit::Bytes, true) => {
                "{prefix:>20} [{bar:30}] {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}"
            }
            (fetch::Unit::Bytes, false) => "{prefix:>20} {bytes}  {bytes_per_sec}",
            (fetch::Unit::Files, _) => "{prefix:>20} [{bar:30}] {pos}/{len} files  eta {eta}",
        };
        let bar = total.map_or_else(ProgressBar::no_length, ProgressBar::new);
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid progress template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        // A resumed download's rate counts this run's bytes only.
        bar.set_position(done);
        bar.reset_eta();
        self.bar = Some(bar);
    }

    fn advance(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    fn end(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn note(&mut self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}
