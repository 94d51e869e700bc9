//! Where parameters come from: PyTorch/safetensors checkpoints, or a deterministic formula.
//!
//! Models are built key by key from a [`ParamSource`], using torchvision's state_dict names,
//! so a checkpoint needs no remapping. The builder records every missing key and shape
//! mismatch instead of stopping at the first, and [`StateDict`] reports the keys nobody asked
//! for, so one error lists everything wrong with a checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Param, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{ModelError, ShapeMismatch};

/// What a source answers for one requested parameter.
#[derive(Debug)]
pub enum Fetch {
    /// Row-major f32 values, exactly as many as the requested shape holds.
    Values(Vec<f32>),
    /// The key is absent.
    Missing,
    /// The key is present with another shape.
    Shape(Vec<usize>),
}

/// A provider of named parameters (torchvision state_dict names and shapes).
pub trait ParamSource {
    /// The values of `key`, which the architecture needs with shape `shape`.
    fn fetch(&mut self, key: &str, shape: &[usize]) -> Result<Fetch, ModelError>;
}

/// Parameters from a closed-form formula, identical in Python (`fixtures/make_fixtures.py`)
/// and Rust, so tests can compare against PyTorch without shipping weights, and so other
/// crates get a deterministic untrained model.
///
/// Per tensor, with `phase = (Σ_j (j+1)·byte_j mod 1009) · 0.013` over the key's UTF-8 bytes
/// and `s_i = sin(i · 0.37 + phase)` in f64 over the flat index `i`:
/// conv/linear weights (rank ≥ 2) `s_i · 2/√fan_in` (`fan_in` = product of all but the first
/// dimension); biases `0.05 · s_i`; BatchNorm `weight` (rank 1) `1 + 0.1 · s_i`,
/// `running_mean` `0.1 · s_i`, `running_var` `1 + 0.25 · (1 + s_i)`; each rounded to f32 last.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyntheticWeights;

impl SyntheticWeights {
    /// The formula's values for `key` with `shape`.
    pub fn values(key: &str, shape: &[usize]) -> Vec<f32> {
        let phase = key
            .bytes()
            .enumerate()
            .map(|(j, b)| (j as u64 + 1) * u64::from(b))
            .sum::<u64>()
            % 1009;
        let phase = phase as f64 * 0.013;
        let count: usize = shape.iter().product();
        let leaf = key.rsplit('.').next().unwrap_or(key);
        let (scale, shift): (f64, f64) = match (leaf, shape.len()) {
            ("running_mean", _) => (0.1, 0.0),
            ("running_var", _) => (0.25, 1.25),
            ("bias", _) => (0.05, 0.0),
            ("weight", 1) => (0.1, 1.0),
            _ => {
                let fan_in: usize = shape.iter().skip(1).product();
                (2.0 / (fan_in.max(1) as f64).sqrt(), 0.0)
            }
        };
        (0..count)
            .map(|i| (shift + scale * ((i as f64) * 0.37 + phase).sin()) as f32)
            .collect()
    }
}

impl ParamSource for SyntheticWeights {
    fn fetch(&mut self, key: &str, shape: &[usize]) -> Result<Fetch, ModelError> {
        Ok(Fetch::Values(Self::values(key, shape)))
    }
}

/// Element types a checkpoint tensor may have that convert to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dt {
    F32,
    F64,
    F16,
    Bf16,
}

#[derive(Debug)]
enum Raw {
    Torch(burn::store::pytorch_reader::Tensor),
    Bytes { dtype: Option<Dt>, bytes: Vec<u8> },
}

#[derive(Debug)]
struct Entry {
    shape: Vec<usize>,
    dtype_name: String,
    raw: Raw,
}

/// A checkpoint's tensors by (normalised) torchvision key, read lazily where the format
/// allows.
///
/// Normalisation: a `.pth.tar` training checkpoint's `state_dict` sub-dictionary is used
/// when present (keys read as `state_dict.…`), and DataParallel's `module.` prefix is
/// stripped when every key has it. Integer tensors (BatchNorm's `num_batches_tracked`) are
/// kept so they can be recognised, and ignored.
#[derive(Debug)]
pub struct StateDict {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
    used: BTreeSet<String>,
}

