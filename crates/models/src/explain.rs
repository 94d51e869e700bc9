//! How a classifier's logit for a class splits over the channels (units) of
//! its trunk's output, for explaining one prediction by the units that made
//! it.
//!
//! - Global average pooling then one linear layer (ResNet, GoogLeNet,
//!   DenseNet, tiny-resnet): the logit is `b_c + Σ_k w_ck · mean(x_k)` (ReLU
//!   first for DenseNet, as its head applies it), so unit `k` contributes
//!   `w_ck · mean(x_k)` exactly.
//! - The classifier stack of VGG and AlexNet (adaptive pool, three linear
//!   layers with ReLU between): gradient times input at the pooled
//!   features. The classifier is piecewise linear, so at this input the
//!   logit is `g · p + b_eff` exactly, where `g` is the gradient and `b_eff`
//!   the biases passed through the active ReLUs; unit `k` contributes the
//!   sum of `g · p` over its pooled cells, and `b_eff` is reported as the
//!   bias.

use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::ModelError;
use crate::model::Model;
use crate::nets::Net;

/// How contributions are defined for a model's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// Class weight times the unit's pooled activation.
    PooledLinear,
    /// Gradient times input at the pooled features (VGG, AlexNet).
    GradientTimesInput,
}

impl Attribution {
    pub fn describe(self) -> &'static str {
        match self {
            Attribution::PooledLinear => {
                "class weight times the unit's globally pooled activation (exact: the head is one linear layer)"
            }
            Attribution::GradientTimesInput => {
                "gradient times activation at the classifier's pooled input (exact for this image: the classifier is piecewise linear; the bias is the biases passed through its active ReLUs)"
            }
        }
    }
}

/// One predicted class of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassTerms {
    pub class: usize,
    /// The network's own logit.
    pub logit: f32,
    pub bias: f64,
    /// Per unit (channel of the trunk's output).
    pub contributions: Vec<f64>,
}

fn to_vec<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>, ModelError> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| ModelError::BadInput {
            arch: "explain".into(),
            shape: Vec::new(),
            reason: format!("{what} is not f32: {e:?}"),
        })
}

/// The `top` classes of one logit row, best first (ties: lower class).
fn top_classes(row: &[f32], top: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.truncate(top);
    order
}

impl Model {
    /// How this model's contributions are defined.
    pub fn attribution(&self) -> Attribution {
        match self.net() {
            Net::Plain(_) => Attribution::GradientTimesInput,
            _ => Attribution::PooledLinear,
        }
    }

    /// For each image of `features` (the trunk's output, the model's last
    /// tap, `[n, c, h, w]`), its `top` classes by logit, best first, with
    /// every unit's contribution.
    pub fn class_terms(
        &self,
        features: Tensor<4>,
        top: usize,
    ) -> Result<Vec<Vec<ClassTerms>>, ModelError> {
        let [n, ch, _, _] = features.dims();
        let top = top.min(self.num_classes());
        if top == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let device = features.device();
        let (linears, relu_first, side) = head_layers(self.net());
        let x = if relu_first { relu(features) } else { features };
        let cells = side * side;
        let pooled = adaptive_avg_pool2d(x, [side, side]).reshape([n, ch * cells]);
        let pass = HeadPass::run(&linears, pooled)?;
        let classes = self.num_classes();
        let picks: Vec<Vec<usize>> = (0..n)
            .map(|i| top_classes(&pass.logits[i * classes..(i + 1) * classes], top))
            .collect();
        let last = LastLayer::read(linears[linears.len() - 1], classes)?;
        let single = linears.len() == 1;
        let grads = if single {
            last.columns(&picks)
        } else {
            backprop_stack(&linears, &pass.hidden, &picks, &last, &device)?
        };
        let mut grads = grads.into_iter();
        Ok(picks
            .iter()
            .enumerate()
            .map(|(i, cs)| {
                cs.iter()
                    .map(|&c| {
                        let g = grads.next().unwrap_or_default();
                        let bias = single.then(|| f64::from(last.bias[c]));
                        pass.class_terms(i, c, &g, [ch, cells], classes, bias)
                    })
                    .collect()
            })
            .collect())
    }
}

