//! The registry of architectures: names, input sizes, default preprocessing and layer taps.
//!
//! Tap names are torchvision module names (`layer3`, `features.28`) so they match forward
//! hooks on the PyTorch model; aliases give the names the paper used for Caffe models
//! (`conv5` for AlexNet and VGG, `conv5_3` for VGG). A tap's activation is the module's own
//! output: with torchvision's in-place ReLUs a PyTorch hook on `features.0` would see the
//! tensor after the ReLU overwrote it, ours is the convolution's output as computed.

pub use broden::PreprocessKind;
use std::fmt;
use std::str::FromStr;

use crate::error::ModelError;
use crate::geometry::{FieldMap, GeoOp, output_size};
use crate::nets::{DENSENET161, INCEPTIONS};

/// Every architecture in the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
    AlexNet,
    Vgg16,
    Vgg16Bn,
    GoogLeNet,
    DenseNet161,
    /// The embedded default model ([`crate::tiny`]), trained on synthetic scenes.
    TinyResNet,
}

/// VGG-16's `features` configuration: channel counts, `0` for a 2x2 max-pool.
pub(crate) const VGG16_CFG: [usize; 18] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
];

impl Arch {
    /// All architectures, in registry order.
    pub const ALL: [Arch; 11] = [
        Arch::ResNet18,
        Arch::ResNet34,
        Arch::ResNet50,
        Arch::ResNet101,
        Arch::ResNet152,
        Arch::AlexNet,
        Arch::Vgg16,
        Arch::Vgg16Bn,
        Arch::GoogLeNet,
        Arch::DenseNet161,
        Arch::TinyResNet,
    ];

    /// The name used on the command line and in results (torchvision's function name).
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
            Arch::ResNet101 => "resnet101",
            Arch::ResNet152 => "resnet152",
            Arch::AlexNet => "alexnet",
            Arch::Vgg16 => "vgg16",
            Arch::Vgg16Bn => "vgg16_bn",
            Arch::GoogLeNet => "googlenet",
            Arch::DenseNet161 => "densenet161",
            Arch::TinyResNet => "tiny-resnet",
        }
    }

    /// Names of every architecture, in registry order.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|a| a.name()).collect()
    }

    /// Input side length the zoo feeds this architecture by default: 224 for all but
    /// AlexNet, which gets 227 like the paper's Caffe AlexNet (and Broden's `broden1_227`).
    /// torchvision's AlexNet is trained at 224, but its adaptive average pool makes 227 (and
    /// any size ≥ 63) valid, and 227 keeps pixel-level comparability with the paper.
    pub fn input_size(self) -> u32 {
        match self {
            Arch::AlexNet => 227,
            Arch::TinyResNet => crate::tiny::TINY_INPUT_SIZE,
            _ => 224,
        }
    }

    /// The preprocessing the weights of this architecture expect by default: torchvision's
    /// (RGB in [0,1], ImageNet mean/std) for all zoo models, since they are torchvision
    /// layouts. Caffe-converted weights need [`PreprocessKind::Caffe`] instead, chosen by the
    /// user.
    pub fn default_preprocess(self) -> PreprocessKind {
        PreprocessKind::Torchvision
    }

    /// [`Self::default_preprocess`] at [`Self::input_size`], as broden's spec.
    pub fn default_preprocess_spec(self) -> broden::Preprocess {
        broden::Preprocess::of(self.default_preprocess(), self.input_size())
    }

    /// ResNet block counts per stage and whether blocks are bottlenecks.
    pub(crate) fn resnet_layout(self) -> Option<([usize; 4], bool)> {
        match self {
            Arch::ResNet18 => Some(([2, 2, 2, 2], false)),
            Arch::ResNet34 => Some(([3, 4, 6, 3], false)),
            Arch::ResNet50 => Some(([3, 4, 6, 3], true)),
            Arch::ResNet101 => Some(([3, 4, 23, 3], true)),
            Arch::ResNet152 => Some(([3, 8, 36, 3], true)),
            _ => None,
        }
    }

    /// Every tap of this architecture, in forward order.
    pub fn taps(self) -> Vec<TapInfo> {
        if self == Arch::TinyResNet {
            return crate::tiny::tiny_taps();
        }
        let mut walk = Walk::default();
        match self {
            Arch::AlexNet => alexnet_taps(&mut walk),
            Arch::Vgg16 => vgg_taps(&mut walk, false),
            Arch::Vgg16Bn => vgg_taps(&mut walk, true),
            Arch::GoogLeNet => googlenet_taps(&mut walk),
            Arch::DenseNet161 => densenet_taps(&mut walk),
            _ => {
                if let Some((blocks, bottleneck)) = self.resnet_layout() {
                    resnet_taps(&mut walk, blocks, bottleneck);
                }
            }
        }
        walk.taps
    }

    /// Resolves a layer name or alias to a tap.
    pub fn tap(self, name: &str) -> Result<TapId, ModelError> {
        let taps = self.taps();
        taps.iter()
            .position(|t| t.name == name || t.aliases.iter().any(|a| a == name))
            .map(|index| TapId { arch: self, index })
            .ok_or_else(|| ModelError::UnknownLayer {
                arch: self.name().to_string(),
                name: name.to_string(),
                valid: taps
                    .iter()
                    .flat_map(|t| std::iter::once(t.name.clone()).chain(t.aliases.clone()))
                    .collect(),
            })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = ModelError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let wanted = name.to_ascii_lowercase().replace('-', "");
        Arch::ALL
            .into_iter()
            .find(|a| a.name().replace(['_', '-'], "") == wanted.replace('_', ""))
            .ok_or_else(|| ModelError::UnknownArch {
                name: name.to_string(),
                valid: Arch::names().into_iter().map(String::from).collect(),
            })
    }
}

