//! The forward pass prepared for inference: ResNets (torchvision's and `tiny-resnet`),
//! AlexNet and VGG with every BatchNorm folded into its convolution and each ReLU and
//! residual add fused into the convolution before it ([`FoldedConv`]). Built once when a
//! model is loaded; the module tree ([`Net`]) stays for training, gradients and the
//! networks not listed here (GoogLeNet, DenseNet, whose BatchNorms do not all follow a
//! convolution).
//!
//! Taps stay exact: a fused step is split again where a tap needs the value inside it (a
//! tap on a ReLU's input leaves that ReLU unfused; a tap on a convolution's output before
//! its BatchNorm runs that convolution and BatchNorm from the module tree).
//!
//! `NETDISSECT_FORWARD=burn` runs the module tree instead (nothing folded), for benchmarks
//! and for checking the two against each other.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::folded::FoldedConv;
use crate::nets::{Block, Collector, FeatureLayer, Net, Plain, tap};
use crate::rest::after;

/// A network's inference form, where it has one.
#[derive(Debug)]
pub(crate) enum Folded {
    ResNet(Box<FoldedResNet>),
    Plain(FoldedPlain),
}

impl Folded {
    /// The inference form of `net`, or `None` where there is none (or it is switched off).
    pub(crate) fn build(net: &Net) -> Option<Folded> {
        if std::env::var("NETDISSECT_FORWARD").is_ok_and(|v| v == "burn") {
            return None;
        }
        Some(match net {
            Net::ResNet(n) => Folded::ResNet(Box::new(FoldedResNet::new(
                (&n.conv1, &n.bn1),
                Some(n.maxpool.clone()),
                n.layers.iter().flatten(),
            )?)),
            Net::TinyResNet(n) => Folded::ResNet(Box::new(FoldedResNet::new(
                (&n.conv1, &n.bn1),
                None,
                n.layers.iter().flatten(),
            )?)),
            Net::Plain(n) => Folded::Plain(FoldedPlain::new(n)?),
            Net::GoogLeNet(_) | Net::DenseNet(_) => return None,
        })
    }

    /// The trunk, as [`Net::trunk`] runs it; `net` is the module tree this was built from.
    pub(crate) fn trunk(&self, net: &Net, x: Tensor<4>, c: &mut Collector) -> Option<Tensor<4>> {
        match (self, net) {
            (Folded::ResNet(f), Net::ResNet(n)) => f.trunk((&n.conv1, &n.bn1), x, c),
            (Folded::ResNet(f), Net::TinyResNet(n)) => f.trunk((&n.conv1, &n.bn1), x, c),
            (Folded::Plain(f), Net::Plain(n)) => f.trunk(n, x, c),
            _ => net.trunk(x, c),
        }
    }
}

impl Folded {
    /// The trunk's steps after tap `from`, as [`Net::rest`] runs them; `net` is the module
    /// tree this was built from.
    pub(crate) fn rest(&self, net: &Net, from: usize, x: Tensor<4>) -> Tensor<4> {
        match (self, net) {
            (Folded::ResNet(f), Net::ResNet(n)) => f.rest(&n.bn1, 4, from, x),
            (Folded::ResNet(f), Net::TinyResNet(n)) => f.rest(&n.bn1, 3, from, x),
            (Folded::Plain(f), Net::Plain(n)) => f.rest(n, from, x),
            _ => net.rest(from, x),
        }
    }
}

/// A ResNet's stem (`conv1`, `bn1`, ReLU, optional max pool) and blocks, folded.
#[derive(Debug)]
pub(crate) struct FoldedResNet {
    stem: FoldedConv,
    maxpool: Option<MaxPool2d>,
    blocks: Vec<FoldedBlock>,
}

#[derive(Debug)]
struct FoldedBlock {
    conv1: FoldedConv,
    conv2: FoldedConv,
    conv3: Option<FoldedConv>,
    downsample: Option<FoldedConv>,
}

impl FoldedBlock {
    fn new(b: &Block) -> Option<Self> {
        Some(Self {
            conv1: FoldedConv::new(&b.conv1, Some(&b.bn1))?,
            conv2: FoldedConv::new(&b.conv2, Some(&b.bn2))?,
            // Like `Block::forward`: the third convolution runs only with its BatchNorm.
            conv3: match (&b.conv3, &b.bn3) {
                (Some(conv), Some(bn)) => Some(FoldedConv::new(conv, Some(bn))?),
                _ => None,
            },
            downsample: match &b.downsample {
                Some(d) => Some(FoldedConv::new(&d.conv, Some(&d.bn))?),
                None => None,
            },
        })
    }

    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, or the bottleneck's three
    /// convolutions, with the add and the ReLUs in the convolutions' epilogues.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.forward(x.clone(), None, false),
            None => x.clone(),
        };
        let out = self.conv1.forward(x, None, true);
        match &self.conv3 {
            None => self.conv2.forward(out, Some(identity), true),
            Some(conv3) => {
                let out = self.conv2.forward(out, None, true);
                conv3.forward(out, Some(identity), true)
            }
        }
    }
}

