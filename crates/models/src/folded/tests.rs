//! Our CPU convolutions against Burn's on the same shapes, and the folded forward pass
//! against the module tree's at every tap.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use conv::testing::{cases, values, worst};
use conv::{Epilogue, Im2col, ImageShape, Pointwise, Spec, Tile, Winograd, reference, winograd};

use crate::nets::Collector;
use crate::{Arch, Model, TapId};

#[test]
fn our_convolutions_match_burns() {
    let device = Device::flex();
    let none = Epilogue::default();
    for (i, case) in cases().iter().enumerate() {
        let ImageShape { n, c, h, w } = case.shape;
        let k = case.out_ch;
        let x = values(i as u64, case.shape.len());
        let input = Tensor::<4>::from_data(TensorData::new(x.clone(), [n, c, h, w]), &device);
        for (kernel, stride, padding) in [
            (3, 1, case.padding),
            (1, 1, 0),
            (1, 2, 0),
            (3, 2, 1),
            (7, 2, 3),
        ] {
            if h + 2 * padding < kernel || w + 2 * padding < kernel {
                continue;
            }
            let weight = values(100 + i as u64, k * c * kernel * kernel);
            let burn: Vec<f64> = conv2d(
                input.clone(),
                Tensor::from_data(
                    TensorData::new(weight.clone(), [k, c, kernel, kernel]),
                    &device,
                ),
                None,
                ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
            )
            .into_data()
            .iter::<f32>()
            .map(f64::from)
            .collect();
            let spec = Spec {
                out_ch: k,
                kernel,
                stride,
                padding,
            };
            let (ours, tol) = match (kernel, stride) {
                (3, 1) => {
                    let [ho, wo] = [h + 2 * padding - 2, w + 2 * padding - 2];
                    let tile = Tile::for_output(ho, wo);
                    let conv = Winograd::new(&weight, k, c, padding, tile);
                    (conv.run(&x, case.shape, &none), winograd::tolerance(tile))
                }
                (1, _) => {
                    let conv = Pointwise::new(&weight, k, c, stride);
                    (conv.run(&x, case.shape, &none), 1e-6)
                }
                _ => (
                    Im2col::new(&weight, c, spec).run(&x, case.shape, &none),
                    2e-6,
                ),
            };
            let (_, scale) = reference(&x, case.shape, &weight, spec, &none);
            // Each is within its bound of the exact sums (Burn's im2col gemm: a dot product
            // of 9C terms, within 1e-6 like our 1x1), so within the sum of bounds of the other.
            let err = worst(&ours, &burn, &scale);
            assert!(
                err <= tol + 1e-6,
                "case {i}, {kernel}x{kernel} stride {stride}: {err:e}"
            );
        }
    }
}

/// Every tap of `arch`'s folded forward pass, asked for alone and all together, against
/// the module tree's (unfolded BatchNorm, Burn's convolutions, separate ReLUs and adds).
fn folded_matches_module_tree(arch: Arch, side: usize) {
    let device = Device::flex();
    let model = Model::synthetic(arch, 10, &device).unwrap();
    let input = Tensor::<4>::from_data(
        TensorData::new(values(7, 2 * 3 * side * side), [2, 3, side, side]),
        &device,
    );
    let ids: Vec<TapId> = model
        .taps()
        .iter()
        .map(|t| model.tap(&t.name).unwrap())
        .collect();
    let mut asks: Vec<Vec<TapId>> = ids.iter().map(|id| vec![*id]).collect();
    asks.push(ids.clone());
    for ask in asks {
        let folded = model.forward_taps(input.clone(), &ask).unwrap();
        let mut collector = Collector::new(ask.iter().map(|t| t.index).collect());
        let _ = model.net().trunk(input.clone(), &mut collector);
        for ((got, want), id) in folded.into_iter().zip(collector.slots).zip(&ask) {
            let name = &model.taps()[id.index].name;
            let want = want.unwrap();
            assert_eq!(got.dims(), want.dims(), "{arch} {name}");
            let got: Vec<f32> = got.into_data().iter::<f32>().collect();
            let want: Vec<f32> = want.into_data().iter::<f32>().collect();
            let rms = (want.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / want.len() as f64)
                .sqrt();
            let max = got
                .iter()
                .zip(&want)
                .map(|(g, w)| f64::from((g - w).abs()))
                .fold(0.0, f64::max);
            // Folding rounds the scaled weights once more, and Winograd's transforms add
            // error on the order of 1e-5 of each output's scale (see `winograd::tolerance`),
            // passed on through the layers after.
            assert!(
                max <= 1e-4 * rms + 1e-6,
                "{arch} {name}: max |difference| {max:e}, rms {rms:e}"
            );
        }
    }
}

#[test]
fn folded_resnets_match_the_module_tree() {
    folded_matches_module_tree(Arch::TinyResNet, 64);
    folded_matches_module_tree(Arch::ResNet18, 64);
    folded_matches_module_tree(Arch::ResNet50, 64);
}

#[test]
fn folded_plain_nets_match_the_module_tree() {
    folded_matches_module_tree(Arch::Vgg16Bn, 32);
    folded_matches_module_tree(Arch::AlexNet, 99);
}