/// A resolved layer tap of one architecture; get one from [`Arch::tap`] or `Model::tap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TapId {
    pub arch: Arch,
    /// Position in [`Arch::taps`], which is forward order.
    pub index: usize,
}

/// A layer tap: its name, aliases, channel count and geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct TapInfo {
    /// torchvision module name.
    pub name: String,
    /// Other accepted names (the paper's Caffe names, last-block names).
    pub aliases: Vec<String>,
    /// Number of channels (units) of the activation.
    pub channels: usize,
    /// Convolutions and pools on the path from the input (the largest-field path).
    pub path: Vec<GeoOp>,
}

impl TapInfo {
    /// The composed receptive field; see [`crate::geometry`].
    pub fn field_map(&self) -> FieldMap {
        FieldMap::of_path(&self.path)
    }

    /// `[height, width]` of the activation for an input of `[height, width]`, or `None` if
    /// the input is too small to reach this layer.
    pub fn output_size(&self, input: [usize; 2]) -> Option<[usize; 2]> {
        output_size(&self.path, input)
    }
}

/// Accumulates taps while describing a network's forward path.
#[derive(Default)]
struct Walk {
    path: Vec<GeoOp>,
    taps: Vec<TapInfo>,
}

impl Walk {
    fn op(&mut self, op: GeoOp) {
        self.path.push(op);
    }

    fn tap(&mut self, name: impl Into<String>, channels: usize) {
        self.taps.push(TapInfo {
            name: name.into(),
            aliases: Vec::new(),
            channels,
            path: self.path.clone(),
        });
    }

    fn alias(&mut self, alias: impl Into<String>) {
        if let Some(last) = self.taps.last_mut() {
            last.aliases.push(alias.into());
        }
    }
}

fn resnet_taps(walk: &mut Walk, blocks: [usize; 4], bottleneck: bool) {
    walk.op(GeoOp::conv(7, 2, 3));
    walk.tap("conv1", 64);
    walk.tap("bn1", 64);
    walk.tap("relu", 64);
    walk.op(GeoOp::pool(3, 2, 1, false));
    walk.tap("maxpool", 64);
    let expansion = if bottleneck { 4 } else { 1 };
    for (stage, &count) in blocks.iter().enumerate() {
        let width = 64 << stage;
        for block in 0..count {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            // The main path has the larger field than the 1x1 shortcut; torchvision puts
            // a bottleneck's stride on its 3x3 conv2.
            if bottleneck {
                walk.op(GeoOp::conv(1, 1, 0));
                walk.op(GeoOp::conv(3, stride, 1));
                walk.op(GeoOp::conv(1, 1, 0));
            } else {
                walk.op(GeoOp::conv(3, stride, 1));
                walk.op(GeoOp::conv(3, 1, 1));
            }
            let name = format!("layer{}.{block}", stage + 1);
            if block + 1 == count {
                walk.tap(format!("layer{}", stage + 1), width * expansion);
                walk.alias(name);
            } else {
                walk.tap(name, width * expansion);
            }
        }
    }
}

