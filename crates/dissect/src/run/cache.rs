//! The activation cache of a run: the first pass's activations kept for
//! the later passes, on the device on a GPU and in an unlinked temporary
//! file on the CPU backend, within a budget.

use burn::tensor::{Tensor, TensorData};

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
pub(super) struct Cache {
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
    /// activations' shapes; the values follow one another as
    /// little-endian f32.
    File {
        file: Option<std::fs::File>,
        batches: Vec<(usize, u64, Vec<[usize; 4]>)>,
    },
}

impl Cache {
    pub fn new(budget: u64, on_host: bool) -> Self {
        let store = if on_host {
            Store::File {
                file: None,
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
            Store::File { file, batches } => {
                let shapes = acts.iter().map(|a| a.dims()).collect();
                match write_acts(file, acts) {
                    Ok(()) => {
                        batches.push((first, offset, shapes));
                        true
                    }
                    Err(_) => false,
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
        self.store = Store::Device(Vec::new());
    }

    pub fn mode(&self) -> CacheMode {
        if self.overflowed {
            CacheMode::Recomputed
        } else {
            CacheMode::Cached
        }
    }

    /// The activations of the `index`-th batch, which starts at `first`.
    pub fn get(
        &self,
        index: usize,
        first: usize,
        device: &burn::tensor::Device,
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        let stale =
            || DissectError::Internal("cached activations out of step with the dataset".into());
        match &self.store {
            Store::Device(batches) => match batches.get(index) {
                Some((f, acts)) if *f == first => Ok(acts.clone()),
                _ => Err(stale()),
            },
            Store::File { file, batches } => match (file, batches.get(index)) {
                (Some(file), Some((f, offset, shapes))) if *f == first => {
                    read_acts(file, *offset, shapes, device).map_err(|e| {
                        DissectError::Internal(format!(
                            "reading cached activations back from their temporary file: {e}"
                        ))
                    })
                }
                _ => Err(stale()),
            },
        }
    }
}

/// Appends `acts` to the cache file (in native byte order: the file lives
/// and dies with this process), creating it at the first batch.
fn write_acts(file: &mut Option<std::fs::File>, acts: &[Tensor<4>]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let file = match file {
        Some(file) => file,
        None => file.insert(tempfile::tempfile()?),
    };
    file.seek(SeekFrom::End(0))?;
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
