//! `cargo xtask bench-formulas`: what the formula search costs beyond the
//! dissection, and what it finds, on the CPU backend at the sizes people
//! dissect: the embedded default model on its probe set, and ResNet-18
//! (seeded synthetic weights) `layer4` over generated images.
//!
//! Each model is dissected once with the search on; the run's own timings
//! split the dissection (forward, thresholds, counts) from the search's
//! passes, so both figures come from the same run on the same data.
//! Writes `formulas.md` and `formulas.json` under `--out`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use broden::{Dataset, DatasetOptions};
use clap::Args;
use dissect::{Dissection, Dissector, FormulaSearch, Network, Options, Preset};
use models::{Arch, ArchChoice, Model};
use serde::Serialize;

/// Options of `cargo xtask bench-formulas`.
#[derive(Debug, Clone, Args)]
pub struct FormulaArgs {
    /// Generated images for ResNet-18 `layer4` (0 skips it).
    #[arg(long, default_value_t = 1500)]
    pub images: usize,
    /// Formula length (concepts).
    #[arg(long, default_value_t = FormulaSearch::COMPEXP.length)]
    pub length: usize,
    #[arg(long, default_value_t = FormulaSearch::COMPEXP.beam)]
    pub beam: usize,
    /// Skip the embedded default model.
    #[arg(long)]
    pub no_default: bool,
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

/// One model's run.
#[derive(Debug, Serialize)]
struct FormulaRun {
    model: String,
    layers: Vec<String>,
    images: usize,
    units: usize,
    /// Seconds: the whole run, the search's passes and scoring, and the
    /// rest (the dissection itself).
    wall: f64,
    search: f64,
    dissection: f64,
    passes: u32,
    gaining: usize,
    mean_gain: f64,
    /// The largest gains: layer, unit (1-based), formula, its IoU, the
    /// label's IoU.
    best: Vec<(String, usize, String, f64, f64)>,
    /// Units whose best formula has 1, 2, 3... concepts.
    by_length: Vec<usize>,
    peak_rss_mib: Option<u64>,
}

pub fn bench_formulas(args: FormulaArgs) -> Result<()> {
    let dissector = Dissector::cpu();
    let search = FormulaSearch {
        length: args.length,
        beam: args.beam,
    };
    let mut runs = Vec::new();
    if !args.no_default {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default");
        let read = |name: &str| -> Result<String> {
            let path = root.join(name);
            Ok(std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_string())
        };
        let choice: ArchChoice = read("model.txt")?
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let model = Model::load(&root.join("model.safetensors"), choice, dissector.device())?;
        let layers: Vec<String> = read("layers.txt")?.split(',').map(String::from).collect();
        let opts = Options::preset(Preset::Original, &model.arch().default_preprocess_spec());
        runs.push(run(
            &dissector,
            &model,
            &layers,
            &root.join("probe"),
            opts,
            search,
        )?);
    }
    if args.images > 0 {
        let data = crate::bench::ensure_dataset(&args.out, args.images)?;
        let model = Model::synthetic(Arch::ResNet18, 1000, dissector.device())?;
        let opts = Options::preset(Preset::Original, &Arch::ResNet18.default_preprocess_spec());
        runs.push(run(
            &dissector,
            &model,
            &["layer4".into()],
            &data,
            opts,
            search,
        )?);
    }
    std::fs::create_dir_all(&args.out)?;
    let md = render(&runs, search);
    std::fs::write(args.out.join("formulas.md"), &md)?;
    std::fs::write(
        args.out.join("formulas.json"),
        serde_json::to_vec_pretty(&runs)?,
    )?;
    print!("{md}");
    Ok(())
}

fn run(
    dissector: &Dissector,
    net: &dyn Network,
    layers: &[String],
    data: &Path,
    mut opts: Options,
    search: FormulaSearch,
) -> Result<FormulaRun> {
    let ds = Dataset::open(data, &DatasetOptions::default())?;
    opts.formula = Some(search);
    eprintln!(
        "bench-formulas: {} {} over {} images, length {}, beam {}",
        net.name(),
        layers.join(","),
        ds.images.len(),
        search.length,
        search.beam
    );
    let d: Dissection = dissector
        .run(net, layers, &ds, &opts, &mut |_| {})?
        .dissection;
    let units: Vec<(&str, &dissect::UnitScore)> = d
        .layers
        .iter()
        .flat_map(|l| l.units.iter().map(move |u| (l.name.as_str(), u)))
        .collect();
    let gains: Vec<f64> = (units.iter())
        .map(|(_, u)| u.formula_gain())
        .filter(|&g| g > 0.0)
        .collect();
    let mut best: Vec<(String, usize, String, f64, f64)> = units
        .iter()
        .filter(|(_, u)| u.formula_gain() > 0.0)
        .filter_map(|(l, u)| {
            let f = u.formula()?;
            Some((
                l.to_string(),
                u.unit + 1,
                f.formula.clone(),
                f.iou,
                u.score(),
            ))
        })
        .collect();
    best.sort_by(|a, b| (b.3 - b.4).total_cmp(&(a.3 - a.4)));
    best.truncate(5);
    let mut by_length = vec![0; search.length];
    for (_, u) in &units {
        if let Some(f) = u.formula() {
            by_length[f.length() - 1] += 1;
        }
    }
    Ok(FormulaRun {
        model: net.name(),
        layers: layers.to_vec(),
        images: d.n_images,
        units: units.len(),
        wall: d.duration_secs,
        search: d.timings.formulas_secs,
        dissection: d.duration_secs - d.timings.formulas_secs,
        passes: d.passes,
        gaining: gains.len(),
        mean_gain: gains.iter().sum::<f64>() / gains.len().max(1) as f64,
        best,
        by_length,
        peak_rss_mib: crate::bench::peak_rss().map(|b| b >> 20),
    })
}

fn render(runs: &[FormulaRun], search: FormulaSearch) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Formula search (length {}, beam {}), CPU backend\n\n{}\n",
        search.length,
        search.beam,
        crate::bench::build_line()
    );
    s.push_str("| model | layers | images | units | dissection s | search s | search / dissection | passes | units gaining | mean gain | best formula by length (1, 2, ...) | peak RSS MiB (process) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {} | {} ({:.0} %) | {:.4} | {} | {} |",
            r.model,
            r.layers.join(","),
            r.images,
            r.units,
            r.dissection,
            r.search,
            r.search / r.dissection.max(1e-9),
            r.passes,
            r.gaining,
            100.0 * r.gaining as f64 / r.units.max(1) as f64,
            r.mean_gain,
            r.by_length
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            r.peak_rss_mib.map_or("n/a".into(), |m| m.to_string()),
        );
    }
    for r in runs {
        let _ = writeln!(s, "\nLargest gains, {}:\n", r.model);
        for (layer, unit, formula, iou, label) in &r.best {
            let _ = writeln!(
                s,
                "- {layer} unit {unit}: `{formula}` {iou:.4} against the label's {label:.4} (+{:.4})",
                iou - label
            );
        }
    }
    s
}
