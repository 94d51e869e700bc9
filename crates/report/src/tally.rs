//! The per-layer tally CSV of the reference tools: `unit,category,label,score`
//! then, per category, `<cat>-label,<cat>-truth,<cat>-activation,
//! <cat>-intersect,<cat>-iou`. Units are 1-based; rows are sorted by score,
//! highest first (ties: lower unit first). Results with significance add
//! `p-value,significant` (the best label's p-value, and `yes` or `no` for
//! the Benjamini-Hochberg flag; `dissect::significance`); a run with a
//! formula search adds two last columns, `formula,formula-iou`.

use std::path::Path;

use dissect::{CategoryBest, UnitScore};

use crate::{ReportError, write_atomic};

const FIXED: [&str; 4] = ["unit", "category", "label", "score"];
const PER_CATEGORY: [&str; 5] = ["label", "truth", "activation", "intersect", "iou"];
const FORMULA: [&str; 2] = ["formula", "formula-iou"];
const SIGNIFICANCE: [&str; 2] = ["p-value", "significant"];

/// Renders the tally CSV of one layer.
pub fn render(units: &[UnitScore], category_names: &[String]) -> String {
    let mut order: Vec<&UnitScore> = units.iter().collect();
    order.sort_by(|a, b| b.score().total_cmp(&a.score()).then(a.unit.cmp(&b.unit)));
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = FIXED.iter().map(|s| s.to_string()).collect();
    for cat in category_names {
        header.extend(PER_CATEGORY.iter().map(|f| format!("{cat}-{f}")));
    }
    let significance = units.iter().any(|u| u.significance.is_some());
    if significance {
        header.extend(SIGNIFICANCE.iter().map(|s| s.to_string()));
    }
    let formulas = units.iter().any(|u| u.formula().is_some());
    if formulas {
        header.extend(FORMULA.iter().map(|s| s.to_string()));
    }
    // Writing into a Vec cannot fail.
    w.write_record(&header).expect("in-memory csv");
    for unit in order {
        let (cat, label) = match unit.category {
            Some(c) => (
                category_names[c].as_str(),
                unit.per_category[c].name.as_str(),
            ),
            None => ("", ""),
        };
        let mut row = vec![
            (unit.unit + 1).to_string(),
            cat.to_string(),
            label.to_string(),
            unit.score().to_string(),
        ];
        for best in &unit.per_category {
            row.extend([
                best.name.clone(),
                best.truth.to_string(),
                best.activation.to_string(),
                best.intersect.to_string(),
                best.iou.to_string(),
            ]);
        }
        if significance {
            match &unit.significance {
                // Scientific notation: a p-value may be 1e-300.
                Some(s) => row.extend([
                    format!("{:e}", s.p_value),
                    if s.significant { "yes" } else { "no" }.to_string(),
                ]),
                None => row.extend([String::new(), String::new()]),
            }
        }
        if formulas {
            match unit.formula() {
                Some(f) => row.extend([f.formula.clone(), f.iou.to_string()]),
                None => row.extend([String::new(), String::new()]),
            }
        }
        w.write_record(&row).expect("in-memory csv");
    }
    String::from_utf8(w.into_inner().expect("in-memory csv")).expect("csv of utf-8 strings")
}

/// Writes the tally CSV of one layer atomically.
pub fn write(
    path: &Path,
    units: &[UnitScore],
    category_names: &[String],
) -> Result<(), ReportError> {
    write_atomic(path, render(units, category_names).as_bytes())
}

/// A tally read back: its category names (header order) and units.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub category_names: Vec<String>,
    pub units: Vec<UnitScore>,
}

/// Reads a tally CSV written by this tool or by the original NetDissect
/// (whose activation column holds floats such as `1016043.0`). Label numbers
/// are not in the file: every named label reads back as `Some(0)`.
pub fn read(path: &Path) -> Result<Tally, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut r = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header = (r.headers())
        .map_err(|e| malformed(path, 0, e.to_string()))?
        .clone();
    let cols: Vec<&str> = header.iter().collect();
    let layout = Layout::of(&cols).map_err(|message| malformed(path, 0, message))?;
    let mut units = Vec::new();
    for (i, record) in r.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| malformed(path, row, e.to_string()))?;
        let fields = Row {
            path,
            row,
            cols: &cols,
            record: &record,
        };
        units.push(fields.unit(&layout)?);
    }
    Ok(Tally {
        category_names: layout.category_names,
        units,
    })
}

