//! The label side of a dataset: `category.csv`, `label.csv` and the
//! `c_<category>.csv` files, the category filter, and each label's primary
//! category.

use std::collections::HashMap;
use std::path::Path;

use super::consistency::{self, LabelRows};
use super::table::Table;

/// The columns of `label.csv`, in the order the reference tools write them.
pub(crate) const LABEL_COLUMNS: [&str; 6] = [
    "number",
    "name",
    "category",
    "frequency",
    "coverage",
    "syns",
];
use crate::{BrodenError, Category, CategoryLabel, Label};

/// The label tables of a dataset: `label.csv`, densely numbered, with each
/// label's primary category among `selected` set, and every category's
/// `c_*.csv`, in `categories` order.
pub(super) fn read_label_tables(
    root: &Path,
    categories: &[Category],
    selected: &[usize],
) -> Result<(Vec<Label>, Vec<Vec<CategoryLabel>>), BrodenError> {
    let (mut labels, rows) = read_labels(root, categories)?;
    let max_label = (labels.len() - 1) as u32;
    let category_labels = categories
        .iter()
        .map(|c| read_category_labels(root, c, max_label))
        .collect::<Result<Vec<_>, _>>()?;
    consistency::check(root, categories, &labels, &rows, &category_labels)?;
    let primary = primary_categories(labels.len(), selected, &category_labels);
    for (label, cat) in labels.iter_mut().zip(primary) {
        label.category = cat;
    }
    Ok((labels, category_labels))
}

