//! The networks themselves: torchvision's ResNet, AlexNet and VGG, layer for layer, in Burn.
//!
//! Each network is built from a [`ParamSource`](crate::weights::ParamSource) under
//! torchvision's state_dict keys and runs its forward pass through a [`Collector`] that keeps
//! the requested tap activations and stops after the deepest one. Dropout is absent: the zoo
//! runs in eval mode only, where it is the identity.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d, Relu};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;

use crate::arch::{Arch, VGG16_CFG};
use crate::error::ModelError;
use crate::weights::Builder;

/// Keeps the activations asked for, in request order, and says when to stop.
pub(crate) struct Collector {
    wanted: Vec<usize>,
    deepest: Option<usize>,
    next: usize,
    pub(crate) slots: Vec<Option<Tensor<4>>>,
}

impl Collector {
    /// Collects the taps at forward positions `wanted` (duplicates allowed).
    pub(crate) fn new(wanted: Vec<usize>) -> Self {
        Self {
            deepest: wanted.iter().copied().max(),
            slots: vec![None; wanted.len()],
            wanted,
            next: 0,
        }
    }

    /// Records tap position `self.next` and reports whether the forward pass may stop.
    pub(crate) fn visit(&mut self, x: &Tensor<4>) -> bool {
        let here = self.next;
        self.next += 1;
        for (slot, &want) in self.slots.iter_mut().zip(&self.wanted) {
            if want == here {
                *slot = Some(x.clone());
            }
        }
        self.deepest.is_some_and(|d| here >= d)
    }

    /// Whether the tap `ahead` positions after the next one is wanted.
    pub(crate) fn wants(&self, ahead: usize) -> bool {
        self.wanted.contains(&(self.next + ahead))
    }

    /// Passes the next position, which is not wanted, without its activation; reports
    /// whether the forward pass may stop.
    pub(crate) fn skip(&mut self) -> bool {
        debug_assert!(!self.wants(0), "a wanted tap was skipped");
        let here = self.next;
        self.next += 1;
        self.deepest.is_some_and(|d| here >= d)
    }
}

/// Visits a tap; returns from the enclosing forward when nothing deeper is wanted.
macro_rules! tap {
    ($collector:expr, $x:expr) => {
        if $collector.visit(&$x) {
            return None;
        }
    };
}
pub(crate) use tap;

fn max_pool(kernel: usize, stride: usize, padding: usize) -> MaxPool2d {
    MaxPool2dConfig::new([kernel, kernel])
        .with_strides([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .init()
}

/// A torchvision ResNet `BasicBlock` or `Bottleneck` (with `conv3`/`bn3`).
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    /// torchvision's `downsample.0` / `downsample.1`.
    pub downsample: Option<Downsample>,
}

/// The projection shortcut of the first block of a stage.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl Downsample {
    /// The shortcut of block `p` (e.g. `layer2.0`): a strided 1x1
    /// convolution and batch norm, where the block changes stride or width;
    /// `None` (identity) otherwise.
    pub(crate) fn build(
        b: &mut Builder,
        p: &str,
        in_ch: usize,
        out_ch: usize,
        stride: usize,
    ) -> Result<Option<Self>, ModelError> {
        if stride == 1 && in_ch == out_ch {
            return Ok(None);
        }
        Ok(Some(Downsample {
            conv: b.conv(
                &format!("{p}.downsample.0"),
                [in_ch, out_ch],
                1,
                stride,
                0,
                false,
            )?,
            bn: b.batch_norm(&format!("{p}.downsample.1"), out_ch, BN_EPS)?,
        }))
    }
}

impl Block {
    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.forward(x.clone())),
            None => x.clone(),
        };
        let mut out = relu(self.bn1.forward(self.conv1.forward(x)));
        out = self.bn2.forward(self.conv2.forward(out));
        if let (Some(conv3), Some(bn3)) = (&self.conv3, &self.bn3) {
            out = bn3.forward(conv3.forward(relu(out)));
        }
        relu(out + identity)
    }
}

/// torchvision ResNet-18/34/50/101/152.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layers: Vec<Vec<Block>>,
    pub fc: Linear,
}

const BN_EPS: f64 = 1e-5;

