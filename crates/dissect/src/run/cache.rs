//! The activation cache of a run: the first pass's activations kept for
//! the later passes, on the device on a GPU and in an unlinked temporary
//! file on the CPU backend, within a budget. A resumable run keeps its
//! cache in a named file of its checkpoint folder instead, indexed in each
//! checkpoint, so that a resumed run replays what the killed one cached.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::DissectError;
use crate::results::CacheMode;

/// Activations kept between passes, within a budget.
///
/// On a GPU they stay on the device as Burn tensors. On the CPU backend
/// they go to an unlinked temporary file ([`tempfile::tempfile`]) instead
/// of the heap: the kernel's page cache keeps it in memory while memory is
/// free, and gives it back when another process needs it, so the run's own
/// memory stays flat in the number of images. A write that fails (a full
/// disk) drops the cache and the later passes run the network again.
#[derive(Debug)]
pub(crate) struct Cache {
    budget: u64,
    bytes: u64,
    store: Store,
    /// A write failed: nothing is kept, every later pass runs the network.
    overflowed: bool,
    /// A batch did not fit the budget: the batches before it are kept (the
    /// run's first images), those from it on are not (see
    /// [`Cache::cached_until`]).
    full: bool,
}

/// What an offer of a batch to the cache kept.
enum Kept {
    /// The batch.
    Yes,
    /// The batches before it: a write failed, and the cache is full.
    Before,
    /// Nothing: the cache is dropped.
    Nothing,
}

/// Where [`Cache`] keeps the activations.
#[derive(Debug)]
enum Store {
    /// The first image of each batch and its activations, in order.
    Device(Vec<(usize, Vec<Tensor<4>>)>),
    /// Each batch's first image, its byte offset in `file` and its
    /// activations' shapes, by first image; the values follow one another
    /// as f32 in native byte order. `path` names the file of a resumable
    /// run (else it is an unlinked temporary file).
    File {
        file: Option<std::fs::File>,
        path: Option<PathBuf>,
        /// Where an unnamed cache file is made (the system's temporary
        /// folder when `None`).
        dir: Option<PathBuf>,
        batches: Vec<CachedBatch>,
    },
}

/// One batch in a cache file: its first image (the run's index), where its
/// values start, the shape of each layer's activations, and the CRC-32 of
/// its bytes, which a resumed run checks before it replays them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CachedBatch {
    pub first: usize,
    pub offset: u64,
    pub shapes: Vec<[usize; 4]>,
    pub crc32: u32,
}

impl CachedBatch {
    /// The bytes of the batch's values.
    fn len(&self) -> u64 {
        (self.shapes.iter())
            .map(|s| s.iter().product::<usize>() as u64 * 4)
            .sum()
    }
}

/// Where a cache file read back for a resumed run stops matching its
/// checkpoint: the first image of the first batch that is short or whose
/// checksum differs. Those batches and every later one are dropped, and the
/// network runs again for their images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheDamage {
    pub first_image: usize,
    pub batches_dropped: usize,
}

/// What a checkpoint records of a cache file: its batches and size, that a
/// write failed, or that a batch did not fit the budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CacheIndex {
    pub bytes: u64,
    pub overflowed: bool,
    #[serde(default)]
    pub full: bool,
    pub batches: Vec<CachedBatch>,
}

impl Cache {
    /// A cache of `budget` bytes: on the host (a file in `dir`, the
    /// system's temporary folder when `None`) or on the device.
    pub fn new(budget: u64, on_host: bool, dir: Option<PathBuf>) -> Self {
        let store = if on_host {
            Store::File {
                file: None,
                path: None,
                dir,
                batches: Vec::new(),
            }
        } else {
            Store::Device(Vec::new())
        };
        Self {
            budget,
            bytes: 0,
            store,
            overflowed: false,
            full: false,
        }
    }

