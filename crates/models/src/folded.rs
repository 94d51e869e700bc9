//! Convolutions prepared for inference: BatchNorm folded into the convolution before it,
//! and on the CPU backend our own kernels (the `conv` crate) with a fused epilogue.
//!
//! Folding: an eval-mode BatchNorm after a convolution is a per-channel affine map, so
//! `bn(conv(x)) = conv'(x)` with `w'_k = s_k w_k` and `b'_k = β_k + s_k (b_k - μ_k)`,
//! `s_k = γ_k / sqrt(σ²_k + ε)` (computed in f64). A [`FoldedConv`] holds these weights as
//! Burn tensors on the model's device, and on the CPU device also the same weights
//! prepared for [`Winograd`] (3x3, stride 1) or [`Pointwise`] (1x1, no padding) kernels.
//!
//! [`FoldedConv::forward`] computes `relu?(conv'(x) + residual?)`. On the CPU backend it
//! reaches the input's storage through Burn's primitive tensor (`Tensor::try_into_primitive`
//! for `Flex`) and hands the output back the same way, with no copy; the epilogue runs in
//! the pass that writes each output value. Other convolutions on the CPU run Burn's kernel,
//! followed by the epilogue as one pass. On any other device (wgpu) it is Burn's
//! convolution with the folded bias, then Burn's add and ReLU, which Burn's fusion joins.

use std::sync::OnceLock;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor, TensorData};

use conv::{Epilogue, ImageShape, Pointwise, Tile, Winograd};

/// Which of our kernels the CPU backend runs a convolution with.
#[derive(Debug)]
enum CpuKernel {
    /// A 3x3 stride-1 kernel: its `F(4, 3)` and `F(2, 3)` forms, each transformed once,
    /// when a map first needs it (`Tile::for_side`).
    Winograd {
        f4: OnceLock<Winograd>,
        f2: OnceLock<Winograd>,
        padding: usize,
    },
    Pointwise(Pointwise),
    /// Burn's convolution, then our epilogue.
    Burn,
}

/// A convolution with the BatchNorm after it (if any) folded in.
#[derive(Debug)]
pub struct FoldedConv {
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
    device: Device,
    /// Set when the model lives on the CPU device.
    cpu: Option<CpuConv>,
}

#[derive(Debug)]
struct CpuConv {
    kernel: CpuKernel,
    /// The folded weights and bias, `[K, C, kh, kw]` and `[K]`.
    weight: Vec<f32>,
    bias: Vec<f32>,
    out_ch: usize,
    in_ch: usize,
}

/// Whether [`FoldedConv`] may use our CPU kernels (on by default). `NETDISSECT_CPU_CONV=burn`
/// keeps Burn's convolution everywhere, BatchNorm still folded: the benchmarks' baseline.
fn own_kernels() -> bool {
    std::env::var("NETDISSECT_CPU_CONV").map_or(true, |v| v != "burn")
}

impl FoldedConv {
    /// Folds `bn` (if any) into `conv`. Only ungrouped, undilated convolutions with square
    /// kernels, equal strides and equal padding on all sides reach our kernels; every
    /// convolution with fixed padding folds (`None` for `Same` padding, which depends on
    /// the input's size; the zoo has none).
    pub fn new(conv: &Conv2d, bn: Option<&BatchNorm>) -> Option<Self> {
        let ((top, bottom), (left, right)) = match conv.padding {
            PaddingConfig2d::Valid => ((0, 0), (0, 0)),
            PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
            PaddingConfig2d::Same => return None,
        };
        let device = conv.weight.val().device();
        let [k, c, kh, kw] = conv.weight.val().dims();
        let (weight, bias) = fold(conv, bn);
        let options = ConvOptions::new_with_padding(
            conv.stride,
            [(top, bottom), (left, right)],
            conv.dilation,
            conv.groups,
        );
        let plain = conv.groups == 1
            && conv.dilation == [1, 1]
            && kh == kw
            && conv.stride[0] == conv.stride[1]
            && top == bottom
            && left == right
            && top == left;
        let cpu = is_cpu(&device).then(|| CpuConv {
            kernel: match (plain && own_kernels(), kh, conv.stride[0], top) {
                (true, 3, 1, padding) => CpuKernel::Winograd {
                    f4: OnceLock::new(),
                    f2: OnceLock::new(),
                    padding,
                },
                (true, 1, s, 0) => CpuKernel::Pointwise(Pointwise::new(&weight, k, c, s)),
                _ => CpuKernel::Burn,
            },
            weight: weight.clone(),
            bias: bias.clone(),
            out_ch: k,
            in_ch: c,
        });
        Some(Self {
            weight: Tensor::from_data(TensorData::new(weight, [k, c, kh, kw]), &device),
            bias: Tensor::from_data(TensorData::new(bias, [k]), &device),
            options,
            device,
            cpu,
        })
    }

