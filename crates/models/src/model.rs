//! A ready-to-run model: architecture, weights on a device, tap-selective forward pass.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use burn::tensor::{Device, Tensor};

use crate::arch::{Arch, TapId, TapInfo};
use crate::error::ModelError;
use crate::inference::Folded;
use crate::nets::{Collector, Net};
use crate::weights::{Builder, ParamSource, StateDict, SyntheticWeights};

/// Which architecture to build when loading a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchChoice {
    /// Infer it from the checkpoint's keys and shapes (`--model auto`).
    Auto,
    Named(Arch),
}

impl FromStr for ArchChoice {
    type Err = ModelError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name.eq_ignore_ascii_case("auto") {
            Ok(ArchChoice::Auto)
        } else {
            name.parse().map(ArchChoice::Named)
        }
    }
}

/// A network with its weights on one device.
pub struct Model {
    arch: Arch,
    num_classes: usize,
    net: Net,
    /// The inference form of `net` (BatchNorm folded, epilogues fused), where it has one.
    folded: Option<Folded>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.arch)
            .field("num_classes", &self.num_classes)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Builds `arch` from any parameter source; `origin` names the source in errors.
    pub fn from_source(
        arch: Arch,
        num_classes: usize,
        source: &mut dyn ParamSource,
        origin: &Path,
        device: &Device,
    ) -> Result<Model, ModelError> {
        let mut builder = Builder::new(source, device);
        let net = Net::build(arch, &mut builder, num_classes)?;
        if !builder.missing.is_empty() || !builder.shapes.is_empty() {
            return Err(ModelError::Mismatch {
                path: origin.to_path_buf(),
                arch: arch.name().to_string(),
                missing: builder.missing,
                unexpected: Vec::new(),
                shapes: builder.shapes,
            });
        }
        if !builder.bad_values.is_empty() {
            return Err(ModelError::BadValues {
                path: origin.to_path_buf(),
                problems: builder.bad_values,
            });
        }
        Ok(Model::from_net(arch, num_classes, net))
    }

    /// A deterministic untrained model ([`SyntheticWeights`]), for tests and demos.
    pub fn synthetic(arch: Arch, num_classes: usize, device: &Device) -> Result<Model, ModelError> {
        Self::from_source(
            arch,
            num_classes,
            &mut SyntheticWeights,
            Path::new("<synthetic weights>"),
            device,
        )
    }

    /// `arch` with seeded random weights as torchvision initialises it
    /// ([`crate::TorchvisionInit`]): the random-weights baseline.
    pub fn random_init(
        arch: Arch,
        num_classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Model, ModelError> {
        Self::from_source(
            arch,
            num_classes,
            &mut crate::TorchvisionInit::new(arch, seed),
            Path::new("<random initialisation>"),
            device,
        )
    }

    /// Loads a `.pth`, `.pth.tar` or `.safetensors` checkpoint (see [`StateDict`]) into
    /// `choice`'s architecture, taking the class count from the classifier's shape. Every
    /// missing key, unexpected key and shape mismatch is reported in one error.
    pub fn load(path: &Path, choice: ArchChoice, device: &Device) -> Result<Model, ModelError> {
        let mut state = StateDict::open(path)?;
        let arch = match choice {
            ArchChoice::Named(arch) => arch,
            ArchChoice::Auto => detect_arch(&state)?,
        };
        let classifier = match arch {
            Arch::AlexNet | Arch::Vgg16 | Arch::Vgg16Bn => "classifier.6.weight",
            Arch::DenseNet161 => "classifier.weight",
            _ => "fc.weight",
        };
        let num_classes = state
            .shape(classifier)
            .and_then(|s| s.first().copied())
            .unwrap_or(1000);
        let mut builder = Builder::new(&mut state, device);
        let net = Net::build(arch, &mut builder, num_classes)?;
        let (missing, shapes, bad_values) = (builder.missing, builder.shapes, builder.bad_values);
        // GoogLeNet's auxiliary classifiers only matter in training.
        let unexpected = state.unused(|key| {
            arch == Arch::GoogLeNet && (key.starts_with("aux1.") || key.starts_with("aux2."))
        });
        if !missing.is_empty() || !shapes.is_empty() || !unexpected.is_empty() {
            return Err(ModelError::Mismatch {
                path: path.to_path_buf(),
                arch: arch.name().to_string(),
                missing,
                unexpected,
                shapes,
            });
        }
        if !bad_values.is_empty() {
            return Err(ModelError::BadValues {
                path: path.to_path_buf(),
                problems: bad_values,
            });
        }
        Ok(Model::from_net(arch, num_classes, net))
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Turns GoogLeNet's `transform_input` on or off (see [`crate::nets::GoogLeNet`]);
    /// torchvision's pretrained ImageNet GoogLeNet needs it on. No effect on other nets.
    pub fn with_transform_input(mut self, on: bool) -> Self {
        if let Net::GoogLeNet(net) = &mut self.net {
            net.transform_input = on;
        }
        self
    }

    /// The Burn module tree, for moving devices or fine-tuning.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The Burn module tree, by value (for training it; see [`Model::from_net`]).
    pub fn into_net(self) -> Net {
        self.net
    }

    /// Wraps a module tree taken with [`Model::into_net`] (e.g. after training) again; the
    /// caller keeps `arch` and `num_classes` as they were.
    pub fn from_net(arch: Arch, num_classes: usize, net: Net) -> Model {
        Model {
            arch,
            num_classes,
            folded: Folded::build(&net),
            net,
        }
    }

    /// Like [`Model::from_net`], but always running the module tree as it is (no BatchNorm
    /// folded, Burn's convolutions): the baseline for benchmarks and tests.
    pub fn from_net_unfolded(arch: Arch, num_classes: usize, net: Net) -> Model {
        Model {
            arch,
            num_classes,
            folded: None,
            net,
        }
    }

    /// Runs the trunk: the inference form where there is one, else the module tree.
    fn trunk(&self, input: Tensor<4>, collector: &mut Collector) -> Option<Tensor<4>> {
        match &self.folded {
            Some(folded) => folded.trunk(&self.net, input, collector),
            None => self.net.trunk(input, collector),
        }
    }

    /// The trunk after tap `from`: the inference form where there is one, else the module
    /// tree.
    pub(crate) fn rest(&self, from: usize, x: Tensor<4>) -> Tensor<4> {
        match &self.folded {
            Some(folded) => folded.rest(&self.net, from, x),
            None => self.net.rest(from, x),
        }
    }

    /// Class logits `[n, num_classes]` through the whole network, without input checks: the
    /// training loop's forward pass (on an autodiff device it records the graph).
    pub fn logits(net: &Net, input: Tensor<4>) -> Option<Tensor<2>> {
        let mut collector = Collector::new(Vec::new());
        net.trunk(input, &mut collector).map(|f| net.head(f))
    }

    /// Every tap of this model's architecture, in forward order.
    pub fn taps(&self) -> Vec<TapInfo> {
        self.arch.taps()
    }

    /// Resolves a layer name or alias.
    pub fn tap(&self, name: &str) -> Result<TapId, ModelError> {
        self.arch.tap(name)
    }

    /// The activations of `taps`, in the order asked, as device tensors `[n, c, h, w]`,
    /// running the network only as far as the deepest of them.
    pub fn forward_taps(
        &self,
        input: Tensor<4>,
        taps: &[TapId],
    ) -> Result<Vec<Tensor<4>>, ModelError> {
        if taps.is_empty() {
            return Ok(Vec::new());
        }
        let all = self.arch.taps();
        let mut wanted = Vec::with_capacity(taps.len());
        for tap in taps {
            if tap.arch != self.arch || tap.index >= all.len() {
                return Err(ModelError::UnknownLayer {
                    arch: self.arch.name().to_string(),
                    name: format!("{} tap #{}", tap.arch, tap.index),
                    valid: all.iter().map(|t| t.name.clone()).collect(),
                });
            }
            wanted.push(tap.index);
        }
        let deepest = wanted.iter().copied().max().unwrap_or(0);
        self.check_input(&input, &all[deepest])?;
        let mut collector = Collector::new(wanted);
        let _ = self.trunk(input, &mut collector);
        collector
            .slots
            .into_iter()
            .zip(taps)
            .map(|(slot, tap)| {
                slot.ok_or_else(|| ModelError::UnknownLayer {
                    arch: self.arch.name().to_string(),
                    name: all[tap.index].name.clone(),
                    valid: Vec::new(),
                })
            })
            .collect()
    }

    /// Class logits `[n, num_classes]`.
    pub fn forward(&self, input: Tensor<4>) -> Result<Tensor<2>, ModelError> {
        let all = self.arch.taps();
        if let Some(last) = all.last() {
            self.check_input(&input, last)?;
        }
        let mut collector = Collector::new(Vec::new());
        let features = self
            .trunk(input, &mut collector)
            .ok_or_else(|| ModelError::BadInput {
                arch: self.arch.name().to_string(),
                shape: Vec::new(),
                reason: "the forward pass stopped early".into(),
            })?;
        Ok(self.net.head(features))
    }

    fn check_input(&self, input: &Tensor<4>, deepest: &TapInfo) -> Result<(), ModelError> {
        let dims = input.dims();
        let bad = |reason: String| ModelError::BadInput {
            arch: self.arch.name().to_string(),
            shape: dims.to_vec(),
            reason,
        };
        if dims[1] != 3 {
            return Err(bad(format!("expected 3 channels, got {}", dims[1])));
        }
        if input.dtype() != burn::tensor::DType::F32 {
            return Err(bad(format!(
                "expected float32 pixels, got {:?}",
                input.dtype()
            )));
        }
        if dims[0] == 0 {
            return Err(bad("empty batch".into()));
        }
        match deepest.output_size([dims[2], dims[3]]) {
            Some([h, w]) if h > 0 && w > 0 => Ok(()),
            _ => Err(bad(format!("too small to reach layer {}", deepest.name))),
        }
    }
}

/// Infers the architecture from a checkpoint's keys and shapes, or lists the candidates.
pub fn detect_arch(state: &StateDict) -> Result<Arch, ModelError> {
    if state.shape("inception3a.branch1.conv.weight").is_some() {
        return Ok(Arch::GoogLeNet);
    }
    if state
        .shape("features.denseblock1.denselayer1.conv1.weight")
        .is_some()
    {
        return detect_densenet(state);
    }
    if state.shape("layer1.0.conv1.weight").is_some() {
        return detect_resnet(state);
    }
    if let Some(shape) = state.shape("features.0.weight") {
        return detect_plain(state, shape);
    }
    Err(ambiguous(
        state,
        "no key of a known family (`layer1.0.conv1.weight`, `features.0.weight`, `inception3a.…`, `features.denseblock1.…`)",
        &Arch::ALL,
    ))
}

/// The error for a checkpoint that matches none or several of `candidates`.
fn ambiguous(state: &StateDict, reason: &str, candidates: &[Arch]) -> ModelError {
    ModelError::AmbiguousArch {
        path: state.path().to_path_buf(),
        reason: reason.to_string(),
        candidates: candidates.iter().map(|a| a.name().to_string()).collect(),
    }
}

/// How many distinct blocks have keys starting with `prefix`: the distinct
/// key segments that follow it, up to the next `.`.
fn count_blocks(state: &StateDict, prefix: &str) -> usize {
    state
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next())
        .collect::<BTreeSet<_>>()
        .len()
}

