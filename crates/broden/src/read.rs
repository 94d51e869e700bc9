//! Reading and validating a Broden dataset folder into a [`Dataset`], plus
//! label statistics and a summary computed from it.
//!
//! Everything that the CSV files and the file system can tell is checked at
//! [`Dataset::open`]; pixel contents (decodability, sizes, label ranges) are
//! checked when images are decoded, see [`crate::Dataset::batches`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;

use crate::{
    BatchOptions, BrodenError, Category, CategoryLabel, Dataset, DatasetOptions, ImageRecord,
    KnownLabels, Label, LabelEntry, Preprocess,
};

/// The non-category columns of `index.csv`.
const INDEX_META: [&str; 6] = ["image", "split", "ih", "iw", "sh", "sw"];

/// A CSV file read whole: header names and rows of fields, each row checked
/// to have as many fields as the header.
struct Table {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn read(path: PathBuf) -> Result<Self, BrodenError> {
        if !path.is_file() {
            return Err(BrodenError::MissingFile { path });
        }
        let file = std::fs::File::open(&path).map_err(|source| BrodenError::Io {
            path: path.clone(),
            source,
        })?;
        // Flexible so that a short or long row is reported with our own
        // message (row and counts) rather than the csv crate's.
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(std::io::BufReader::new(file));
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| csv_error(&path, 0, &e))?
            .iter()
            .map(str::to_owned)
            .collect();
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let row = i + 1;
            let record = record.map_err(|e| csv_error(&path, row, &e))?;
            if record.len() != header.len() {
                return Err(BrodenError::ColumnCount {
                    path,
                    row,
                    expected: header.len(),
                    found: record.len(),
                });
            }
            rows.push(record.iter().map(str::to_owned).collect());
        }
        Ok(Self { path, header, rows })
    }

    /// Index of a required header column.
    fn column(&self, name: &str) -> Result<usize, BrodenError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| BrodenError::MissingColumn {
                path: self.path.clone(),
                column: name.to_owned(),
            })
    }

    fn number<T: std::str::FromStr>(
        &self,
        row: usize,
        col: usize,
        expected: &'static str,
    ) -> Result<T, BrodenError> {
        let value = &self.rows[row - 1][col];
        value
            .parse()
            .map_err(|_| self.bad_number(row, col, expected))
    }

    fn finite(&self, row: usize, col: usize) -> Result<f64, BrodenError> {
        let v: f64 = self.number(row, col, "a finite number")?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(self.bad_number(row, col, "a finite number"))
        }
    }

    fn bad_number(&self, row: usize, col: usize, expected: &'static str) -> BrodenError {
        BrodenError::BadNumber {
            path: self.path.clone(),
            row,
            column: self.header[col].clone(),
            value: self.rows[row - 1][col].clone(),
            expected,
        }
    }

    fn error(&self, row: usize, message: impl Into<String>) -> BrodenError {
        BrodenError::Csv {
            path: self.path.clone(),
            row,
            message: message.into(),
        }
    }
}

fn csv_error(path: &Path, row: usize, e: &csv::Error) -> BrodenError {
    BrodenError::Csv {
        path: path.to_owned(),
        row,
        message: e.to_string(),
    }
}

fn known_names(categories: &[Category]) -> String {
    categories
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_categories(root: &Path) -> Result<Vec<Category>, BrodenError> {
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
            first: t.number(row, first, "a label code")?,
            last: t.number(row, last, "a label code")?,
            count: t.number(row, count, "a count")?,
            frequency: t.number(row, frequency, "a count")?,
        });
    }
    Ok(out)
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

/// Reads `label.csv` into a dense list indexed by label number. Numbers that
/// the file skips (0 included) get an empty entry, as the reference code's
/// `build_dense_label_array` does. `category` is set later.
fn read_labels(root: &Path, categories: &[Category]) -> Result<Vec<Label>, BrodenError> {
    let t = Table::read(root.join("label.csv"))?;
    let [number, name, category, frequency, coverage, syns] = [
        "number",
        "name",
        "category",
        "frequency",
        "coverage",
        "syns",
    ]
    .map(|c| t.column(c));
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

/// Parses one `index.csv` category cell: `;`-separated, digits-only entries
/// are image-level labels, anything else a PNG path.
fn parse_cell(
    t: &Table,
    row: usize,
    col: usize,
    known: &KnownLabels,
) -> Result<Vec<LabelEntry>, BrodenError> {
    let max_label = known.max();
    let mut out = Vec::new();
    for part in t.rows[row - 1][col].split(';').filter(|s| !s.is_empty()) {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = part
                .parse()
                .map_err(|_| t.bad_number(row, col, "a label"))?;
            if n > u64::from(max_label) {
                return Err(BrodenError::LabelOutOfRange {
                    path: t.path.clone(),
                    row,
                    label: n,
                    max: max_label,
                });
            }
            if !known.contains(n as u32) {
                return Err(BrodenError::UnlistedLabel {
                    path: t.path.clone(),
                    row,
                    label: n as u32,
                });
            }
            out.push(LabelEntry::Image(n as u32));
        } else {
            out.push(LabelEntry::Pixel(part.to_owned()));
        }
    }
    Ok(out)
}

