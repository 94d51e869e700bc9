//! Writing Broden datasets: images, segmentation PNGs and the CSV files, in
//! the layout and encodings of the original NetDissect release, so that both
//! our reader and NetDissect-Lite's `SegmentationData` can load the result.
//!
//! Label statistics (`frequency`, `coverage`, the `category` cell of
//! `label.csv`, `category.csv`) are computed here from the label data given,
//! the way NetDissect's `joinseg.py` computes them, so they cannot disagree
//! with the pixels. Every file is written to a temporary name and renamed,
//! and `index.csv` comes last: a folder with an `index.csv` is complete.
//!
//! Use: [`Writer::create`], then for each image [`Writer::write_image`]
//! (thread-safe, `&self`, encodes and writes the image's files) and
//! [`Writer::push`] in index order, or [`Writer::add`] for both; finally
//! [`Writer::finish`].

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use image::ImageEncoder as _;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

use crate::BrodenError;

/// The non-category columns of `index.csv`, in the original order.
const INDEX_META: [&str; 6] = ["image", "split", "ih", "iw", "sh", "sw"];

/// The largest label number a segmentation PNG can hold (`R + 256 * G`).
const MAX_LABEL: usize = 65535;

/// JPEG quality for `.jpg` images (PNG images are lossless).
const JPEG_QUALITY: u8 = 90;

/// One label to declare in `label.csv`. Labels are numbered from 1 in the
/// order given to [`Writer::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSpec {
    pub name: String,
    /// Index into the writer's categories of the category that lists the
    /// label when it occurs nowhere. NetDissect-Lite's loader fails on an
    /// empty `category` cell and on an empty `c_*.csv`, so an absent label
    /// still gets a row (frequency 0) in this category's `c_*.csv`.
    pub category: usize,
    /// Synonyms, written `;`-separated in the `syns` column.
    pub syns: Vec<String>,
}

/// One pixel-level label map of an image, at the image's segmentation size.
#[derive(Debug, Clone, Copy)]
pub struct PlaneData<'a> {
    /// Index into the writer's categories.
    pub category: usize,
    /// Global label numbers, row-major, `seg_height * seg_width`; 0 means
    /// unlabelled.
    pub labels: &'a [u32],
}

/// One image to write.
#[derive(Debug, Clone)]
pub struct ImageData<'a> {
    /// Path relative to `images/`, ending in `.png` (lossless) or `.jpg`;
    /// segmentation PNGs are written beside it as `<stem>_<category>.png`
    /// (`<stem>_<category>_<k>.png`, k from 1, when a category has several
    /// planes), as NetDissect's `save_segmentation` names them.
    pub path: &'a str,
    pub split: &'a str,
    pub width: u32,
    pub height: u32,
    /// 8-bit RGB, row-major, `height * width * 3`.
    pub rgb: &'a [u8],
    pub seg_width: u32,
    pub seg_height: u32,
    /// Listed in the category's `index.csv` cell in this order.
    pub planes: Vec<PlaneData<'a>>,
    /// Image-level labels `(category index, label number)`; they cover
    /// every pixel.
    pub image_labels: Vec<(usize, u32)>,
}

/// An image whose files are on disk, waiting to be recorded in `index.csv`
/// by [`Writer::push`].
#[derive(Debug, Clone)]
pub struct WrittenImage {
    path: String,
    stem: String,
    row: Vec<String>,
    /// `(category, label, labelled pixels)` for every label present, where
    /// an image-level label counts as every pixel.
    pixels: Vec<(usize, u32, u64)>,
    area: u64,
}

/// Label statistics of a written dataset, indexed `[category][label number]`
/// (label 0 included, always zero): the same quantities as
/// [`crate::read::LabelCounts`].
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    pub images: usize,
    /// Images in which the label occurs in the category.
    pub frequency: Vec<Vec<u64>>,
    /// Pixel coverage in units of whole images.
    pub coverage: Vec<Vec<f64>>,
}

/// The label data of one image as written, per category.
struct Segmentations {
    /// The entries of the category's `index.csv` cell: segmentation file
    /// names, then image-level label numbers.
    cells: Vec<Vec<String>>,
    /// Pixels per label number, an image-level label counting every pixel.
    counts: Vec<Vec<u64>>,
}