/// A DenseNet checkpoint: only DenseNet-161 has 96 initial features and a
/// growth rate of 48, with blocks of 6, 12, 36 and 24 layers.
fn detect_densenet(state: &StateDict) -> Result<Arch, ModelError> {
    let conv0 = state.shape("features.conv0.weight").map(|s| s.to_vec());
    let blocks = (1..=4)
        .map(|b| count_blocks(state, &format!("features.denseblock{b}.denselayer")))
        .collect::<Vec<_>>();
    if conv0.as_deref() == Some(&[96, 3, 7, 7][..]) && blocks == [6, 12, 36, 24] {
        return Ok(Arch::DenseNet161);
    }
    Err(ambiguous(
        state,
        &format!("a densenet with stem {conv0:?} and blocks {blocks:?} matches no zoo model"),
        &[Arch::DenseNet161],
    ))
}

/// A ResNet checkpoint: `tiny-resnet` by its stem, else the torchvision
/// ResNet with these block counts per stage and this block kind.
fn detect_resnet(state: &StateDict) -> Result<Arch, ModelError> {
    if state
        .shape("conv1.weight")
        .is_some_and(crate::tiny::is_tiny_stem)
    {
        return Ok(Arch::TinyResNet);
    }
    let bottleneck = state.shape("layer1.0.conv3.weight").is_some();
    let mut counts = [0usize; 4];
    for (stage, count) in counts.iter_mut().enumerate() {
        *count = count_blocks(state, &format!("layer{}.", stage + 1));
    }
    let resnets = [
        Arch::ResNet18,
        Arch::ResNet34,
        Arch::ResNet50,
        Arch::ResNet101,
        Arch::ResNet152,
    ];
    resnets
        .into_iter()
        .find(|a| a.resnet_layout() == Some((counts, bottleneck)))
        .ok_or_else(|| {
            ambiguous(
                state,
                &format!(
                    "a resnet with {counts:?} {} blocks matches no zoo model",
                    if bottleneck { "bottleneck" } else { "basic" }
                ),
                &resnets,
            )
        })
}

/// A checkpoint with a plain `features` stack whose first convolution has
/// weight shape `shape`: AlexNet, or VGG-16 with or without BatchNorm.
fn detect_plain(state: &StateDict, shape: &[usize]) -> Result<Arch, ModelError> {
    if shape == [64, 3, 11, 11] {
        return Ok(Arch::AlexNet);
    }
    let convs = state
        .keys()
        .filter(|k| k.starts_with("features.") && k.ends_with(".weight"))
        .filter(|k| state.shape(k).is_some_and(|s| s.len() == 4))
        .count();
    let batch_norm = state.shape("features.1.running_mean").is_some();
    if shape == [64, 3, 3, 3] && convs == 13 {
        return Ok(if batch_norm {
            Arch::Vgg16Bn
        } else {
            Arch::Vgg16
        });
    }
    Err(ambiguous(
        state,
        &format!("`features` with first conv {shape:?} and {convs} convolutions"),
        &[Arch::AlexNet, Arch::Vgg16, Arch::Vgg16Bn],
    ))
}