impl StateDict {
    /// Opens `path`: `.safetensors` by extension (or by content when torch's reader refuses
    /// it), anything else as a PyTorch checkpoint (`.pth`, `.pt`, `.pth.tar`, zip or legacy).
    pub fn open(path: &Path) -> Result<StateDict, ModelError> {
        if !path.exists() {
            return Err(ModelError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let is_safetensors = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("safetensors"));
        let entries = if is_safetensors {
            read_safetensors(path)?
        } else {
            match read_pytorch(path) {
                Ok(entries) => entries,
                // A safetensors file under another name is still a checkpoint.
                Err(torch_err) => read_safetensors(path).map_err(|_| torch_err)?,
            }
        };
        if entries.is_empty() {
            return Err(ModelError::NotACheckpoint {
                path: path.to_path_buf(),
                reason: "it holds no tensors".into(),
            });
        }
        Ok(StateDict {
            path: path.to_path_buf(),
            entries: normalise_keys(entries),
            used: BTreeSet::new(),
        })
    }

    /// A key/shape listing without data, for architecture-detection tests.
    #[cfg(test)]
    pub(crate) fn from_shapes(path: &Path, shapes: Vec<(String, Vec<usize>)>) -> StateDict {
        let entries = shapes
            .into_iter()
            .map(|(key, shape)| {
                let entry = Entry {
                    shape,
                    dtype_name: "f32".into(),
                    raw: Raw::Bytes {
                        dtype: None,
                        bytes: Vec::new(),
                    },
                };
                (key, entry)
            })
            .collect();
        StateDict {
            path: path.to_path_buf(),
            entries: normalise_keys(entries),
            used: BTreeSet::new(),
        }
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The shape of `key`, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// Keys never fetched, excluding those that carry no parameters we need
    /// (`num_batches_tracked`) and any that `ignore` accepts (e.g. GoogLeNet's `aux1.`).
    pub fn unused(&self, ignore: impl Fn(&str) -> bool) -> Vec<String> {
        self.entries
            .keys()
            .filter(|k| !self.used.contains(*k))
            .filter(|k| !k.ends_with("num_batches_tracked") && !ignore(k))
            .cloned()
            .collect()
    }
}

impl ParamSource for StateDict {
    fn fetch(&mut self, key: &str, shape: &[usize]) -> Result<Fetch, ModelError> {
        let Some(entry) = self.entries.get(key) else {
            return Ok(Fetch::Missing);
        };
        self.used.insert(key.to_string());
        if entry.shape.iter().product::<usize>() != shape.iter().product::<usize>()
            || (entry.shape != shape && !(entry.shape.is_empty() && shape == [1]))
        {
            return Ok(Fetch::Shape(entry.shape.clone()));
        }
        let unsupported = || ModelError::UnsupportedDtype {
            path: self.path.clone(),
            key: key.to_string(),
            dtype: entry.dtype_name.clone(),
        };
        let (dtype, bytes) = match &entry.raw {
            Raw::Torch(t) => {
                let dtype = torch_dtype(t.dtype()).ok_or_else(unsupported)?;
                let bytes = t.read().map_err(|e| ModelError::NotACheckpoint {
                    path: self.path.clone(),
                    reason: format!("reading tensor `{key}`: {e}"),
                })?;
                (dtype, std::borrow::Cow::Owned(bytes))
            }
            Raw::Bytes { dtype, bytes } => (
                dtype.ok_or_else(unsupported)?,
                std::borrow::Cow::Borrowed(bytes.as_slice()),
            ),
        };
        Ok(Fetch::Values(to_f32(dtype, &bytes)))
    }
}

fn torch_dtype(dtype: burn::store::pytorch_reader::DType) -> Option<Dt> {
    use burn::store::pytorch_reader::DType as T;
    match dtype {
        T::F32 => Some(Dt::F32),
        T::F64 => Some(Dt::F64),
        T::F16 => Some(Dt::F16),
        T::BF16 => Some(Dt::Bf16),
        _ => None,
    }
}

fn to_f32(dtype: Dt, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dt::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dt::F64 => bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                f64::from_le_bytes(a) as f32
            })
            .collect(),
        Dt::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        // bfloat16 is the top half of an f32.
        Dt::Bf16 => bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect(),
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

fn read_pytorch(path: &Path) -> Result<BTreeMap<String, Entry>, ModelError> {
    let reader = burn::store::pytorch_reader::PytorchReader::new(path).map_err(|e| {
        ModelError::NotACheckpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    Ok(reader
        .into_tensors()
        .into_iter()
        .map(|(key, t)| {
            let entry = Entry {
                shape: t.shape().to_vec(),
                dtype_name: format!("{:?}", t.dtype()).to_lowercase(),
                raw: Raw::Torch(t),
            };
            (key, entry)
        })
        .collect())
}

fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Entry>, ModelError> {
    let bad = |reason: String| ModelError::NotACheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("safetensors: {e}")))?;
    Ok(tensors
        .tensors()
        .into_iter()
        .map(|(key, view)| {
            use safetensors::Dtype as S;
            let dtype = match view.dtype() {
                S::F32 => Some(Dt::F32),
                S::F64 => Some(Dt::F64),
                S::F16 => Some(Dt::F16),
                S::BF16 => Some(Dt::Bf16),
                _ => None,
            };
            let entry = Entry {
                shape: view.shape().to_vec(),
                dtype_name: format!("{:?}", view.dtype()).to_lowercase(),
                raw: Raw::Bytes {
                    dtype,
                    bytes: view.data().to_vec(),
                },
            };
            (key, entry)
        })
        .collect())
}

/// Applies the key normalisation described on [`StateDict`], plus torchvision's own
/// DenseNet rename of old checkpoints (`norm.1` → `norm1`, as its loader does).
fn normalise_keys(entries: BTreeMap<String, Entry>) -> BTreeMap<String, Entry> {
    let has_state_dict = entries.keys().any(|k| k.starts_with("state_dict."));
    let mut entries: BTreeMap<String, Entry> = if has_state_dict {
        entries
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("state_dict.").map(|s| (s.to_string(), v)))
            .collect()
    } else {
        entries
    };
    if !entries.is_empty() && entries.keys().all(|k| k.starts_with("module.")) {
        entries = entries
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect();
    }
    entries
        .into_iter()
        .map(|(k, v)| (densenet_rename(&k), v))
        .collect()
}

