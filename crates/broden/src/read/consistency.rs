//! Checks across the label files: `category.csv`'s label ranges, the
//! `c_<category>.csv` lists and `label.csv`'s category cells must tell the
//! same story about which label is in which category.
//!
//! What the reference tools (`joinseg.py`) write, and what this crate's writer
//! writes too: label numbers are global, assigned by descending frequency
//! over all categories, so the labels of one category are scattered among
//! the others'. A category's `first` and `last` are the smallest and largest
//! number its `c_*.csv` lists, so the ranges of different categories
//! overlap, and one label may be in several categories (`fabric` is
//! `material(36);object(3)`). Neither is refused here. What is refused:
//!
//! - a range that is inverted, runs past the largest label number, or leaves
//!   out a label that the category's own `c_*.csv` lists;
//! - a listed label (other than 0, "unlabelled") in no category;
//! - a `label.csv` category cell that names a category whose `c_*.csv` does
//!   not list the label, or leaves out one whose `c_*.csv` does.
//!
//! `c_*.csv` rows for label 0 are ignored throughout: label 0 belongs to no
//! category.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{BrodenError, Category, CategoryLabel, Label};

/// Where each label number is listed in `label.csv`.
pub(super) struct LabelRows {
    /// The `label.csv` path, for messages.
    pub(super) path: PathBuf,
    /// `row_of[n]`: the 1-based row of label `n`; 0 where not listed.
    pub(super) row_of: Vec<usize>,
}

impl LabelRows {
    fn error(&self, row: usize, message: String) -> BrodenError {
        BrodenError::Csv {
            path: self.path.clone(),
            row,
            message,
        }
    }
}

/// Runs every check of this module on tables that have each passed their
/// own checks (numbers in range, categories known).
pub(super) fn check(
    root: &Path,
    categories: &[Category],
    labels: &[Label],
    rows: &LabelRows,
    category_labels: &[Vec<CategoryLabel>],
) -> Result<(), BrodenError> {
    // members[c][n]: the first row of c_<c>.csv that lists label n > 0.
    let members: Vec<HashMap<u32, usize>> = category_labels
        .iter()
        .map(|cls| {
            let mut m = HashMap::with_capacity(cls.len());
            for (i, cl) in cls.iter().enumerate() {
                if cl.number != 0 {
                    m.entry(cl.number).or_insert(i + 1);
                }
            }
            m
        })
        .collect();
    let max_label = (labels.len() - 1) as u32;
    check_ranges(root, categories, category_labels, max_label)?;
    check_label_categories(categories, labels, rows, &members)
}

/// `category.csv`'s `first..last` of each category: not inverted, within
/// `label.csv`'s numbers, and holding every label the category's `c_*.csv`
/// lists. (An empty category is written `0..0`.)
fn check_ranges(
    root: &Path,
    categories: &[Category],
    category_labels: &[Vec<CategoryLabel>],
    max_label: u32,
) -> Result<(), BrodenError> {
    let path = root.join("category.csv");
    let error = |row: usize, message: String| BrodenError::Csv {
        path: path.clone(),
        row,
        message,
    };
    for (i, (c, cls)) in categories.iter().zip(category_labels).enumerate() {
        let (row, name, first, last) = (i + 1, &c.name, c.first, c.last);
        if first > last {
            return Err(error(
                row,
                format!("category {name:?}: first label {first} is after last label {last}"),
            ));
        }
        if last > max_label {
            return Err(error(
                row,
                format!(
                    "category {name:?}: range {first}..{last} runs past the last label number, \
                     {max_label} (label.csv's largest)"
                ),
            ));
        }
        let outside = cls
            .iter()
            .enumerate()
            .find(|(_, cl)| cl.number != 0 && !(first..=last).contains(&cl.number));
        if let Some((j, cl)) = outside {
            return Err(error(
                row,
                format!(
                    "category {name:?}: range {first}..{last} leaves out label {}, \
                     which c_{name}.csv lists at row {}",
                    cl.number,
                    j + 1
                ),
            ));
        }
    }
    Ok(())
}

/// Every listed label but 0: its `label.csv` category cell names exactly
/// the categories whose `c_*.csv` lists it, and there is at least one.
fn check_label_categories(
    categories: &[Category],
    labels: &[Label],
    rows: &LabelRows,
    members: &[HashMap<u32, usize>],
) -> Result<(), BrodenError> {
    for label in labels.iter().skip(1) {
        let n = label.number;
        let row = rows.row_of[n as usize];
        if row == 0 {
            continue;
        }
        let name = &label.name;
        let named = |cat: &str| label.category_counts.iter().any(|(c, _)| c == cat);
        for (cat, _) in &label.category_counts {
            // parse_category_counts has rejected unknown names.
            let Some(c) = categories.iter().position(|k| &k.name == cat) else {
                continue;
            };
            if !members[c].contains_key(&n) {
                return Err(rows.error(
                    row,
                    format!(
                        "label {n} {name:?}: its category cell names {cat:?}, \
                         but c_{cat}.csv does not list label {n}"
                    ),
                ));
            }
        }
        for (c, category) in categories.iter().enumerate() {
            if let Some(&c_row) = members[c].get(&n)
                && !named(&category.name)
            {
                let cell = label
                    .category_counts
                    .iter()
                    .map(|(c, k)| format!("{c}({k})"))
                    .collect::<Vec<_>>()
                    .join(";");
                return Err(rows.error(
                    row,
                    format!(
                        "label {n} {name:?}: c_{cat}.csv lists it at row {c_row}, \
                         but its category cell {cell:?} does not name {cat:?}",
                        cat = category.name
                    ),
                ));
            }
        }
        if members.iter().all(|m| !m.contains_key(&n)) {
            let in_range = categories.iter().any(|c| (c.first..=c.last).contains(&n));
            let why = if in_range {
                "no c_*.csv file lists it"
            } else {
                "no category.csv range first..last holds it, and no c_*.csv file lists it"
            };
            return Err(rows.error(row, format!("label {n} {name:?} is in no category: {why}")));
        }
    }
    Ok(())
}
