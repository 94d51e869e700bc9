//! The embedded default model: a narrow ResNet (`tiny-resnet`) sized for 112-pixel synthetic
//! probe images, with its taps, a seeded initialiser for training from scratch, and export of
//! trained weights as a torchvision-style safetensors file.
//!
//! Layout (torchvision names): `conv1` (3x3, stride 2) → `bn1` → `relu`, then four stages
//! `layer1`..`layer4` of basic blocks with widths [`TINY_WIDTHS`] (stride 2 at the start of
//! stages 2–4, no max-pool), global average pool and `fc`. At 112×112 the stages run at
//! 56, 28, 14 and 7 pixels, the same feature grid ResNet-18 has at 224.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;

use crate::arch::{Arch, TapInfo};
use crate::error::ModelError;
use crate::geometry::GeoOp;
use crate::init::TorchvisionInit;
use crate::model::Model;
use crate::nets::{Block, Collector, Downsample, Net};
use crate::weights::{Builder, Fetch, ParamSource};

/// Input side length of `tiny-resnet` (the probe set's image size; seg size is half).
pub const TINY_INPUT_SIZE: u32 = 112;
/// Channels of the stem convolution.
pub const TINY_STEM_WIDTH: usize = 16;
/// Channels of `layer1`..`layer4`.
pub const TINY_WIDTHS: [usize; 4] = [16, 32, 64, 128];
/// Basic blocks per stage.
pub const TINY_BLOCKS: [usize; 4] = [1, 1, 1, 1];

const BN_EPS: f64 = 1e-5;

/// The `tiny-resnet` network.
#[derive(Module, Debug)]
pub struct TinyResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub layers: Vec<Vec<Block>>,
    pub fc: Linear,
}

impl TinyResNet {
    pub(crate) fn build(b: &mut Builder, num_classes: usize) -> Result<Self, ModelError> {
        let conv1 = b.conv("conv1", [3, TINY_STEM_WIDTH], 3, 2, 1, false)?;
        let bn1 = b.batch_norm("bn1", TINY_STEM_WIDTH, BN_EPS)?;
        let mut in_ch = TINY_STEM_WIDTH;
        let mut layers = Vec::new();
        for (stage, (&width, &count)) in TINY_WIDTHS.iter().zip(&TINY_BLOCKS).enumerate() {
            let mut blocks = Vec::new();
            for index in 0..count {
                let p = format!("layer{}.{index}", stage + 1);
                let stride = if stage > 0 && index == 0 { 2 } else { 1 };
                let downsample = if index == 0 {
                    Downsample::build(b, &p, in_ch, width, stride)?
                } else {
                    None
                };
                blocks.push(Block {
                    conv1: b.conv(&format!("{p}.conv1"), [in_ch, width], 3, stride, 1, false)?,
                    bn1: b.batch_norm(&format!("{p}.bn1"), width, BN_EPS)?,
                    conv2: b.conv(&format!("{p}.conv2"), [width, width], 3, 1, 1, false)?,
                    bn2: b.batch_norm(&format!("{p}.bn2"), width, BN_EPS)?,
                    conv3: None,
                    bn3: None,
                    downsample,
                });
                in_ch = width;
            }
            layers.push(blocks);
        }
        let fc = b.linear("fc", in_ch, num_classes)?;
        Ok(Self {
            conv1,
            bn1,
            layers,
            fc,
        })
    }

    /// Runs up to the deepest wanted tap; `Some(features)` only when the whole trunk ran.
    pub(crate) fn trunk(&self, x: Tensor<4>, c: &mut Collector) -> Option<Tensor<4>> {
        let x = self.conv1.forward(x);
        if c.visit(&x) {
            return None;
        }
        let x = self.bn1.forward(x);
        if c.visit(&x) {
            return None;
        }
        let mut x = relu(x);
        if c.visit(&x) {
            return None;
        }
        for stage in &self.layers {
            for block in stage {
                x = block.forward(x);
                if c.visit(&x) {
                    return None;
                }
            }
        }
        Some(x)
    }

    pub(crate) fn head(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, ch, _, _] = x.dims();
        self.fc
            .forward(adaptive_avg_pool2d(x, [1, 1]).reshape([n, ch]))
    }
}