/// A malformed-tally error at `row` of `path` (0: the header).
fn malformed(path: &Path, row: usize, message: String) -> ReportError {
    ReportError::Malformed {
        path: path.to_path_buf(),
        row,
        message,
    }
}

/// What a tally's header says: its categories, in column order, and whether
/// the formula columns end it.
struct Layout {
    category_names: Vec<String>,
    significance: bool,
    formulas: bool,
}

impl Layout {
    fn formula_columns(&self) -> usize {
        if self.formulas { FORMULA.len() } else { 0 }
    }

    /// Checks the header's columns (`cols`) and reads the layout from them;
    /// the error says what is wrong with the header.
    fn of(cols: &[&str]) -> Result<Layout, String> {
        if cols.len() < FIXED.len() || cols[..FIXED.len()] != FIXED {
            return Err(format!("header must start with {}", FIXED.join(",")));
        }
        let mut rest = &cols[FIXED.len()..];
        let formulas = rest.ends_with(&FORMULA);
        if formulas {
            rest = &rest[..rest.len() - FORMULA.len()];
        }
        let significance = rest.ends_with(&SIGNIFICANCE);
        if significance {
            rest = &rest[..rest.len() - SIGNIFICANCE.len()];
        }
        if !rest.len().is_multiple_of(PER_CATEGORY.len()) {
            return Err("per-category columns come in groups of 5".into());
        }
        let mut category_names = Vec::new();
        for group in rest.chunks(PER_CATEGORY.len()) {
            let Some(cat) = group[0].strip_suffix("-label") else {
                return Err(format!(
                    "expected a `<category>-label` column, found `{}`",
                    group[0]
                ));
            };
            for (col, field) in group.iter().zip(PER_CATEGORY) {
                if *col != format!("{cat}-{field}") {
                    return Err(format!("expected `{cat}-{field}`, found `{col}`"));
                }
            }
            category_names.push(cat.to_string());
        }
        Ok(Layout {
            category_names,
            significance,
            formulas,
        })
    }
}

/// One data row of a tally, with what its errors name: the file, the row
/// number and the header's columns.
struct Row<'a> {
    path: &'a Path,
    row: usize,
    cols: &'a [&'a str],
    record: &'a csv::StringRecord,
}