/// The category names, comma-separated, for error messages.
pub(super) fn known_names(categories: &[Category]) -> String {
    categories
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads `category.csv`, rejecting empty and duplicate names.
pub(super) fn read_categories(root: &Path) -> Result<Vec<Category>, BrodenError> {
    let t = Table::read(root.join("category.csv"))?;
    let [name, first, last, count, frequency] =
        ["name", "first", "last", "count", "frequency"].map(|c| t.column(c));
    let (name, first, last, count, frequency) = (name?, first?, last?, count?, frequency?);
    let mut out: Vec<Category> = Vec::with_capacity(t.rows.len());
    for row in 1..=t.rows.len() {
        let cat_name = t.rows[row - 1][name].clone();
        if cat_name.is_empty() {
            return Err(t.error(row, "empty category name"));
        }
        if out.iter().any(|c| c.name == cat_name) {
            return Err(t.error(row, format!("duplicate category {cat_name:?}")));
        }
        out.push(Category {
            name: cat_name,
            first: t.number(row, first, "a label number")?,
            last: t.number(row, last, "a label number")?,
            count: t.number(row, count, "a count")?,
            frequency: t.number(row, frequency, "a count")?,
        });
    }
    Ok(out)
}

/// The indices of the categories called `wanted`, sorted and without
/// repeats; every category when `wanted` is `None`.
pub(super) fn select_categories(
    categories: &[Category],
    wanted: Option<&[String]>,
) -> Result<Vec<usize>, BrodenError> {
    let Some(wanted) = wanted else {
        return Ok((0..categories.len()).collect());
    };
    let by_name: HashMap<&str, usize> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut selected = wanted
        .iter()
        .map(|name| {
            by_name
                .get(name.as_str())
                .copied()
                .ok_or_else(|| BrodenError::UnknownCategoryFilter {
                    name: name.clone(),
                    known: known_names(categories),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    selected.sort_unstable();
    selected.dedup();
    Ok(selected)
}

/// Parses a `label.csv` category cell such as `material(36);object(3)`.
fn parse_category_counts(
    t: &Table,
    row: usize,
    cell: &str,
    categories: &[Category],
) -> Result<Vec<(String, u64)>, BrodenError> {
    let mut out = Vec::new();
    for part in cell.split(';').filter(|s| !s.is_empty()) {
        let parsed = part
            .strip_suffix(')')
            .and_then(|s| s.split_once('('))
            .filter(|(name, _)| !name.is_empty() && !name.contains('('));
        let Some((name, count)) = parsed else {
            return Err(t.error(
                row,
                format!("category entry {part:?} is not of the form name(count)"),
            ));
        };
        let count: u64 = count.parse().map_err(|_| {
            t.error(
                row,
                format!("category entry {part:?} has a non-numeric count"),
            )
        })?;
        if !categories.iter().any(|c| c.name == name) {
            return Err(BrodenError::UnknownCategory {
                path: t.path.clone(),
                row,
                name: name.to_owned(),
                known: known_names(categories),
            });
        }
        out.push((name.to_owned(), count));
    }
    Ok(out)
}

/// Reads `label.csv` into a dense list indexed by label number, with the
/// row each number is listed at. Numbers that the file skips (0 included)
/// get an empty entry, as the reference code's `build_dense_label_array`
/// does. `category` is set later. Rejects two rows with the same name.
fn read_labels(
    root: &Path,
    categories: &[Category],
) -> Result<(Vec<Label>, LabelRows), BrodenError> {
    let t = Table::read(root.join("label.csv"))?;
    let [number, name, category, frequency, coverage, syns] = LABEL_COLUMNS.map(|c| t.column(c));
    let (number, name, category, frequency, coverage, syns) =
        (number?, name?, category?, frequency?, coverage?, syns?);
    let mut parsed: Vec<Label> = Vec::with_capacity(t.rows.len());
    for row in 1..=t.rows.len() {
        let r = &t.rows[row - 1];
        parsed.push(Label {
            number: t.number(row, number, "a label number")?,
            listed: true,
            name: r[name].clone(),
            category: 0,
            frequency: t.number(row, frequency, "a count")?,
            coverage: t.finite(row, coverage)?,
            syns: r[syns]
                .split(';')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            category_counts: parse_category_counts(&t, row, &r[category], categories)?,
        });
    }
    // (number, name) in row order, for the row map and the name check.
    let keys: Vec<(u32, String)> = parsed.iter().map(|l| (l.number, l.name.clone())).collect();
    let labels = dense_labels(&t, parsed)?;
    check_unique_names(&t, &keys)?;
    // Numbers are unique now: map each back to its row.
    let mut row_of = vec![0; labels.len()];
    for (i, &(n, _)) in keys.iter().enumerate() {
        row_of[n as usize] = i + 1;
    }
    let rows = LabelRows {
        path: t.path.clone(),
        row_of,
    };
    Ok((labels, rows))
}

/// Rejects two rows of `label.csv` (table `t`, `(number, name)` per row)
/// that give the same name: the reference tools give each name exactly one
/// number, and reports identify a label by its name. The error is at the
/// later row and names the earlier one.
fn check_unique_names(t: &Table, keys: &[(u32, String)]) -> Result<(), BrodenError> {
    let mut seen: HashMap<&str, (usize, u32)> = HashMap::with_capacity(keys.len());
    for (i, (number, name)) in keys.iter().enumerate() {
        let row = i + 1;
        if let Some(&(first_row, first_number)) = seen.get(name.as_str()) {
            return Err(t.error(
                row,
                format!(
                    "duplicate label name {name:?}: label {number} has it, \
                     and so has label {first_number} at row {first_row}"
                ),
            ));
        }
        seen.insert(name, (row, *number));
    }
    Ok(())
}

/// Places the `parsed` rows of `label.csv` (table `t`) at their numbers,
/// filling the gaps with empty, unlisted labels; rejects numbers too large
/// for a PNG and numbers listed twice.
fn dense_labels(t: &Table, parsed: Vec<Label>) -> Result<Vec<Label>, BrodenError> {
    // Label numbers index dense per-label arrays everywhere downstream; a
    // huge number would allocate absurdly, so cap at what a PNG can encode.
    const MAX_NUMBER: u32 = 65535;
    let max = parsed.iter().map(|l| l.number).max().unwrap_or(0);
    if max > MAX_NUMBER {
        let row = parsed.iter().position(|l| l.number == max).unwrap_or(0) + 1;
        return Err(t.error(
            row,
            format!("label number {max} exceeds {MAX_NUMBER}, the largest a png can hold"),
        ));
    }
    let mut labels: Vec<Option<Label>> = vec![None; max as usize + 1];
    for (i, label) in parsed.into_iter().enumerate() {
        let n = label.number as usize;
        if labels[n].is_some() {
            return Err(t.error(i + 1, format!("duplicate label number {n}")));
        }
        labels[n] = Some(label);
    }
    Ok(labels
        .into_iter()
        .enumerate()
        .map(|(n, l)| {
            l.unwrap_or_else(|| Label {
                number: n as u32,
                listed: n == 0,
                name: String::new(),
                category: 0,
                frequency: 0,
                coverage: 0.0,
                syns: Vec::new(),
                category_counts: Vec::new(),
            })
        })
        .collect())
}

/// Reads `c_<category>.csv`, whose label numbers must not exceed
/// `max_label`.
fn read_category_labels(
    root: &Path,
    category: &Category,
    max_label: u32,
) -> Result<Vec<CategoryLabel>, BrodenError> {
    let t = Table::read(root.join(format!("c_{}.csv", category.name)))?;
    let [code, number, name, frequency, coverage] =
        ["code", "number", "name", "frequency", "coverage"].map(|c| t.column(c));
    let (code, number, name, frequency, coverage) = (code?, number?, name?, frequency?, coverage?);
    let mut out = Vec::with_capacity(t.rows.len());
    for row in 1..=t.rows.len() {
        let n: u32 = t.number(row, number, "a label number")?;
        if n > max_label {
            return Err(BrodenError::LabelOutOfRange {
                path: t.path.clone(),
                row,
                label: n.into(),
                max: max_label,
            });
        }
        out.push(CategoryLabel {
            code: t.number(row, code, "a label code")?,
            number: n,
            name: t.rows[row - 1][name].clone(),
            frequency: t.number(row, frequency, "a count")?,
            coverage: t.finite(row, coverage)?,
        });
    }
    Ok(out)
}

/// The primary category of every label, as NetDissect's
/// `primary_categories_per_index` decides it: among the `selected`
/// categories (in `category.csv` order), the one whose `c_*.csv` gives the
/// label the largest coverage. Python's `max` over `(coverage, index)` tuples
/// breaks ties towards the *later* category, and a label absent from every
/// selected category (coverage 0 everywhere, label 0 included) lands in the
/// last selected one. A `c_*.csv` row with code 0 counts as absent, and for
/// a number listed twice the later row wins, both as in the reference.
fn primary_categories(
    n_labels: usize,
    selected: &[usize],
    category_labels: &[Vec<CategoryLabel>],
) -> Vec<usize> {
    let mut best: Vec<Option<(f64, usize)>> = vec![None; n_labels];
    for &cat in selected {
        let mut coverage = vec![0.0f64; n_labels];
        for cl in &category_labels[cat] {
            if cl.code != 0
                && let Some(c) = coverage.get_mut(cl.number as usize)
            {
                *c = cl.coverage;
            }
        }
        for (b, &cov) in best.iter_mut().zip(&coverage) {
            if b.is_none_or(|(best_cov, _)| cov >= best_cov) {
                *b = Some((cov, cat));
            }
        }
    }
    best.into_iter()
        .map(|b| b.map_or(0, |(_, cat)| cat))
        .collect()
}
