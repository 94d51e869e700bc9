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
    overflowed: bool,
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
        batches: Vec<CachedBatch>,
    },
}

/// One batch in a cache file: its first image (the run's index), where its
/// values start and the shape of each layer's activations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CachedBatch {
    pub first: usize,
    pub offset: u64,
    pub shapes: Vec<[usize; 4]>,
}

/// What a checkpoint records of a cache file: its batches and size, or
/// that the activations outgrew the budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CacheIndex {
    pub bytes: u64,
    pub overflowed: bool,
    pub batches: Vec<CachedBatch>,
}

impl Cache {
    pub fn new(budget: u64, on_host: bool) -> Self {
        let store = if on_host {
            Store::File {
                file: None,
                path: None,
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
        }
    }

    /// A host cache in the file `path`, holding what `index` says it holds
    /// (anything written after that checkpoint is cut off), or a new one.
    pub fn in_file(budget: u64, path: &Path, index: Option<&CacheIndex>) -> std::io::Result<Self> {
        let index = index.cloned().unwrap_or_default();
        if index.overflowed {
            let _ = std::fs::remove_file(path);
            return Ok(Self {
                budget,
                bytes: 0,
                store: Store::Device(Vec::new()),
                overflowed: true,
            });
        }
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() < index.bytes {
            return Err(std::io::Error::other(format!(
                "{}: shorter than its checkpoint says ({} bytes)",
                path.display(),
                index.bytes
            )));
        }
        file.set_len(index.bytes)?;
        Ok(Self {
            budget,
            bytes: index.bytes,
            store: Store::File {
                file: Some(file),
                path: Some(path.to_path_buf()),
                batches: index.batches,
            },
            overflowed: false,
        })
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
            } => {
                if let Some(file) = file {
                    file.sync_data()?;
                }
                Ok(Some(CacheIndex {
                    bytes: self.bytes,
                    overflowed: false,
                    batches: batches.clone(),
                }))
            }
            _ => Ok(None),
        }
    }

    /// Whether every batch of `batch_size` images of the run's images
    /// `range` is cached.
    pub fn holds(&self, range: std::ops::Range<usize>, batch_size: usize) -> bool {
        !self.overflowed
            && range
                .step_by(batch_size.max(1))
                .all(|first| self.position(first).is_some())
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
        if self.bytes + bytes > self.budget {
            self.drop_all();
            return;
        }
        let offset = self.bytes;
        let kept = match &mut self.store {
            Store::Device(batches) => {
                batches.push((first, acts.to_vec()));
                true
            }
            Store::File { file, batches, .. } => {
                let shapes = acts.iter().map(|a| a.dims()).collect();
                let in_order = batches.last().is_none_or(|b| b.first < first);
                match write_acts(file, offset, acts) {
                    Ok(()) if in_order => {
                        batches.push(CachedBatch {
                            first,
                            offset,
                            shapes,
                        });
                        true
                    }
                    _ => false,
                }
            }
        };
        if kept {
            self.bytes += bytes;
        } else {
            self.drop_all();
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
        if self.overflowed {
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
/// the first batch.
fn write_acts(
    file: &mut Option<std::fs::File>,
    offset: u64,
    acts: &[Tensor<4>],
) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let file = match file {
        Some(file) => file,
        None => file.insert(tempfile::tempfile()?),
    };
    file.seek(SeekFrom::Start(offset))?;
    for act in acts {
        let values = act
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| std::io::Error::other(format!("activations are not f32: {e:?}")))?;
        file.write_all(bytemuck::cast_slice(&values))?;
    }
    Ok(())
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