/// The taps of `tiny-resnet` in forward order, named like torchvision ResNet's (the last
/// block of a stage is the stage, `layerN`, with `layerN.i` as an alias).
pub(crate) fn tiny_taps() -> Vec<TapInfo> {
    let mut path = vec![GeoOp::conv(3, 2, 1)];
    let tap = |name: String, channels: usize, path: &[GeoOp]| TapInfo {
        name,
        aliases: Vec::new(),
        channels,
        path: path.to_vec(),
    };
    let mut taps = vec![
        tap("conv1".into(), TINY_STEM_WIDTH, &path),
        tap("bn1".into(), TINY_STEM_WIDTH, &path),
        tap("relu".into(), TINY_STEM_WIDTH, &path),
    ];
    for (stage, (&width, &count)) in TINY_WIDTHS.iter().zip(&TINY_BLOCKS).enumerate() {
        for block in 0..count {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            path.push(GeoOp::conv(3, stride, 1));
            path.push(GeoOp::conv(3, 1, 1));
            let name = format!("layer{}.{block}", stage + 1);
            if block + 1 == count {
                let mut info = tap(format!("layer{}", stage + 1), width, &path);
                info.aliases.push(name);
                taps.push(info);
            } else {
                taps.push(tap(name, width, &path));
            }
        }
    }
    taps
}

/// Seeded random initial weights for training from scratch: torchvision's ResNet init
/// ([`crate::TorchvisionInit`] of `tiny-resnet`): convolutions Kaiming-normal (fan-out, ReLU
/// gain), BatchNorm weight 1 and bias 0, running mean 0 and variance 1, the classifier uniform
/// in `±1/√fan_in`. Values depend only on the seed and the order of requests, which the
/// architecture fixes.
#[derive(Debug, Clone)]
pub struct SeededInit(TorchvisionInit);

impl SeededInit {
    pub fn new(seed: u64) -> Self {
        Self(TorchvisionInit::new(Arch::TinyResNet, seed))
    }
}

impl ParamSource for SeededInit {
    fn fetch(&mut self, key: &str, shape: &[usize]) -> Result<Fetch, ModelError> {
        self.0.fetch(key, shape)
    }
}

/// One exported parameter: torchvision key, PyTorch shape, row-major values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

fn values<const D: usize>(t: Tensor<D>) -> std::io::Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| std::io::Error::other(format!("reading a parameter back: {e:?}")))
}

fn push_conv(out: &mut Vec<NamedTensor>, key: &str, conv: &Conv2d) -> std::io::Result<()> {
    let w = conv.weight.val();
    out.push((format!("{key}.weight"), w.dims().to_vec(), values(w)?));
    if let Some(bias) = &conv.bias {
        let b = bias.val();
        out.push((format!("{key}.bias"), b.dims().to_vec(), values(b)?));
    }
    Ok(())
}

fn push_bn(out: &mut Vec<NamedTensor>, key: &str, bn: &BatchNorm) -> std::io::Result<()> {
    let parts = [
        ("weight", bn.gamma.val()),
        ("bias", bn.beta.val()),
        ("running_mean", bn.running_mean.value()),
        ("running_var", bn.running_var.value()),
    ];
    for (leaf, t) in parts {
        out.push((format!("{key}.{leaf}"), t.dims().to_vec(), values(t)?));
    }
    Ok(())
}

fn push_linear(out: &mut Vec<NamedTensor>, key: &str, linear: &Linear) -> std::io::Result<()> {
    // Burn stores `[in, out]`; PyTorch's state_dict holds `[out, in]`.
    let w = linear.weight.val().transpose();
    out.push((format!("{key}.weight"), w.dims().to_vec(), values(w)?));
    if let Some(bias) = &linear.bias {
        let b = bias.val();
        out.push((format!("{key}.bias"), b.dims().to_vec(), values(b)?));
    }
    Ok(())
}

fn push_resnet(
    out: &mut Vec<NamedTensor>,
    conv1: &Conv2d,
    bn1: &BatchNorm,
    layers: &[Vec<Block>],
    fc: &Linear,
) -> std::io::Result<()> {
    push_conv(out, "conv1", conv1)?;
    push_bn(out, "bn1", bn1)?;
    for (stage, blocks) in layers.iter().enumerate() {
        for (index, block) in blocks.iter().enumerate() {
            let p = format!("layer{}.{index}", stage + 1);
            push_conv(out, &format!("{p}.conv1"), &block.conv1)?;
            push_bn(out, &format!("{p}.bn1"), &block.bn1)?;
            push_conv(out, &format!("{p}.conv2"), &block.conv2)?;
            push_bn(out, &format!("{p}.bn2"), &block.bn2)?;
            if let (Some(conv3), Some(bn3)) = (&block.conv3, &block.bn3) {
                push_conv(out, &format!("{p}.conv3"), conv3)?;
                push_bn(out, &format!("{p}.bn3"), bn3)?;
            }
            if let Some(d) = &block.downsample {
                push_conv(out, &format!("{p}.downsample.0"), &d.conv)?;
                push_bn(out, &format!("{p}.downsample.1"), &d.bn)?;
            }
        }
    }
    push_linear(out, "fc", fc)
}