fn alexnet_taps(walk: &mut Walk) {
    // torchvision AlexNet `features`; (index, op, channels after, Caffe alias of the ReLU).
    let convs = [
        (0, GeoOp::conv(11, 4, 2), 64),
        (3, GeoOp::conv(5, 1, 2), 192),
        (6, GeoOp::conv(3, 1, 1), 384),
        (8, GeoOp::conv(3, 1, 1), 256),
        (10, GeoOp::conv(3, 1, 1), 256),
    ];
    let pools_after = [0usize, 3, 10];
    for (n, (index, op, channels)) in convs.into_iter().enumerate() {
        walk.op(op);
        walk.tap(format!("features.{index}"), channels);
        walk.tap(format!("features.{}", index + 1), channels);
        walk.alias(format!("conv{}", n + 1));
        if pools_after.contains(&index) {
            walk.op(GeoOp::pool(3, 2, 0, false));
            walk.tap(format!("features.{}", index + 2), channels);
            if index == 10 {
                walk.alias("pool5");
            }
        }
    }
}

fn vgg_taps(walk: &mut Walk, batch_norm: bool) {
    let mut index = 0;
    let (mut block, mut conv) = (1, 1);
    let mut channels = 3;
    for &v in &VGG16_CFG {
        if v == 0 {
            walk.op(GeoOp::pool(2, 2, 0, false));
            walk.tap(format!("features.{index}"), channels);
            walk.alias(format!("pool{block}"));
            index += 1;
            block += 1;
            conv = 1;
            continue;
        }
        channels = v;
        walk.op(GeoOp::conv(3, 1, 1));
        walk.tap(format!("features.{index}"), channels);
        index += 1;
        if batch_norm {
            walk.tap(format!("features.{index}"), channels);
            index += 1;
        }
        walk.tap(format!("features.{index}"), channels);
        walk.alias(format!("conv{block}_{conv}"));
        // The last conv of a block is the paper's `convN`.
        let last_in_block = matches!((block, conv), (1 | 2, 2) | (3..=5, 3));
        if last_in_block {
            walk.alias(format!("conv{block}"));
        }
        index += 1;
        conv += 1;
    }
}

fn googlenet_taps(walk: &mut Walk) {
    walk.op(GeoOp::conv(7, 2, 3));
    walk.tap("conv1", 64);
    walk.op(GeoOp::pool(3, 2, 0, true));
    walk.tap("maxpool1", 64);
    walk.op(GeoOp::conv(1, 1, 0));
    walk.tap("conv2", 64);
    walk.op(GeoOp::conv(3, 1, 1));
    walk.tap("conv3", 192);
    walk.op(GeoOp::pool(3, 2, 0, true));
    walk.tap("maxpool2", 192);
    for (i, (name, c)) in INCEPTIONS.iter().enumerate() {
        // All branches have the same field (a 1x1 then a 3x3 window); branch2 stands for them.
        walk.op(GeoOp::conv(1, 1, 0));
        walk.op(GeoOp::conv(3, 1, 1));
        let channels = c[1] + c[3] + c[5] + c[6];
        walk.tap(*name, channels);
        if i == 1 {
            walk.op(GeoOp::pool(3, 2, 0, true));
            walk.tap("maxpool3", channels);
        } else if i == 6 {
            walk.op(GeoOp::pool(2, 2, 0, true));
            walk.tap("maxpool4", channels);
        }
    }
}