impl FoldedResNet {
    fn new<'a>(
        stem: (&Conv2d, &BatchNorm),
        maxpool: Option<MaxPool2d>,
        blocks: impl Iterator<Item = &'a Block>,
    ) -> Option<Self> {
        Some(Self {
            stem: FoldedConv::new(stem.0, Some(stem.1))?,
            maxpool,
            blocks: blocks.map(FoldedBlock::new).collect::<Option<_>>()?,
        })
    }

    /// After tap `from`: `bn1` (position 1) from the module tree, the ReLU (2), the max
    /// pool (3, where there is one), then the blocks, the first at tap `first_block`.
    fn rest(&self, bn1: &BatchNorm, first_block: usize, from: usize, x: Tensor<4>) -> Tensor<4> {
        let x = after(from, 1, x, |x| bn1.forward(x));
        let mut x = after(from, 2, x, relu);
        if let Some(pool) = &self.maxpool {
            x = after(from, 3, x, |x| pool.forward(x));
        }
        for (j, block) in self.blocks.iter().enumerate() {
            x = after(from, first_block + j, x, |x| block.forward(x));
        }
        x
    }

    /// Taps: `conv1`, `bn1`, `relu`, (`maxpool`), then each block.
    fn trunk(
        &self,
        raw_stem: (&Conv2d, &BatchNorm),
        x: Tensor<4>,
        c: &mut Collector,
    ) -> Option<Tensor<4>> {
        let mut x = if c.wants(0) {
            // `conv1` before its BatchNorm: only the module tree has it.
            let x = raw_stem.0.forward(x);
            tap!(c, x);
            let x = raw_stem.1.forward(x);
            tap!(c, x);
            relu(x)
        } else {
            conv_bn_relu(&self.stem, x, c, true)?
        };
        tap!(c, x);
        if let Some(pool) = &self.maxpool {
            x = pool.forward(x);
            tap!(c, x);
        }
        for block in &self.blocks {
            x = block.forward(x);
            tap!(c, x);
        }
        Some(x)
    }
}

/// Runs a folded convolution whose taps are (convolution, BatchNorm if `bn`, then the ReLU
/// that the caller visits), when the convolution's own tap is not wanted: the ReLU is fused
/// unless the BatchNorm's (or convolution's) output is wanted, in which case it is visited
/// and the ReLU applied after. Returns the ReLU's output, for the caller to visit.
fn conv_bn_relu(conv: &FoldedConv, x: Tensor<4>, c: &mut Collector, bn: bool) -> Option<Tensor<4>> {
    let before_relu = usize::from(bn);
    let fuse = !c.wants(before_relu);
    let y = conv.forward(x, None, fuse);
    if bn && c.skip() {
        return None;
    }
    if fuse {
        if c.skip() {
            return None;
        }
        Some(y)
    } else {
        tap!(c, y);
        Some(relu(y))
    }
}

/// AlexNet's and VGG's `features`, with each convolution's BatchNorm and ReLU folded in.
#[derive(Debug)]
pub(crate) struct FoldedPlain {
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    /// `features[at]` is a convolution, followed by a BatchNorm if `bn`, then a ReLU if `relu`.
    Conv {
        conv: Box<FoldedConv>,
        at: usize,
        bn: bool,
        relu: bool,
    },
    /// `features[at]` as it is (a max pool, or a ReLU or BatchNorm not after a convolution).
    Layer(usize),
}

impl FoldedPlain {
    fn new(plain: &Plain) -> Option<Self> {
        let f = &plain.features;
        let mut steps = Vec::new();
        let mut i = 0;
        while i < f.len() {
            let FeatureLayer::Conv(conv) = &f[i] else {
                steps.push(Step::Layer(i));
                i += 1;
                continue;
            };
            let bn = match f.get(i + 1) {
                Some(FeatureLayer::Bn(bn)) => Some(bn),
                _ => None,
            };
            let after = i + 1 + usize::from(bn.is_some());
            let relu = matches!(f.get(after), Some(FeatureLayer::Relu(_)));
            steps.push(Step::Conv {
                conv: Box::new(FoldedConv::new(conv, bn)?),
                at: i,
                bn: bn.is_some(),
                relu,
            });
            i = after + usize::from(relu);
        }
        Some(Self { steps })
    }

    /// After tap `from` (`features[from]`): the module tree up to the next step that starts
    /// after it, then the folded steps.
    fn rest(&self, plain: &Plain, from: usize, mut x: Tensor<4>) -> Tensor<4> {
        let start = |s: &Step| match *s {
            Step::Layer(at) | Step::Conv { at, .. } => at,
        };
        let next = (self.steps.iter())
            .position(|s| start(s) > from)
            .unwrap_or(self.steps.len());
        let until = self.steps.get(next).map_or(plain.features.len(), start);
        for layer in plain.features.iter().take(until).skip(from + 1) {
            x = layer.forward(x);
        }
        for step in &self.steps[next..] {
            x = match *step {
                Step::Layer(at) => plain.features[at].forward(x),
                Step::Conv { ref conv, relu, .. } => conv.forward(x, None, relu),
            };
        }
        x
    }

    fn trunk(&self, plain: &Plain, mut x: Tensor<4>, c: &mut Collector) -> Option<Tensor<4>> {
        for step in &self.steps {
            match *step {
                Step::Layer(at) => {
                    x = plain.features[at].forward(x);
                    tap!(c, x);
                }
                Step::Conv {
                    bn: true,
                    at,
                    relu: r,
                    ..
                } if c.wants(0) => {
                    // The convolution's output before its BatchNorm: the module tree's.
                    let count = 2 + usize::from(r);
                    for layer in &plain.features[at..at + count] {
                        x = layer.forward(x);
                        tap!(c, x);
                    }
                }
                Step::Conv {
                    ref conv,
                    bn,
                    relu: true,
                    ..
                } => {
                    x = conv_bn_relu(conv, x, c, bn)?;
                    tap!(c, x);
                }
                Step::Conv {
                    ref conv,
                    bn,
                    relu: false,
                    ..
                } => {
                    x = conv.forward(x, None, false);
                    if bn && c.skip() {
                        return None;
                    }
                    tap!(c, x);
                }
            }
        }
        Some(x)
    }
}
