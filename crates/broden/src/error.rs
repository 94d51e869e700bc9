//! Errors of the Broden reader, loader, writer and generator. Every variant
//! names the file (and the row, where there is one) and the problem.
//!
//! Rows count data rows from 1 (the first line after the header); row 0 is
//! the header line.

use std::path::PathBuf;

/// Everything that can go wrong reading, validating, decoding or writing a
/// Broden dataset.
#[derive(Debug, thiserror::Error)]
pub enum BrodenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset file (`index.csv`, `category.csv`, `label.csv`,
    /// `c_<category>.csv`) does not exist.
    #[error("{path}: required file is missing")]
    MissingFile { path: PathBuf },
    /// An image or segmentation PNG listed in `index.csv` does not exist.
    #[error("{index}, row {row}: referenced file {path} is missing")]
    MissingReference {
        index: PathBuf,
        row: usize,
        path: PathBuf,
    },
    /// A CSV problem without a more specific variant (syntax, encoding,
    /// duplicates, bad cell structure).
    #[error("{path}, row {row}: {message}")]
    Csv {
        path: PathBuf,
        row: usize,
        message: String,
    },
    /// A required header column is absent.
    #[error("{path}: header lacks column {column:?}")]
    MissingColumn { path: PathBuf, column: String },
    /// A row has a different number of fields than the header.
    #[error("{path}, row {row}: {found} fields, the header has {expected}")]
    ColumnCount {
        path: PathBuf,
        row: usize,
        expected: usize,
        found: usize,
    },
    /// A numeric field does not parse (or is out of its valid range).
    #[error("{path}, row {row}, column {column}: {value:?} is not {expected}")]
    BadNumber {
        path: PathBuf,
        row: usize,
        column: String,
        value: String,
        expected: &'static str,
    },
    /// A category name (an `index.csv` column or a `label.csv` category
    /// cell) that `category.csv` does not list.
    #[error("{path}, row {row}: unknown category {name:?} (known: {known})")]
    UnknownCategory {
        path: PathBuf,
        row: usize,
        name: String,
        known: String,
    },
    /// [`crate::DatasetOptions::categories`] names a category the dataset lacks.
    #[error("unknown category {name:?} requested (known: {known})")]
    UnknownCategoryFilter { name: String, known: String },
    /// A label number in a CSV file beyond the largest number of `label.csv`.
    #[error("{path}, row {row}: label {label} is out of range (largest label is {max})")]
    LabelOutOfRange {
        path: PathBuf,
        row: usize,
        label: u64,
        max: u32,
    },
    /// An image-level label that `label.csv` does not list.
    #[error("{path}, row {row}: label {label} is not in label.csv")]
    UnlistedLabel {
        path: PathBuf,
        row: usize,
        label: u32,
    },
    /// A segmentation PNG pixel whose label `label.csv` does not list.
    #[error(
        "{path} (index.csv row {row}): pixel ({x}, {y}) has label {label}, which label.csv does not list"
    )]
    UnlistedPixelLabel {
        path: PathBuf,
        row: usize,
        x: u32,
        y: u32,
        label: u32,
    },
    /// A segmentation PNG pixel whose label is beyond the largest label.
    #[error(
        "{path} (index.csv row {row}): pixel ({x}, {y}) has label {label}, largest label is {max}"
    )]
    PixelLabelOutOfRange {
        path: PathBuf,
        row: usize,
        x: u32,
        y: u32,
        label: u32,
        max: u32,
    },
    /// An image whose size is not the row's `ih, iw`.
    #[error(
        "{path} (index.csv row {row}): image is {found_width}x{found_height}, index.csv says iw={width} ih={height}"
    )]
    ImageSizeMismatch {
        path: PathBuf,
        row: usize,
        width: u32,
        height: u32,
        found_width: u32,
        found_height: u32,
    },
    /// A segmentation PNG whose size is not the row's `sh, sw`.
    #[error(
        "{path} (index.csv row {row}): image is {found_width}x{found_height}, index.csv says sw={width} sh={height}"
    )]
    SizeMismatch {
        path: PathBuf,
        row: usize,
        width: u32,
        height: u32,
        found_width: u32,
        found_height: u32,
    },
    /// An image or PNG that cannot be decoded (or has an unusable format).
    #[error("{path}: cannot decode image: {message}")]
    Image { path: PathBuf, message: String },
    /// An `index.csv` entry that would leave the dataset folder.
    #[error("{index}, row {row}: path {entry:?} leaves the dataset folder ({reason})")]
    UnsafePath {
        index: PathBuf,
        row: usize,
        entry: String,
        reason: &'static str,
    },
    /// No image is left after filtering.
    #[error("{path}: no images left ({reason})")]
    EmptyDataset { path: PathBuf, reason: String },
    /// Options that cannot work, e.g. a zero input size.
    #[error("invalid options: {message}")]
    InvalidOptions { message: String },
    /// The batch producer thread died without reporting an error (a bug).
    #[error("batch producer thread panicked")]
    LoaderPanicked,
}

impl BrodenError {
    /// Whether the file system failed (a full disk, a folder that cannot be
    /// written), rather than the data or the options being wrong.
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}
