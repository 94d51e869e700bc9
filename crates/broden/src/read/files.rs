//! The file-system checks of a dataset: every file `index.csv` names
//! exists, is a file and, symlinks resolved, stays inside the dataset.

use std::path::Path;

use rayon::prelude::*;

use crate::{BrodenError, ImageRecord, LabelEntry};

/// Checks every image and segmentation file that `images` (rows of the
/// `index` file) name. Canonicalizing is a few syscalls per file, so the
/// dataset's many files are spread over threads; the first failing row (in
/// file order) is reported.
pub(super) fn check_references(
    root: &Path,
    index: &Path,
    images: &[ImageRecord],
) -> Result<(), BrodenError> {
    let canonical_root = std::fs::canonicalize(root).map_err(|source| BrodenError::Io {
        path: root.to_owned(),
        source,
    })?;
    images
        .par_iter()
        .try_for_each(|rec| resolve_record(root, &canonical_root, index, rec))
        .or_else(|e| {
            first_missing(root, &canonical_root, index, images)?;
            Err(e)
        })
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
        resolve_record(root, canonical_root, index, rec)?;
    }
    // The parallel pass failed, so this one does too unless the folder
    // changed in between; the caller then reports the parallel pass's error.
    Ok(())
}

/// Checks the image of `rec` and then its segmentation files, in order.
fn resolve_record(
    root: &Path,
    canonical_root: &Path,
    index: &Path,
    rec: &ImageRecord,
) -> Result<(), BrodenError> {
    resolve_inside(root, canonical_root, index, rec.row, &rec.image)?;
    for entry in rec.labels.iter().flatten() {
        if let LabelEntry::Pixel(p) = entry {
            resolve_inside(root, canonical_root, index, rec.row, p)?;
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