impl ResNet {
    pub(crate) fn build(
        b: &mut Builder,
        blocks: [usize; 4],
        bottleneck: bool,
        num_classes: usize,
    ) -> Result<Self, ModelError> {
        let conv1 = b.conv("conv1", [3, 64], 7, 2, 3, false)?;
        let bn1 = b.batch_norm("bn1", 64, BN_EPS)?;
        let expansion = if bottleneck { 4 } else { 1 };
        let mut in_ch = 64;
        let mut layers = Vec::new();
        for (stage, &count) in blocks.iter().enumerate() {
            let width = 64 << stage;
            let mut stage_blocks = Vec::new();
            for index in 0..count {
                let p = format!("layer{}.{index}", stage + 1);
                let stride = if stage > 0 && index == 0 { 2 } else { 1 };
                let out_ch = width * expansion;
                let downsample = if index == 0 {
                    Downsample::build(b, &p, in_ch, out_ch, stride)?
                } else {
                    None
                };
                let block = if bottleneck {
                    Block {
                        conv1: b.conv(&format!("{p}.conv1"), [in_ch, width], 1, 1, 0, false)?,
                        bn1: b.batch_norm(&format!("{p}.bn1"), width, BN_EPS)?,
                        conv2: b.conv(
                            &format!("{p}.conv2"),
                            [width, width],
                            3,
                            stride,
                            1,
                            false,
                        )?,
                        bn2: b.batch_norm(&format!("{p}.bn2"), width, BN_EPS)?,
                        conv3: Some(b.conv(
                            &format!("{p}.conv3"),
                            [width, out_ch],
                            1,
                            1,
                            0,
                            false,
                        )?),
                        bn3: Some(b.batch_norm(&format!("{p}.bn3"), out_ch, BN_EPS)?),
                        downsample,
                    }
                } else {
                    Block {
                        conv1: b.conv(
                            &format!("{p}.conv1"),
                            [in_ch, width],
                            3,
                            stride,
                            1,
                            false,
                        )?,
                        bn1: b.batch_norm(&format!("{p}.bn1"), width, BN_EPS)?,
                        conv2: b.conv(&format!("{p}.conv2"), [width, width], 3, 1, 1, false)?,
                        bn2: b.batch_norm(&format!("{p}.bn2"), width, BN_EPS)?,
                        conv3: None,
                        bn3: None,
                        downsample,
                    }
                };
                stage_blocks.push(block);
                in_ch = out_ch;
            }
            layers.push(stage_blocks);
        }
        let fc = b.linear("fc", in_ch, num_classes)?;
        Ok(Self {
            conv1,
            bn1,
            maxpool: max_pool(3, 2, 1),
            layers,
            fc,
        })
    }

    /// Runs up to the deepest wanted tap; `Some(features)` only when the whole trunk ran.
    pub(crate) fn trunk(&self, x: Tensor<4>, c: &mut Collector) -> Option<Tensor<4>> {
        let x = self.conv1.forward(x);
        tap!(c, x);
        let x = self.bn1.forward(x);
        tap!(c, x);
        let x = relu(x);
        tap!(c, x);
        let mut x = self.maxpool.forward(x);
        tap!(c, x);
        for stage in &self.layers {
            for block in stage {
                x = block.forward(x);
                tap!(c, x);
            }
        }
        Some(x)
    }

    pub(crate) fn head(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, ch, _, _] = x.dims();
        let x = adaptive_avg_pool2d(x, [1, 1]).reshape([n, ch]);
        self.fc.forward(x)
    }
}

/// One entry of a plain network's `features` sequence.
#[derive(Module, Debug)]
pub enum FeatureLayer {
    Conv(Conv2d),
    Bn(BatchNorm),
    Relu(Relu),
    MaxPool(MaxPool2d),
}

impl FeatureLayer {
    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            FeatureLayer::Conv(conv) => conv.forward(x),
            FeatureLayer::Bn(bn) => bn.forward(x),
            FeatureLayer::Relu(_) => relu(x),
            FeatureLayer::MaxPool(pool) => pool.forward(x),
        }
    }
}

/// torchvision AlexNet and VGG: `features`, an adaptive average pool, and a three-layer
/// `classifier`.
#[derive(Module, Debug)]
pub struct Plain {
    pub features: Vec<FeatureLayer>,
    /// The classifier's linear layers (`classifier.1/.4/.6` for AlexNet,
    /// `classifier.0/.3/.6` for VGG), ReLU between them.
    pub classifier: Vec<Linear>,
    /// Side of the adaptive average pool before the classifier (6 AlexNet, 7 VGG).
    pub pool_side: usize,
}

