//! Reading and validating a Broden dataset folder into a [`Dataset`], plus
//! label statistics and a summary computed from it.
//!
//! Everything that the CSV files and the file system can tell is checked at
//! [`Dataset::open`]; pixel contents (decodability, sizes, label ranges) are
//! checked when images are decoded, see [`crate::Dataset::batches`].
//!
//! The work is split by file: `table` reads any CSV file, `labels` the
//! category and label files, `consistency` checks that those agree with each
//! other, `index` the rows of `index.csv`, `files` checks the files those
//! rows name, and `stats` computes statistics of an opened dataset.

mod consistency;
mod files;
mod index;
mod labels;
mod stats;
mod table;

use std::path::Path;

use crate::{BrodenError, Dataset, DatasetOptions, KnownLabels};

pub(crate) use labels::LABEL_COLUMNS;
pub use stats::{CategorySummary, CountMismatch, DatasetSummary, LabelCounts};

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
        let categories = labels::read_categories(root)?;
        let selected = labels::select_categories(&categories, opts.categories.as_deref())?;
        let (labels, category_labels) = labels::read_label_tables(root, &categories, &selected)?;
        let known = KnownLabels::of(&labels);

        let t = table::Table::read(index_path)?;
        let images = index::read_images(&t, &categories, &selected, &known, opts)?;
        files::check_references(root, &t.path, &images)?;

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
}