fn densenet_rename(key: &str) -> String {
    if !key.contains("denselayer") {
        return key.to_string();
    }
    let mut out = key.to_string();
    for name in ["norm", "relu", "conv"] {
        for n in ["1", "2"] {
            out = out.replace(&format!(".{name}.{n}."), &format!(".{name}{n}."));
        }
    }
    out
}

/// Builds Burn layers from a [`ParamSource`], collecting every problem for one error.
pub(crate) struct Builder<'a> {
    source: &'a mut dyn ParamSource,
    pub(crate) device: Device,
    pub(crate) missing: Vec<String>,
    pub(crate) shapes: Vec<ShapeMismatch>,
    /// Tensors whose values cannot be right: NaN or infinite values, or a
    /// negative BatchNorm variance (one line each).
    pub(crate) bad_values: Vec<String>,
}

impl<'a> Builder<'a> {
    pub(crate) fn new(source: &'a mut dyn ParamSource, device: &Device) -> Self {
        Self {
            source,
            device: device.clone(),
            missing: Vec::new(),
            shapes: Vec::new(),
            bad_values: Vec::new(),
        }
    }

    /// Records what is wrong with the values of `key`, if anything.
    fn check_values(&mut self, key: &str, values: &[f32]) {
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        if non_finite > 0 {
            self.bad_values.push(format!(
                "{key}: {non_finite} of {} values are NaN or infinite",
                values.len()
            ));
        }
        if key.ends_with("running_var") {
            let negative = values.iter().filter(|v| **v < 0.0).count();
            if negative > 0 {
                self.bad_values
                    .push(format!("{key}: {negative} negative variances"));
            }
        }
    }

    /// The values for `key`, or zeros (recording the problem) so building can go on and
    /// report every problem at once.
    fn values(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let count = shape.iter().product();
        Ok(match self.source.fetch(key, shape)? {
            Fetch::Values(v) if v.len() == count => {
                self.check_values(key, &v);
                v
            }
            Fetch::Values(v) => {
                self.shapes.push(ShapeMismatch {
                    key: key.to_string(),
                    expected: shape.to_vec(),
                    found: vec![v.len()],
                });
                vec![0.0; count]
            }
            Fetch::Missing => {
                self.missing.push(key.to_string());
                vec![0.0; count]
            }
            Fetch::Shape(found) => {
                self.shapes.push(ShapeMismatch {
                    key: key.to_string(),
                    expected: shape.to_vec(),
                    found,
                });
                vec![0.0; count]
            }
        })
    }