/// Writes one Broden dataset folder; see the module documentation.
#[derive(Debug)]
pub struct Writer {
    root: PathBuf,
    categories: Vec<String>,
    labels: Vec<LabelSpec>,
    rows: Vec<Vec<String>>,
    stems: BTreeSet<String>,
    frequency: Vec<Vec<u64>>,
    coverage: Vec<Vec<f64>>,
}

fn invalid(message: impl Into<String>) -> BrodenError {
    BrodenError::InvalidOptions {
        message: message.into(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BrodenError + '_ {
    move |source| BrodenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks that a dataset can be written to `root`: it must not exist or be
/// an empty folder (stale files of an earlier dataset would mix with a new
/// one). Returns whether it exists.
pub(crate) fn check_free(root: &Path) -> Result<bool, BrodenError> {
    match std::fs::read_dir(root) {
        Ok(mut entries) => match entries.next() {
            None => Ok(true),
            Some(_) => Err(invalid(format!(
                "output folder {} is not empty",
                root.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(BrodenError::Io {
            path: root.to_owned(),
            source,
        }),
    }
}

/// Writes `bytes` to a temporary file beside `path`, synced, then renames
/// it, so that a reader never sees a half-written file; the folders are
/// synced once by [`Writer::finish`].
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BrodenError> {
    let dir = store::parent_of(path);
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    // The files of a dataset are committed whole, by the rename of their
    // staging folder, which `synth::staged` syncs first.
    store::write_staged(path, bytes).map_err(io_error(path))
}

fn encode_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, BrodenError> {
    let mut out = Vec::new();
    // Fast compression and a fixed filter: encoding is deterministic for a
    // given `image` version, and cheap enough for thousands of files.
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Sub)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| BrodenError::Image {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    Ok(out)
}

fn encode_jpeg(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, BrodenError> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| BrodenError::Image {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    Ok(out)
}

/// Encodes label numbers as RGB with `R = label % 256`, `G = label / 256`,
/// `B = 0`, the Broden segmentation encoding.
fn encode_labels(labels: &[u32]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(labels.len() * 3);
    for &l in labels {
        rgb.extend_from_slice(&[(l % 256) as u8, (l / 256) as u8, 0]);
    }
    rgb
}

/// `path` without its extension, or an error naming what is wrong with it.
fn image_stem(path: &str) -> Result<&str, BrodenError> {
    let bad = |reason: &str| invalid(format!("image path {path:?} {reason}"));
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    // `;` separates entries of an index.csv cell; a digits-only entry would
    // read back as an image-level label.
    if path.contains(';') || path.contains('\\') {
        return Err(bad("contains ';' or '\\'"));
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            _ => return Err(bad("is not a plain relative path")),
        }
    }
    let lower = path.to_ascii_lowercase();
    let Some(dot) = path.rfind('.') else {
        return Err(bad("has no extension"));
    };
    if !(lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg")) {
        return Err(bad("does not end in .png, .jpg or .jpeg"));
    }
    Ok(&path[..dot])
}

/// The name part of a label or category name must survive a CSV cell and,
/// for categories, the `name(count)` syntax and a file name.
fn check_category_name(name: &str) -> Result<(), BrodenError> {
    if name.is_empty()
        || INDEX_META.contains(&name)
        || name
            .chars()
            .any(|c| matches!(c, '(' | ')' | ';' | ',' | '"' | '/' | '\\') || c.is_whitespace())
    {
        return Err(invalid(format!(
            "category name {name:?} is empty, a reserved column or has a character from ()\";,/\\ or whitespace"
        )));
    }
    Ok(())
}

impl Writer {
    /// Starts a dataset in `root`, which must not exist or be an empty
    /// folder (stale files of an earlier dataset would mix with this one).
    /// `categories` are the `index.csv` category columns, in order; label
    /// `k` of `labels` gets number `k + 1`.
    pub fn create(
        root: &Path,
        categories: Vec<String>,
        labels: Vec<LabelSpec>,
    ) -> Result<Self, BrodenError> {
        for (i, c) in categories.iter().enumerate() {
            check_category_name(c)?;
            if categories[..i].contains(c) {
                return Err(invalid(format!("duplicate category {c:?}")));
            }
        }
        if labels.len() > MAX_LABEL {
            return Err(invalid(format!(
                "{} labels, a segmentation png holds at most {MAX_LABEL}",
                labels.len()
            )));
        }
        for (i, l) in labels.iter().enumerate() {
            if l.name.is_empty() {
                return Err(invalid(format!("label {} has an empty name", i + 1)));
            }
            if l.category >= categories.len() {
                return Err(invalid(format!(
                    "label {:?} has category index {}, there are {} categories",
                    l.name,
                    l.category,
                    categories.len()
                )));
            }
            if let Some(s) = l.syns.iter().find(|s| s.is_empty() || s.contains(';')) {
                return Err(invalid(format!(
                    "label {:?} has synonym {s:?}: empty or containing ';'",
                    l.name
                )));
            }
        }
        if !check_free(root)? {
            std::fs::create_dir_all(root).map_err(io_error(root))?;
        }
        let n_numbers = labels.len() + 1;
        Ok(Self {
            root: root.to_owned(),
            frequency: vec![vec![0; n_numbers]; categories.len()],
            coverage: vec![vec![0.0; n_numbers]; categories.len()],
            categories,
            labels,
            rows: Vec::new(),
            stems: BTreeSet::new(),
        })
    }

    /// The dataset folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks `image`, encodes and writes its image and segmentation files,
    /// and returns its `index.csv` row and statistics for [`Writer::push`].
    /// Safe to call from several threads at once for different images.
    pub fn write_image(&self, image: &ImageData<'_>) -> Result<WrittenImage, BrodenError> {
        let stem = image_stem(image.path)?;
        check_sizes(image)?;
        let per_category = self.check_labels(image)?;
        let Segmentations { cells, counts } =
            self.write_segmentations(image, stem, &per_category)?;
        let path = self.root.join("images").join(image.path);
        let lower = image.path.to_ascii_lowercase();
        let bytes = if lower.ends_with(".png") {
            encode_png(&path, image.rgb, image.width, image.height)?
        } else {
            encode_jpeg(&path, image.rgb, image.width, image.height)?
        };
        write_atomic(&path, &bytes)?;

        let mut row = vec![
            image.path.to_owned(),
            image.split.to_owned(),
            image.height.to_string(),
            image.width.to_string(),
            image.seg_height.to_string(),
            image.seg_width.to_string(),
        ];
        row.extend(cells.into_iter().map(|c| c.join(";")));
        let mut pixels = Vec::new();
        for (c, per_label) in counts.iter().enumerate() {
            for (l, &n) in per_label.iter().enumerate().skip(1) {
                if n > 0 {
                    pixels.push((c, l as u32, n));
                }
            }
        }
        Ok(WrittenImage {
            path: image.path.to_owned(),
            stem: stem.to_owned(),
            row,
            pixels,
            area: seg_area(image),
        })
    }

    /// Checks that every plane and image-level label of `image` names a
    /// category of this writer and holds labels it declares, and that every
    /// plane has the segmentation's size; returns the number of planes per
    /// category.
    fn check_labels(&self, image: &ImageData<'_>) -> Result<Vec<usize>, BrodenError> {
        let max = self.labels.len() as u32;
        let (sw, sh) = (image.seg_width, image.seg_height);
        let n_cat = self.categories.len();
        let check_category = |c: usize| {
            if c < n_cat {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{}: category index {c}, there are {n_cat} categories",
                    image.path
                )))
            }
        };
        let mut per_category = vec![0usize; n_cat];
        for p in &image.planes {
            check_category(p.category)?;
            per_category[p.category] += 1;
            if p.labels.len() as u64 != seg_area(image) {
                return Err(invalid(format!(
                    "{}: {} plane has {} labels, segmentation is {sw}x{sh}",
                    image.path,
                    self.categories[p.category],
                    p.labels.len()
                )));
            }
            if let Some(&l) = p.labels.iter().find(|&&l| l > max) {
                return Err(invalid(format!(
                    "{}: {} plane has label {l}, largest label is {max}",
                    image.path, self.categories[p.category]
                )));
            }
        }
        for &(c, l) in &image.image_labels {
            check_category(c)?;
            if l == 0 || l > max {
                return Err(invalid(format!(
                    "{}: image-level label {l} is not in 1..={max}",
                    image.path
                )));
            }
        }
        Ok(per_category)
    }

    /// Writes the segmentation PNGs of `image` beside it (`per_category`
    /// planes in each category) and returns what they add to the image's
    /// row and statistics.
    fn write_segmentations(
        &self,
        image: &ImageData<'_>,
        stem: &str,
        per_category: &[usize],
    ) -> Result<Segmentations, BrodenError> {
        let n_cat = self.categories.len();
        // Pixel counts per (category, label), image-level labels counting
        // every pixel; a label in several planes of a category adds up, as
        // in joinseg.py's bincount over all layers.
        let mut counts = vec![vec![0u64; self.labels.len() + 1]; n_cat];
        let mut cells = vec![Vec::<String>::new(); n_cat];
        let mut seen = vec![0usize; n_cat];
        for p in &image.planes {
            seen[p.category] += 1;
            let name = &self.categories[p.category];
            let file = if per_category[p.category] == 1 {
                format!("{stem}_{name}.png")
            } else {
                format!("{stem}_{name}_{}.png", seen[p.category])
            };
            let path = self.root.join("images").join(&file);
            let rgb = encode_labels(p.labels);
            let png = encode_png(&path, &rgb, image.seg_width, image.seg_height)?;
            write_atomic(&path, &png)?;
            cells[p.category].push(file);
            for &l in p.labels {
                counts[p.category][l as usize] += 1;
            }
        }
        for &(c, l) in &image.image_labels {
            cells[c].push(l.to_string());
            counts[c][l as usize] += seg_area(image);
        }
        Ok(Segmentations { cells, counts })
    }

    /// Records a written image as the next `index.csv` row and adds its
    /// statistics. Images must be pushed in the order they should be listed.
    pub fn push(&mut self, written: WrittenImage) -> Result<(), BrodenError> {
        if !self.stems.insert(written.stem.clone()) {
            return Err(invalid(format!(
                "{}: another image has the same path without extension, their segmentation files would collide",
                written.path
            )));
        }
        // The same arithmetic, in the same order, as the reader's
        // `label_counts`, so a round trip reproduces the values exactly.
        for &(c, l, n) in &written.pixels {
            self.frequency[c][l as usize] += 1;
            self.coverage[c][l as usize] += n as f64 / written.area as f64;
        }
        self.rows.push(written.row);
        Ok(())
    }

    /// [`Writer::write_image`] then [`Writer::push`].
    pub fn add(&mut self, image: &ImageData<'_>) -> Result<(), BrodenError> {
        let written = self.write_image(image)?;
        self.push(written)
    }

    /// Writes the `c_*.csv` files, `label.csv`, `category.csv` and finally
    /// `index.csv`.
    pub fn finish(self) -> Result<WriteSummary, BrodenError> {
        if self.rows.is_empty() {
            return Err(invalid(format!(
                "{}: no images were added",
                self.root.display()
            )));
        }
        let listed = self.listed();
        let mut category_rows = vec![header(&["name", "first", "last", "count", "frequency"])];
        for (c, in_category) in listed.iter().enumerate() {
            category_rows.push(self.write_category(c, in_category)?);
        }
        write_csv(&self.root.join("label.csv"), &self.label_rows(&listed))?;
        write_csv(&self.root.join("category.csv"), &category_rows)?;

        let mut index_header: Vec<&str> = INDEX_META.to_vec();
        index_header.extend(self.categories.iter().map(String::as_str));
        let mut rows = vec![header(&index_header)];
        let images = self.rows.len();
        rows.extend(self.rows);
        write_csv(&self.root.join("index.csv"), &rows)?;
        // Each file was synced as it was written; the folders' entries are
        // synced once, here.
        store::sync_tree(&self.root).map_err(io_error(&self.root))?;
        Ok(WriteSummary {
            images,
            frequency: self.frequency,
            coverage: self.coverage,
        })
    }

    /// Which labels each category lists, `[category][label number]`: those
    /// that occur there, plus labels that occur nowhere, in their own
    /// category.
    fn listed(&self) -> Vec<Vec<bool>> {
        let n_numbers = self.labels.len() + 1;
        let absent: Vec<bool> = (0..n_numbers)
            .map(|l| self.frequency.iter().all(|f| f[l] == 0))
            .collect();
        (0..self.categories.len())
            .map(|c| {
                (0..n_numbers)
                    .map(|l| {
                        l > 0
                            && (self.frequency[c][l] > 0
                                || (absent[l] && self.labels[l - 1].category == c))
                    })
                    .collect()
            })
            .collect()
    }

    /// Writes `c_<name>.csv` of category `c`, which lists the labels marked
    /// in `listed`, and returns the category's `category.csv` row.
    fn write_category(&self, c: usize, listed: &[bool]) -> Result<Vec<String>, BrodenError> {
        let name = &self.categories[c];
        // Dense codes by descending frequency then coverage, as
        // joinseg.py assigns them; ties by number keep the order stable.
        let mut members: Vec<usize> = (1..listed.len()).filter(|&l| listed[l]).collect();
        members.sort_by(|&a, &b| {
            self.frequency[c][b]
                .cmp(&self.frequency[c][a])
                .then(self.coverage[c][b].total_cmp(&self.coverage[c][a]))
                .then(a.cmp(&b))
        });
        let mut rows = vec![header(&["code", "number", "name", "frequency", "coverage"])];
        for (code, &l) in members.iter().enumerate() {
            rows.push(vec![
                (code + 1).to_string(),
                l.to_string(),
                self.labels[l - 1].name.clone(),
                self.frequency[c][l].to_string(),
                // Shortest round-trip form: exact, never in exponent
                // notation (NetDissect-Lite would read that as text).
                format!("{}", self.coverage[c][l]),
            ]);
        }
        write_csv(&self.root.join(format!("c_{name}.csv")), &rows)?;
        Ok(vec![
            name.clone(),
            members.iter().min().map_or(0, |&l| l).to_string(),
            members.iter().max().map_or(0, |&l| l).to_string(),
            members.len().to_string(),
            // joinseg.py sums the per-label image counts of the category.
            members
                .iter()
                .map(|&l| self.frequency[c][l])
                .sum::<u64>()
                .to_string(),
        ])
    }

    /// The rows of `label.csv`, header first; `listed` is [`Writer::listed`].
    fn label_rows(&self, listed: &[Vec<bool>]) -> Vec<Vec<String>> {
        let mut rows = vec![header(&crate::read::LABEL_COLUMNS)];
        for (i, spec) in self.labels.iter().enumerate() {
            let l = i + 1;
            // Categories by descending count (ties in category order).
            let mut cats: Vec<usize> = (0..self.categories.len())
                .filter(|&c| listed[c][l])
                .collect();
            cats.sort_by(|&a, &b| self.frequency[b][l].cmp(&self.frequency[a][l]));
            let cell = cats
                .iter()
                .map(|&c| format!("{}({})", self.categories[c], self.frequency[c][l]))
                .collect::<Vec<_>>()
                .join(";");
            let frequency: u64 = self.frequency.iter().map(|f| f[l]).sum();
            let coverage: f64 = self.coverage.iter().map(|c| c[l]).sum();
            rows.push(vec![
                l.to_string(),
                spec.name.clone(),
                cell,
                frequency.to_string(),
                // joinseg.py writes `'%f' % coverage`.
                format!("{coverage:.6}"),
                spec.syns.join(";"),
            ]);
        }
        rows
    }
}

/// Rejects an image or segmentation of zero size, RGB data of the wrong
/// length for the image's size, and an empty split.
fn check_sizes(image: &ImageData<'_>) -> Result<(), BrodenError> {
    let (w, h, sw, sh) = (image.width, image.height, image.seg_width, image.seg_height);
    if w == 0 || h == 0 || sw == 0 || sh == 0 {
        return Err(invalid(format!(
            "{}: image {w}x{h}, segmentation {sw}x{sh}: sizes must be positive",
            image.path
        )));
    }
    if image.rgb.len() as u64 != u64::from(w) * u64::from(h) * 3 {
        return Err(invalid(format!(
            "{}: {} rgb bytes for a {w}x{h} image",
            image.path,
            image.rgb.len()
        )));
    }
    if image.split.is_empty() {
        return Err(invalid(format!("{}: empty split", image.path)));
    }
    Ok(())
}

/// The number of segmentation pixels of `image`.
fn seg_area(image: &ImageData<'_>) -> u64 {
    u64::from(image.seg_width) * u64::from(image.seg_height)
}

/// A CSV header row of `names`.
fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|&s| s.to_owned()).collect()
}

/// Writes `rows` as a CSV file at `path`, atomically.
fn write_csv(path: &Path, rows: &[Vec<String>]) -> Result<(), BrodenError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    for r in rows {
        w.write_record(r).map_err(|e| BrodenError::Csv {
            path: path.to_owned(),
            row: 0,
            message: e.to_string(),
        })?;
    }
    let bytes = w.into_inner().map_err(|e| BrodenError::Io {
        path: path.to_owned(),
        source: e.into_error(),
    })?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<LabelSpec> {
        let l = |name: &str, category| LabelSpec {
            name: name.to_owned(),
            category,
            syns: Vec::new(),
        };
        vec![l("red-c", 0), l("disc", 1), l("never", 1), l("park-s", 2)]
    }

    fn categories() -> Vec<String> {
        ["color", "object", "scene"].map(str::to_owned).to_vec()
    }

    fn read(root: &Path, name: &str) -> String {
        std::fs::read_to_string(root.join(name)).unwrap()
    }

    /// A 2-image dataset whose CSV files are checked line by line against
    /// the values worked out by hand from joinseg.py's rules.
    #[test]
    fn writes_broden_csv_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        let mut w = Writer::create(&root, categories(), labels()).unwrap();
        let rgb = vec![7u8; 4 * 4 * 3];
        // Image 1: color all red (4 of 4), object disc on 1 of 4, scene 4.
        // Image 2: object disc in two planes (2 + 1 of 4), no color.
        let red = [1u32; 4];
        let disc = [2u32, 0, 0, 0];
        let disc2 = [2u32, 2, 0, 0];
        w.add(&ImageData {
            path: "a/1.png",
            split: "train",
            width: 4,
            height: 4,
            rgb: &rgb,
            seg_width: 2,
            seg_height: 2,
            planes: vec![
                PlaneData {
                    category: 0,
                    labels: &red,
                },
                PlaneData {
                    category: 1,
                    labels: &disc,
                },
            ],
            image_labels: vec![(2, 4)],
        })
        .unwrap();
        w.add(&ImageData {
            path: "a/2.jpg",
            split: "val",
            width: 4,
            height: 4,
            rgb: &rgb,
            seg_width: 2,
            seg_height: 2,
            planes: vec![
                PlaneData {
                    category: 1,
                    labels: &disc2,
                },
                PlaneData {
                    category: 1,
                    labels: &disc,
                },
            ],
            image_labels: vec![],
        })
        .unwrap();
        let summary = w.finish().unwrap();
        assert_eq!(summary.images, 2);
        assert_eq!(summary.frequency[1][2], 2);
        assert_eq!(summary.coverage[1][2], 0.25 + 0.75);

        assert_eq!(
            read(&root, "index.csv"),
            "image,split,ih,iw,sh,sw,color,object,scene\n\
             a/1.png,train,4,4,2,2,a/1_color.png,a/1_object.png,4\n\
             a/2.jpg,val,4,4,2,2,,a/2_object_1.png;a/2_object_2.png,\n"
        );
        assert_eq!(
            read(&root, "label.csv"),
            "number,name,category,frequency,coverage,syns\n\
             1,red-c,color(1),1,1.000000,\n\
             2,disc,object(2),2,1.000000,\n\
             3,never,object(0),0,0.000000,\n\
             4,park-s,scene(1),1,1.000000,\n"
        );
        assert_eq!(
            read(&root, "category.csv"),
            "name,first,last,count,frequency\n\
             color,1,1,1,1\n\
             object,2,3,2,2\n\
             scene,4,4,1,1\n"
        );
        assert_eq!(
            read(&root, "c_object.csv"),
            "code,number,name,frequency,coverage\n1,2,disc,2,1\n2,3,never,0,0\n"
        );
        // Segmentation encoding: label = R + 256 * G, B = 0.
        let seg = image::open(root.join("images/a/1_object.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(seg.dimensions(), (2, 2));
        assert_eq!(seg.as_raw(), &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(root.join("images/a/2.jpg").is_file());
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(root.join("images/a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn labels_above_255_use_the_green_channel() {
        let dir = tempfile::tempdir().unwrap();
        let specs = (0..300)
            .map(|i| LabelSpec {
                name: format!("l{i}"),
                category: 0,
                syns: vec![],
            })
            .collect();
        let mut w = Writer::create(dir.path(), vec!["object".into()], specs).unwrap();
        let labels = [300u32, 256, 255, 0];
        w.add(&ImageData {
            path: "x.png",
            split: "train",
            width: 2,
            height: 2,
            rgb: &[0; 12],
            seg_width: 2,
            seg_height: 2,
            planes: vec![PlaneData {
                category: 0,
                labels: &labels,
            }],
            image_labels: vec![],
        })
        .unwrap();
        w.finish().unwrap();
        let seg = image::open(dir.path().join("images/x_object.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(seg.as_raw(), &[44, 1, 0, 0, 1, 0, 255, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stale"), b"x").unwrap();
        let err = Writer::create(dir.path(), categories(), labels()).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");

        let root = dir.path().join("new");
        let w = Writer::create(&root, categories(), labels()).unwrap();
        let rgb = [0u8; 12];
        let ok = [1u32; 4];
        let too_big = [5u32; 4];
        let base = ImageData {
            path: "p.png",
            split: "train",
            width: 2,
            height: 2,
            rgb: &rgb,
            seg_width: 2,
            seg_height: 2,
            planes: vec![],
            image_labels: vec![],
        };
        let cases: Vec<(ImageData<'_>, &str)> = vec![
            (
                ImageData {
                    path: "../p.png",
                    ..base.clone()
                },
                "plain relative",
            ),
            (
                ImageData {
                    path: "p.gif",
                    ..base.clone()
                },
                "does not end",
            ),
            (
                ImageData {
                    path: "p;q.png",
                    ..base.clone()
                },
                "contains ';'",
            ),
            (
                ImageData {
                    rgb: &rgb[..11],
                    ..base.clone()
                },
                "11 rgb bytes",
            ),
            (
                ImageData {
                    planes: vec![PlaneData {
                        category: 0,
                        labels: &ok[..3],
                    }],
                    ..base.clone()
                },
                "has 3 labels",
            ),
            (
                ImageData {
                    planes: vec![PlaneData {
                        category: 0,
                        labels: &too_big,
                    }],
                    ..base.clone()
                },
                "label 5, largest label is 4",
            ),
            (
                ImageData {
                    image_labels: vec![(7, 1)],
                    ..base.clone()
                },
                "category index 7",
            ),
            (
                ImageData {
                    image_labels: vec![(2, 0)],
                    ..base.clone()
                },
                "image-level label 0",
            ),
        ];
        for (image, expected) in cases {
            let err = w.write_image(&image).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} / {expected}");
        }
        let mut w = w;
        w.add(&base).unwrap();
        let err = w
            .add(&ImageData {
                path: "p.jpg",
                ..base.clone()
            })
            .unwrap_err();
        assert!(err.to_string().contains("same path"), "{err}");

        let err = Writer::create(&dir.path().join("b"), vec!["a(b".into()], vec![]).unwrap_err();
        assert!(err.to_string().contains("category name"), "{err}");
        let w = Writer::create(&dir.path().join("c"), categories(), labels()).unwrap();
        let err = w.finish().unwrap_err();
        assert!(err.to_string().contains("no images"), "{err}");
    }
}