    /// A host cache in the file `path`, holding what `index` says it holds
    /// (anything written after that checkpoint is cut off), or a new one.
    /// Every batch is read back and checked against its checksum: from the
    /// first that is short or differs on, the batches are dropped (and the
    /// damage returned), so that a damaged file is never replayed.
    pub fn in_file(
        budget: u64,
        path: &Path,
        index: Option<&CacheIndex>,
    ) -> std::io::Result<(Self, Option<CacheDamage>)> {
        let mut index = index.cloned().unwrap_or_default();
        if index.overflowed {
            let _ = std::fs::remove_file(path);
            let cache = Self {
                budget,
                bytes: 0,
                store: Store::Device(Vec::new()),
                overflowed: true,
                full: false,
            };
            return Ok((cache, None));
        }
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let whole = verified_prefix(&file, &index)?;
        let damage = (whole < index.batches.len()).then(|| CacheDamage {
            first_image: index.batches[whole].first,
            batches_dropped: index.batches.len() - whole,
        });
        if damage.is_some() {
            index.bytes = index.batches[whole].offset;
            index.batches.truncate(whole);
        }
        file.set_len(index.bytes)?;
        let cache = Self {
            budget,
            bytes: index.bytes,
            store: Store::File {
                file: Some(file),
                path: Some(path.to_path_buf()),
                dir: None,
                batches: index.batches,
            },
            overflowed: false,
            // A cut cache takes no more batches after the gap.
            full: index.full || damage.is_some(),
        };
        Ok((cache, damage))
    }

    /// What a checkpoint records of a named cache file, its data synced to
    /// disk first; `None` for a cache that is not one.
    pub fn checkpoint(&self) -> std::io::Result<Option<CacheIndex>> {
        if self.overflowed {
            return Ok(Some(CacheIndex {
                overflowed: true,
                ..CacheIndex::default()
            }));
        }
        match &self.store {
            Store::File {
                file,
                path: Some(_),
                batches,
                ..
            } => {
                if let Some(file) = file {
                    store::sync_data(file)?;
                }
                Ok(Some(CacheIndex {
                    bytes: self.bytes,
                    overflowed: false,
                    full: self.full,
                    batches: batches.clone(),
                }))
            }
            _ => Ok(None),
        }
    }

    /// Whether every batch of the run's images `range` is cached.
    #[cfg(test)]
    pub fn holds(&self, range: std::ops::Range<usize>) -> bool {
        self.cached_until(range.clone()) == range.end
    }

    /// The end of the cached start of the run's images `range`: from
    /// `range.start`, batch after cached batch, the first image whose batch
    /// is not cached (`range.start` when none is). Batches are followed by
    /// their own sizes, not a stride, since a batch is cut short where the
    /// segmentation size changes.
    #[cfg(test)]
    pub fn cached_until(&self, range: std::ops::Range<usize>) -> usize {
        let mut at = range.start;
        if self.overflowed {
            return at;
        }
        while at < range.end {
            let Some(images) = self.position(at).map(|i| self.images_of(i)) else {
                break;
            };
            at += images.max(1);
        }
        at.min(range.end)
    }

    /// Whether the batch of `images` images that starts at image `first`
    /// is cached, as one batch of that size.
    pub fn holds_batch(&self, first: usize, images: usize) -> bool {
        !self.overflowed
            && self
                .position(first)
                .is_some_and(|i| self.images_of(i) == images)
    }

    /// The images of the store's batch `index`.
    fn images_of(&self, index: usize) -> usize {
        match &self.store {
            Store::Device(batches) => batches[index].1.first().map_or(0, |t| t.dims()[0]),
            Store::File { batches, .. } => batches[index].shapes.first().map_or(0, |s| s[0]),
        }
    }

    /// Where the batch that starts at image `first` is in the store.
    fn position(&self, first: usize) -> Option<usize> {
        match &self.store {
            Store::Device(batches) => batches.binary_search_by_key(&first, |b| b.0).ok(),
            Store::File { batches, .. } => batches.binary_search_by_key(&first, |b| b.first).ok(),
        }
    }

