//! `bench.md`: the report's header and its tables, one row per run or per
//! comparison of runs.

use std::fmt::Write;

use dissect::CacheMode;

use super::BenchReport;
use super::baselines::Baselines;
use super::measure::Stages;
use super::plan::Backend;
use super::run::DissectRun;

/// What the stage columns of the dissection table mean.
const DISSECTIONS_INTRO: &str = "Stage columns are shares of the wall time (dissection + writing results). \
     Decode, upload and forward were timed again on their own; quantile is the rest \
     of the threshold passes (histograms, top-k), count the counting pass.";

/// What the scaling table compares.
const SCALING_INTRO: &str = "Between the smallest and largest run of each configuration: how much the \
     images grew, and how much wall time and peak memory grew with them \
     (linear cost: time ratio ≈ images ratio).";

const SCALING_COLUMNS: &str = "| model | backend | layers | mode | images | images ratio | wall ratio | ms/image (first → last) | peak RSS MiB (first → last) |";

/// What the layer-width table should show.
const WIDTH_INTRO: &str = "One layer at a time, same images: the count pass does units × segmentation \
     pixels of work per image, so its time should follow the unit count.";

const WIDTH_COLUMNS: &str =
    "| layer | units | images | count s | count ms per image | quantile s |";

const BACKEND_COLUMNS: &str =
    "| model | layers | images | cpu images/s | wgpu images/s | wgpu / cpu |";

const BASELINE_COLUMNS: &str = "| what | input | CPU | device | device / CPU | same answer |";