/// The head of a network whose trunk output is globally average pooled
/// and then mapped by one linear layer (ResNet, GoogLeNet, DenseNet,
/// tiny-resnet): logit `c` is `bias[c] + Σ_k weight[c][k] · pooled[k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PooledHead {
    /// `[classes][channels]` flattened.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub classes: usize,
    pub channels: usize,
    /// Whether a ReLU comes before the pool (DenseNet): a unit whose map
    /// is set to `m` then reaches the head as `max(m, 0)`.
    pub relu_first: bool,
}

/// Each image's trunk output pooled, `[n][channels]` flattened: `head` as
/// the head sees it (after its ReLU, where it has one), `raw` the mean of
/// the trunk output itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Pooled {
    pub head: Vec<f32>,
    pub raw: Vec<f32>,
}

impl Model {
    /// The head as one linear map of the pooled trunk output, where it is
    /// one; `None` for the classifier stacks of VGG and AlexNet.
    pub fn pooled_head(&self) -> Result<Option<PooledHead>, ModelError> {
        let (linears, relu_first, side) = head_layers(self.net());
        let [linear] = linears.as_slice() else {
            return Ok(None);
        };
        if side != 1 {
            return Ok(None);
        }
        let classes = self.num_classes();
        let last = LastLayer::read(linear, classes)?;
        let channels = last.d_in();
        // Burn stores [in, out]; the head's rows are per class.
        let mut weight = vec![0f32; classes * channels];
        for k in 0..channels {
            for c in 0..classes {
                weight[c * channels + k] = last.weight[k * classes + c];
            }
        }
        Ok(Some(PooledHead {
            weight,
            bias: last.bias,
            classes,
            channels,
            relu_first,
        }))
    }

    /// The global means of `features` (the trunk output, `[n, c, h, w]`),
    /// as the head sees them and raw.
    pub fn pooled(&self, features: Tensor<4>) -> Result<Pooled, ModelError> {
        let (_, relu_first, _) = head_layers(self.net());
        let [n, ch, _, _] = features.dims();
        let mean = |x: Tensor<4>| adaptive_avg_pool2d(x, [1, 1]).reshape([n, ch]);
        let raw = to_vec(mean(features.clone()), "pooled features")?;
        let head = if relu_first {
            to_vec(mean(relu(features)), "pooled features")?
        } else {
            raw.clone()
        };
        Ok(Pooled { head, raw })
    }

    /// The logits `[n][classes]` the network's own head computes from its
    /// trunk output `features` (the last tap), on the device.
    pub fn head_logits(&self, features: Tensor<4>) -> Result<Vec<f32>, ModelError> {
        let [n, ch, _, _] = features.dims();
        let (linears, relu_first, side) = head_layers(self.net());
        let x = if relu_first { relu(features) } else { features };
        let pooled = adaptive_avg_pool2d(x, [side, side]).reshape([n, ch * side * side]);
        Ok(HeadPass::run(&linears, pooled)?.logits)
    }
}

/// The linear layers of `net`'s head after its pool, whether a ReLU comes
/// before the pool, and the side of the (adaptive average) pool.
fn head_layers(net: &Net) -> (Vec<&Linear>, bool, usize) {
    match net {
        Net::ResNet(r) => (vec![&r.fc], false, 1),
        Net::TinyResNet(t) => (vec![&t.fc], false, 1),
        Net::GoogLeNet(g) => (vec![&g.fc], false, 1),
        Net::DenseNet(d) => (vec![&d.classifier], true, 1),
        Net::Plain(p) => (p.classifier.iter().collect(), false, p.pool_side),
    }
}

/// The head run forward on a batch of pooled features, read back to the
/// host.
struct HeadPass {
    /// The pooled features, `[n][ch * cells]` flattened.
    pooled: Vec<f32>,
    /// Each hidden layer's pre-activation, `[n][d]` flattened.
    hidden: Vec<Vec<f32>>,
    /// The logits, `[n][classes]` flattened.
    logits: Vec<f32>,
}

