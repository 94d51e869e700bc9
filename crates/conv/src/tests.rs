//! The CPU convolutions against a plain f64 convolution, on random
//! values and awkward shapes: maps that are not a multiple of the tile, one channel, batch
//! one, 7x7 and smaller maps, padding 0 and 2, with and without each part of the epilogue.

use super::testing::{cases, values, worst};
use super::*;

fn epilogues<'a>(bias: &'a [f32], residual: &'a [f32]) -> Vec<Epilogue<'a>> {
    vec![
        Epilogue::default(),
        Epilogue {
            bias: Some(bias),
            residual: None,
            relu: true,
        },
        Epilogue {
            bias: Some(bias),
            residual: Some(residual),
            relu: true,
        },
        Epilogue {
            bias: None,
            residual: Some(residual),
            relu: false,
        },
    ]
}

#[test]
fn winograd_matches_the_f64_reference() {
    for tile in [Tile::F2, Tile::F4] {
        let mut max_err = 0.0f64;
        for (i, case) in cases().iter().enumerate() {
            let ImageShape { c, .. } = case.shape;
            let k = case.out_ch;
            let x = values(i as u64, case.shape.len());
            let weight = values(100 + i as u64, k * c * 9);
            let conv = Winograd::new(&weight, k, c, case.padding, tile);
            let ImageShape { n, h, w, .. } = case.shape;
            let [ho, wo] = conv.output_size(h, w).unwrap();
            let bias = values(200 + i as u64, k);
            let residual = values(300 + i as u64, n * k * ho * wo);
            for epilogue in epilogues(&bias, &residual) {
                let got = conv.run(&x, case.shape, &epilogue);
                let (want, scale) = reference(
                    &x,
                    case.shape,
                    &weight,
                    Spec {
                        out_ch: k,
                        kernel: 3,
                        stride: 1,
                        padding: case.padding,
                    },
                    &epilogue,
                );
                let err = worst(&got, &want, &scale);
                assert!(
                    err <= winograd::tolerance(tile),
                    "{tile:?} case {i}: error {err:e} over the bound"
                );
                max_err = max_err.max(err);
            }
        }
        println!("{tile:?}: worst error {max_err:e} of the sum of |products|");
    }
}

#[test]
fn pointwise_matches_the_f64_reference() {
    for stride in [1, 2, 3] {
        for (i, case) in cases().iter().enumerate() {
            let ImageShape { n, c, h, w } = case.shape;
            let k = case.out_ch;
            let x = values(i as u64, case.shape.len());
            let weight = values(100 + i as u64, k * c);
            let conv = Pointwise::new(&weight, k, c, stride);
            let [ho, wo] = conv.output_size(h, w);
            let bias = values(200 + i as u64, k);
            let residual = values(300 + i as u64, n * k * ho * wo);
            for epilogue in epilogues(&bias, &residual) {
                let got = conv.run(&x, case.shape, &epilogue);
                let (want, scale) = reference(
                    &x,
                    case.shape,
                    &weight,
                    Spec {
                        out_ch: k,
                        kernel: 1,
                        stride,
                        padding: 0,
                    },
                    &epilogue,
                );
                let err = worst(&got, &want, &scale);
                // A plain f32 dot product of C terms: C units of roundoff at worst.
                assert!(err <= 1e-6, "stride {stride} case {i}: error {err:e}");
            }
        }
    }
}

#[test]
fn a_large_map_crosses_blocks_and_tasks() {
    // 56x56 with 64 channels: 196 F(4, 3) tiles per image, more than one block.
    let shape = ImageShape {
        n: 3,
        c: 64,
        h: 56,
        w: 56,
    };
    let (k, c) = (64, 64);
    let x = values(1, shape.len());
    let weight = values(2, k * c * 9);
    let conv = Winograd::new(&weight, k, c, 1, Tile::F4);
    let got = conv.run(&x, shape, &Epilogue::default());
    let (want, scale) = reference(
        &x,
        shape,
        &weight,
        Spec {
            out_ch: k,
            kernel: 3,
            stride: 1,
            padding: 1,
        },
        &Epilogue::default(),
    );
    let err = worst(&got, &want, &scale);
    assert!(err <= winograd::tolerance(Tile::F4), "{err:e}");
}

#[test]
fn im2col_matches_the_f64_reference() {
    // The stem's 7x7 at stride 2, 3x3 at stride 2, 5x5, and kernels whose padding is
    // wider or narrower than their reach.
    let specs = [
        (7, 2, 3),
        (3, 2, 1),
        (5, 1, 2),
        (3, 1, 0),
        (1, 1, 1),
        (3, 3, 2),
    ];
    for (i, case) in cases().iter().enumerate() {
        let ImageShape { n, c, h, w } = case.shape;
        let k = case.out_ch;
        let x = values(i as u64, case.shape.len());
        for (kernel, stride, padding) in specs {
            let spec = Spec {
                out_ch: k,
                kernel,
                stride,
                padding,
            };
            let weight = values(100 + i as u64, k * c * kernel * kernel);
            let conv = Im2col::new(&weight, c, spec);
            let Some([ho, wo]) = conv.output_size(h, w) else {
                continue;
            };
            let bias = values(200 + i as u64, k);
            let residual = values(300 + i as u64, n * k * ho * wo);
            for epilogue in epilogues(&bias, &residual) {
                let got = conv.run(&x, case.shape, &epilogue);
                let (want, scale) = reference(&x, case.shape, &weight, spec, &epilogue);
                let err = worst(&got, &want, &scale);
                // A plain f32 dot product of C·k² terms, blocked by gemm.
                assert!(err <= 2e-6, "{spec:?} case {i}: error {err:e}");
            }
        }
    }
}

#[test]
fn the_tile_needs_the_fewest_multiplies() {
    // 7x7: four 4x4 tiles (4 x 36 multiplies) against sixteen 2x2 tiles (16 x 16).
    assert_eq!(Tile::for_output(7, 7), Tile::F4);
    assert_eq!(Tile::for_output(56, 56), Tile::F4);
    assert_eq!(Tile::for_output(4, 4), Tile::F4);
    // 6x6 and 5x5: 144 multiplies either way, and F(2, 3) is the more precise.
    assert_eq!(Tile::for_output(6, 6), Tile::F2);
    assert_eq!(Tile::for_output(5, 5), Tile::F2);
    assert_eq!(Tile::for_output(2, 2), Tile::F2);
    assert_eq!(Tile::for_output(1, 9), Tile::F2);
}

#[test]
fn relu_keeps_nan_like_burn() {
    let mut row = [f32::NAN, -1.0, 2.0];
    let relu = Epilogue {
        relu: true,
        ..Epilogue::default()
    };
    relu.finish(&mut row, 0.0, None);
    assert!(row[0].is_nan());
    assert_eq!(&row[1..], &[0.0, 2.0]);
}

#[test]
fn small_batches_split_output_channels() {
    // (images, channels, threads) -> (parts, channels a part): enough images keep whole
    // images per task; one image on 2 threads makes four parts of 16 channels; never below
    // 16 channels a part, and only even splits.
    for ((n, k, threads), (parts, channels)) in [
        ((16, 64, 2), (1, 64)),
        ((1, 64, 2), (4, 16)),
        ((1, 16, 8), (1, 16)),
        ((1, 48, 8), (3, 16)),
        ((3, 512, 16), (8, 64)),
    ] {
        assert_eq!(
            Split::new(n, k, threads),
            Split { parts, channels },
            "{n} {k} {threads}"
        );
    }
}