/// Rejects entries that are absolute or climb with `..`; the symlink case
/// is caught later by [`resolve_inside`].
fn check_relative(index: &Path, row: usize, entry: &str) -> Result<(), BrodenError> {
    let unsafe_path = |reason| BrodenError::UnsafePath {
        index: index.to_owned(),
        row,
        entry: entry.to_owned(),
        reason,
    };
    for c in Path::new(entry).components() {
        match c {
            Component::ParentDir => return Err(unsafe_path("it has a '..' component")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path("it is absolute"));
            }
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(())
}

/// Checks that `images/<entry>` exists, is a file and, symlinks resolved,
/// stays inside the canonical dataset root.
fn resolve_inside(
    root: &Path,
    canonical_root: &Path,
    index: &Path,
    row: usize,
    entry: &str,
) -> Result<(), BrodenError> {
    let path = root.join("images").join(entry);
    let resolved = match std::fs::canonicalize(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BrodenError::MissingReference {
                index: index.to_owned(),
                row,
                path,
            });
        }
        Err(source) => return Err(BrodenError::Io { path, source }),
    };
    if !resolved.starts_with(canonical_root) {
        return Err(BrodenError::UnsafePath {
            index: index.to_owned(),
            row,
            entry: entry.to_owned(),
            reason: "a symlink resolves outside",
        });
    }
    if !resolved.is_file() {
        return Err(BrodenError::Csv {
            path: index.to_owned(),
            row,
            message: format!("referenced path {} is not a file", path.display()),
        });
    }
    Ok(())
}

impl Dataset {
    /// Reads and validates the Broden dataset in `root`: every CSV file,
    /// every referenced file's existence and location. Pixels are checked
    /// when decoded by [`Dataset::batches`]. Rows that the split filter
    /// drops are checked for their field count only.
    pub fn open(root: &Path, opts: &DatasetOptions) -> Result<Dataset, BrodenError> {
        let index_path = root.join("index.csv");
        if !index_path.is_file() {
            return Err(BrodenError::MissingFile { path: index_path });
        }
        let categories = read_categories(root)?;
        let selected = select_categories(&categories, opts.categories.as_deref())?;
        let mut labels = read_labels(root, &categories)?;
        let max_label = (labels.len() - 1) as u32;
        let known = KnownLabels::of(&labels);
        let category_labels = categories
            .iter()
            .map(|c| read_category_labels(root, c, max_label))
            .collect::<Result<Vec<_>, _>>()?;
        let primary = primary_categories(labels.len(), &selected, &category_labels);
        for (label, cat) in labels.iter_mut().zip(primary) {
            label.category = cat;
        }

        let t = Table::read(index_path)?;
        let meta = INDEX_META.map(|c| t.column(c));
        let [image, split, ih, iw, sh, sw] = meta;
        let (image, split, ih, iw, sh, sw) = (image?, split?, ih?, iw?, sh?, sw?);
        // Category columns, matched by name: (column, category index).
        let mut columns: Vec<(usize, usize)> = Vec::new();
        for (col, name) in t.header.iter().enumerate() {
            if INDEX_META.contains(&name.as_str()) {
                if t.header[..col].contains(name) {
                    return Err(t.error(0, format!("duplicate column {name:?}")));
                }
                continue;
            }
            let Some(cat) = categories.iter().position(|c| &c.name == name) else {
                return Err(BrodenError::UnknownCategory {
                    path: t.path.clone(),
                    row: 0,
                    name: name.clone(),
                    known: known_names(&categories),
                });
            };
            if columns.iter().any(|&(_, c)| c == cat) {
                return Err(t.error(0, format!("duplicate column {name:?}")));
            }
            columns.push((col, cat));
        }

        let mut images = Vec::new();
        for row in 1..=t.rows.len() {
            let r = &t.rows[row - 1];
            if opts.split.as_ref().is_some_and(|s| *s != r[split]) {
                continue;
            }
            if opts.max_images.is_some_and(|m| images.len() >= m) {
                break;
            }
            let positive = |col: usize| -> Result<u32, BrodenError> {
                match t.number::<u32>(row, col, "a positive integer")? {
                    0 => Err(t.bad_number(row, col, "a positive integer")),
                    v => Ok(v),
                }
            };
            let mut record = ImageRecord {
                row,
                image: r[image].clone(),
                split: r[split].clone(),
                ih: positive(ih)?,
                iw: positive(iw)?,
                sh: positive(sh)?,
                sw: positive(sw)?,
                labels: vec![Vec::new(); categories.len()],
            };
            if record.image.is_empty() {
                return Err(t.error(row, "empty image path"));
            }
            check_relative(&t.path, row, &record.image)?;
            for &(col, cat) in &columns {
                if selected.contains(&cat) {
                    record.labels[cat] = parse_cell(&t, row, col, &known)?;
                }
            }
            for entry in record.labels.iter().flatten() {
                if let LabelEntry::Pixel(p) = entry {
                    check_relative(&t.path, row, p)?;
                }
            }
            images.push(record);
        }
        if images.is_empty() {
            let reason = match (&opts.split, opts.max_images) {
                (_, Some(0)) => "max_images is 0".to_owned(),
                (Some(s), _) => format!("no row has split {s:?}"),
                (None, _) => "index.csv has no rows".to_owned(),
            };
            return Err(BrodenError::EmptyDataset {
                path: t.path.clone(),
                reason,
            });
        }

        // Existence and containment of every referenced file. Canonicalizing
        // is a few syscalls per file, so spread the dataset's many files over
        // threads; the first failing row (in file order) is reported.
        let canonical_root = std::fs::canonicalize(root).map_err(|source| BrodenError::Io {
            path: root.to_owned(),
            source,
        })?;
        images
            .par_iter()
            .try_for_each(|rec| {
                resolve_inside(root, &canonical_root, &t.path, rec.row, &rec.image)?;
                for entry in rec.labels.iter().flatten() {
                    if let LabelEntry::Pixel(p) = entry {
                        resolve_inside(root, &canonical_root, &t.path, rec.row, p)?;
                    }
                }
                Ok::<(), BrodenError>(())
            })
            .or_else(|e| {
                first_missing(root, &canonical_root, &t.path, &images)?;
                Err(e)
            })?;

        Ok(Dataset {
            root: root.to_owned(),
            categories,
            selected,
            labels,
            category_labels,
            images,
        })
    }

