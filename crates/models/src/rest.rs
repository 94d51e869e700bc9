//! The network after a tap: class logits from a layer's activations, as
//! the rest of the network computes them. Ablation's re-run path edits a
//! layer's activations (units zeroed or set to their mean) and runs only
//! what follows, so the layers before it run once per image however many
//! unit sets are tried.
//!
//! Tap positions follow [`crate::Arch::taps`]: each architecture's trunk
//! is a sequence of steps, one per tap, and `rest` runs the steps after
//! tap `from`.

use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::arch::TapId;
use crate::error::ModelError;
use crate::model::Model;
use crate::nets::{DenseNet, GoogLeNet, Net, Plain, ResNet, dense_block};
use crate::tiny::TinyResNet;

/// Applies `step` when its tap position `at` comes after `from`.
pub(crate) fn after(
    from: usize,
    at: usize,
    x: Tensor<4>,
    step: impl FnOnce(Tensor<4>) -> Tensor<4>,
) -> Tensor<4> {
    if at > from { step(x) } else { x }
}

impl Model {
    /// Class logits `[n, classes]` from `x`, the activations of `tap`
    /// (`[n, channels, h, w]`, as [`Model::forward_taps`] gives them,
    /// possibly edited), through the rest of the network.
    pub fn forward_from(&self, tap: TapId, x: Tensor<4>) -> Result<Tensor<2>, ModelError> {
        let all = self.taps();
        let info = (tap.arch == self.arch() && tap.index < all.len())
            .then(|| &all[tap.index])
            .ok_or_else(|| ModelError::UnknownLayer {
                arch: self.arch().name().to_string(),
                name: format!("{} tap #{}", tap.arch, tap.index),
                valid: all.iter().map(|t| t.name.clone()).collect(),
            })?;
        let dims = x.dims();
        if dims[1] != info.channels || dims[0] == 0 {
            return Err(ModelError::BadInput {
                arch: self.arch().name().to_string(),
                shape: dims.to_vec(),
                reason: format!(
                    "layer {} has {} channels; expected a non-empty [n, {}, h, w]",
                    info.name, info.channels, info.channels
                ),
            });
        }
        Ok(self.net().head(self.rest(tap.index, x)))
    }
}

impl Net {
    /// The trunk's steps after tap `from`.
    pub(crate) fn rest(&self, from: usize, x: Tensor<4>) -> Tensor<4> {
        match self {
            Net::ResNet(n) => n.rest(from, x),
            Net::TinyResNet(n) => n.rest(from, x),
            Net::Plain(n) => n.rest(from, x),
            Net::GoogLeNet(n) => n.rest(from, x),
            Net::DenseNet(n) => n.rest(from, x),
        }
    }
}

impl ResNet {
    /// Taps: `conv1` 0, `bn1` 1, `relu` 2, `maxpool` 3, then the blocks.
    fn rest(&self, from: usize, x: Tensor<4>) -> Tensor<4> {
        let x = after(from, 1, x, |x| self.bn1.forward(x));
        let x = after(from, 2, x, relu);
        let mut x = after(from, 3, x, |x| self.maxpool.forward(x));
        for (j, block) in self.layers.iter().flatten().enumerate() {
            x = after(from, 4 + j, x, |x| block.forward(x));
        }
        x
    }
}

impl TinyResNet {
    /// Taps: `conv1` 0, `bn1` 1, `relu` 2, then the blocks (no max pool).
    fn rest(&self, from: usize, x: Tensor<4>) -> Tensor<4> {
        let x = after(from, 1, x, |x| self.bn1.forward(x));
        let mut x = after(from, 2, x, relu);
        for (j, block) in self.layers.iter().flatten().enumerate() {
            x = after(from, 3 + j, x, |x| block.forward(x));
        }
        x
    }
}

impl Plain {
    /// Tap `i` is `features[i]`.
    fn rest(&self, from: usize, mut x: Tensor<4>) -> Tensor<4> {
        for layer in self.features.iter().skip(from + 1) {
            x = layer.forward(x);
        }
        x
    }
}