    fn tensor<const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
    ) -> Result<Tensor<D>, ModelError> {
        let values = self.values(key, &shape)?;
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }

    /// A 2-D convolution `prefix.weight` (+ `prefix.bias`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv(
        &mut self,
        prefix: &str,
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Conv2d, ModelError> {
        let [c_in, c_out] = channels;
        let mut conv = Conv2dConfig::new([c_in, c_out], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(
                padding, padding, padding, padding,
            ))
            .with_bias(bias)
            .with_initializer(Initializer::Zeros)
            .init(&self.device);
        conv.weight = Param::from_tensor(
            self.tensor(&format!("{prefix}.weight"), [c_out, c_in, kernel, kernel])?,
        );
        if bias {
            conv.bias = Some(Param::from_tensor(
                self.tensor(&format!("{prefix}.bias"), [c_out])?,
            ));
        }
        Ok(conv)
    }

    /// Eval-mode BatchNorm with running statistics.
    pub(crate) fn batch_norm(
        &mut self,
        prefix: &str,
        features: usize,
        epsilon: f64,
    ) -> Result<BatchNorm, ModelError> {
        let mut bn = BatchNormConfig::new(features)
            .with_epsilon(epsilon)
            .init(&self.device);
        bn.gamma = Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [features])?);
        bn.beta = Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [features])?);
        bn.running_mean =
            RunningState::new(self.tensor(&format!("{prefix}.running_mean"), [features])?);
        bn.running_var =
            RunningState::new(self.tensor(&format!("{prefix}.running_var"), [features])?);
        Ok(bn)
    }

    /// A fully connected layer; PyTorch stores `[out, in]`, Burn multiplies by `[in, out]`.
    pub(crate) fn linear(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Linear, ModelError> {
        let weight: Tensor<2> = self.tensor(&format!("{prefix}.weight"), [d_out, d_in])?;
        let bias = self.tensor(&format!("{prefix}.bias"), [d_out])?;
        Ok(Linear {
            weight: Param::from_tensor(weight.transpose()),
            bias: Some(Param::from_tensor(bias)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_formula_is_stable() {
        // Values computed by fixtures/make_fixtures.py's `formula` for the same keys.
        let w = SyntheticWeights::values("conv1.weight", &[2, 3, 1, 1]);
        assert_eq!(w.len(), 6);
        let phase = (b"conv1.weight"
            .iter()
            .enumerate()
            .map(|(j, &b)| (j as u64 + 1) * u64::from(b))
            .sum::<u64>()
            % 1009) as f64
            * 0.013;
        let scale = 2.0 / 3f64.sqrt();
        assert_eq!(w[4], (scale * (4.0 * 0.37 + phase).sin()) as f32);
        let var = SyntheticWeights::values("bn1.running_var", &[8]);
        assert!(var.iter().all(|&v| (1.0..=1.5).contains(&v)), "{var:?}");
        let gamma = SyntheticWeights::values("bn1.weight", &[8]);
        assert!(gamma.iter().all(|&v| (0.9..=1.1).contains(&v)));
    }

    #[test]
    fn key_normalisation_strips_wrappers() {
        let entry = || Entry {
            shape: vec![1],
            dtype_name: "f32".into(),
            raw: Raw::Bytes {
                dtype: Some(Dt::F32),
                bytes: vec![0; 4],
            },
        };
        let mut map = BTreeMap::new();
        map.insert("state_dict.module.conv1.weight".to_string(), entry());
        map.insert(
            "state_dict.module.features.denseblock1.denselayer1.norm.1.weight".to_string(),
            entry(),
        );
        map.insert("epoch".to_string(), entry());
        let keys: Vec<String> = normalise_keys(map).into_keys().collect();
        assert_eq!(
            keys,
            vec![
                "conv1.weight".to_string(),
                "features.denseblock1.denselayer1.norm1.weight".to_string()
            ]
        );
    }

    #[test]
    fn half_precision_converts() {
        // 0x3c00 = 1.0, 0xc000 = -2.0, 0x0001 = smallest subnormal, bf16 0x3f80 = 1.0.
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(to_f32(Dt::Bf16, &[0x80, 0x3f]), vec![1.0]);
    }
}