    /// The largest label number (`labels.len() - 1`).
    pub fn max_label(&self) -> u32 {
        (self.labels.len() - 1) as u32
    }

    /// Index of the category called `name`.
    pub fn category_index(&self, name: &str) -> Option<usize> {
        self.categories.iter().position(|c| c.name == name)
    }

    /// Per selected category and label, how many images carry the label and
    /// how much of the images it covers. Decodes every segmentation PNG (not
    /// the images themselves).
    pub fn label_counts(&self) -> Result<LabelCounts, BrodenError> {
        let n_labels = self.labels.len();
        let mut images = vec![vec![0u64; n_labels]; self.categories.len()];
        let mut coverage = vec![vec![0f64; n_labels]; self.categories.len()];
        let opts = BatchOptions {
            batch_size: 64,
            preprocess: Preprocess::torchvision(1),
            prefetch: 2,
            labels_only: true,
        };
        let mut seen = vec![false; n_labels];
        let mut pixels = vec![0u64; n_labels];
        for batch in self.batches(&opts) {
            let batch = batch?;
            let area = u64::from(batch.seg_height) * u64::from(batch.seg_width);
            for labels in &batch.labels {
                for &cat in &self.selected {
                    // A label counts once per image and category, however many
                    // planes or entries carry it; a pixel is counted once per
                    // plane (planes of one category may overlap, as in the
                    // reference's coverage).
                    seen.fill(false);
                    pixels.fill(0);
                    for &(c, n) in &labels.image_labels {
                        if c == cat {
                            seen[n as usize] = true;
                            pixels[n as usize] += area;
                        }
                    }
                    for plane in labels.planes.iter().filter(|p| p.category == cat) {
                        for &n in &plane.labels {
                            seen[n as usize] = true;
                            pixels[n as usize] += 1;
                        }
                    }
                    for n in 1..n_labels {
                        if seen[n] {
                            images[cat][n] += 1;
                            coverage[cat][n] += pixels[n] as f64 / area as f64;
                        }
                    }
                }
            }
        }
        Ok(LabelCounts { images, coverage })
    }

