//! The in-memory model of a Broden dataset, as read from its CSV files.

use std::path::PathBuf;

/// One category (`category.csv` row), e.g. `object` or `color`.
#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    pub name: String,
    /// `first` and `last` columns: the smallest and largest global label
    /// number of the category, as the original writes them.
    pub first: u32,
    pub last: u32,
    pub count: u64,
    pub frequency: u64,
}

/// One label (`label.csv` row). Label numbers are global across categories;
/// number 0 is "unlabelled" and never scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub number: u32,
    /// False for numbers that `label.csv` skips: no mask or cell may use them.
    pub listed: bool,
    pub name: String,
    /// Index into [`Dataset::categories`] of the label's primary category:
    /// the category in whose `c_<category>.csv` the label has the largest
    /// coverage, chosen among the selected categories as the reference
    /// `primary_categories_per_index` does (ties: the later category; a
    /// label with no coverage in any selected category, label 0 included,
    /// gets the last selected one). The label is scored only there.
    pub category: usize,
    pub frequency: u64,
    pub coverage: f64,
    pub syns: Vec<String>,
    /// The raw `category` cell of `label.csv`, parsed: `(category name, count)`.
    pub category_counts: Vec<(String, u64)>,
}

/// One row of a `c_<category>.csv` file.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryLabel {
    pub code: u32,
    pub number: u32,
    pub name: String,
    pub frequency: u64,
    pub coverage: f64,
}

/// One entry of a category cell in `index.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelEntry {
    /// An image-level label (scene, texture): it covers every pixel.
    Image(u32),
    /// A segmentation PNG, relative to `images/`, label = `R + 256 * G`.
    Pixel(String),
}

/// One image (`index.csv` row).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// Row number in `index.csv` (1 = the first data row), for messages.
    pub row: usize,
    /// Image path relative to `images/`.
    pub image: String,
    pub split: String,
    pub ih: u32,
    pub iw: u32,
    pub sh: u32,
    pub sw: u32,
    /// One list per entry of [`Dataset::categories`], in that order (the
    /// `index.csv` columns may come in any order; they are matched by name).
    pub labels: Vec<Vec<LabelEntry>>,
}

/// What part of a dataset to load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetOptions {
    /// Keep only rows whose `split` equals this (e.g. `train`, `val`).
    pub split: Option<String>,
    /// Keep only these categories (by name); `None` keeps all. An unknown
    /// name is an error.
    pub categories: Option<Vec<String>>,
    /// Keep at most this many images (the first ones, in `index.csv` order,
    /// after split filtering).
    pub max_images: Option<usize>,
}

/// A validated Broden dataset: CSV metadata in memory, pixels on disk.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The dataset folder (the one holding `index.csv`).
    pub root: PathBuf,
    /// Every category of `category.csv`, in file order. Category indices
    /// everywhere in this crate index this list.
    pub categories: Vec<Category>,
    /// Indices into `categories` of the categories selected by
    /// [`DatasetOptions::categories`] (all of them by default), ascending.
    pub selected: Vec<usize>,
    /// Indexed by label number: `labels[n].number == n`; `labels[0]` is the
    /// unlabelled entry.
    pub labels: Vec<Label>,
    /// `c_<category>.csv` rows, one list per entry of `categories`.
    pub category_labels: Vec<Vec<CategoryLabel>>,
    /// The images kept, in `index.csv` order. Cells of categories that are
    /// not selected are empty.
    pub images: Vec<ImageRecord>,
}

/// The label numbers a mask pixel or an image-level cell may hold: those
/// `label.csv` lists, and 0 (unlabelled).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KnownLabels {
    max: u32,
    /// Numbers up to `max` that `label.csv` skips, ascending.
    unlisted: Vec<u32>,
}

impl KnownLabels {
    pub fn of(labels: &[Label]) -> Self {
        Self {
            max: labels.len().saturating_sub(1) as u32,
            unlisted: labels
                .iter()
                .filter(|l| !l.listed)
                .map(|l| l.number)
                .collect(),
        }
    }

    /// The largest label number.
    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn contains(&self, n: u32) -> bool {
        n <= self.max && (self.unlisted.is_empty() || self.unlisted.binary_search(&n).is_err())
    }
}