impl Row<'_> {
    /// An error at this row.
    fn bad(&self, message: String) -> ReportError {
        malformed(self.path, self.row, message)
    }

    /// Column `k` as text (empty when the row is short).
    fn field(&self, k: usize) -> &str {
        self.record.get(k).unwrap_or("")
    }

    /// Column `k` as a number.
    fn float(&self, k: usize) -> Result<f64, ReportError> {
        let s = self.field(k);
        s.parse()
            .map_err(|_| self.bad(format!("column `{}`: `{s}` is not a number", self.cols[k])))
    }

    /// Column `k` as a count: a whole, non-negative number (the original
    /// tool writes some as floats).
    fn int(&self, k: usize) -> Result<u64, ReportError> {
        let s = self.field(k);
        let v = self.float(k)?;
        if v < 0.0 || v.fract() != 0.0 {
            return Err(self.bad(format!("column `{}`: `{s}` is not a count", self.cols[k])));
        }
        Ok(v as u64)
    }

    /// The unit this row describes, with the header's `layout`.
    fn unit(&self, layout: &Layout) -> Result<UnitScore, ReportError> {
        let unit = self.int(0)? as usize;
        if unit == 0 {
            return Err(self.bad("units are 1-based".into()));
        }
        let per_category = (0..layout.category_names.len())
            .map(|c| self.category_best(FIXED.len() + c * PER_CATEGORY.len()))
            .collect::<Result<Vec<_>, _>>()?;
        let category = match self.field(1) {
            "" => None,
            name => Some(
                (layout.category_names.iter())
                    .position(|c| c == name)
                    .ok_or_else(|| {
                        self.bad(format!("category `{name}` has no columns in the header"))
                    })?,
            ),
        };
        let formula = if layout.formulas {
            self.formula()?
        } else {
            None
        };
        let significance = if layout.significance {
            let k = self.cols.len() - SIGNIFICANCE.len() - layout.formula_columns();
            self.significance(k)?
        } else {
            None
        };
        // The tally keeps only each category's best; the overall top list
        // is not in it.
        Ok(UnitScore {
            unit: unit - 1,
            category,
            per_category,
            top: Vec::new(),
            formulas: formula.into_iter().collect(),
            significance,
        })
    }

    /// The significance of the two columns starting at `k`, if the row has
    /// one. The null's expected intersection is not in the file (0).
    fn significance(&self, k: usize) -> Result<Option<dissect::UnitSignificance>, ReportError> {
        let significant = match self.field(k + 1) {
            "" => return Ok(None),
            "yes" => true,
            "no" => false,
            other => {
                return Err(self.bad(format!(
                    "column `significant`: `{other}` is neither `yes` nor `no`"
                )));
            }
        };
        let p_value = self.float(k)?;
        if !(0.0..=1.0).contains(&p_value) {
            return Err(self.bad(format!("column `p-value`: {p_value} is not a probability")));
        }
        Ok(Some(dissect::UnitSignificance {
            p_value,
            expected: 0.0,
            significant,
        }))
    }

    /// A category's best label, from its five columns starting at `k`.
    fn category_best(&self, k: usize) -> Result<CategoryBest, ReportError> {
        let name = self.field(k).to_string();
        Ok(CategoryBest {
            label: (!name.is_empty()).then_some(0),
            name,
            truth: self.int(k + 1)?,
            activation: self.int(k + 2)?,
            intersect: self.int(k + 3)?,
            iou: self.float(k + 4)?,
        })
    }

    /// The formula of the last two columns, if the row has one. Its terms
    /// and counts are not in the file.
    fn formula(&self) -> Result<Option<dissect::FormulaScore>, ReportError> {
        let k = self.cols.len() - FORMULA.len();
        if self.field(k).is_empty() {
            return Ok(None);
        }
        Ok(Some(dissect::FormulaScore {
            formula: self.field(k).to_string(),
            terms: Vec::new(),
            iou: self.float(k + 1)?,
            intersect: 0,
            truth: 0,
            activation: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dissect::summarize;
    use std::path::PathBuf;

    fn paper(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/netdissect-paper")
            .join(format!("{name}.csv"))
    }

    /// The paper's detector counts, from the table in
    /// reference README that came with these files (the README beside them
    /// keeps their provenance):
    /// (file, detectors, unique top-label, unique per-category,
    /// per category object, part, scene, material, texture, color).
    const PAPER: [(&str, usize, usize, usize, [usize; 6]); 5] = [
        ("caffe_reference_imagenet", 97, 50, 61, [21, 8, 4, 1, 23, 4]),
        (
            "caffe_reference_places205",
            107,
            60,
            79,
            [36, 8, 12, 1, 20, 2],
        ),
        (
            "caffe_reference_places365",
            118,
            72,
            91,
            [40, 9, 13, 2, 25, 2],
        ),
        (
            "ResNet-152-model_imagenet",
            1325,
            197,
            242,
            [75, 23, 89, 8, 45, 2],
        ),
        (
            "ResNet-152-model_places365",
            1452,
            278,
            347,
            [84, 26, 188, 5, 42, 2],
        ),
    ];

    #[test]
    fn paper_summaries_are_reproduced_by_both_rules() {
        for (name, detectors, top, per_cat, by_cat) in PAPER {
            let tally = read(&paper(name)).unwrap();
            let s = summarize(&tally.units, &tally.category_names, 0.04);
            assert_eq!(s.detectors, detectors, "{name}: detectors");
            assert_eq!(s.unique_top_label, top, "{name}: unique, top-label rule");
            assert_eq!(
                s.unique_per_category, per_cat,
                "{name}: unique, per-category rule"
            );
            for (cat, want) in ["object", "part", "scene", "material", "texture", "color"]
                .iter()
                .zip(by_cat)
            {
                let got = s.per_category.iter().find(|c| c.name == *cat).unwrap();
                assert_eq!(got.unique_per_category, want, "{name}: {cat}");
            }
        }
    }

    #[test]
    fn paper_ious_follow_the_scoring_formula() {
        for (name, ..) in PAPER {
            let tally = read(&paper(name)).unwrap();
            for unit in &tally.units {
                for best in unit.per_category.iter().filter(|b| b.label.is_some()) {
                    let want = dissect::score::iou(best.intersect, best.activation, best.truth);
                    assert!(
                        (best.iou - want).abs() <= 1e-12 * want.max(1.0),
                        "{name} unit {}: {} vs {want}",
                        unit.unit + 1,
                        best.iou
                    );
                }
            }
        }
    }

    #[test]
    fn tally_round_trips_sorted_by_score() {
        let tally = read(&paper("caffe_reference_imagenet")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conv5-tally.csv");
        write(&path, &tally.units, &tally.category_names).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.category_names, tally.category_names);
        let mut want = tally.units.clone();
        want.sort_by(|a, b| b.score().total_cmp(&a.score()).then(a.unit.cmp(&b.unit)));
        assert_eq!(back.units, want);
        assert!(back.units.windows(2).all(|w| w[0].score() >= w[1].score()));
    }

    #[test]
    fn significance_columns_round_trip() {
        let (layer, _) = crate::fixture::layer("conv5", 6, 0);
        let names = vec!["color".to_string(), "object".to_string()];
        let text = render(&layer.units, &names);
        let header = text.lines().next().unwrap();
        assert!(header.ends_with(",p-value,significant"), "{header}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conv5-tally.csv");
        std::fs::write(&path, &text).unwrap();
        let back = read(&path).unwrap();
        for u in &back.units {
            let want = &layer.units[u.unit];
            let (got, want) = (u.significance.as_ref(), want.significance.as_ref());
            assert_eq!(
                got.map(|s| (s.p_value, s.significant)),
                want.map(|s| (s.p_value, s.significant))
            );
        }
        // A bad flag or a p-value outside [0, 1] names the column.
        for (bad, message) in [
            ("maybe", "neither `yes` nor `no`"),
            ("2", "not a probability"),
        ] {
            let broken = if bad == "maybe" {
                text.replacen(",yes\n", ",maybe\n", 1)
            } else {
                text.replacen("1e-9,yes", "2e0,yes", 1)
            };
            assert_ne!(broken, text, "{bad}: the fixture has a row to break");
            std::fs::write(&path, &broken).unwrap();
            let err = read(&path).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn malformed_tallies_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("unit,label\n1,x\n", "row 0: header must start"),
            ("unit,category,label,score,a-label\n", "groups of 5"),
            (
                "unit,category,label,score,c-label,c-truth,c-activation,c-intersect,c-iou\n1,c,x,0.5,x,ten,1,1,0.5\n",
                "row 1: column `c-truth`: `ten` is not a number",
            ),
            (
                "unit,category,label,score,c-label,c-truth,c-activation,c-intersect,c-iou\n0,c,x,0.5,x,1,1,1,0.5\n",
                "1-based",
            ),
            (
                "unit,category,label,score,c-label,c-truth,c-activation,c-intersect,c-iou\n1,d,x,0.5,x,1,1,1,0.5\n",
                "category `d`",
            ),
        ];
        for (text, want) in cases {
            let path = dir.path().join("t.csv");
            std::fs::write(&path, text).unwrap();
            let err = read(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(err.contains("t.csv"), "{err:?} should name the file");
        }
        let missing = read(&dir.path().join("none.csv")).unwrap_err().to_string();
        assert!(missing.contains("none.csv"));
    }
}
