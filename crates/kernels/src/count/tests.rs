//! The GPU counter against the CPU reference (`crate::cpu::count`), on hand-computed, random,
//! sparse and adversarial batches.

use super::*;
use crate::cpu;
use crate::error::KernelError;
use crate::gpu::tests::gpu;
use crate::gpu::{ActivationView, Gpu};
use crate::testutil::{Rng, bits, upload_padded};

/// Cells at 3.5 + 8 i on the grid: an off-grid receptive-field placement.
const CENTRES_3_5_BY_8: AxisMap = AxisMap {
    scale: 1.0 / 8.0,
    offset: -3.5 / 8.0,
};

fn config(n_units: u32, up: Upsample, max_images: u32) -> CountConfig {
    let n_labels = 11;
    CountConfig {
        n_units,
        n_labels,
        n_categories: 3,
        // Label 0 is unlabelled; the rest cycle over three categories.
        label_category: (0..n_labels).map(|l| l % 3).collect(),
        upsample: up,
        max_images,
    }
}

/// Random labels: 0 to 2 planes per image (some empty, some all zero), labels up to the maximum,
/// and image-level labels on some images.
fn random_labels(rng: &mut Rng, cfg: &CountConfig, n_images: u32) -> HostLabels {
    let n_pixels = (cfg.upsample.sh * cfg.upsample.sw) as usize;
    let mut labels = HostLabels {
        n_images,
        ..Default::default()
    };
    for b in 0..n_images {
        for p in 0..rng.below(3) {
            let zero = rng.below(5) == 0;
            let l: Vec<u32> = (0..n_pixels)
                .map(|_| {
                    if zero || rng.below(3) == 0 {
                        0
                    } else {
                        rng.below(cfg.n_labels)
                    }
                })
                .collect();
            labels.planes.push(LabelPlane {
                image: b,
                category: p,
                labels: l,
            });
        }
        if rng.below(2) == 0 {
            labels.image_labels.push(ImageLabel {
                image: b,
                category: 2,
                label: cfg.n_labels - 1,
            });
        }
    }
    labels
}