impl Plain {
    pub(crate) fn build_alexnet(b: &mut Builder, num_classes: usize) -> Result<Self, ModelError> {
        let mut features = Vec::new();
        // (in, out, kernel, stride, padding, max-pool after)
        let convs = [
            (3, 64, 11, 4, 2, true),
            (64, 192, 5, 1, 2, true),
            (192, 384, 3, 1, 1, false),
            (384, 256, 3, 1, 1, false),
            (256, 256, 3, 1, 1, true),
        ];
        for (c_in, c_out, k, s, p, pool) in convs {
            let key = format!("features.{}", features.len());
            features.push(FeatureLayer::Conv(b.conv(
                &key,
                [c_in, c_out],
                k,
                s,
                p,
                true,
            )?));
            features.push(FeatureLayer::Relu(Relu::new()));
            if pool {
                features.push(FeatureLayer::MaxPool(max_pool(3, 2, 0)));
            }
        }
        let classifier = vec![
            b.linear("classifier.1", 256 * 36, 4096)?,
            b.linear("classifier.4", 4096, 4096)?,
            b.linear("classifier.6", 4096, num_classes)?,
        ];
        Ok(Self {
            features,
            classifier,
            pool_side: 6,
        })
    }

    pub(crate) fn build_vgg16(
        b: &mut Builder,
        batch_norm: bool,
        num_classes: usize,
    ) -> Result<Self, ModelError> {
        let mut features = Vec::new();
        let mut c_in = 3;
        for &v in &VGG16_CFG {
            if v == 0 {
                features.push(FeatureLayer::MaxPool(max_pool(2, 2, 0)));
                continue;
            }
            let key = format!("features.{}", features.len());
            features.push(FeatureLayer::Conv(b.conv(
                &key,
                [c_in, v],
                3,
                1,
                1,
                true,
            )?));
            if batch_norm {
                let key = format!("features.{}", features.len());
                features.push(FeatureLayer::Bn(b.batch_norm(&key, v, BN_EPS)?));
            }
            features.push(FeatureLayer::Relu(Relu::new()));
            c_in = v;
        }
        let classifier = vec![
            b.linear("classifier.0", 512 * 49, 4096)?,
            b.linear("classifier.3", 4096, 4096)?,
            b.linear("classifier.6", 4096, num_classes)?,
        ];
        Ok(Self {
            features,
            classifier,
            pool_side: 7,
        })
    }

    pub(crate) fn trunk(&self, mut x: Tensor<4>, c: &mut Collector) -> Option<Tensor<4>> {
        for layer in &self.features {
            x = layer.forward(x);
            tap!(c, x);
        }
        Some(x)
    }

