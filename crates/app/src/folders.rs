//! Operations on folders already written: the report regenerated from a
//! results folder, runs compared, and a dataset checked by decoding it.

use std::path::{Path, PathBuf};

use broden::{BatchOptions, Dataset, DatasetOptions, Preprocess};

use crate::error::{Error, Kind, Result};

/// Reads the results in `results_dir` and writes `report.html` and its
/// strips beside them, without the network or a GPU; returns the page.
pub fn regenerate_report(results_dir: &Path) -> Result<PathBuf> {
    let (dissection, top_maps) = report::output::read_results(results_dir).map_err(|e| {
        let shown = format!("reading the results in {}", results_dir.display());
        Error::context(Kind::Input, shown, e)
    })?;
    report::html::write_report(results_dir, &dissection, &top_maps).map_err(|e| {
        let shown = format!("writing the report into {}", results_dir.display());
        Error::context(Kind::Run, shown, e)
    })
}

/// A comparison of run folders.
#[derive(Debug, Clone)]
pub struct CompareJob {
    pub runs: Vec<PathBuf>,
    /// At most one per run; the rest are named by their folders.
    pub labels: Vec<String>,
    /// The runs are steps of one training, in the order given.
    pub ordered: bool,
    pub out: PathBuf,
}

/// Writes the comparison page of `job.runs`; returns the files written.
pub fn compare(job: &CompareJob) -> Result<Vec<PathBuf>> {
    if job.labels.len() > job.runs.len() {
        return Err(Error::usage(format!(
            "{} --label values for {} runs: give at most one per run",
            job.labels.len(),
            job.runs.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) =
        (job.runs.iter()).find(|r| !seen.insert(r.canonicalize().unwrap_or((*r).clone())))
    {
        return Err(Error::new(
            Kind::Input,
            format!("{} is given twice", dup.display()),
        ));
    }
    let comparison = report::compare::Comparison::load(&job.runs, &job.labels, job.ordered)
        .map_err(|e| Error::context(Kind::Input, "reading the runs to compare", e))?;
    comparison.write(&job.out).map_err(Error::output)
}

/// What decoding a dataset found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub images: usize,
    pub masks: usize,
}

/// Decodes every image and mask of `ds` as a dissection would, at each
/// image's own size, so that what `dissect` rejects is rejected here too.
pub fn decode_all(ds: &Dataset) -> Result<Decoded> {
    let (h, w) = ds.images.first().map_or((1, 1), |r| (r.ih, r.iw));
    let opts = BatchOptions {
        batch_size: 32,
        preprocess: Preprocess {
            height: h,
            width: w,
            ..Preprocess::torchvision(h)
        },
        prefetch: 2,
        labels_only: false,
    };
    let mut found = Decoded {
        images: 0,
        masks: 0,
    };
    for batch in ds.batches(&opts) {
        let batch = batch.map_err(Error::input)?;
        found.images += batch.indices.len();
        found.masks += batch.labels.iter().map(|l| l.planes.len()).sum::<usize>();
    }
    Ok(found)
}

/// The whole dataset in `dir`.
pub fn open_dataset(dir: &Path) -> Result<Dataset> {
    Dataset::open(dir, &DatasetOptions::default()).map_err(Error::input)
}