    /// Image counts and label counts per selected category, from the CSV
    /// metadata alone (no decoding).
    pub fn summary(&self) -> DatasetSummary {
        let categories = self
            .selected
            .iter()
            .map(|&cat| {
                let listed: std::collections::HashSet<u32> =
                    self.category_labels[cat].iter().map(|c| c.number).collect();
                CategorySummary {
                    name: self.categories[cat].name.clone(),
                    n_images: self
                        .images
                        .iter()
                        .filter(|im| !im.labels[cat].is_empty())
                        .count(),
                    n_labels: self
                        .labels
                        .iter()
                        .skip(1)
                        .filter(|l| l.category == cat && listed.contains(&l.number))
                        .count(),
                }
            })
            .collect();
        DatasetSummary {
            root: self.root.clone(),
            n_images: self.images.len(),
            n_labels: self
                .labels
                .iter()
                .skip(1)
                .filter(|l| !l.name.is_empty())
                .count(),
            categories,
        }
    }
}

/// Re-runs the file checks sequentially to report the first failing row, so
/// that the error does not depend on thread scheduling.
fn first_missing(
    root: &Path,
    canonical_root: &Path,
    index: &Path,
    images: &[ImageRecord],
) -> Result<(), BrodenError> {
    for rec in images {
        resolve_inside(root, canonical_root, index, rec.row, &rec.image)?;
        for entry in rec.labels.iter().flatten() {
            if let LabelEntry::Pixel(p) = entry {
                resolve_inside(root, canonical_root, index, rec.row, p)?;
            }
        }
    }
    // The parallel pass failed, so this one does too unless the folder
    // changed in between; the caller then reports the parallel pass's error.
    Ok(())
}

fn select_categories(
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

/// Label statistics over the images of a [`Dataset`], from decoded PNGs.
/// Indexed `[category][label number]`; unselected categories stay zero.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelCounts {
    /// Number of images in which the label occurs in the category (what
    /// `label.csv`'s `category` cell and `c_*.csv`'s `frequency` count).
    pub images: Vec<Vec<u64>>,
    /// Pixel coverage in units of whole images (image-level labels count 1).
    pub coverage: Vec<Vec<f64>>,
}

/// A disagreement between [`LabelCounts`] and the dataset's CSV files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountMismatch {
    pub label: u32,
    pub category: String,
    /// `label.csv` (the `category` cell) or `c_<category>.csv`.
    pub file: String,
    pub expected: u64,
    pub found: u64,
}

impl LabelCounts {
    /// Image counts that disagree with `label.csv`'s `category` cells and the
    /// `c_*.csv` `frequency` column, for the selected categories. Only
    /// meaningful for a dataset opened without split or size filters.
    pub fn mismatches(&self, ds: &Dataset) -> Vec<CountMismatch> {
        let mut out = Vec::new();
        for &cat in &ds.selected {
            let name = &ds.categories[cat].name;
            let mut expected_label = vec![0u64; ds.labels.len()];
            for label in &ds.labels {
                for (c, count) in &label.category_counts {
                    if c == name {
                        expected_label[label.number as usize] = *count;
                    }
                }
            }
            for (n, &expected) in expected_label.iter().enumerate().skip(1) {
                let found = self.images[cat][n];
                if found != expected {
                    out.push(CountMismatch {
                        label: n as u32,
                        category: name.clone(),
                        file: "label.csv".to_owned(),
                        expected,
                        found,
                    });
                }
            }
            for cl in &ds.category_labels[cat] {
                let found = self.images[cat][cl.number as usize];
                if cl.number != 0 && found != cl.frequency {
                    out.push(CountMismatch {
                        label: cl.number,
                        category: name.clone(),
                        file: format!("c_{name}.csv"),
                        expected: cl.frequency,
                        found,
                    });
                }
            }
        }
        out
    }
}

/// What `netdissect info` shows about a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    pub root: PathBuf,
    pub n_images: usize,
    /// Named labels in `label.csv` (label 0 and numbering gaps excluded).
    pub n_labels: usize,
    /// Selected categories, in `category.csv` order.
    pub categories: Vec<CategorySummary>,
}

/// One category of a [`DatasetSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategorySummary {
    pub name: String,
    /// Images with at least one entry in this category's column.
    pub n_images: usize,
    /// Labels whose primary category this is.
    pub n_labels: usize,
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset   {}", self.root.display())?;
        writeln!(f, "images    {}", self.n_images)?;
        writeln!(f, "labels    {}", self.n_labels)?;
        writeln!(f, "{:<12} {:>8} {:>8}", "category", "images", "labels")?;
        for c in &self.categories {
            writeln!(f, "{:<12} {:>8} {:>8}", c.name, c.n_images, c.n_labels)?;
        }
        Ok(())
    }
}