    /// `relu?(conv'(x) + residual?)`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        residual: Option<Tensor<4>>,
        relu_after: bool,
    ) -> Tensor<4> {
        if let Some(cpu) = &self.cpu
            && x.dtype() == DType::F32
            && x.device() == self.device
            && residual
                .as_ref()
                .is_none_or(|r| r.dtype() == DType::F32 && r.device() == self.device)
        {
            return cpu.forward(self, x, residual, relu_after);
        }
        let mut y = conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            self.options.clone(),
        );
        if let Some(r) = residual {
            y = y + r;
        }
        if relu_after { relu(y) } else { y }
    }
}

impl CpuConv {
    fn forward(
        &self,
        folded: &FoldedConv,
        x: Tensor<4>,
        residual: Option<Tensor<4>>,
        relu_after: bool,
    ) -> Tensor<4> {
        let residual = residual.map(contiguous);
        let epilogue = Epilogue {
            bias: Some(&self.bias),
            residual: residual.as_ref().map(values),
            relu: relu_after,
        };
        let [n, c, h, w] = x.dims();
        let shape = ImageShape { n, c, h, w };
        let (out, [ho, wo]) = match &self.kernel {
            CpuKernel::Winograd { f4, f2, padding } => {
                let input = contiguous(x);
                let [ho, wo] = [h + 2 * padding - 2, w + 2 * padding - 2];
                let cell = match Tile::for_side(ho.min(wo)) {
                    Tile::F4 => (f4, Tile::F4),
                    Tile::F2 => (f2, Tile::F2),
                };
                let conv = cell.0.get_or_init(|| {
                    Winograd::new(&self.weight, self.out_ch, self.in_ch, *padding, cell.1)
                });
                (conv.run(values(&input), shape, &epilogue), [ho, wo])
            }
            CpuKernel::Pointwise(conv) => {
                let input = contiguous(x);
                (
                    conv.run(values(&input), shape, &epilogue),
                    conv.output_size(h, w),
                )
            }
            CpuKernel::Burn => {
                let y = conv2d(x, folded.weight.clone(), None, folded.options.clone());
                let [_, k, ho, wo] = y.dims();
                let mut out = contiguous(y)
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("f32 storage");
                epilogue.apply(&mut out, k, ho * wo);
                (out, [ho, wo])
            }
        };
        Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(
            out,
            [n, self.out_ch, ho, wo],
        )))
    }
}

/// The folded `[K, C, kh, kw]` weights and `[K]` bias of `conv` followed by `bn`.
fn fold(conv: &Conv2d, bn: Option<&BatchNorm>) -> (Vec<f32>, Vec<f32>) {
    let [k, c, kh, kw] = conv.weight.val().dims();
    let mut weight = to_vec(conv.weight.val());
    let mut bias: Vec<f64> = match &conv.bias {
        Some(b) => to_vec(b.val()).into_iter().map(f64::from).collect(),
        None => vec![0.0; k],
    };
    if let Some(bn) = bn {
        let gamma = to_vec(bn.gamma.val());
        let beta = to_vec(bn.beta.val());
        let mean = to_vec(bn.running_mean.value());
        let var = to_vec(bn.running_var.value());
        let per = c * kh * kw;
        for ch in 0..k {
            let s = f64::from(gamma[ch]) / (f64::from(var[ch]) + bn.epsilon).sqrt();
            for v in &mut weight[ch * per..(ch + 1) * per] {
                *v = (f64::from(*v) * s) as f32;
            }
            bias[ch] = f64::from(beta[ch]) + s * (bias[ch] - f64::from(mean[ch]));
        }
    }
    (weight, bias.into_iter().map(|b| b as f32).collect())
}

fn is_cpu(device: &Device) -> bool {
    Tensor::<1>::zeros([1], device)
        .try_into_primitive::<Flex>()
        .is_ok()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

/// The CPU tensor's primitive, contiguous (a copy only where it was a strided view).
fn contiguous(t: Tensor<4>) -> FlexTensor {
    match t.try_into_primitive::<Flex>() {
        Ok(flex) if flex.is_contiguous() => flex,
        Ok(flex) => flex.to_contiguous(),
        // `forward` checked the device before coming here.
        Err(e) => unreachable!("a CPU kernel was given a tensor of another backend: {e:?}"),
    }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

#[cfg(test)]
mod tests;
