//! SHA-256 digests that tell sharded runs apart: of everything a run's
//! shards must agree on, of the dataset a run selects, and of merged
//! thresholds.

use std::io::Read;
use std::path::Path;

use broden::Dataset;
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

/// A hex SHA-256 of everything a sharded run's shards must agree on: the
/// tool's version, the network, the layers, the options, the checkpoint's
/// bytes, the recorded activations' names and sizes, the dataset's CSV
/// files and selected image list, and the number of shards.
pub fn digest(input: &DigestInput<'_>) -> Result<String, DissectError> {
    let mut h = Sha256::new();
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update((tag.len() as u64).to_le_bytes());
        h.update(tag.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("tool", env!("CARGO_PKG_VERSION").as_bytes());
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
fn hash_file(h: &mut Sha256, path: &Path) -> Result<(), DissectError> {
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

/// A hex SHA-256 of a dataset as a run selects it: its CSV files and the
/// selected image list.
pub fn dataset_digest(ds: &Dataset) -> Result<String, DissectError> {
    let mut h = Sha256::new();
    for r in &ds.images {
        h.update(r.image.as_bytes());
        h.update([0]);
    }
    let mut csvs: Vec<_> = std::fs::read_dir(&ds.root)
        .map_err(|e| io_error(&ds.root, e))?
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
    Ok(hex(&h.finalize()))
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
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The start of a digest, as messages show it.
pub(super) fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}
