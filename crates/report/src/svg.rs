//! Inline SVG grouped bar charts for the report. Every bar carries its
//! number in data attributes (`data-chart`, `data-layer`, `data-group`,
//! `data-series`, `data-value`) and as visible text, so readers, scripts and
//! tests all see the same counts.

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
    let legend_w = |name: &str| 14 + 7 * name.chars().count() + 16;
    let legend: usize = LEFT + chart.series.iter().map(|n| legend_w(n)).sum::<usize>();
    let width = (LEFT + chart.groups.len() * group_w + GROUP_GAP)
        .max(legend)
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
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" data-chart-kind="{}"><title>{}</title>"#,
        escape(chart.chart),
        escape(chart.title)
    );
    let _ = write!(
        s,
        r#"<text class="title" x="{LEFT}" y="16">{}</text>"#,
        escape(chart.title)
    );
    // Legend, one swatch per series.
    let mut lx = LEFT;
    for (i, name) in chart.series.iter().enumerate() {
        let _ = write!(
            s,
            r#"<rect class="s{i}" x="{lx}" y="24" width="10" height="10"/><text class="legend" x="{}" y="33">{}</text>"#,
            lx + 14,
            escape(name)
        );
        lx += legend_w(name);
    }
    // Axis and a grid line at the maximum.
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" y1="{base}" x2="{width}" y2="{base}"/><line class="grid" x1="{LEFT}" y1="{TOP}" x2="{width}" y2="{TOP}"/><text class="tick" x="{}" y="{}" text-anchor="end">{max}</text><text class="tick" x="{}" y="{base}" text-anchor="end">0</text>"#,
        LEFT - 4,
        TOP + 4,
        LEFT - 4,
    );
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
}