/// The parameters of a ResNet-family model (`tiny-resnet`, `resnet*`) under torchvision's
/// state_dict keys, in forward order. Other architectures are `Unsupported`.
pub fn export_state_dict(model: &Model) -> std::io::Result<Vec<NamedTensor>> {
    let mut out = Vec::new();
    match model.net() {
        Net::TinyResNet(n) => push_resnet(&mut out, &n.conv1, &n.bn1, &n.layers, &n.fc)?,
        Net::ResNet(n) => push_resnet(&mut out, &n.conv1, &n.bn1, &n.layers, &n.fc)?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("exporting {} weights is not supported", model.arch()),
            ));
        }
    }
    Ok(out)
}

/// Writes [`export_state_dict`] as an f32 `.safetensors` file that [`Model::load`] reads back
/// bit for bit (and PyTorch's `load_state_dict` accepts for the same layout).
pub fn save_safetensors(model: &Model, path: &Path) -> std::io::Result<()> {
    let tensors = export_state_dict(model)?;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((key, shape, _), data) in tensors.iter().zip(&bytes) {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map_err(|e| std::io::Error::other(format!("tensor `{key}`: {e}")))?;
        views.push((key.clone(), view));
    }
    let mut info = std::collections::HashMap::new();
    info.insert("arch".to_string(), model.arch().name().to_string());
    let file = safetensors::serialize(views, Some(info))
        .map_err(|e| std::io::Error::other(format!("serialising {}: {e}", path.display())))?;
    std::fs::write(path, file)
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// `true` when a checkpoint's stem convolution has `tiny-resnet`'s shape.
pub(crate) fn is_tiny_stem(shape: &[usize]) -> bool {
    shape == [TINY_STEM_WIDTH, 3, 3, 3]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::gpu::cpu_device;
    use crate::model::ArchChoice;
    use burn::tensor::{Distribution, Tensor};

    fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        let d: Vec<f32> = (a - b)
            .abs()
            .into_data()
            .try_into_vec()
            .unwrap_or_else(|e| panic!("{e:?}"));
        d.into_iter().fold(0.0, f32::max)
    }

    #[test]
    fn taps_match_the_forward_pass() {
        let device = cpu_device();
        let model = Model::from_source(
            Arch::TinyResNet,
            6,
            &mut SeededInit::new(3),
            Path::new("<init>"),
            &device,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let taps = Arch::TinyResNet.taps();
        let names: Vec<&str> = taps.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv1", "bn1", "relu", "layer1", "layer2", "layer3", "layer4"
            ]
        );
        let ids: Vec<_> = (0..taps.len())
            .map(|index| crate::arch::TapId {
                arch: Arch::TinyResNet,
                index,
            })
            .collect();
        // An odd size checks the padding arithmetic of every strided layer too.
        for size in [112usize, 75] {
            let x = Tensor::<4>::random([2, 3, size, size], Distribution::Default, &device);
            let outs = model
                .forward_taps(x, &ids)
                .unwrap_or_else(|e| panic!("{e}"));
            for (tap, out) in taps.iter().zip(outs) {
                let [h, w] = tap
                    .output_size([size, size])
                    .unwrap_or_else(|| panic!("{} unreachable", tap.name));
                assert_eq!(
                    out.dims(),
                    [2, tap.channels, h, w],
                    "{} at {size}",
                    tap.name
                );
            }
        }
        let layer4 = &taps[6];
        assert_eq!(layer4.output_size([112, 112]), Some([7, 7]));
        assert_eq!(layer4.field_map().step, [16, 16]);
        assert_eq!(
            Arch::TinyResNet.tap("layer4.0").map(|t| t.index).ok(),
            Some(6)
        );
        assert_eq!(Arch::TinyResNet.input_size(), TINY_INPUT_SIZE);
    }

    #[test]
    fn safetensors_round_trip_is_exact() {
        let device = cpu_device();
        let model = Model::from_source(
            Arch::TinyResNet,
            6,
            &mut SeededInit::new(11),
            Path::new("<init>"),
            &device,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("tiny.safetensors");
        save_safetensors(&model, &path).unwrap_or_else(|e| panic!("{e}"));
        for choice in [ArchChoice::Auto, ArchChoice::Named(Arch::TinyResNet)] {
            let loaded = Model::load(&path, choice, &device).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(loaded.arch(), Arch::TinyResNet);
            assert_eq!(loaded.num_classes(), 6);
            let a = export_state_dict(&model).unwrap_or_else(|e| panic!("{e}"));
            let b = export_state_dict(&loaded).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.0, y.0);
                assert_eq!(x.1, y.1, "{}", x.0);
                // Bit-exact, NaN-free values: compare the bits.
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&x.2), bits(&y.2), "{}", x.0);
            }
            let x = Tensor::<4>::random([1, 3, 112, 112], Distribution::Default, &device);
            let id = Arch::TinyResNet
                .tap("layer4")
                .unwrap_or_else(|e| panic!("{e}"));
            let pa = model.forward_taps(x.clone(), &[id]);
            let pb = loaded.forward_taps(x, &[id]);
            let (pa, pb) = (
                pa.unwrap_or_else(|e| panic!("{e}")),
                pb.unwrap_or_else(|e| panic!("{e}")),
            );
            assert_eq!(max_abs_diff(pa[0].clone(), pb[0].clone()), 0.0);
        }
        // The init is seeded: the same seed gives the same weights, another seed others.
        let again = Model::from_source(
            Arch::TinyResNet,
            6,
            &mut SeededInit::new(11),
            Path::new("<init>"),
            &device,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let other = Model::from_source(
            Arch::TinyResNet,
            6,
            &mut SeededInit::new(12),
            Path::new("<init>"),
            &device,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let first = |m: &Model| export_state_dict(m).map(|v| v[0].2.clone()).ok();
        assert_eq!(first(&model), first(&again));
        assert_ne!(first(&model), first(&other));
    }

    #[test]
    fn shipped_default_model_loads_and_classifies_scenes() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default/model.safetensors");
        let device = cpu_device();
        let model = Model::load(&path, ArchChoice::Auto, &device).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(model.arch(), Arch::TinyResNet);
        assert_eq!(model.num_classes(), broden::synth::SCENES.len());
        let named = Model::load(&path, ArchChoice::Named(Arch::TinyResNet), &device);
        assert!(named.is_ok());
        // Fresh images (a seed used by neither training, validation nor the probe set) must
        // be classified far above chance (1/6), or the asset is not the trained model.
        let opts = broden::synth::SynthOptions {
            images: 32,
            seed: 99,
            size: TINY_INPUT_SIZE,
            swatch_percent: 0,
        };
        let prep = Arch::TinyResNet.default_preprocess_spec();
        let plane = (3 * TINY_INPUT_SIZE * TINY_INPUT_SIZE) as usize;
        let mut data = vec![0f32; opts.images * plane];
        let mut truth = Vec::new();
        let first = broden::synth::concept_number("scene", broden::synth::SCENES[0]);
        for (i, out) in data.chunks_exact_mut(plane).enumerate() {
            let image = broden::synth::render(&opts, i).unwrap_or_else(|e| panic!("{e}"));
            prep.apply(&image.rgb, out);
            truth.push(first.zip(image.scene).map(|(f, s)| (s - f) as usize));
        }
        let size = TINY_INPUT_SIZE as usize;
        let x = Tensor::<4>::from_data(
            burn::tensor::TensorData::new(data, [opts.images, 3, size, size]),
            &device,
        );
        let logits: Vec<f32> = model
            .forward(x)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_data()
            .try_into_vec()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let k = model.num_classes();
        let correct = logits
            .chunks_exact(k)
            .zip(&truth)
            .filter(|(row, t)| {
                let best = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b]));
                best == **t
            })
            .count();
        assert!(correct >= 24, "{correct} of 32 scenes right");
    }

    #[test]
    fn seeded_init_has_torchvision_scales() {
        let mut init = SeededInit::new(5);
        let Ok(Fetch::Values(w)) = init.fetch("layer1.0.conv1.weight", &[64, 16, 3, 3]) else {
            panic!("no values");
        };
        let var = w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / w.len() as f64;
        // Kaiming fan-out: variance 2 / (64 * 9).
        let expected = 2.0 / 576.0;
        assert!((var / expected - 1.0).abs() < 0.1, "{var} vs {expected}");
        let Ok(Fetch::Values(rv)) = init.fetch("bn1.running_var", &[4]) else {
            panic!("no values");
        };
        assert_eq!(rv, vec![1.0; 4]);
        // The classifier's bias takes its bound from its weight, requested
        // first as the architecture does.
        let Ok(Fetch::Values(_)) = init.fetch("fc.weight", &[6, 128]) else {
            panic!("no values");
        };
        let Ok(Fetch::Values(b)) = init.fetch("fc.bias", &[6]) else {
            panic!("no values");
        };
        assert!(b.iter().all(|v| v.abs() <= 1.0 / 128f32.sqrt()) && b.iter().any(|&v| v != 0.0));
    }
}