/// The report: header, dissection table, scaling, baselines.
pub(super) fn render_markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    write_header(&mut s, r);
    write_dissections(&mut s, &r.runs);
    write_section(
        &mut s,
        "Scaling",
        Some(SCALING_INTRO),
        SCALING_COLUMNS,
        &scaling_rows(&r.runs),
    );
    write_section(
        &mut s,
        "Layer width",
        Some(WIDTH_INTRO),
        WIDTH_COLUMNS,
        &width_rows(&r.runs),
    );
    write_section(
        &mut s,
        "Whole engine: CPU backend against wgpu",
        None,
        BACKEND_COLUMNS,
        &backend_rows(&r.runs),
    );
    if let Some(b) = &r.baselines {
        write_section(
            &mut s,
            "Baselines: CPU against the device",
            None,
            BASELINE_COLUMNS,
            &baseline_rows(b),
        );
    }
    if !r.failures.is_empty() {
        let _ = writeln!(s, "\n## Failed configurations\n");
        for f in &r.failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

/// The title and the machine: adapter, build, threads, batch size.
fn write_header(s: &mut String, r: &BenchReport) {
    let _ = writeln!(s, "# NetDissect-rs benchmark\n");
    let _ = writeln!(
        s,
        "- adapter: {}\n- {}; {} CPU threads available; batch size {}{}\n",
        if r.adapter.is_empty() {
            "unknown"
        } else {
            &r.adapter
        },
        r.build,
        r.cpus,
        r.batch_size,
        if r.in_process {
            "; all runs in one process (peak memory is cumulative)"
        } else {
            ""
        }
    );
}

/// The table of every dissection, with its stages as shares of its wall time.
fn write_dissections(s: &mut String, runs: &[DissectRun]) {
    let _ = writeln!(s, "## Dissections\n");
    let _ = writeln!(s, "{DISSECTIONS_INTRO}\n");
    let mut columns =
        String::from("| model | backend | layers | units | images | mode | wall s | images/s |");
    for name in Stages::NAMES {
        let _ = write!(columns, " {name} |");
    }
    columns.push_str(" peak RSS MiB | GPU pool MiB |");
    let rows: Vec<String> = runs.iter().map(dissection_row).collect();
    write_table(s, &columns, &rows);
}

/// One run's row of the dissection table.
fn dissection_row(run: &DissectRun) -> String {
    let mut row = format!(
        "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
        run.model,
        run.backend.name(),
        run.layers.join("+"),
        run.units,
        run.images,
        mode_name(run.mode),
        run.wall_secs,
        run.images as f64 / run.wall_secs.max(1e-9),
    );
    let total: f64 = run.stages.values().iter().sum::<f64>().max(1e-9);
    for v in run.stages.values() {
        let _ = write!(row, " {:.0}% |", 100.0 * v / total);
    }
    let _ = write!(
        row,
        " {} | {} |",
        mib(run.peak_rss_bytes),
        mib(run.gpu_reserved_bytes)
    );
    row
}

/// A titled section with an optional paragraph and a table, left out when
/// it has no rows.
fn write_section(s: &mut String, title: &str, intro: Option<&str>, columns: &str, rows: &[String]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## {title}\n");
    if let Some(intro) = intro {
        let _ = writeln!(s, "{intro}\n");
    }
    write_table(s, columns, rows);
}

/// A markdown table: the header line `columns`, its separator, the rows.
fn write_table(s: &mut String, columns: &str, rows: &[String]) {
    let n_columns = columns.matches('|').count().saturating_sub(1);
    let _ = writeln!(s, "{columns}");
    let _ = writeln!(s, "|{}", "---|".repeat(n_columns));
    for row in rows {
        let _ = writeln!(s, "{row}");
    }
}

/// The kernel baselines and the forward pass, one row each.
fn baseline_rows(b: &Baselines) -> Vec<String> {
    let kernels = [
        ("count (upsample, binarize, count)", &b.count),
        ("thresholds in one pass (select vs CPU twin)", &b.select),
        (
            "exact quantile fallback (3 radix rounds vs sort)",
            &b.quantile,
        ),
    ];
    let mut rows: Vec<String> = kernels
        .into_iter()
        .map(|(name, k)| {
            format!(
                "| {name} | {} | {:.3e} unit·px/s | {:.3e} unit·px/s | {:.2} | {} |",
                k.shape,
                k.cpu_per_sec,
                k.gpu_per_sec,
                k.gpu_per_sec / k.cpu_per_sec.max(1e-9),
                k.agree
                    .map_or("not checked", |a| if a { "yes" } else { "NO" }),
            )
        })
        .collect();
    let f = &b.forward;
    rows.push(format!(
        "| ResNet-18 forward (flex vs wgpu) | batch {} at 224×224 | {:.2} images/s | {:.2} images/s | {:.3} | – |",
        f.batch_size,
        f.flex_images_per_sec,
        f.wgpu_images_per_sec,
        f.wgpu_images_per_sec / f.flex_images_per_sec.max(1e-9),
    ));
    rows
}

/// The cache mode as the tables name it.
fn mode_name(mode: CacheMode) -> &'static str {
    match mode {
        CacheMode::Cached => "cached",
        CacheMode::Recomputed => "recompute",
    }
}

/// Bytes in whole MiB, or `n/a` where unknown.
fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.0}", b as f64 / (1 << 20) as f64)
    })
}

/// One row per (model, layers, mode) that ran at two or more sizes.
fn scaling_rows(runs: &[DissectRun]) -> Vec<String> {
    let key = |r: &DissectRun| (r.model.clone(), r.backend, r.layers.join("+"), r.mode);
    let mut keys = Vec::new();
    for run in runs {
        if !keys.contains(&key(run)) {
            keys.push(key(run));
        }
    }
    let mut rows = Vec::new();
    for k in keys {
        let (model, backend, layers, mode) = &k;
        let mut group: Vec<&DissectRun> = runs.iter().filter(|r| key(r) == k).collect();
        group.sort_by_key(|r| r.images);
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        if group.len() < 2 || first.images == last.images {
            continue;
        }
        let per_image = |r: &DissectRun| 1000.0 * r.wall_secs / r.images.max(1) as f64;
        rows.push(format!(
            "| {model} | {} | {layers} | {} | {} | {:.1} | {:.2} | {:.0} → {:.0} | {} → {} |",
            backend.name(),
            mode_name(*mode),
            group
                .iter()
                .map(|r| r.images.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            last.images as f64 / first.images as f64,
            last.wall_secs / first.wall_secs.max(1e-9),
            per_image(first),
            per_image(last),
            mib(first.peak_rss_bytes),
            mib(last.peak_rss_bytes),
        ));
    }
    rows
}

/// The same configuration on both backends: how much faster the device is.
fn backend_rows(runs: &[DissectRun]) -> Vec<String> {
    runs.iter()
        .filter(|r| r.backend == Backend::Cpu)
        .filter_map(|cpu| {
            let gpu = runs.iter().find(|r| {
                r.backend == Backend::Wgpu
                    && r.model == cpu.model
                    && r.layers == cpu.layers
                    && r.images == cpu.images
                    && r.mode == cpu.mode
            })?;
            Some(format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.3} |",
                cpu.model,
                cpu.layers.join("+"),
                cpu.images,
                cpu.images as f64 / cpu.wall_secs.max(1e-9),
                gpu.images as f64 / gpu.wall_secs.max(1e-9),
                cpu.wall_secs / gpu.wall_secs.max(1e-9),
            ))
        })
        .collect()
}