impl HeadPass {
    /// Runs `linears`, with a ReLU between each two, on `pooled`
    /// (`[n, ch * cells]`), keeping each hidden layer's pre-activation.
    fn run(linears: &[&Linear], pooled: Tensor<2>) -> Result<Self, ModelError> {
        let p = to_vec(pooled.clone(), "pooled features")?;
        let mut hidden = Vec::new();
        let mut h = pooled;
        for (i, linear) in linears.iter().enumerate() {
            h = linear.forward(h);
            if i + 1 < linears.len() {
                hidden.push(to_vec(h.clone(), "hidden activations")?);
                h = relu(h);
            }
        }
        Ok(Self {
            pooled: p,
            hidden,
            logits: to_vec(h, "logits")?,
        })
    }

    /// The terms of class `c` of image `i`, from the gradient `g` of its
    /// logit with respect to the pooled features (`[ch * cells]`); the bias
    /// is `bias` where the head knows it, else what the units leave of the
    /// logit.
    fn class_terms(
        &self,
        i: usize,
        c: usize,
        g: &[f64],
        [ch, cells]: [usize; 2],
        classes: usize,
        bias: Option<f64>,
    ) -> ClassTerms {
        let row = &self.pooled[i * ch * cells..(i + 1) * ch * cells];
        let contributions: Vec<f64> = (0..ch)
            .map(|k| {
                (0..cells)
                    .map(|s| g[k * cells + s] * f64::from(row[k * cells + s]))
                    .sum()
            })
            .collect();
        let logit = self.logits[i * classes + c];
        let bias = bias.unwrap_or_else(|| f64::from(logit) - contributions.iter().sum::<f64>());
        ClassTerms {
            class: c,
            logit,
            bias,
            contributions,
        }
    }
}

/// The head's last linear layer, read back to the host.
struct LastLayer {
    /// `[d_last, classes]` flattened (Burn stores `[in, out]`).
    weight: Vec<f32>,
    /// One per class; zeros where the layer has no bias.
    bias: Vec<f32>,
    classes: usize,
}

impl LastLayer {
    /// Reads `linear`'s weight and bias, `classes` outputs.
    fn read(linear: &Linear, classes: usize) -> Result<Self, ModelError> {
        let weight = to_vec(linear.weight.val(), "classifier weights")?;
        let bias = match &linear.bias {
            Some(b) => to_vec(b.val(), "classifier bias")?,
            None => vec![0.0; classes],
        };
        Ok(Self {
            weight,
            bias,
            classes,
        })
    }

    /// The number of inputs.
    fn d_in(&self) -> usize {
        self.weight.len() / self.classes
    }

    /// For a head of this one layer, the gradient of each picked logit with
    /// respect to the pooled input: its weight column, `[n * top][d_in]`.
    fn columns(&self, picks: &[Vec<usize>]) -> Vec<Vec<f64>> {
        picks
            .iter()
            .flatten()
            .map(|&c| {
                (0..self.d_in())
                    .map(|k| f64::from(self.weight[k * self.classes + c]))
                    .collect()
            })
            .collect()
    }
}