    pub(crate) fn head(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, ch, _, _] = x.dims();
        let side = self.pool_side;
        let mut x = adaptive_avg_pool2d(x, [side, side]).reshape([n, ch * side * side]);
        let last = self.classifier.len().saturating_sub(1);
        for (i, linear) in self.classifier.iter().enumerate() {
            x = linear.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// torchvision's `BasicConv2d` of GoogLeNet: convolution without bias, BatchNorm
/// (eps 0.001), ReLU.
#[derive(Module, Debug)]
pub struct BasicConv {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl BasicConv {
    fn build(
        b: &mut Builder,
        prefix: &str,
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            conv: b.conv(
                &format!("{prefix}.conv"),
                channels,
                kernel,
                stride,
                padding,
                false,
            )?,
            bn: b.batch_norm(&format!("{prefix}.bn"), channels[1], 0.001)?,
        })
    }

    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

/// A GoogLeNet inception module: four branches concatenated on channels. Like torchvision,
/// the "5x5" branch uses a 3x3 convolution.
#[derive(Module, Debug)]
pub struct Inception {
    pub branch1: BasicConv,
    /// `branch2.0` (1x1 reduce) and `branch2.1` (3x3).
    pub branch2: Vec<BasicConv>,
    /// `branch3.0` (1x1 reduce) and `branch3.1` (3x3).
    pub branch3: Vec<BasicConv>,
    pub branch4_pool: MaxPool2d,
    /// `branch4.1`, the 1x1 projection after the pool.
    pub branch4: BasicConv,
}

/// GoogLeNet inception configurations: (name, in, 1x1, 3x3 reduce, 3x3, "5x5" reduce,
/// "5x5", pool projection), in forward order.
pub(crate) const INCEPTIONS: [(&str, [usize; 7]); 9] = [
    ("inception3a", [192, 64, 96, 128, 16, 32, 32]),
    ("inception3b", [256, 128, 128, 192, 32, 96, 64]),
    ("inception4a", [480, 192, 96, 208, 16, 48, 64]),
    ("inception4b", [512, 160, 112, 224, 24, 64, 64]),
    ("inception4c", [512, 128, 128, 256, 24, 64, 64]),
    ("inception4d", [512, 112, 144, 288, 32, 64, 64]),
    ("inception4e", [528, 256, 160, 320, 32, 128, 128]),
    ("inception5a", [832, 256, 160, 320, 32, 128, 128]),
    ("inception5b", [832, 384, 192, 384, 48, 128, 128]),
];

impl Inception {
    fn build(b: &mut Builder, p: &str, c: [usize; 7]) -> Result<Self, ModelError> {
        let [c_in, c1, c3r, c3, c5r, c5, pool] = c;
        Ok(Self {
            branch1: BasicConv::build(b, &format!("{p}.branch1"), [c_in, c1], 1, 1, 0)?,
            branch2: vec![
                BasicConv::build(b, &format!("{p}.branch2.0"), [c_in, c3r], 1, 1, 0)?,
                BasicConv::build(b, &format!("{p}.branch2.1"), [c3r, c3], 3, 1, 1)?,
            ],
            branch3: vec![
                BasicConv::build(b, &format!("{p}.branch3.0"), [c_in, c5r], 1, 1, 0)?,
                BasicConv::build(b, &format!("{p}.branch3.1"), [c5r, c5], 3, 1, 1)?,
            ],
            branch4_pool: max_pool_ceil(3, 1, 1),
            branch4: BasicConv::build(b, &format!("{p}.branch4.1"), [c_in, pool], 1, 1, 0)?,
        })
    }

    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1.forward(x.clone());
        let b2 = self.branch2.iter().fold(x.clone(), |x, c| c.forward(x));
        let b3 = self.branch3.iter().fold(x.clone(), |x, c| c.forward(x));
        let b4 = self.branch4.forward(self.branch4_pool.forward(x));
        Tensor::cat(vec![b1, b2, b3, b4], 1)
    }
}

fn max_pool_ceil(kernel: usize, stride: usize, padding: usize) -> MaxPool2d {
    MaxPool2dConfig::new([kernel, kernel])
        .with_strides([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_ceil_mode(true)
        .init()
}

/// torchvision GoogLeNet (Inception v1) in eval mode: the auxiliary classifiers are not
/// built (their `aux1.`/`aux2.` checkpoint keys are accepted and ignored).
#[derive(Module, Debug)]
pub struct GoogLeNet {
    pub conv1: BasicConv,
    pub maxpool1: MaxPool2d,
    pub conv2: BasicConv,
    pub conv3: BasicConv,
    pub maxpool2: MaxPool2d,
    /// inception3a … inception5b in forward order.
    pub inceptions: Vec<Inception>,
    pub maxpool3: MaxPool2d,
    pub maxpool4: MaxPool2d,
    pub fc: Linear,
    /// torchvision's `transform_input`: re-normalise an ImageNet-normalised input to the
    /// `(x - 0.5) / 0.5` the original weights were trained with. torchvision turns it on for
    /// its pretrained ImageNet weights; off by default here, like the bare constructor.
    pub transform_input: bool,
}

impl GoogLeNet {
    pub(crate) fn build(b: &mut Builder, num_classes: usize) -> Result<Self, ModelError> {
        let mut inceptions = Vec::new();
        for (name, config) in INCEPTIONS {
            inceptions.push(Inception::build(b, name, config)?);
        }
        Ok(Self {
            conv1: BasicConv::build(b, "conv1", [3, 64], 7, 2, 3)?,
            maxpool1: max_pool_ceil(3, 2, 0),
            conv2: BasicConv::build(b, "conv2", [64, 64], 1, 1, 0)?,
            conv3: BasicConv::build(b, "conv3", [64, 192], 3, 1, 1)?,
            maxpool2: max_pool_ceil(3, 2, 0),
            inceptions,
            maxpool3: max_pool_ceil(3, 2, 0),
            maxpool4: max_pool_ceil(2, 2, 0),
            fc: b.linear("fc", 1024, num_classes)?,
            transform_input: false,
        })
    }

    fn transform(&self, x: Tensor<4>) -> Tensor<4> {
        if !self.transform_input {
            return x;
        }
        let mean = [0.485f64, 0.456, 0.406];
        let std = [0.229f64, 0.224, 0.225];
        let channels: Vec<Tensor<4>> = x
            .split(1, 1)
            .into_iter()
            .enumerate()
            .map(|(c, t)| t * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5)
            .collect();
        Tensor::cat(channels, 1)
    }

    pub(crate) fn trunk(&self, x: Tensor<4>, c: &mut Collector) -> Option<Tensor<4>> {
        let x = self.conv1.forward(self.transform(x));
        tap!(c, x);
        let x = self.maxpool1.forward(x);
        tap!(c, x);
        let x = self.conv2.forward(x);
        tap!(c, x);
        let x = self.conv3.forward(x);
        tap!(c, x);
        let mut x = self.maxpool2.forward(x);
        tap!(c, x);
        for (i, inception) in self.inceptions.iter().enumerate() {
            x = inception.forward(x);
            tap!(c, x);
            // After inception3b and inception4e come the stage pools.
            if i == 1 {
                x = self.maxpool3.forward(x);
                tap!(c, x);
            } else if i == 6 {
                x = self.maxpool4.forward(x);
                tap!(c, x);
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

/// One DenseNet layer: BN-ReLU-1x1 conv to `bn_size * growth`, BN-ReLU-3x3 conv to `growth`.
#[derive(Module, Debug)]
pub struct DenseLayer {
    pub norm1: BatchNorm,
    pub conv1: Conv2d,
    pub norm2: BatchNorm,
    pub conv2: Conv2d,
}

/// A DenseNet transition: BN-ReLU-1x1 conv halving the channels, 2x2 average pool.
#[derive(Module, Debug)]
pub struct Transition {
    pub norm: BatchNorm,
    pub conv: Conv2d,
    pub pool: AvgPool2d,
}

/// One dense block: each layer's output concatenated to everything before it.
pub(crate) fn dense_block(layers: &[DenseLayer], x: Tensor<4>) -> Tensor<4> {
    let mut features = vec![x];
    for layer in layers {
        let input = Tensor::cat(features.clone(), 1);
        let h = layer.conv1.forward(relu(layer.norm1.forward(input)));
        let h = layer.conv2.forward(relu(layer.norm2.forward(h)));
        features.push(h);
    }
    Tensor::cat(features, 1)
}

impl Transition {
    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool
            .forward(self.conv.forward(relu(self.norm.forward(x))))
    }
}

/// DenseNet-161's growth rate, block sizes and initial width.
pub(crate) const DENSENET161: (usize, [usize; 4], usize) = (48, [6, 12, 36, 24], 96);

/// torchvision DenseNet-161.
#[derive(Module, Debug)]
pub struct DenseNet {
    pub conv0: Conv2d,
    pub norm0: BatchNorm,
    pub pool0: MaxPool2d,
    pub blocks: Vec<Vec<DenseLayer>>,
    pub transitions: Vec<Transition>,
    pub norm5: BatchNorm,
    pub classifier: Linear,
}

impl DenseNet {
    pub(crate) fn build(b: &mut Builder, num_classes: usize) -> Result<Self, ModelError> {
        let (growth, block_sizes, init) = DENSENET161;
        let bottleneck = 4 * growth;
        let conv0 = b.conv("features.conv0", [3, init], 7, 2, 3, false)?;
        let norm0 = b.batch_norm("features.norm0", init, BN_EPS)?;
        let mut channels = init;
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for (i, &count) in block_sizes.iter().enumerate() {
            let mut layers = Vec::new();
            for l in 0..count {
                let p = format!("features.denseblock{}.denselayer{}", i + 1, l + 1);
                let c_in = channels + l * growth;
                layers.push(DenseLayer {
                    norm1: b.batch_norm(&format!("{p}.norm1"), c_in, BN_EPS)?,
                    conv1: b.conv(&format!("{p}.conv1"), [c_in, bottleneck], 1, 1, 0, false)?,
                    norm2: b.batch_norm(&format!("{p}.norm2"), bottleneck, BN_EPS)?,
                    conv2: b.conv(&format!("{p}.conv2"), [bottleneck, growth], 3, 1, 1, false)?,
                });
            }
            blocks.push(layers);
            channels += count * growth;
            if i + 1 < block_sizes.len() {
                let p = format!("features.transition{}", i + 1);
                transitions.push(Transition {
                    norm: b.batch_norm(&format!("{p}.norm"), channels, BN_EPS)?,
                    conv: b.conv(
                        &format!("{p}.conv"),
                        [channels, channels / 2],
                        1,
                        1,
                        0,
                        false,
                    )?,
                    pool: AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                });
                channels /= 2;
            }
        }
        Ok(Self {
            conv0,
            norm0,
            pool0: max_pool(3, 2, 1),
            blocks,
            transitions,
            norm5: b.batch_norm("features.norm5", channels, BN_EPS)?,
            classifier: b.linear("classifier", channels, num_classes)?,
        })
    }

    pub(crate) fn trunk(&self, x: Tensor<4>, c: &mut Collector) -> Option<Tensor<4>> {
        let x = self.conv0.forward(x);
        tap!(c, x);
        let x = self.norm0.forward(x);
        tap!(c, x);
        let x = relu(x);
        tap!(c, x);
        let mut x = self.pool0.forward(x);
        tap!(c, x);
        for (i, layers) in self.blocks.iter().enumerate() {
            x = dense_block(layers, x);
            tap!(c, x);
            if let Some(t) = self.transitions.get(i) {
                x = t.forward(x);
                tap!(c, x);
            }
        }
        let x = self.norm5.forward(x);
        tap!(c, x);
        Some(x)
    }

    pub(crate) fn head(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, ch, _, _] = x.dims();
        let x = adaptive_avg_pool2d(relu(x), [1, 1]).reshape([n, ch]);
        self.classifier.forward(x)
    }
}

/// The network behind a [`crate::Model`].
// Built once per model and never moved in a loop, so the variants' size difference is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Net {
    ResNet(ResNet),
    Plain(Plain),
    GoogLeNet(GoogLeNet),
    DenseNet(DenseNet),
    TinyResNet(crate::tiny::TinyResNet),
}

impl Net {
    pub(crate) fn build(
        arch: Arch,
        b: &mut Builder,
        num_classes: usize,
    ) -> Result<Self, ModelError> {
        Ok(match arch {
            Arch::AlexNet => Net::Plain(Plain::build_alexnet(b, num_classes)?),
            Arch::Vgg16 => Net::Plain(Plain::build_vgg16(b, false, num_classes)?),
            Arch::Vgg16Bn => Net::Plain(Plain::build_vgg16(b, true, num_classes)?),
            Arch::GoogLeNet => Net::GoogLeNet(GoogLeNet::build(b, num_classes)?),
            Arch::DenseNet161 => Net::DenseNet(DenseNet::build(b, num_classes)?),
            Arch::TinyResNet => Net::TinyResNet(crate::tiny::TinyResNet::build(b, num_classes)?),
            Arch::ResNet18
            | Arch::ResNet34
            | Arch::ResNet50
            | Arch::ResNet101
            | Arch::ResNet152 => {
                let (blocks, bottleneck) = arch.resnet_layout().unwrap_or(([2, 2, 2, 2], false));
                Net::ResNet(ResNet::build(b, blocks, bottleneck, num_classes)?)
            }
        })
    }

    pub(crate) fn trunk(&self, x: Tensor<4>, c: &mut Collector) -> Option<Tensor<4>> {
        match self {
            Net::ResNet(n) => n.trunk(x, c),
            Net::Plain(n) => n.trunk(x, c),
            Net::GoogLeNet(n) => n.trunk(x, c),
            Net::DenseNet(n) => n.trunk(x, c),
            Net::TinyResNet(n) => n.trunk(x, c),
        }
    }

    pub(crate) fn head(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Net::ResNet(n) => n.head(x),
            Net::Plain(n) => n.head(x),
            Net::GoogLeNet(n) => n.head(x),
            Net::DenseNet(n) => n.head(x),
            Net::TinyResNet(n) => n.head(x),
        }
    }
}
