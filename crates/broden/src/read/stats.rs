//! Statistics of an opened dataset: label counts from the decoded
//! segmentations, their disagreements with the CSV files, and the summary
//! `netdissect info` shows.

use std::fmt;
use std::path::PathBuf;

use crate::{BatchOptions, BrodenError, Dataset, Preprocess};

impl Dataset {
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
