//! A CSV file read whole, with the typed cell accessors and error
//! constructors every Broden CSV file shares.

use std::path::{Path, PathBuf};

use crate::BrodenError;

/// A CSV file read whole: header names and rows of fields, each row checked
/// to have as many fields as the header.
pub(super) struct Table {
    pub(super) path: PathBuf,
    pub(super) header: Vec<String>,
    pub(super) rows: Vec<Vec<String>>,
}

impl Table {
    /// Reads `path`, which must exist, rejecting rows whose field count
    /// differs from the header's.
    pub(super) fn read(path: PathBuf) -> Result<Self, BrodenError> {
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
    pub(super) fn column(&self, name: &str) -> Result<usize, BrodenError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| BrodenError::MissingColumn {
                path: self.path.clone(),
                column: name.to_owned(),
            })
    }

    /// The cell at `row` (1-based), `col` parsed as `T`; `expected` names
    /// what it should have been in the error.
    pub(super) fn number<T: std::str::FromStr>(
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

    /// The cell at `row`, `col` as a finite float.
    pub(super) fn finite(&self, row: usize, col: usize) -> Result<f64, BrodenError> {
        let v: f64 = self.number(row, col, "a finite number")?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(self.bad_number(row, col, "a finite number"))
        }
    }

    /// The error for a cell that is not `expected`.
    pub(super) fn bad_number(&self, row: usize, col: usize, expected: &'static str) -> BrodenError {
        BrodenError::BadNumber {
            path: self.path.clone(),
            row,
            column: self.header[col].clone(),
            value: self.rows[row - 1][col].clone(),
            expected,
        }
    }

    /// A CSV error at `row` of this file (0 for the header).
    pub(super) fn error(&self, row: usize, message: impl Into<String>) -> BrodenError {
        BrodenError::Csv {
            path: self.path.clone(),
            row,
            message: message.into(),
        }
    }
}

/// The csv crate's error `e` at `row` of `path`, in our error type.
fn csv_error(path: &Path, row: usize, e: &csv::Error) -> BrodenError {
    BrodenError::Csv {
        path: path.to_owned(),
        row,
        message: e.to_string(),
    }
}
