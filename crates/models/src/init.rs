//! Seeded random weights as torchvision initialises each architecture before
//! training: the random-weights baseline of a dissection (Bau et al. 2017
//! compare trained networks with randomly initialised ones).

use std::collections::HashMap;

use crate::arch::Arch;
use crate::error::ModelError;
use crate::weights::{Fetch, ParamSource};

/// splitmix64: tiny, seedable and good enough for weight initialisation.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Seeded weights drawn as torchvision's constructors initialise `arch`
/// (the distributions, not PyTorch's random stream):
///
/// - every BatchNorm: weight 1, bias 0, running mean 0, running variance 1;
/// - ResNets (and `tiny-resnet`), VGG: convolutions Kaiming-normal, fan-out,
///   ReLU gain (`N(0, 2 / (out · kh · kw))`); DenseNet: the same with fan-in;
///   GoogLeNet: `N(0, 0.01²)` truncated at ±2; AlexNet: PyTorch's default,
///   uniform in `±1/√fan_in`;
/// - convolution biases: 0 for VGG, PyTorch's default (uniform in
///   `±1/√fan_in`) for AlexNet;
/// - linear layers: VGG and GoogLeNet `N(0, 0.01²)`; the others PyTorch's
///   default, uniform in `±1/√in`; biases 0 for VGG and DenseNet, else
///   uniform in `±1/√in`.
///
/// Values depend only on the seed and the order of requests, which the
/// architecture fixes.
#[derive(Debug, Clone)]
pub struct TorchvisionInit {
    arch: Arch,
    rng: SplitMix64,
    /// Per layer (key without `.weight`): the rank and fan-in of its weight,
    /// for its bias.
    weights: HashMap<String, (usize, usize)>,
}

impl TorchvisionInit {
    pub fn new(arch: Arch, seed: u64) -> Self {
        Self {
            arch,
            rng: SplitMix64::new(seed),
            weights: HashMap::new(),
        }
    }

    fn normal(&mut self, count: usize, std: f64) -> Vec<f32> {
        (0..count)
            .map(|_| (self.rng.normal() * std) as f32)
            .collect()
    }

    /// `N(0, std²)` redrawn outside `[-2, 2]` (torch's `trunc_normal_`).
    fn truncated(&mut self, count: usize, std: f64) -> Vec<f32> {
        (0..count)
            .map(|_| {
                loop {
                    let v = self.rng.normal() * std;
                    if (-2.0..=2.0).contains(&v) {
                        break v as f32;
                    }
                }
            })
            .collect()
    }

    fn uniform(&mut self, count: usize, bound: f64) -> Vec<f32> {
        (0..count)
            .map(|_| ((self.rng.uniform() * 2.0 - 1.0) * bound) as f32)
            .collect()
    }

    /// A convolution (rank 4) or linear (rank 2) weight.
    fn weight(&mut self, shape: &[usize]) -> Vec<f32> {
        let count: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let fan_out = (shape[0] * shape.iter().skip(2).product::<usize>()).max(1);
        let default = 1.0 / (fan_in as f64).sqrt();
        let conv = shape.len() == 4;
        match self.arch {
            Arch::GoogLeNet => self.truncated(count, 0.01),
            Arch::Vgg16 | Arch::Vgg16Bn if !conv => self.normal(count, 0.01),
            Arch::AlexNet => self.uniform(count, default),
            _ if !conv => self.uniform(count, default),
            Arch::DenseNet161 => self.normal(count, (2.0 / fan_in as f64).sqrt()),
            _ => self.normal(count, (2.0 / fan_out as f64).sqrt()),
        }
    }

    /// The bias of the layer at `prefix`, whose weight came first.
    fn bias(&mut self, prefix: &str, count: usize) -> Vec<f32> {
        match self.weights.get(prefix).copied() {
            // A BatchNorm's, or one without a weight: 0.
            None | Some((1, _)) => vec![0.0; count],
            Some((rank, fan_in)) => match self.arch {
                Arch::Vgg16 | Arch::Vgg16Bn => vec![0.0; count],
                Arch::DenseNet161 if rank == 2 => vec![0.0; count],
                _ => self.uniform(count, 1.0 / (fan_in.max(1) as f64).sqrt()),
            },
        }
    }
}