impl GoogLeNet {
    /// Taps: `conv1` 0, `maxpool1` 1, `conv2` 2, `conv3` 3, `maxpool2` 4,
    /// then the inceptions with `maxpool3` after the second and `maxpool4`
    /// after the seventh.
    fn rest(&self, from: usize, x: Tensor<4>) -> Tensor<4> {
        let x = after(from, 1, x, |x| self.maxpool1.forward(x));
        let x = after(from, 2, x, |x| self.conv2.forward(x));
        let x = after(from, 3, x, |x| self.conv3.forward(x));
        let mut x = after(from, 4, x, |x| self.maxpool2.forward(x));
        let mut at = 4;
        for (i, inception) in self.inceptions.iter().enumerate() {
            at += 1;
            x = after(from, at, x, |x| inception.forward(x));
            let pool = match i {
                1 => Some(&self.maxpool3),
                6 => Some(&self.maxpool4),
                _ => None,
            };
            if let Some(pool) = pool {
                at += 1;
                x = after(from, at, x, |x| pool.forward(x));
            }
        }
        x
    }
}

impl DenseNet {
    /// Taps: `conv0` 0, `norm0` 1, `relu0` 2, `pool0` 3, then each dense
    /// block and the transition after it, then `norm5`.
    fn rest(&self, from: usize, x: Tensor<4>) -> Tensor<4> {
        let x = after(from, 1, x, |x| self.norm0.forward(x));
        let x = after(from, 2, x, relu);
        let mut x = after(from, 3, x, |x| self.pool0.forward(x));
        let mut at = 3;
        for (i, layers) in self.blocks.iter().enumerate() {
            at += 1;
            x = after(from, at, x, |x| dense_block(layers, x));
            if let Some(t) = self.transitions.get(i) {
                at += 1;
                x = after(from, at, x, |x| t.forward(x));
            }
        }
        after(from, at + 1, x, |x| self.norm5.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;
    use crate::arch::Arch;
    use crate::gpu::cpu_device;

    /// For every tap of every family (the inference form and the module
    /// tree), the logits from the tap's own activations are the network's.
    #[test]
    fn the_rest_from_any_tap_gives_the_networks_own_logits() {
        let device = cpu_device();
        let values: Vec<f32> = (0..2 * 3 * 64 * 64)
            .map(|i| (i as f32 * 0.137 + 0.4).sin())
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [2, 3, 64, 64]), &device);
        let mut failures = Vec::new();
        for arch in [
            Arch::TinyResNet,
            Arch::ResNet18,
            Arch::ResNet50,
            Arch::AlexNet,
            Arch::Vgg16Bn,
            Arch::GoogLeNet,
            Arch::DenseNet161,
        ] {
            let folded = Model::synthetic(arch, 5, &device).unwrap();
            let tree = Model::from_net_unfolded(arch, 5, folded.net().clone());
            for model in [&folded, &tree] {
                let want = model
                    .forward(x.clone())
                    .unwrap()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                for info in model.taps() {
                    let tap = model.tap(&info.name).unwrap();
                    let Some([h, w]) = info.output_size([64, 64]) else {
                        continue;
                    };
                    if h == 0 || w == 0 {
                        continue;
                    }
                    let acts = model.forward_taps(x.clone(), &[tap]).unwrap().remove(0);
                    let got = model.forward_from(tap, acts).unwrap().into_data();
                    let got = got.try_to_vec::<f32>().unwrap();
                    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                    let worst =
                        (want.iter().zip(&got)).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    if worst > 1e-3 * scale {
                        failures.push(format!("{arch:?} {}: off by {worst}", info.name));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn activations_of_the_wrong_width_are_refused() {
        let device = cpu_device();
        let model = Model::synthetic(Arch::ResNet18, 5, &device).unwrap();
        let tap = model.tap("layer3").unwrap();
        let x = Tensor::<4>::zeros([1, 7, 4, 4], &device);
        let e = model.forward_from(tap, x).unwrap_err().to_string();
        assert!(e.contains("256 channels"), "{e}");
    }
}