/// For a stack of `linears` with ReLUs between (`hidden` their
/// pre-activations), the gradient of each picked logit with respect to the
/// pooled input, `[n * top][ch * cells]`: the columns of the last weight,
/// masked by the last hidden layer's ReLU, then back through each earlier
/// layer on the device.
fn backprop_stack(
    linears: &[&Linear],
    hidden: &[Vec<f32>],
    picks: &[Vec<usize>],
    last: &LastLayer,
    device: &Device,
) -> Result<Vec<Vec<f64>>, ModelError> {
    let pairs: Vec<(usize, usize)> = picks
        .iter()
        .enumerate()
        .flat_map(|(i, cs)| cs.iter().map(move |&c| (i, c)))
        .collect();
    let m = pairs.len();
    let d_last = last.d_in();
    let mut g = vec![0f32; d_last * m];
    let h_last = &hidden[hidden.len() - 1];
    for (j, &(i, c)) in pairs.iter().enumerate() {
        for k in 0..d_last {
            if h_last[i * d_last + k] > 0.0 {
                g[k * m + j] = last.weight[k * last.classes + c];
            }
        }
    }
    let mut g = Tensor::<2>::from_data(TensorData::new(g, [d_last, m]), device);
    for layer in (0..linears.len() - 1).rev() {
        // weight is [in, out]: the input gradient is W · g.
        g = linears[layer].weight.val().matmul(g);
        let d_in = g.dims()[0];
        if layer > 0 {
            let pre = &hidden[layer - 1];
            let mask: Vec<f32> = (0..d_in * m)
                .map(|idx| {
                    let (k, j) = (idx / m, idx % m);
                    f32::from(u8::from(pre[pairs[j].0 * d_in + k] > 0.0))
                })
                .collect();
            g = g.mul(Tensor::<2>::from_data(
                TensorData::new(mask, [d_in, m]),
                device,
            ));
        }
    }
    let g = to_vec(g, "gradients")?;
    let d_in = g.len() / m.max(1);
    Ok((0..m)
        .map(|j| (0..d_in).map(|k| f64::from(g[k * m + j])).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::Device;

    use super::*;
    use crate::Arch;
    use crate::gpu::cpu_device;

    /// A deterministic input batch `[n, 3, side, side]`.
    fn input(n: usize, side: usize, device: &Device) -> Tensor<4> {
        let values: Vec<f32> = (0..n * 3 * side * side)
            .map(|i| (i as f32 * 0.137 + 0.4).sin())
            .collect();
        Tensor::from_data(TensorData::new(values, [n, 3, side, side]), device)
    }

    fn features(model: &Model, x: Tensor<4>) -> Tensor<4> {
        let last = model.taps().last().unwrap().name.clone();
        let tap = model.tap(&last).unwrap();
        model.forward_taps(x, &[tap]).unwrap().remove(0)
    }

    /// The closed form of a pooled linear head (what `netdissect ablate`
    /// computes on the host) equals the network's own head run on the
    /// device, on the trunk output as it is and with channels zeroed.
    #[test]
    fn the_pooled_head_in_closed_form_is_the_networks_own_head_with_units_zeroed() {
        let device = cpu_device();
        for arch in [Arch::ResNet18, Arch::DenseNet161] {
            let model = Model::synthetic(arch, 7, &device).unwrap();
            let x = input(2, 64, &device);
            let f = features(&model, x.clone());
            let [n, ch, h, w] = f.dims();
            let head = model.pooled_head().unwrap().expect("a pooled linear head");
            assert_eq!((head.classes, head.channels), (7, ch));
            let own = to_vec(model.forward(x).unwrap(), "logits").unwrap();
            let zeroed: Vec<usize> = vec![0, 3, ch - 1];
            let mut values = to_vec(f.clone(), "features").unwrap();
            for i in 0..n {
                for &k in &zeroed {
                    values[(i * ch + k) * h * w..(i * ch + k + 1) * h * w].fill(0.0);
                }
            }
            let f0 = Tensor::<4>::from_data(TensorData::new(values, [n, ch, h, w]), &device);
            let rerun = model.head_logits(f0).unwrap();
            let pooled = model.pooled(f.clone()).unwrap();
            assert_eq!(model.head_logits(f).unwrap().len(), own.len());
            for i in 0..n {
                for c in 0..7 {
                    let row = &head.weight[c * ch..(c + 1) * ch];
                    let p = &pooled.head[i * ch..(i + 1) * ch];
                    let full: f64 = f64::from(head.bias[c])
                        + (0..ch)
                            .map(|k| f64::from(row[k]) * f64::from(p[k]))
                            .sum::<f64>();
                    let ablated = full
                        - (zeroed.iter())
                            .map(|&k| f64::from(row[k]) * f64::from(p[k]))
                            .sum::<f64>();
                    let tol = 1e-3 * full.abs().max(1.0);
                    assert!((full - f64::from(own[i * 7 + c])).abs() < tol, "{arch:?}");
                    assert!(
                        (ablated - f64::from(rerun[i * 7 + c])).abs() < tol,
                        "{arch:?}"
                    );
                }
            }
        }
        let alexnet = Model::synthetic(Arch::AlexNet, 7, &device).unwrap();
        assert!(alexnet.pooled_head().unwrap().is_none());
    }

    #[test]
    fn contributions_add_up_to_the_logit_minus_the_bias_for_every_kind_of_head() {
        let device = cpu_device();
        // One of each head: pooled linear (ResNet), ReLU then pooled linear
        // (DenseNet), and the piecewise-linear classifier stack (AlexNet).
        for (arch, side) in [
            (Arch::ResNet18, 64),
            (Arch::DenseNet161, 64),
            (Arch::AlexNet, 96),
        ] {
            let model = Model::synthetic(arch, 20, &device).unwrap();
            let x = input(2, side, &device);
            let logits = to_vec(model.forward(x.clone()).unwrap(), "logits").unwrap();
            let explained = model.class_terms(features(&model, x), 5).unwrap();
            assert_eq!(explained.len(), 2);
            for (i, classes) in explained.iter().enumerate() {
                assert_eq!(classes.len(), 5);
                let row = &logits[i * 20..(i + 1) * 20];
                assert_eq!(
                    classes.iter().map(|c| c.class).collect::<Vec<_>>(),
                    top_classes(row, 5),
                    "{arch:?}: top classes by logit"
                );
                for c in classes {
                    assert_eq!(c.logit, row[c.class], "{arch:?}: the network's own logit");
                    let sum = c.bias + c.contributions.iter().sum::<f64>();
                    let tol = 1e-3 * f64::from(c.logit.abs()).max(1.0);
                    assert!(
                        (sum - f64::from(c.logit)).abs() < tol,
                        "{arch:?} image {i} class {}: {sum} against {}",
                        c.class,
                        c.logit
                    );
                    assert!(c.contributions.iter().any(|&v| v != 0.0));
                }
            }
            let want = if arch == Arch::AlexNet {
                Attribution::GradientTimesInput
            } else {
                Attribution::PooledLinear
            };
            assert_eq!(model.attribution(), want);
        }
    }

    #[test]
    fn a_planted_class_score_is_explained_by_exactly_its_units_in_order() {
        let device = cpu_device();
        let model = Model::synthetic(Arch::TinyResNet, 4, &device).unwrap();
        let x = input(1, 64, &device);
        let f = features(&model, x);
        let [_, ch, _, _] = f.dims();
        let pooled = to_vec(adaptive_avg_pool2d(f.clone(), [1, 1]).reshape([1, ch]), "p").unwrap();
        // Class 2's score: 3, 2 and 1 from three units that are active on
        // this input (in another order than their numbers), and a bias of
        // 0.5; every other weight 0 (each planted weight is divided by the
        // unit's pooled activation).
        let active: Vec<usize> = (0..ch).filter(|&k| pooled[k] > 1e-3).collect();
        assert!(active.len() >= 3, "{} active units", active.len());
        let planted = [(active[2], 3.0f32), (active[0], 2.0), (active[1], 1.0)];
        let mut w = vec![0f32; ch * 4];
        for &(k, v) in &planted {
            w[k * 4 + 2] = v / pooled[k];
        }
        let mut bias = vec![-50f32; 4];
        bias[2] = 0.5;
        let mut net = model.into_net();
        if let Net::TinyResNet(t) = &mut net {
            t.fc.weight =
                Param::from_tensor(Tensor::from_data(TensorData::new(w, [ch, 4]), &device));
            t.fc.bias = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(bias, [4]),
                &device,
            )));
        } else {
            panic!("tiny-resnet is a TinyResNet");
        }
        let model = Model::from_net(Arch::TinyResNet, 4, net);
        let explained = model.class_terms(f, 1).unwrap();
        let top = &explained[0][0];
        assert_eq!(top.class, 2);
        assert_eq!(top.bias, 0.5);
        let mut order: Vec<usize> = (0..ch).collect();
        order.sort_by(|&a, &b| top.contributions[b].total_cmp(&top.contributions[a]));
        assert_eq!(&order[..3], &planted.map(|p| p.0));
        let total: f64 = top.contributions.iter().sum();
        for (&(k, v), share) in planted.iter().zip([0.5, 1.0 / 3.0, 1.0 / 6.0]) {
            assert!(
                (top.contributions[k] - f64::from(v)).abs() < 1e-5,
                "unit {k}"
            );
            assert!((top.contributions[k] / total - share).abs() < 1e-5);
        }
        assert!(order[3..].iter().all(|&k| top.contributions[k] == 0.0));
        assert!((f64::from(top.logit) - 6.5).abs() < 1e-4, "{}", top.logit);
    }
}