impl ParamSource for TorchvisionInit {
    fn fetch(&mut self, key: &str, shape: &[usize]) -> Result<Fetch, ModelError> {
        let count: usize = shape.iter().product();
        let (prefix, leaf) = key.rsplit_once('.').unwrap_or(("", key));
        let values = match leaf {
            "running_mean" => vec![0.0; count],
            "running_var" => vec![1.0; count],
            "weight" => {
                let fan_in = shape.iter().skip(1).product::<usize>();
                self.weights
                    .insert(prefix.to_string(), (shape.len(), fan_in));
                if shape.len() == 1 {
                    vec![1.0; count]
                } else {
                    self.weight(shape)
                }
            }
            "bias" => self.bias(prefix, count),
            _ => vec![0.0; count],
        };
        Ok(Fetch::Values(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(init: &mut TorchvisionInit, key: &str, shape: &[usize]) -> Vec<f32> {
        match init.fetch(key, shape).unwrap() {
            Fetch::Values(v) => v,
            other => panic!("{other:?}"),
        }
    }

    fn moments(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var)
    }

    #[test]
    fn each_architecture_draws_torchvisions_distributions() {
        // (arch, conv shape, want conv variance, linear shape, want linear variance).
        let conv = [64, 32, 3, 3];
        let (fan_in, fan_out) = (32.0 * 9.0, 64.0 * 9.0);
        let uniform = |fan: f64| 1.0 / (3.0 * fan);
        let cases = [
            (Arch::ResNet18, 2.0 / fan_out, uniform(512.0)),
            (Arch::Vgg16, 2.0 / fan_out, 1e-4),
            (Arch::DenseNet161, 2.0 / fan_in, uniform(512.0)),
            (Arch::GoogLeNet, 1e-4, 1e-4),
            (Arch::AlexNet, uniform(fan_in), uniform(512.0)),
        ];
        for (arch, conv_var, linear_var) in cases {
            let mut init = TorchvisionInit::new(arch, 7);
            let w = values(&mut init, "features.0.weight", &conv);
            let (mean, var) = moments(&w);
            assert!(
                mean.abs() < 0.05 * conv_var.sqrt(),
                "{arch:?} conv mean {mean}"
            );
            assert!(
                (var / conv_var - 1.0).abs() < 0.05,
                "{arch:?} conv var {var} vs {conv_var}"
            );
            let l = values(&mut init, "fc.weight", &[1000, 512]);
            let (_, var) = moments(&l);
            assert!(
                (var / linear_var - 1.0).abs() < 0.05,
                "{arch:?} linear var {var}"
            );
            let bias = values(&mut init, "fc.bias", &[1000]);
            let zero_bias = matches!(arch, Arch::Vgg16 | Arch::DenseNet161);
            assert_eq!(
                bias.iter().all(|&b| b == 0.0),
                zero_bias,
                "{arch:?} linear bias"
            );
            assert!(
                bias.iter()
                    .all(|&b| f64::from(b).abs() <= 1.0 / 512f64.sqrt())
            );
            assert!(
                values(&mut init, "bn1.weight", &[8])
                    .iter()
                    .all(|&v| v == 1.0)
            );
            assert!(
                values(&mut init, "bn1.bias", &[8])
                    .iter()
                    .all(|&v| v == 0.0)
            );
            assert!(
                values(&mut init, "bn1.running_var", &[8])
                    .iter()
                    .all(|&v| v == 1.0)
            );
        }
    }

    #[test]
    fn the_seed_decides_the_values() {
        let draw = |seed| {
            values(
                &mut TorchvisionInit::new(Arch::ResNet18, seed),
                "conv1.weight",
                &[4, 3, 7, 7],
            )
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }
}