    pub fn offer(&mut self, first: usize, acts: &[Tensor<4>]) {
        if self.overflowed {
            return;
        }
        let bytes: u64 = acts
            .iter()
            .map(|a| a.shape().num_elements() as u64 * 4)
            .sum();
        if self.full || self.bytes + bytes > self.budget {
            // The batches so far stay; this one and the later ones run the
            // network again.
            self.full = true;
            return;
        }
        let offset = self.bytes;
        let kept = match &mut self.store {
            Store::Device(batches) => {
                batches.push((first, acts.to_vec()));
                Kept::Yes
            }
            Store::File {
                file, batches, dir, ..
            } => {
                let shapes = acts.iter().map(|a| a.dims()).collect();
                let in_order = batches.last().is_none_or(|b| b.first < first);
                match write_acts(file, dir.as_deref(), offset, acts) {
                    Ok(crc32) if in_order => {
                        batches.push(CachedBatch {
                            first,
                            offset,
                            shapes,
                            crc32,
                        });
                        Kept::Yes
                    }
                    // A full disk or quota: the batches before this one
                    // stay, cut back to where it began.
                    Err(_)
                        if in_order && file.as_ref().is_some_and(|f| f.set_len(offset).is_ok()) =>
                    {
                        Kept::Before
                    }
                    _ => Kept::Nothing,
                }
            }
        };
        match kept {
            Kept::Yes => self.bytes += bytes,
            Kept::Before => self.full = true,
            Kept::Nothing => self.drop_all(),
        }
    }

    fn drop_all(&mut self) {
        self.overflowed = true;
        let store = std::mem::replace(&mut self.store, Store::Device(Vec::new()));
        if let Store::File {
            path: Some(path), ..
        } = store
        {
            let _ = std::fs::remove_file(path);
        }
    }

    pub fn mode(&self) -> CacheMode {
        if self.overflowed || self.full {
            CacheMode::Recomputed
        } else {
            CacheMode::Cached
        }
    }

    /// The activations of the batch that starts at image `first`.
    pub fn get(
        &self,
        first: usize,
        device: &burn::tensor::Device,
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        let stale =
            || DissectError::Internal("cached activations out of step with the dataset".into());
        let index = self.position(first).ok_or_else(stale)?;
        match &self.store {
            Store::Device(batches) => Ok(batches[index].1.clone()),
            Store::File { file, batches, .. } => match file {
                Some(file) => {
                    let b = &batches[index];
                    read_acts(file, b.offset, &b.shapes, device).map_err(|e| {
                        DissectError::Internal(format!(
                            "reading cached activations back from their file: {e}"
                        ))
                    })
                }
                None => Err(stale()),
            },
        }
    }
}

/// Writes `acts` at `offset` of the cache file (in native byte order: the
/// file is read back on this machine only), creating a temporary one at
/// the first batch (in `dir`, else the system's temporary folder); the
/// CRC-32 of the bytes written.
fn write_acts(
    file: &mut Option<std::fs::File>,
    dir: Option<&Path>,
    offset: u64,
    acts: &[Tensor<4>],
) -> std::io::Result<u32> {
    use std::io::{Seek, SeekFrom, Write};
    let file = match file {
        Some(file) => file,
        None => file.insert(match dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        }),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut crc = crc32fast::Hasher::new();
    for act in acts {
        let values = act
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| std::io::Error::other(format!("activations are not f32: {e:?}")))?;
        let bytes: &[u8] = bytemuck::cast_slice(&values);
        crc.update(bytes);
        file.write_all(bytes)?;
    }
    Ok(crc.finalize())
}

/// How many of `index`'s batches, from the first, are whole in `file` and
/// match their checksums (read in blocks, in order).
fn verified_prefix(mut file: &std::fs::File, index: &CacheIndex) -> std::io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut block = vec![0u8; 1 << 20];
    for (i, batch) in index.batches.iter().enumerate() {
        let size = batch.len();
        let end = batch.offset.checked_add(size);
        if end.is_none_or(|end| end > len || end > index.bytes) {
            return Ok(i);
        }
        file.seek(SeekFrom::Start(batch.offset))?;
        let mut crc = crc32fast::Hasher::new();
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            file.read_exact(&mut block[..n])?;
            crc.update(&block[..n]);
            left -= n as u64;
        }
        if crc.finalize() != batch.crc32 {
            return Ok(i);
        }
    }
    Ok(index.batches.len())
}

