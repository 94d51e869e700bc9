//! Convolutions prepared for inference: BatchNorm folded into the convolution before it,
//! and on the CPU backend our own kernels (the `conv` crate) with a fused epilogue.
//!
//! Folding: an eval-mode BatchNorm after a convolution is a per-channel affine map, so
//! `bn(conv(x)) = conv'(x)` with `w'_k = s_k w_k` and `b'_k = β_k + s_k (b_k - μ_k)`,
//! `s_k = γ_k / sqrt(σ²_k + ε)` (computed in f64).
//!
//! [`FoldedConv::forward`] computes `relu?(conv'(x) + residual?)`. On the CPU device, every
//! ungrouped, undilated square convolution runs one of `conv`'s kernels: [`Winograd`] for
//! 3x3 stride 1, [`Pointwise`] for 1x1 without padding, [`Im2col`] for the rest. It reaches
//! the input's storage through Burn's primitive tensor (`Tensor::try_into_primitive` for
//! `Flex`) and hands the output back the same way, with no copy; the epilogue runs in the
//! pass that writes each output value. Only there are the folded weights kept in the
//! kernel's own layout and nowhere else. On any other device (wgpu), and for grouped or
//! dilated convolutions, it is Burn's convolution with the folded bias, then Burn's add and
//! ReLU (on wgpu Burn's fusion joins them).

use std::sync::OnceLock;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor, TensorData};
use conv::{Epilogue, Im2col, ImageShape, Pointwise, Spec, Tile, Winograd};

/// A convolution with the BatchNorm after it (if any) folded in.
#[derive(Debug)]
pub struct FoldedConv {
    device: Device,
    out_ch: usize,
    kernel: Kernel,
}

#[derive(Debug)]
enum Kernel {
    /// Burn's convolution with the folded weights and bias.
    Burn(Box<BurnConv>),
    /// A 3x3 stride-1 kernel on the CPU: its `F(4, 3)` and `F(2, 3)` forms, each transformed
    /// once, when a map first needs it (`Tile::for_output`), from `weight`.
    Winograd {
        weight: Vec<f32>,
        bias: Vec<f32>,
        in_ch: usize,
        padding: usize,
        f4: OnceLock<Winograd>,
        f2: OnceLock<Winograd>,
    },
    Pointwise(Pointwise, Vec<f32>),
    Im2col(Im2col, Vec<f32>),
}

#[derive(Debug)]
struct BurnConv {
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
}

/// Whether [`FoldedConv`] may use our CPU kernels (on by default). `NETDISSECT_CPU_CONV=burn`
/// keeps Burn's convolution everywhere, BatchNorm still folded: the benchmarks' baseline.
fn own_kernels() -> bool {
    std::env::var("NETDISSECT_CPU_CONV").map_or(true, |v| v != "burn")
}

impl FoldedConv {
    /// Folds `bn` (if any) into `conv`. Every convolution with fixed padding folds (`None`
    /// for `Same` padding, which depends on the input's size; the zoo has none).
    pub fn new(conv: &Conv2d, bn: Option<&BatchNorm>) -> Option<Self> {
        let ((top, bottom), (left, right)) = match conv.padding {
            PaddingConfig2d::Valid => ((0, 0), (0, 0)),
            PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
            PaddingConfig2d::Same => return None,
        };
        let device = conv.weight.val().device();
        let [k, c, kh, kw] = conv.weight.val().dims();
        let (weight, bias) = fold(conv, bn);
        let square = conv.groups == 1
            && conv.dilation == [1, 1]
            && kh == kw
            && conv.stride[0] == conv.stride[1]
            && top == bottom
            && left == right
            && top == left;
        let spec = Spec {
            out_ch: k,
            kernel: kh,
            stride: conv.stride[0],
            padding: top,
        };
        let kernel = match (square && is_cpu(&device) && own_kernels(), spec) {
            (
                true,
                Spec {
                    kernel: 3,
                    stride: 1,
                    padding,
                    ..
                },
            ) => Kernel::Winograd {
                weight,
                bias,
                in_ch: c,
                padding,
                f4: OnceLock::new(),
                f2: OnceLock::new(),
            },
            (
                true,
                Spec {
                    kernel: 1,
                    stride,
                    padding: 0,
                    ..
                },
            ) => Kernel::Pointwise(Pointwise::new(&weight, k, c, stride), bias),
            (true, spec) => Kernel::Im2col(Im2col::new(&weight, c, spec), bias),
            (false, _) => Kernel::Burn(Box::new(BurnConv {
                weight: Tensor::from_data(TensorData::new(weight, [k, c, kh, kw]), &device),
                bias: Tensor::from_data(TensorData::new(bias, [k]), &device),
                options: ConvOptions::new_with_padding(
                    conv.stride,
                    [(top, bottom), (left, right)],
                    conv.dilation,
                    conv.groups,
                ),
            })),
        };
        Some(Self {
            device,
            out_ch: k,
            kernel,
        })
    }

    /// `relu?(conv'(x) + residual?)`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        residual: Option<Tensor<4>>,
        relu_after: bool,
    ) -> Tensor<4> {
        if let Kernel::Burn(burn) = &self.kernel {
            let BurnConv {
                weight,
                bias,
                options,
            } = &**burn;
            let mut y = conv2d(x, weight.clone(), Some(bias.clone()), options.clone());
            if let Some(r) = residual {
                y = y + r;
            }
            return if relu_after { relu(y) } else { y };
        }
        let residual = residual.map(|r| self.storage(r));
        let epilogue = |bias| Epilogue {
            bias: Some(bias),
            residual: residual.as_ref().map(values),
            relu: relu_after,
        };
        let [n, c, h, w] = x.dims();
        let shape = ImageShape { n, c, h, w };
        let input = self.storage(x);
        let input = values(&input);
        let (out, [ho, wo]) = match &self.kernel {
            Kernel::Winograd {
                weight,
                bias,
                in_ch,
                padding,
                f4,
                f2,
            } => {
                let side = |s: usize| (s + 2 * padding).saturating_sub(2);
                let tile = Tile::for_output(side(h), side(w));
                let cell = if tile == Tile::F4 { f4 } else { f2 };
                let conv =
                    cell.get_or_init(|| Winograd::new(weight, self.out_ch, *in_ch, *padding, tile));
                (conv.run(input, shape, &epilogue(bias)), [side(h), side(w)])
            }
            Kernel::Pointwise(conv, bias) => (
                conv.run(input, shape, &epilogue(bias)),
                conv.output_size(h, w),
            ),
            Kernel::Im2col(conv, bias) => (
                conv.run(input, shape, &epilogue(bias)),
                conv.output_size(h, w).unwrap_or([0, 0]),
            ),
            Kernel::Burn(_) => unreachable!("Burn's convolution returned above"),
        };
        Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(
            out,
            [n, self.out_ch, ho, wo],
        )))
    }

    /// A tensor for our CPU kernels: its storage, contiguous (a copy only where it was a
    /// strided view). Our kernels exist only for models on the CPU device, and
    /// `Model::check_input` refuses inputs that are not float32, so a tensor of another
    /// device or type is a caller's bug.
    fn storage(&self, t: Tensor<4>) -> FlexTensor {
        assert!(
            t.dtype() == DType::F32 && t.device() == self.device,
            "a CPU convolution was given a {:?} tensor on {:?}",
            t.dtype(),
            t.device()
        );
        contiguous(t)
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
