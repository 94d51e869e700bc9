//! Inline SVG charts for the report and the comparison page: grouped bars,
//! stacked bars and lines. Every bar, segment and point carries its number
//! in data attributes (`data-chart`, `data-group`, `data-series`,
//! `data-value`, and `data-layer` on grouped bars) and as visible text or a
//! tooltip, so readers, scripts and tests all see the same numbers.

use std::fmt::Write;

use crate::html::escape;

/// A grouped bar chart: one group per category (or layer), one bar per
/// series in each group.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart<'a> {
    /// Chart kind, written to every bar's `data-chart`.
    pub chart: &'a str,
    /// The layer the chart describes (empty for cross-layer charts).
    pub layer: &'a str,
    pub title: &'a str,
    /// Series names, in bar order within a group.
    pub series: &'a [&'a str],
    /// Group name and one value per series.
    pub groups: Vec<(String, Vec<usize>)>,
}

const BAR_W: usize = 16;
const GROUP_GAP: usize = 18;
const PLOT_H: usize = 150;
const TOP: usize = 52;
const LEFT: usize = 36;
const BOTTOM: usize = 90;

/// Renders `chart` as an `<svg>` element; series `i` gets CSS class `s{i}`.
pub fn bar_chart(chart: &BarChart) -> String {
    let n_series = chart.series.len().max(1);
    let group_w = n_series * BAR_W + GROUP_GAP;
    // Legend entries are laid out in a row: the chart is at least that wide.
    let (legend_svg, legend_end) = legend(chart.series, LEFT);
    let width = (LEFT + chart.groups.len() * group_w + GROUP_GAP)
        .max(legend_end)
        .max(title_width(chart.title))
        .max(320);
    let height = TOP + PLOT_H + BOTTOM;
    let max = chart
        .groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let base = TOP + PLOT_H;
    let mut s = frame(chart.chart, chart.title, width, height, &max.to_string());
    s.push_str(&legend_svg);
    for (g, (group, values)) in chart.groups.iter().enumerate() {
        let gx = LEFT + GROUP_GAP / 2 + g * group_w;
        for (i, value) in values.iter().enumerate() {
            let series = chart.series.get(i).copied().unwrap_or("");
            let bar_h = value * PLOT_H / max;
            let x = gx + i * BAR_W;
            let y = base - bar_h;
            let _ = write!(
                s,
                r#"<g class="bar" data-chart="{}" data-layer="{}" data-group="{}" data-series="{}" data-value="{value}"><title>{}: {}: {value}</title><rect class="s{i}" x="{x}" y="{y}" width="{}" height="{bar_h}"/><text class="value" x="{}" y="{}" text-anchor="middle">{value}</text></g>"#,
                escape(chart.chart),
                escape(chart.layer),
                escape(group),
                escape(series),
                escape(group),
                escape(series),
                BAR_W - 2,
                x + (BAR_W - 2) / 2,
                y.saturating_sub(3),
            );
        }
        let lx = gx + n_series * BAR_W / 2;
        let _ = write!(
            s,
            r#"<text class="group" transform="translate({lx},{}) rotate(-40)" text-anchor="end">{}</text>"#,
            base + 14,
            escape(group)
        );
    }
    s.push_str("</svg>");
    s
}

/// Stacked bars: one bar per group, one segment per series (series `i`
/// gets CSS class `s{i}`), the group's total above it.
#[derive(Debug, Clone, PartialEq)]
pub struct StackedChart<'a> {
    pub chart: &'a str,
    pub title: &'a str,
    pub series: &'a [String],
    /// Group name and one value per series.
    pub groups: Vec<(String, Vec<usize>)>,
}

const STACK_W: usize = 28;

/// Legend swatches in a row from `x`, one per series; returns the SVG and
/// the row's right end.
fn legend(series: &[&str], x: usize) -> (String, usize) {
    let mut s = String::new();
    let mut lx = x;
    for (i, name) in series.iter().enumerate() {
        let _ = write!(
            s,
            r#"<rect class="s{i}" x="{lx}" y="24" width="10" height="10"/><text class="legend" x="{}" y="33">{}</text>"#,
            lx + 14,
            escape(name)
        );
        lx += 14 + 7 * name.chars().count() + 16;
    }
    (s, lx)
}

/// Width that fits `title` in the title font.
fn title_width(title: &str) -> usize {
    LEFT + 7 * title.chars().count() + 8
}