/// One batch's activations from the cache file.
fn read_acts(
    mut file: &std::fs::File,
    offset: u64,
    shapes: &[[usize; 4]],
    device: &burn::tensor::Device,
) -> std::io::Result<Vec<Tensor<4>>> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    shapes
        .iter()
        .map(|&shape| {
            let mut values = vec![0f32; shape.iter().product()];
            file.read_exact(bytemuck::cast_slice_mut(&mut values))?;
            Ok(Tensor::<4>::from_data(
                TensorData::new(values, shape),
                device,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch `b` of two images: two layers of made-up activations.
    fn batch(b: usize, device: &burn::tensor::Device) -> Vec<Tensor<4>> {
        [[2, 3, 2, 2], [2, 1, 1, 1]]
            .into_iter()
            .enumerate()
            .map(|(l, shape)| {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n).map(|i| (b * 100 + l * 10 + i) as f32).collect();
                Tensor::<4>::from_data(TensorData::new(values, shape), device)
            })
            .collect()
    }

    fn values(acts: &[Tensor<4>]) -> Vec<Vec<f32>> {
        (acts.iter())
            .map(|a| a.clone().into_data().try_to_vec::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn a_resumed_cache_keeps_the_batches_that_match_their_checksums() {
        let device = crate::engine::Dissector::cpu().device().clone();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("activations.f32");
        let (mut cache, damage) = Cache::in_file(1 << 30, &path, None).unwrap();
        assert_eq!(damage, None);
        for b in 0..3 {
            cache.offer(2 * b, &batch(b, &device));
        }
        let index = cache.checkpoint().unwrap().unwrap();
        drop(cache);
        let reopen = || Cache::in_file(1 << 30, &path, Some(&index)).unwrap();
        let (cache, damage) = reopen();
        assert_eq!(damage, None);
        assert!(cache.holds(0..6));
        assert_eq!(
            values(&cache.get(4, &device).unwrap()),
            values(&batch(2, &device))
        );
        drop(cache);

        // One byte changed in the second batch: it and the third are dropped.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[index.batches[1].offset as usize + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (cache, damage) = reopen();
        let want = CacheDamage {
            first_image: 2,
            batches_dropped: 2,
        };
        assert_eq!(damage, Some(want));
        assert!(cache.holds(0..2) && !cache.holds(0..6));
        assert_eq!(
            values(&cache.get(0, &device).unwrap()),
            values(&batch(0, &device))
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            index.batches[1].offset
        );
        drop(cache);

        // A file cut short inside the first batch, or gone: nothing is kept.
        std::fs::write(&path, &bytes[..10]).unwrap();
        let (cache, damage) = reopen();
        assert_eq!(
            damage.map(|d| (d.first_image, d.batches_dropped)),
            Some((0, 3))
        );
        assert!(!cache.holds(0..2));
        drop(cache);
        std::fs::remove_file(&path).unwrap();
        let (_, damage) = reopen();
        assert_eq!(damage.map(|d| d.batches_dropped), Some(3));
    }

    /// Batches cut short where the segmentation size changes: the cached
    /// start follows the batches' own sizes, never past a batch that is
    /// not cached.
    #[test]
    fn the_cached_start_follows_batches_of_any_size() {
        let device = crate::engine::Dissector::cpu().device().clone();
        let acts = |n: usize| {
            let values = vec![1.0f32; n * 2];
            vec![Tensor::<4>::from_data(
                TensorData::new(values, [n, 2, 1, 1]),
                &device,
            )]
        };
        for on_host in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = Some(tmp.path().to_path_buf());
            // Batches [0, 4), [4, 6), [6, 10), [10, 14); room for three.
            let mut cache = Cache::new(3 * 4 * 2 * 4, on_host, dir);
            for (first, n) in [(0, 4), (4, 2), (6, 4), (10, 4)] {
                cache.offer(first, &acts(n));
            }
            assert_eq!(cache.cached_until(0..14), 10, "host {on_host}");
            assert_eq!(cache.cached_until(4..14), 10, "a part from image 4");
            assert_eq!(cache.cached_until(10..14), 10, "nothing cached there");
            assert_eq!(cache.mode(), CacheMode::Recomputed);
            // Room for two: the third batch, which starts off the stride
            // of four, is not taken for cached.
            let mut cache = Cache::new(2 * 4 * 2 * 4, on_host, None);
            for (first, n) in [(0, 4), (4, 2), (6, 4), (10, 4)] {
                cache.offer(first, &acts(n));
            }
            assert_eq!(cache.cached_until(0..14), 6, "host {on_host}");
            // A batch is replayed only as the batch it was cached as.
            assert!(cache.holds_batch(4, 2));
            assert!(!cache.holds_batch(4, 4) && !cache.holds_batch(6, 4));
        }
    }
}