/// Single-layer runs, for the width comparison.
fn width_rows(runs: &[DissectRun]) -> Vec<String> {
    runs.iter()
        .filter(|r| r.layers.len() == 1 && r.mode == CacheMode::Cached)
        .filter(|r| r.backend == Backend::Wgpu)
        .map(|r| {
            format!(
                "| {} | {} | {} | {:.2} | {:.1} | {:.2} |",
                r.layers[0],
                r.units,
                r.images,
                r.stages.count,
                1000.0 * r.stages.count / r.images.max(1) as f64,
                r.stages.quantile,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::build_line;

    fn run(images: usize, wall: f64, rss: u64, layers: &[&str]) -> DissectRun {
        DissectRun {
            adapter: "llvmpipe".into(),
            backend: Backend::Wgpu,
            model: "m".into(),
            layers: layers.iter().map(|s| s.to_string()).collect(),
            units: 13,
            images,
            mode: CacheMode::Cached,
            passes: 4,
            warmup_secs: 0.0,
            wall_secs: wall,
            stages: Stages {
                decode: 1.0,
                forward: 2.0,
                count: 1.0,
                ..Default::default()
            },
            peak_rss_bytes: Some(rss << 20),
            gpu_reserved_bytes: None,
        }
    }

    #[test]
    fn markdown_has_every_run_scaling_and_shares() {
        let report = BenchReport {
            adapter: "llvmpipe (LLVM 15)".into(),
            build: build_line(),
            cpus: 2,
            batch_size: 16,
            in_process: false,
            runs: vec![
                run(20, 2.0, 100, &["a", "b"]),
                run(80, 8.0, 100, &["a", "b"]),
                run(20, 1.0, 90, &["a"]),
            ],
            baselines: None,
            failures: vec!["x: boom".into()],
        };
        let md = render_markdown(&report);
        assert!(md.contains("adapter: llvmpipe (LLVM 15)"), "{md}");
        // Shares of decode 1, forward 2, count 1 out of 4 seconds.
        assert!(
            md.contains("| 25% | 0% | 50% | 0% | 25% | 0% | 0% |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| m | wgpu | a+b | cached | 20, 80 | 4.0 | 4.00 | 100 → 100 | 100 → 100 |"
            ),
            "{md}"
        );
        assert!(md.contains("| a | 13 | 20 | 1.00 | 50.0 |"), "{md}");
        assert!(
            md.contains("GPU pool MiB |") && md.contains("| n/a |"),
            "{md}"
        );
        assert!(md.contains("- x: boom"), "{md}");
        assert!(!md.contains("## Baselines"), "{md}");
        assert!(!md.contains("## Whole engine"), "{md}");
        let mut on_cpu = run(20, 8.0, 80, &["a", "b"]);
        on_cpu.backend = Backend::Cpu;
        assert_eq!(
            backend_rows(&[report.runs[0].clone(), on_cpu]),
            ["| m | a+b | 20 | 2.50 | 10.00 | 4.000 |"]
        );
    }
}