/// Asserts `got == want`, naming the first field and index that differ (the lists are long).
fn assert_same(got: &Counts, want: &Counts) {
    let (g, w) = (&got.moments, &want.moments);
    let lists: [(&str, &[u64], &[u64]); 12] = [
        ("intersect", &got.intersect, &want.intersect),
        ("label_pixels", &got.label_pixels, &want.label_pixels),
        ("unit_pixels", &got.unit_pixels, &want.unit_pixels),
        (
            "original",
            &got.unit_category_original,
            &want.unit_category_original,
        ),
        ("lite", &got.unit_category_lite, &want.unit_category_lite),
        ("unit_blocks", &g.unit_blocks, &w.unit_blocks),
        ("unit_gram", &g.unit_gram, &w.unit_gram),
        ("label_blocks", &g.label_blocks, &w.label_blocks),
        ("label_gram", &g.label_gram, &w.label_gram),
        ("unit_max", &g.unit_max, &w.unit_max),
        ("label_max", &g.label_max, &w.label_max),
        ("label_layers", &g.label_layers, &w.label_layers),
    ];
    let mut wrong = Vec::new();
    for (name, a, b) in lists {
        assert_eq!(a.len(), b.len(), "{name}: lengths");
        let bad: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        if let Some(&i) = bad.first() {
            wrong.push(format!(
                "{name}: {} of {} differ, first [{i}]: device {} != cpu {}",
                bad.len(),
                a.len(),
                a[i],
                b[i]
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(got, want);
}

/// Runs the device count over `batches` and compares with the CPU reference, merged per batch.
fn check(cfg: &CountConfig, batches: &[(Vec<f32>, HostLabels)], thresholds: &[f32]) -> Counts {
    let gpu = gpu();
    let thr = gpu.storage_init("thr", thresholds);
    let mut counter = Counter::new(gpu, cfg.clone()).expect("counter");
    // A twin that folds its batch counts into the totals before every
    // batch, where the counter folds only before a read.
    let mut folding = Counter::new(gpu, cfg.clone()).expect("counter");
    folding.fold_limit = 0;
    let mut want = Counts::zeros(cfg.n_units, cfg.n_labels, cfg.n_categories);
    for (i, (data, labels)) in batches.iter().enumerate() {
        let buf = upload_padded(gpu, data, 5 + i);
        let shape = [labels.n_images, cfg.n_units, cfg.upsample.h, cfg.upsample.w];
        let view = ActivationView {
            buffer: &buf,
            offset_bytes: 4 * (5 + i as u64),
            shape,
        };
        counter.count(gpu, &view, &thr, labels).expect("gpu count");
        folding.count(gpu, &view, &thr, labels).expect("gpu count");
        let part = cpu::count(cfg, data, thresholds, labels).expect("cpu count");
        want.merge(&part).expect("merge");
    }
    let got = counter.read(gpu).expect("read");
    assert_same(&got, &want);
    assert_eq!(
        folding.read(gpu).expect("read"),
        want,
        "folding before every batch"
    );
    assert_eq!(
        counter.read(gpu).expect("read"),
        want,
        "a second read adds nothing"
    );
    got
}

#[test]
fn hand_computed_counts_follow_both_union_rules() {
    // Identity upsampling (2x2 to 2x2). Unit 0 fires only at pixel (0, 0) of both images.
    let up = Upsample::half_pixel(2, 2, 2, 2);
    let cfg = CountConfig {
        n_units: 1,
        n_labels: 4,
        n_categories: 2,
        // Labels 1 and 2 are category 0, label 3 is category 1.
        label_category: vec![0, 0, 0, 1],
        upsample: up,
        max_images: 2,
    };
    let data = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    let labels = HostLabels {
        n_images: 2,
        planes: vec![
            // Image 0: label 3 under the mask, label 2 elsewhere; image 1: nothing under the mask.
            LabelPlane {
                image: 0,
                category: 1,
                labels: vec![3, 3, 0, 2],
            },
            LabelPlane {
                image: 1,
                category: 0,
                labels: vec![0, 2, 2, 2],
            },
        ],
        image_labels: vec![ImageLabel {
            image: 0,
            category: 0,
            label: 1,
        }],
    };
    let got = check(&cfg, &[(data, labels)], &[0.5]);
    assert_eq!(got.unit_pixels, vec![2]);
    // Label 3 once under the mask; image-level label 1 adds image 0's masked count (1).
    assert_eq!(got.intersect, vec![0, 1, 0, 1]);
    // Truth: label 1 covers image 0 (4 pixels), label 2 on 1 + 3 pixels, label 3 on 2.
    assert_eq!(got.label_pixels, vec![0, 4, 4, 2]);
    // Original: category 0 present in both images (2), category 1 only in image 0 (1).
    assert_eq!(got.unit_category_original, vec![2, 1]);
    // Lite: image 0 has category 1 under the mask and category 0 from its image-level label;
    // image 1 has no label under its mask, so it adds nothing.
    assert_eq!(got.unit_category_lite, vec![1, 1]);
    // Moments: one-pixel blocks, numbered (0,0) (0,1) (1,0) (1,1); the Gram triangle's pairs
    // are (0,0) (0,1) (0,2) (0,3) (1,1) (1,2) (1,3) (2,2) (2,3) (3,3).
    let m = &got.moments;
    assert_eq!((m.seg, m.grid, m.images), ([2, 2], [2, 2], 2));
    // Each image's mask is pixel (0, 0).
    assert_eq!(m.unit_blocks, vec![2, 0, 0, 0]);
    assert_eq!(m.unit_max, vec![1]);
    assert_eq!(m.label_max, vec![0, 4, 3, 2]);
    // Label 1 is image-level, 2 and 3 in one plane of an image each.
    assert_eq!(m.label_layers, vec![0, 1, 1, 1]);
    assert_eq!(m.unit_gram, vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Label 1 fills image 0; label 2 is block 3 of image 0 and blocks 1, 2, 3 of image 1;
    // label 3 is blocks 0 and 1 of image 0.
    assert_eq!(
        m.label_blocks,
        vec![0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 2, 1, 1, 0, 0]
    );
    assert_eq!(
        m.label_gram,
        [
            vec![0; 10],
            vec![1; 10],
            vec![0, 0, 0, 0, 1, 1, 1, 1, 1, 2],
            vec![1, 1, 0, 0, 1, 0, 0, 0, 0, 0],
        ]
        .concat()
    );
}

#[test]
fn moments_count_blocks_of_the_feature_grid() {
    // A 2x2 map on a 4x6 seg grid: blocks of 2 rows by 3 columns. One plane, label 1 on the
    // first row (3 pixels in block 0, 3 in block 1) and label 2 on one pixel of block 3.
    let cfg = CountConfig {
        n_units: 1,
        n_labels: 3,
        n_categories: 1,
        label_category: vec![0, 0, 0],
        upsample: Upsample::half_pixel(2, 2, 4, 6),
        max_images: 1,
    };
    let mut plane = vec![0u32; 24];
    plane[..6].fill(1);
    plane[23] = 2;
    let labels = HostLabels {
        n_images: 1,
        planes: vec![LabelPlane {
            image: 0,
            category: 0,
            labels: plane,
        }],
        image_labels: Vec::new(),
    };
    let got = check(&cfg, &[(vec![0.0; 4], labels)], &[1.0]);
    let m = &got.moments;
    assert_eq!((m.seg, m.grid), ([4, 6], [2, 2]));
    assert_eq!(m.block_sizes(), vec![6; 4]);
    // Label 1: 3 pixels in each of blocks 0 and 1; label 2: 1 in block 3.
    assert_eq!(m.label_blocks, vec![0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 1]);
    assert_eq!(
        m.label_gram,
        [
            vec![0; 10],
            vec![9, 9, 0, 0, 9, 0, 0, 0, 0, 0],
            vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ]
        .concat()
    );
    assert_eq!(m.unit_blocks, vec![0; 4], "no pixel is above the threshold");
    assert_eq!(m.unit_gram, vec![0; 10]);
}

#[test]
fn products_above_32_bits_carry_on_the_device() {
    // One 1x1 map upsampled to 300x300, every pixel masked: 90000² = 8.1e9 overflows u32.
    let cfg = CountConfig {
        n_units: 1,
        n_labels: 2,
        n_categories: 1,
        label_category: vec![0, 0],
        upsample: Upsample::half_pixel(1, 1, 300, 300),
        max_images: 2,
    };
    let labels = HostLabels {
        n_images: 2,
        planes: Vec::new(),
        image_labels: (0..2)
            .map(|image| ImageLabel {
                image,
                category: 0,
                label: 1,
            })
            .collect(),
    };
    let got = check(&cfg, &[(vec![1.0, 1.0], labels)], &[0.5]);
    // One block: its Gram entry is the square of each image's count.
    let square = 90_000u64 * 90_000;
    assert_eq!(got.moments.unit_gram, vec![2 * square]);
    assert_eq!(got.moments.unit_blocks, vec![2 * 90_000]);
    assert_eq!(got.moments.label_gram, vec![0, 2 * square]);
}

#[test]
fn upsampled_samples_match_cpu_bit_for_bit() {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    let cases = [
        Upsample::half_pixel(1, 1, 3, 4),
        Upsample::half_pixel(7, 7, 20, 17),
        Upsample::half_pixel(56, 56, 112, 112),
        Upsample::half_pixel(5, 9, 5, 3),
        // Receptive-field centres: first centre at 3.5 seg pixels, spacing 8 (beyond both edges).
        Upsample::affine(7, 7, 60, 61, CENTRES_3_5_BY_8, CENTRES_3_5_BY_8),
    ];
    for up in cases {
        let cfg = config(2, up, 2);
        let n = 2 * 2 * up.h * up.w;
        // Random mantissas everywhere make fused and unfused products differ often.
        let data: Vec<f32> = (0..n).map(|_| rng.uniform(-1e3, 1e3)).collect();
        let buf = upload_padded(gpu, &data, 7);
        let view = ActivationView {
            buffer: &buf,
            offset_bytes: 28,
            shape: [2, 2, up.h, up.w],
        };
        let counter = Counter::new(gpu, cfg).expect("counter");
        let got = counter.upsample_samples(gpu, &view).expect("samples");
        let (ty, tx) = (up.taps_y(), up.taps_x());
        let plane = (up.h * up.w) as usize;
        let mut want = Vec::new();
        for map in data.chunks(plane) {
            for &row in &ty {
                for &col in &tx {
                    want.push(cpu::upsample_value(map, up.w, row, col));
                }
            }
        }
        assert_eq!(bits(&got), bits(&want), "{up:?}");
    }
}

#[test]
fn random_counts_match_cpu_over_batches() {
    let mut rng = Rng::new(6);
    for (n_units, up, sizes) in [
        (1, Upsample::half_pixel(1, 1, 5, 3), vec![3u32, 2]),
        (3, Upsample::half_pixel(7, 7, 20, 17), vec![2, 3, 1]),
        (2, Upsample::half_pixel(56, 56, 112, 112), vec![1]),
        (
            2,
            Upsample::affine(7, 7, 60, 61, CENTRES_3_5_BY_8, CENTRES_3_5_BY_8),
            vec![2],
        ),
        (2048, Upsample::half_pixel(2, 3, 4, 5), vec![1, 1]),
    ] {
        let cfg = config(n_units, up, 3);
        let thresholds: Vec<f32> = (0..n_units).map(|_| rng.uniform(-0.5, 0.8)).collect();
        let batches: Vec<(Vec<f32>, HostLabels)> = sizes
            .iter()
            .map(|&n| {
                let data = rng.floats((n * n_units * up.h * up.w) as usize, -1.0, 1.0);
                (data, random_labels(&mut rng, &cfg, n))
            })
            .collect();
        let got = check(&cfg, &batches, &thresholds);
        assert!(
            got.unit_pixels.iter().any(|&p| p > 0),
            "test data should fire some units"
        );
    }
}

#[test]
fn sparse_maps_skip_only_pixels_outside_every_mask() {
    // Thresholds near the top, so that a few cells of each map are live and
    // most seg rows and columns are skipped: maps of more than 32 rows and
    // columns (folded live sets), odd shapes, receptive-field taps.
    let mut rng = Rng::new(9);
    let mut fired = Vec::new();
    for (n_units, up) in [
        (3, Upsample::half_pixel(56, 56, 112, 112)),
        (2, Upsample::half_pixel(40, 33, 80, 70)),
        (4, Upsample::half_pixel(7, 7, 112, 112)),
        (
            2,
            Upsample::affine(7, 7, 60, 61, CENTRES_3_5_BY_8, CENTRES_3_5_BY_8),
        ),
        (2, Upsample::half_pixel(100, 3, 50, 9)),
        // More than 128 seg columns: several workgroups per live map.
        (2, Upsample::half_pixel(7, 7, 20, 300)),
    ] {
        let cfg = config(n_units, up, 3);
        // Noise in [-1, 1) and one bump of height 2 per map: only cells
        // near its top exceed thresholds in [1.3, 1.8), as a unit's
        // activations cluster in one region.
        let thresholds: Vec<f32> = (0..n_units).map(|_| rng.uniform(1.3, 1.8)).collect();
        let mut data = rng.floats((2 * n_units * up.h * up.w) as usize, -1.0, 1.0);
        let plane = (up.h * up.w) as usize;
        for map in data.chunks_mut(plane) {
            let cy = rng.uniform(0.0, up.h as f32);
            let cx = rng.uniform(0.0, up.w as f32);
            for (i, v) in map.iter_mut().enumerate() {
                let dy = (i / up.w as usize) as f32 - cy;
                let dx = (i % up.w as usize) as f32 - cx;
                *v = 0.3 * *v + 2.0 * (-(dy * dy + dx * dx) / 2.0).exp();
            }
        }
        let labels = random_labels(&mut rng, &cfg, 2);
        let got = check(&cfg, &[(data.clone(), labels)], &thresholds);
        // Every pixel, none skipped.
        let (ty, tx) = (up.taps_y(), up.taps_x());
        let plane = (up.h * up.w) as usize;
        let mut want = vec![0u64; n_units as usize];
        for b in 0..2 {
            for (u, count) in want.iter_mut().enumerate() {
                let map = &data[(b * n_units as usize + u) * plane..][..plane];
                for &row in &ty {
                    for &col in &tx {
                        if cpu::upsample_value(map, up.w, row, col) > thresholds[u] {
                            *count += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(got.unit_pixels, want, "{up:?}");
        fired.push(want.iter().sum::<u64>());
    }
    // Downsampled maps may fire nowhere; the others must.
    assert!(fired.iter().filter(|&&f| f > 0).count() >= 4, "{fired:?}");
}

#[test]
fn batches_without_a_live_map_count_nothing_and_the_live_list_restarts() {
    // The counting kernel runs on the live maps alone (an indirect dispatch
    // sized on the device): a batch where no map exceeds its threshold must
    // dispatch nothing, and each batch's list of live maps must start empty,
    // whatever the batch before it held.
    let mut rng = Rng::new(12);
    let cfg = config(3, Upsample::half_pixel(7, 7, 28, 28), 4);
    let thresholds = [0.5, 0.6, 0.7];
    let dead = |n: u32| vec![-1.0; (n * 3 * 49) as usize];
    let live = |rng: &mut Rng, n: u32| rng.floats((n * 3 * 49) as usize, -1.0, 1.0);
    let batches = vec![
        (dead(2), random_labels(&mut rng, &cfg, 2)),
        (live(&mut rng, 4), random_labels(&mut rng, &cfg, 4)),
        (dead(3), random_labels(&mut rng, &cfg, 3)),
        (live(&mut rng, 1), random_labels(&mut rng, &cfg, 1)),
    ];
    let got = check(&cfg, &batches, &thresholds);
    assert!(
        got.unit_pixels.iter().all(|&p| p > 0),
        "{:?}",
        got.unit_pixels
    );
    let only_dead = check(&cfg, &[batches[0].clone()], &thresholds);
    assert!(only_dead.unit_pixels.iter().all(|&p| p == 0));
}

#[test]
fn a_batch_of_every_layers_kernels_is_one_submission_and_changes_nothing() {
    // A device of its own, so that other tests' submissions do not count.
    let gpu = Gpu::new().expect("a wgpu adapter");
    let mut rng = Rng::new(12);
    let layers = [
        (3u32, Upsample::half_pixel(7, 7, 20, 17)),
        (2, Upsample::half_pixel(4, 5, 9, 9)),
    ];
    let batches = [3u32, 3, 2];
    let inputs: Vec<Vec<(Vec<f32>, HostLabels)>> = layers
        .iter()
        .map(|&(units, up)| {
            let cfg = config(units, up, 3);
            batches
                .iter()
                .map(|&n| {
                    let data = rng.floats((n * units * up.h * up.w) as usize, -1.0, 1.0);
                    (data, random_labels(&mut rng, &cfg, n))
                })
                .collect()
        })
        .collect();
    // Per layer: rank select, top-k and counter, run unbatched and batched.
    let run = |batched: bool| {
        let mut state: Vec<_> = layers
            .iter()
            .map(|&(units, up)| {
                let values = 8 * u64::from(up.h * up.w);
                let most = 3 * u64::from(up.h * up.w);
                (
                    crate::RankSelect::new(&gpu, units, 0.1, values, most).unwrap(),
                    crate::TopK::new(&gpu, units, 2).unwrap(),
                    Counter::new(&gpu, config(units, up, 3)).unwrap(),
                    gpu.storage_init("thr", &vec![0.4f32; units as usize]),
                )
            })
            .collect();
        let before = gpu.submissions();
        let mut first = 0;
        for (b, &n) in batches.iter().enumerate() {
            if batched {
                gpu.begin_batch();
            }
            for (l, (select, top, counter, thr)) in state.iter_mut().enumerate() {
                let (data, labels) = &inputs[l][b];
                let buf = upload_padded(&gpu, data, 1);
                let (units, up) = layers[l];
                let view = ActivationView {
                    buffer: &buf,
                    offset_bytes: 4,
                    shape: [n, units, up.h, up.w],
                };
                select.observe(&gpu, &view).unwrap();
                top.observe(&gpu, &view, first).unwrap();
                counter.count(&gpu, &view, thr, labels).unwrap();
            }
            if batched {
                gpu.end_batch();
            }
            first += n;
        }
        let submitted = gpu.submissions() - before;
        let results: Vec<_> = (state.iter_mut())
            .map(|(select, top, counter, _)| {
                select.finish(&gpu).unwrap();
                let t = crate::testutil::bits(&select.read_thresholds(&gpu).unwrap());
                (t, top.read(&gpu).unwrap(), counter.read(&gpu).unwrap())
            })
            .collect();
        (submitted, results)
    };
    let (one_by_one, want) = run(false);
    let (batched, got) = run(true);
    assert_eq!(got, want);
    assert_eq!(
        one_by_one,
        3 * 2 * 3,
        "select, top-k and count per layer and batch"
    );
    assert_eq!(batched, 3, "one submission per batch");
}

#[test]
fn adversarial_values_and_ties_at_the_threshold_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    let up = Upsample::half_pixel(5, 5, 13, 11);
    let cfg = config(4, up, 2);
    let pool = [
        f32::NAN,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        -0.0,
        0.0,
        1.0,
        -1.0,
        1e-40,
    ];
    let mut data = rng.floats((2 * 4 * 25) as usize, -1.0, 1.0);
    // Unit 0: NaN, huge and infinite values mixed in; unit 1: all equal; units 2, 3: random.
    for (i, v) in data.iter_mut().enumerate() {
        let unit = (i / 25) % 4;
        if unit == 0 && rng.below(3) == 0 {
            *v = pool[rng.below(pool.len() as u32) as usize];
        } else if unit == 1 {
            *v = 0.75;
        }
    }
    // Thresholds equal to actual samples: strictness decides every tie. Unit 1's threshold is
    // its constant value, so nothing fires; unit 3's is its largest sample of image 0.
    let buf = upload_padded(gpu, &data, 0);
    let view = ActivationView {
        buffer: &buf,
        offset_bytes: 0,
        shape: [2, 4, 5, 5],
    };
    let samples = Counter::new(gpu, cfg.clone())
        .expect("counter")
        .upsample_samples(gpu, &view)
        .expect("samples");
    let n_pixels = 13 * 11;
    let unit_samples = |u: usize| samples[u * n_pixels..(u + 1) * n_pixels].to_vec();
    let median = |mut v: Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    let max = |v: Vec<f32>| v.into_iter().fold(f32::NEG_INFINITY, f32::max);
    let thresholds = [0.5, 0.75, median(unit_samples(2)), max(unit_samples(3))];
    let labels = random_labels(&mut rng, &cfg, 2);
    let got = check(&cfg, &[(data, labels)], &thresholds);
    assert_eq!(got.unit_pixels[1], 0);
    // No sample exceeds its unit's largest sample, and the constant unit 1 samples exactly 0.75.
    assert_eq!(
        unit_samples(3)
            .iter()
            .filter(|&&s| s > thresholds[3])
            .count(),
        0
    );
    assert!(unit_samples(1).iter().all(|&s| s == 0.75));
    assert!(got.unit_pixels[2] > 0);
}

#[test]
fn counts_with_device_thresholds_from_the_sketch() {
    // The thresholds buffer of a finished sketch feeds the counter without leaving the device.
    let gpu = gpu();
    let mut rng = Rng::new(8);
    let up = Upsample::half_pixel(7, 7, 15, 13);
    let cfg = config(3, up, 4);
    let data = rng.floats(4 * 3 * 49, -1.0, 1.0);
    let labels = random_labels(&mut rng, &cfg, 4);
    let buf = upload_padded(gpu, &data, 1);
    let view = ActivationView {
        buffer: &buf,
        offset_bytes: 4,
        shape: [4, 3, 7, 7],
    };
    let mut sketch = crate::QuantileSketch::new(gpu, 3, 0.05).expect("sketch");
    loop {
        sketch.observe(gpu, &view).expect("observe");
        if sketch.finish_round(gpu).expect("round") == crate::RoundResult::Done {
            break;
        }
    }
    let mut counter = Counter::new(gpu, cfg.clone()).expect("counter");
    counter
        .count(gpu, &view, sketch.thresholds_buffer(), &labels)
        .expect("count");
    let thresholds =
        cpu::quantile_thresholds(&cpu::values_per_unit(&[(&data, [4, 3, 7, 7])]), 0.05);
    let want = cpu::count(&cfg, &data, &thresholds, &labels).expect("cpu count");
    assert_eq!(counter.read(gpu).expect("read"), want);
    assert!(want.unit_pixels.iter().all(|&p| p > 0));
}

#[test]
fn several_planes_per_category_each_count() {
    // Two planes of the same category carrying the same label at the same pixel count twice.
    let cfg = CountConfig {
        n_units: 1,
        n_labels: 3,
        n_categories: 1,
        label_category: vec![0, 0, 0],
        upsample: Upsample::half_pixel(1, 1, 2, 2),
        max_images: 1,
    };
    let labels = HostLabels {
        n_images: 1,
        planes: vec![
            LabelPlane {
                image: 0,
                category: 0,
                labels: vec![2, 2, 0, 1],
            },
            LabelPlane {
                image: 0,
                category: 0,
                labels: vec![2, 0, 0, 0],
            },
        ],
        image_labels: vec![],
    };
    let got = check(&cfg, &[(vec![1.0], labels)], &[0.0]);
    assert_eq!(got.intersect, vec![0, 1, 3]);
    assert_eq!(got.label_pixels, vec![0, 1, 3]);
    assert_eq!(got.unit_pixels, vec![4]);
}

#[test]
fn bad_configs_and_batches_are_errors() {
    let gpu = gpu();
    let cfg = config(1, Upsample::half_pixel(2, 2, 3, 3), 1);
    let nan_axis = AxisMap {
        scale: f64::NAN,
        offset: 0.0,
    };
    // (what is wrong, the configuration)
    let bad = [
        (
            "too many categories",
            CountConfig {
                n_categories: 33,
                ..cfg.clone()
            },
        ),
        (
            "a category for too few labels",
            CountConfig {
                label_category: vec![0; 3],
                ..cfg.clone()
            },
        ),
        (
            "a category out of range",
            CountConfig {
                label_category: vec![5; 11],
                ..cfg.clone()
            },
        ),
        (
            "a NaN upsampling",
            CountConfig {
                upsample: Upsample::affine(2, 2, 3, 3, nan_axis, nan_axis),
                ..cfg.clone()
            },
        ),
    ];
    for (what, bad) in bad {
        assert!(Counter::new(gpu, bad).is_err(), "{what}");
    }
    // A batch whose units differ from the configuration.
    let mut counter = Counter::new(gpu, cfg.clone()).expect("counter");
    let buf = gpu.storage_init("a", &[0.0f32; 8]);
    let view = ActivationView {
        buffer: &buf,
        offset_bytes: 0,
        shape: [1, 2, 2, 2],
    };
    let labels = HostLabels {
        n_images: 1,
        ..Default::default()
    };
    assert!(matches!(
        counter.count(gpu, &view, &buf, &labels),
        Err(KernelError::Shape { .. })
    ));
}