/// The opening `<svg>`, its title and the axis with its two ticks.
fn frame(kind: &str, title: &str, width: usize, height: usize, max: &str) -> String {
    let base = TOP + PLOT_H;
    format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" data-chart-kind="{}"><title>{}</title><text class="title" x="{LEFT}" y="16">{}</text><line class="axis" x1="{LEFT}" y1="{base}" x2="{width}" y2="{base}"/><line class="grid" x1="{LEFT}" y1="{TOP}" x2="{width}" y2="{TOP}"/><text class="tick" x="{}" y="{}" text-anchor="end">{max}</text><text class="tick" x="{}" y="{base}" text-anchor="end">0</text>"#,
        escape(kind),
        escape(title),
        escape(title),
        LEFT - 4,
        TOP + 4,
        LEFT - 4,
    )
}

/// Renders `chart` as an `<svg>` element.
pub fn stacked_chart(chart: &StackedChart) -> String {
    let names: Vec<&str> = chart.series.iter().map(String::as_str).collect();
    let (legend_svg, legend_end) = legend(&names, LEFT);
    let group_w = STACK_W + GROUP_GAP;
    // Group names are drawn rotated, ending under their bar: the first
    // bar moves right far enough for its name to fit.
    let longest = chart
        .groups
        .iter()
        .map(|(g, _)| g.chars().count())
        .max()
        .unwrap_or(0);
    let pad = (longest * 11 / 2).saturating_sub(LEFT + GROUP_GAP / 2 + STACK_W / 2);
    let width = (LEFT + pad + chart.groups.len() * group_w + GROUP_GAP)
        .max(legend_end)
        .max(title_width(chart.title))
        .max(320);
    let height = TOP + PLOT_H + BOTTOM.max(longest * 9 / 2 + 24);
    let total = |v: &Vec<usize>| v.iter().sum::<usize>();
    let max = chart
        .groups
        .iter()
        .map(|(_, v)| total(v))
        .max()
        .unwrap_or(0)
        .max(1);
    let base = TOP + PLOT_H;
    let mut s = frame(chart.chart, chart.title, width, height, &max.to_string());
    s.push_str(&legend_svg);
    for (g, (group, values)) in chart.groups.iter().enumerate() {
        let x = LEFT + pad + GROUP_GAP / 2 + g * group_w;
        let mut below = 0;
        for (i, &value) in values.iter().enumerate() {
            let series = names.get(i).copied().unwrap_or("");
            // Segment edges from cumulative sums, so rounding never leaves
            // a gap or lets the stack overshoot.
            let y0 = base - below * PLOT_H / max;
            below += value;
            let y1 = base - below * PLOT_H / max;
            let _ = write!(
                s,
                r#"<g class="seg" data-chart="{}" data-group="{}" data-series="{}" data-value="{value}"><title>{}: {}: {value}</title><rect class="s{i}" x="{x}" y="{y1}" width="{STACK_W}" height="{}"/></g>"#,
                escape(chart.chart),
                escape(group),
                escape(series),
                escape(group),
                escape(series),
                y0 - y1,
            );
        }
        let _ = write!(
            s,
            r#"<text class="value" x="{}" y="{}" text-anchor="middle" data-total="{below}">{below}</text><text class="group" transform="translate({},{}) rotate(-40)" text-anchor="end">{}</text>"#,
            x + STACK_W / 2,
            (base - below * PLOT_H / max).saturating_sub(3),
            x + STACK_W / 2,
            base + 14,
            escape(group)
        );
    }
    s.push_str("</svg>");
    s
}

/// Lines over ordered runs: one point per run and series (CSS class `s{i}`
/// on series `i`'s line and points), x spaced by `xs`' values.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart<'a> {
    pub chart: &'a str,
    pub title: &'a str,
    /// Per run, its tick label and x value (step or position).
    pub xs: Vec<(String, f64)>,
    /// Series name and one value per run.
    pub series: Vec<(String, Vec<f64>)>,
    /// The value at the top of the plot (default: the largest value), for
    /// a fixed scale such as accuracies' 1.
    pub top: Option<f64>,
}

const LINE_W: usize = 420;