fn densenet_taps(walk: &mut Walk) {
    let (growth, block_sizes, init) = DENSENET161;
    walk.op(GeoOp::conv(7, 2, 3));
    walk.tap("features.conv0", init);
    walk.tap("features.norm0", init);
    walk.tap("features.relu0", init);
    walk.op(GeoOp::pool(3, 2, 1, false));
    walk.tap("features.pool0", init);
    let mut channels = init;
    for (i, &count) in block_sizes.iter().enumerate() {
        // The largest field runs through every layer of the block.
        for _ in 0..count {
            walk.op(GeoOp::conv(1, 1, 0));
            walk.op(GeoOp::conv(3, 1, 1));
        }
        channels += count * growth;
        walk.tap(format!("features.denseblock{}", i + 1), channels);
        if i + 1 < block_sizes.len() {
            channels /= 2;
            walk.op(GeoOp::conv(1, 1, 0));
            walk.op(GeoOp::pool(2, 2, 0, false));
            walk.tap(format!("features.transition{}", i + 1), channels);
        }
    }
    walk.tap("features.norm5", channels);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().ok(), Some(arch));
        }
        assert_eq!("ResNet-152".parse::<Arch>().ok(), Some(Arch::ResNet152));
        assert_eq!("vgg16bn".parse::<Arch>().ok(), Some(Arch::Vgg16Bn));
        let err = "lenet".parse::<Arch>().unwrap_err().to_string();
        assert!(err.contains("unknown architecture `lenet`"), "{err}");
        assert!(
            err.contains("resnet18") && err.contains("vgg16_bn"),
            "{err}"
        );
    }

    #[test]
    fn unknown_layer_lists_valid_names() {
        let err = Arch::ResNet18.tap("layer5").unwrap_err().to_string();
        assert!(err.contains("unknown layer `layer5` for resnet18"), "{err}");
        assert!(err.contains("layer4") && err.contains("maxpool"), "{err}");
    }

    #[test]
    fn aliases_resolve_to_the_torchvision_module() {
        // (arch, alias, torchvision name)
        let cases = [
            (Arch::AlexNet, "conv1", "features.1"),
            (Arch::AlexNet, "conv5", "features.11"),
            (Arch::AlexNet, "pool5", "features.12"),
            (Arch::Vgg16, "conv5_3", "features.29"),
            (Arch::Vgg16, "conv5", "features.29"),
            (Arch::Vgg16, "conv1", "features.3"),
            (Arch::Vgg16Bn, "conv5", "features.42"),
            (Arch::Vgg16Bn, "pool5", "features.43"),
            (Arch::ResNet18, "layer4.1", "layer4"),
            (Arch::ResNet152, "layer3.35", "layer3"),
        ];
        for (arch, alias, name) in cases {
            let id = arch.tap(alias).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(arch.taps()[id.index].name, name, "{arch} {alias}");
        }
    }

    #[test]
    fn geometry_of_known_layers() {
        // ResNet layer4: stride 32 at every input size; field sizes hand-composed.
        let layer4 =
            &Arch::ResNet18.taps()[Arch::ResNet18.tap("layer4").map(|t| t.index).unwrap_or(0)];
        assert_eq!(layer4.channels, 512);
        assert_eq!(layer4.field_map().step, [32, 32]);
        assert_eq!(layer4.output_size([224, 224]), Some([7, 7]));
        let resnet50 = Arch::ResNet50.taps();
        assert_eq!(resnet50.last().map(|t| t.channels), Some(2048));
        // AlexNet conv5 at 227: 56 -> 27 -> 27 -> 13 -> 13; step 16, offset -2 - 8 - 16*...
        let alex = Arch::AlexNet.taps();
        let conv5 = &alex[Arch::AlexNet.tap("conv5").map(|t| t.index).unwrap_or(0)];
        assert_eq!(conv5.output_size([227, 227]), Some([13, 13]));
        assert_eq!(conv5.field_map().step, [16, 16]);
        let vgg = Arch::Vgg16.taps();
        let c53 = &vgg[Arch::Vgg16.tap("conv5_3").map(|t| t.index).unwrap_or(0)];
        assert_eq!(c53.output_size([224, 224]), Some([14, 14]));
        // Caffe-style VGG conv5_3 field: size 196, offset -90, step 16 (known value).
        let fm = c53.field_map();
        assert_eq!((fm.size[0], fm.offset[0], fm.step[0]), (196, -90, 16));
    }

    #[test]
    fn input_sizes_and_preprocessing() {
        assert_eq!(Arch::AlexNet.input_size(), 227);
        assert_eq!(Arch::ResNet152.input_size(), 224);
        let spec = Arch::AlexNet.default_preprocess_spec();
        assert_eq!((spec.height, spec.width), (227, 227));
        assert_eq!(spec, broden::Preprocess::torchvision(227));
        assert_eq!(
            broden::Preprocess::of(PreprocessKind::Caffe, 224),
            broden::Preprocess::caffe(224)
        );
    }

    #[test]
    fn tap_counts() {
        assert_eq!(Arch::AlexNet.taps().len(), 13);
        assert_eq!(Arch::Vgg16.taps().len(), 31);
        assert_eq!(Arch::Vgg16Bn.taps().len(), 44);
        // conv1, bn1, relu, maxpool + one per block.
        assert_eq!(Arch::ResNet18.taps().len(), 4 + 8);
        assert_eq!(Arch::ResNet152.taps().len(), 4 + 50);
        assert_eq!(Arch::GoogLeNet.taps().len(), 5 + 9 + 2);
        assert_eq!(Arch::DenseNet161.taps().len(), 4 + 4 + 3 + 1);
        let dense = Arch::DenseNet161.taps();
        let channels: Vec<usize> = dense.iter().skip(4).map(|t| t.channels).collect();
        assert_eq!(channels, [384, 192, 768, 384, 2112, 1056, 2208, 2208]);
        let google = Arch::GoogLeNet.taps();
        assert_eq!(
            google
                .last()
                .map(|t| (t.channels, t.output_size([224, 224]))),
            Some((1024, Some([7, 7])))
        );
    }
}
