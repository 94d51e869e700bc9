//! The embedding example, run as it is: an app's own wgpu device and Burn
//! network, dissected in place, the device still the app's afterwards.
//! On lavapipe in CI (`cargo xtask test` installs it where missing).
//!
//! Fixture: a synthetic Broden dataset from `broden::synth::generate`
//! (seeded), in a temp folder.

#[path = "../examples/embed.rs"]
mod embed;

use dissect::Dissector;

#[test]
fn an_app_dissects_its_own_network_on_its_own_device_and_keeps_using_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broden");
    embed::synthetic_dataset(&dir, 10).unwrap();

    let done = embed::run(&dir).expect("a wgpu adapter: lavapipe (mesa-vulkan-drivers) in CI");
    assert_eq!(
        done.app_readback,
        vec![7, 11, 13],
        "the app's device still works"
    );
    let got = &done.outcome.dissection;
    assert_ne!(
        got.adapter.split(' ').next(),
        Some("cpu"),
        "{}",
        got.adapter
    );
    let layer = &got.layers[0];
    assert_eq!((layer.name.as_str(), layer.n_units), ("conv2", 16));
    assert_eq!(
        layer.feature_size,
        [16, 16],
        "64 px through two stride-2 convs"
    );
    assert_eq!(layer.field.map(|f| f.step), Some([4, 4]));
    assert!(done.outcome.counts[0].unit_pixels.iter().sum::<u64>() > 0);

    // The same network on the CPU backend dissects to the same thresholds,
    // up to the forward passes' float rounding on the two devices.
    let cpu = Dissector::cpu();
    let net = embed::AppNet::new(cpu.device());
    let data = broden::Dataset::open(&dir, &Default::default()).unwrap();
    let want = cpu
        .run(
            &net,
            &["conv2".into()],
            &data,
            &embed::app_options(),
            &mut |_| {},
        )
        .unwrap();
    let want = &want.dissection.layers[0];
    for (unit, (a, b)) in layer.thresholds.iter().zip(&want.thresholds).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "unit {unit}: device {a}, cpu {b}"
        );
    }
}