/// Renders `chart` as an `<svg>` element.
pub fn line_chart(chart: &LineChart) -> String {
    let names: Vec<&str> = chart.series.iter().map(|(n, _)| n.as_str()).collect();
    let (legend_svg, legend_end) = legend(&names, LEFT);
    let width = (LEFT + LINE_W + 2 * GROUP_GAP)
        .max(legend_end)
        .max(title_width(chart.title));
    let height = TOP + PLOT_H + BOTTOM;
    let max = chart
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let top = match chart.top {
        Some(t) if t > 0.0 => t,
        _ if max > 0.0 => max,
        _ => 1.0,
    };
    let (lo, hi) = chart
        .xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, x)| {
            (lo.min(*x), hi.max(*x))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let base = (TOP + PLOT_H) as f64;
    let px = |x: f64| (LEFT + GROUP_GAP) as f64 + (x - lo) / span * LINE_W as f64;
    let py = |v: f64| base - v / top * PLOT_H as f64;
    let mut s = frame(chart.chart, chart.title, width, height, &format!("{top}"));
    s.push_str(&legend_svg);
    for (label, x) in &chart.xs {
        let _ = write!(
            s,
            r#"<text class="group" transform="translate({:.1},{}) rotate(-40)" text-anchor="end">{}</text>"#,
            px(*x),
            TOP + PLOT_H + 14,
            escape(label)
        );
    }
    for (i, (name, values)) in chart.series.iter().enumerate() {
        let points: Vec<String> = chart
            .xs
            .iter()
            .zip(values)
            .map(|((_, x), v)| format!("{:.1},{:.1}", px(*x), py(*v)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="line l{i}" fill="none" points="{}"/>"#,
            points.join(" ")
        );
        for ((label, x), v) in chart.xs.iter().zip(values) {
            let _ = write!(
                s,
                r#"<circle class="pt s{i}" cx="{:.1}" cy="{:.1}" r="3" data-chart="{}" data-group="{}" data-series="{}" data-value="{v}"><title>{}: {}: {v}</title></circle>"#,
                px(*x),
                py(*v),
                escape(chart.chart),
                escape(label),
                escape(name),
                escape(label),
                escape(name),
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_carry_their_values_and_escaped_names() {
        let chart = BarChart {
            chart: "unique",
            layer: "conv<5>",
            title: "t",
            series: &["top-label", "per-category"],
            groups: vec![("a&b".into(), vec![3, 0]), ("c".into(), vec![7, 9])],
        };
        let svg = bar_chart(&chart);
        assert_eq!(svg.matches(r#"<g class="bar""#).count(), 4);
        assert!(svg.contains(r#"data-group="a&amp;b" data-series="top-label" data-value="3""#));
        assert!(svg.contains(r#"data-group="c" data-series="per-category" data-value="9""#));
        assert!(svg.contains(r#"data-layer="conv&lt;5&gt;""#));
        assert!(!svg.contains("conv<5>"));
        // The tallest bar spans the whole plot height.
        assert!(svg.contains(&format!(r#"height="{PLOT_H}""#)), "{svg}");
    }

    #[test]
    fn stacked_segments_add_up_to_the_bar_and_lines_carry_their_points() {
        let series = vec!["object".to_string(), "part".to_string()];
        let chart = StackedChart {
            chart: "unique",
            title: "t",
            series: &series,
            groups: vec![("run a".into(), vec![3, 1]), ("b".into(), vec![0, 8])],
        };
        let svg = stacked_chart(&chart);
        assert_eq!(svg.matches(r#"<g class="seg""#).count(), 4);
        assert!(svg.contains(r#"data-group="b" data-series="part" data-value="8""#));
        assert!(svg.contains(r#"data-total="4""#) && svg.contains(r#"data-total="8""#));
        // The tallest stack spans the plot; its empty segment has no height.
        assert!(svg.contains(&format!(r#"height="{PLOT_H}""#)), "{svg}");
        assert!(svg.contains(r#"height="0""#));

        let lines = LineChart {
            chart: "steps",
            title: "t",
            xs: vec![("s10".into(), 10.0), ("s30".into(), 30.0)],
            series: vec![("all".into(), vec![2.0, 5.0])],
            top: None,
        };
        let svg = line_chart(&lines);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(r#"data-group="s30" data-series="all" data-value="5""#));
        // The last point sits at the right end of the plot, at the top.
        let right = (LEFT + GROUP_GAP + LINE_W) as f64;
        assert!(
            svg.contains(&format!(r#"cx="{right:.1}" cy="{:.1}""#, TOP as f64)),
            "{svg}"
        );
    }
}
