//! SHA-256 digests that tell sharded runs apart: of everything a run's
//! shards must agree on, of the dataset a run selects, and of merged
//! thresholds.

use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

use broden::{Dataset, LabelEntry};
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::{MergedThresholds, io_error};
use crate::DissectError;
use crate::options::Options;

/// What the digest of a sharded run covers.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    pub model: &'a str,
    pub layers: &'a [String],
    pub options: &'a Options,
    /// Checkpoint files, hashed whole.
    pub weights: &'a [&'a Path],
    /// Recorded activation files, by name and size (they can be far larger
    /// than anything else).
    pub activations: &'a [&'a Path],
    pub dataset: &'a Dataset,
    pub shards: u32,
}

/// The format of the shard files, bumped when what they hold changes
/// within a tool version (`moments-1`: counts carry the significance
/// moments; `counts-u64-1`: counts in a binary file per layer).
const SHARD_FORMAT: &str = "counts-u64-1";

/// A hex SHA-256 of everything a sharded run's shards must agree on: the
/// tool's version and shard format, the network, the layers, the options, the checkpoint's
/// bytes, the recorded activations' names and sizes, the dataset (its
/// [`dataset_digest`]), and the number of shards.
pub fn digest(input: &DigestInput<'_>) -> Result<String, DissectError> {
    let mut h = Sha256::new();
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update((tag.len() as u64).to_le_bytes());
        h.update(tag.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("tool", env!("CARGO_PKG_VERSION").as_bytes());
    // The shard files' format within a version: shards and checkpoints
    // written before the significance moments are another run's.
    field("format", SHARD_FORMAT.as_bytes());
    field("model", input.model.as_bytes());
    field("layers", input.layers.join(",").as_bytes());
    let options = serde_json::to_vec(input.options)
        .map_err(|e| DissectError::Internal(format!("options as JSON: {e}")))?;
    field("options", &options);
    field("shards", &input.shards.to_le_bytes());
    field("dataset", dataset_digest(input.dataset)?.as_bytes());
    for path in input.weights {
        h.update(b"weights");
        hash_file(&mut h, path)?;
    }
    for path in input.activations {
        let len = std::fs::metadata(path)
            .map_err(|e| io_error(path, e))?
            .len();
        h.update(file_name(path).as_bytes());
        h.update(len.to_le_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// Feeds the bytes of the file at `path` to `h`, a megabyte at a time
/// (checkpoints can be far larger than memory allows to hold twice).
pub(super) fn hash_file(h: &mut Sha256, path: &Path) -> Result<(), DissectError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_error(path, e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// A hex SHA-256 of a dataset as a run selects it: its CSV files, the
/// selected image list, and every file a run reads of those images (each
/// image and the segmentation PNGs of the selected categories) by its path
/// under `images/`, its size and its modification time in nanoseconds.
///
/// The pixel files are stamped, not hashed whole: every shard digests the
/// whole run's dataset when it starts, and reading full Broden's 63,000
/// images and their segmentations each time would take minutes where a
/// `stat` per file takes seconds. Rewriting or touching a file
/// changes its modification time, so an image edited between the phases,
/// or before the final merge, is seen; an edit that keeps both the size
/// and the modification time (a clock set back, `touch -d` to the old
/// time) is not. A copy of the dataset must keep modification times
/// (`cp -p`, `rsync -t`) to be the same dataset.
pub fn dataset_digest(ds: &Dataset) -> Result<String, DissectError> {
    let mut h = Sha256::new();
    for r in &ds.images {
        h.update(r.image.as_bytes());
        h.update([0]);
    }
    hash_csv_files(&mut h, &ds.root)?;
    for stamps in pixel_file_stamps(ds)? {
        h.update(stamps);
    }
    Ok(hex(&h.finalize()))
}

/// Feeds the name and bytes of every CSV file in the dataset folder `root`
/// to `h`, by name.
fn hash_csv_files(h: &mut Sha256, root: &Path) -> Result<(), DissectError> {
    let mut csvs: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| io_error(root, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    csvs.sort();
    for path in csvs {
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        h.update(file_name(&path).as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(())
}

/// Per selected image of `ds`, in order, the [`stamp`]s of its image file
/// and its segmentation files, taken in parallel (a network file system
/// answers each `stat` slowly, but many at once).
fn pixel_file_stamps(ds: &Dataset) -> Result<Vec<Vec<u8>>, DissectError> {
    let images = ds.root.join("images");
    ds.images
        .par_iter()
        .map(|r| {
            let segmentations = (r.labels.iter().flatten()).filter_map(|entry| match entry {
                LabelEntry::Pixel(file) => Some(file),
                LabelEntry::Image(_) => None,
            });
            let mut stamps = Vec::new();
            for name in std::iter::once(&r.image).chain(segmentations) {
                stamp(&mut stamps, &images, name)?;
            }
            Ok(stamps)
        })
        .collect()
}

/// Appends to `out` the file `name` under `images`: its name, its size
/// and its modification time in nanoseconds since 1970 (negative before).
fn stamp(out: &mut Vec<u8>, images: &Path, name: &str) -> Result<(), DissectError> {
    let path = images.join(name);
    let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
    let modified = meta.modified().map_err(|e| io_error(&path, e))?;
    let nanos = match modified.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    };
    out.extend((name.len() as u64).to_le_bytes());
    out.extend(name.as_bytes());
    out.extend(meta.len().to_le_bytes());
    out.extend(nanos.to_le_bytes());
    Ok(())
}

impl MergedThresholds {
    /// A hash of the thresholds and top-k images, which every phase-2
    /// shard records so that the final merge can tell they agree.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.digest.as_bytes());
        for l in &self.layers {
            h.update(l.meta.name.as_bytes());
            for t in &l.thresholds {
                h.update(t.to_bits().to_le_bytes());
            }
            for list in &l.top_k {
                h.update((list.len() as u64).to_le_bytes());
                for (image, max) in list {
                    h.update(image.to_le_bytes());
                    h.update(max.to_bits().to_le_bytes());
                }
            }
        }
        hex(&h.finalize())
    }
}

/// The last component of `path`, or nothing.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `bytes` in lower-case hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The start of a digest, as messages show it.
pub(super) fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use broden::{Dataset, DatasetOptions};

    use super::dataset_digest;

    /// Sets the modification time of the file at `path` to `time`.
    fn set_mtime(path: &Path, time: SystemTime) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(time).unwrap();
    }

    #[test]
    fn the_dataset_digest_sees_images_and_segmentations_change() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("broden");
        let options = broden::synth::SynthOptions {
            images: 3,
            seed: 5,
            size: 16,
            swatch_percent: 10,
        };
        broden::synth::generate(&root, &options).unwrap();
        // Opened once: the digest looks at the files each time it is taken.
        let dataset = Dataset::open(&root, &DatasetOptions::default()).unwrap();
        let digest = || dataset_digest(&dataset);
        let image = root.join("images/synth/000002.png");
        let segmentation = root.join("images/synth/000003_color.png");
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        for path in [&image, &segmentation] {
            set_mtime(path, at);
        }
        let original = digest().unwrap();
        assert_eq!(
            digest().unwrap(),
            original,
            "the same files, the same digest"
        );
        // Touched: one nanosecond later.
        set_mtime(&image, at + Duration::from_nanos(1));
        assert_ne!(digest().unwrap(), original, "an image touched");
        set_mtime(&image, at);
        assert_eq!(digest().unwrap(), original);
        // Rewritten with other pixels, then given back its old time.
        let mut bytes = std::fs::read(&segmentation).unwrap();
        bytes.extend_from_slice(b"trailing");
        std::fs::write(&segmentation, bytes).unwrap();
        set_mtime(&segmentation, at);
        assert_ne!(digest().unwrap(), original, "a segmentation rewritten");
        std::fs::remove_file(&segmentation).unwrap();
        let err = digest().unwrap_err().to_string();
        assert!(err.contains("000003_color.png"), "{err}");
    }
}
