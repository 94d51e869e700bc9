//! Crate-level tests: numerical parity with torchvision, tap selection, checkpoint loading
//! and its errors, and the wgpu buffer bridge.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::{Device, Tensor, TensorData};

use crate::gpu::{self, WgpuSetup, wgpu};
use crate::{
    Arch, ArchChoice, Fetch, Model, ModelError, ParamSource, StateDict, SyntheticWeights,
    detect_arch,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The test input formula of `fixtures/make_fixtures.py`: `1.5 · sin(i · 0.173 + 0.5)`.
fn formula_input(shape: [usize; 4], device: &Device) -> Tensor<4> {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|i| (((i as f64) * 0.173 + 0.5).sin() * 1.5) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// One process-wide wgpu runtime: Burn allows initialising the default device once.
fn wgpu_runtime() -> &'static (Device, WgpuSetup) {
    static RUNTIME: OnceLock<(Device, WgpuSetup)> = OnceLock::new();
    RUNTIME.get_or_init(|| match gpu::init_wgpu() {
        Ok(runtime) => runtime,
        Err(e) => panic!("no wgpu adapter (lavapipe must be installed): {e}"),
    })
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    match t.into_data().try_to_vec::<f32>() {
        Ok(v) => v,
        Err(e) => panic!("reading tensor back: {e:?}"),
    }
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Compares an activation with a fixture summary: shape, mean and RMS, and the strided
/// samples, each within a tolerance relative to the tensor's RMS (float32 summation order
/// differs between PyTorch and Burn).
fn check_summary(what: &str, shape: &[usize], got: &[f32], expected: &serde_json::Value) {
    let want_shape: Vec<usize> = expected["shape"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0) as usize).collect())
        .unwrap_or_default();
    assert_eq!(shape, want_shape.as_slice(), "{what}: shape");
    let n = got.len() as f64;
    let mean = got.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let rms = (got.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n).sqrt();
    let want_rms = num(&expected["rms"]);
    let tol = 1e-4 * want_rms.max(1e-3) + 1e-6;
    assert!(
        (mean - num(&expected["mean"])).abs() < tol,
        "{what}: mean {mean} vs {}",
        expected["mean"]
    );
    assert!(
        (rms - want_rms).abs() < tol,
        "{what}: rms {rms} vs {want_rms}"
    );
    let stride = expected["stride"].as_u64().unwrap_or(1) as usize;
    let samples = expected["samples"].as_array().cloned().unwrap_or_default();
    assert!(!samples.is_empty(), "{what}: fixture has no samples");
    for (k, want) in samples.iter().enumerate() {
        let got = f64::from(got[k * stride]);
        let tol = 2e-4 * want_rms.max(1e-3) + 1e-6;
        assert!(
            (got - num(want)).abs() < tol,
            "{what}: sample {k}: {got} vs {want}"
        );
    }
}

/// Runs every fixture case of `parity.json` whose name `select` accepts on `device`.
fn parity(device: &Device, select: impl Fn(&str) -> bool) {
    let text = std::fs::read_to_string(fixture("parity.json")).unwrap_or_default();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(cases.len(), 6, "parity.json cases");
    let mut ran = 0;
    for case in &cases {
        let name = case["case"].as_str().unwrap_or("");
        if !select(name) {
            continue;
        }
        ran += 1;
        let arch: Arch = name.parse().unwrap_or_else(|e| panic!("{e}"));
        let taps = case["taps"].as_object().cloned().unwrap_or_default();
        let num_classes = taps["logits"]["shape"][1].as_u64().unwrap_or(0) as usize;
        let model = Model::synthetic(arch, num_classes, device)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_transform_input(case["transform_input"].as_bool().unwrap_or(false));
        let input_shape: Vec<usize> = case["input"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0) as usize).collect())
            .unwrap_or_default();
        let shape = [
            input_shape[0],
            input_shape[1],
            input_shape[2],
            input_shape[3],
        ];
        let input = formula_input(shape, device);

        // Every tap, to check shapes and channels against the registry's geometry, then the
        // fixture's taps by value.
        let infos = arch.taps();
        let all: Vec<_> = infos
            .iter()
            .map(|t| model.tap(&t.name))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        let outs = model
            .forward_taps(input.clone(), &all)
            .unwrap_or_else(|e| panic!("{e}"));
        for (info, out) in infos.iter().zip(&outs) {
            let [n, c, h, w] = out.dims();
            let predicted = info.output_size([shape[2], shape[3]]);
            assert_eq!(
                (n, c, Some([h, w])),
                (shape[0], info.channels, predicted),
                "{name} {}",
                info.name
            );
        }
        for (tap, expected) in &taps {
            if tap == "logits" {
                let logits = model
                    .forward(input.clone())
                    .unwrap_or_else(|e| panic!("{e}"));
                let dims = logits.dims().to_vec();
                check_summary(&format!("{name} logits"), &dims, &values(logits), expected);
                continue;
            }
            let id = model.tap(tap).unwrap_or_else(|e| panic!("{e}"));
            let out = outs[id.index].clone();
            let dims = out.dims().to_vec();
            check_summary(&format!("{name} {tap}"), &dims, &values(out), expected);
        }
    }
    assert!(ran > 0, "no parity case selected");
}

#[test]
fn parity_with_torchvision_on_cpu() {
    parity(&gpu::cpu_device(), |_| true);
}

#[test]
fn parity_with_torchvision_on_wgpu() {
    // lavapipe is slow and autotunes each new shape: one architecture is enough here, the
    // CPU test covers the rest with the same code.
    parity(&wgpu_runtime().0, |name| name == "resnet18");
}

#[test]
fn forward_taps_stops_at_the_deepest_tap() {
    let device = gpu::cpu_device();
    let model = Model::synthetic(Arch::AlexNet, 4, &device).unwrap_or_else(|e| panic!("{e}"));
    // 20x20 reaches conv1 (4x4) but not pool5; asking only for conv1 must work because the
    // rest of the network is never run.
    let input = formula_input([1, 3, 20, 20], &device);
    let conv1 = model.tap("conv1").unwrap_or_else(|e| panic!("{e}"));
    let twice = model
        .forward_taps(input.clone(), &[conv1, conv1])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(twice.len(), 2);
    assert_eq!(twice[0].dims(), [1, 64, 4, 4]);
    assert!(
        values(twice[0].clone()).iter().all(|&v| v >= 0.0),
        "conv1 alias is post-ReLU"
    );
    let conv5 = model.tap("conv5").unwrap_or_else(|e| panic!("{e}"));
    let err = model
        .forward_taps(input.clone(), &[conv1, conv5])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("too small to reach layer features.11"),
        "{err}"
    );
    let err = model
        .forward(formula_input([1, 1, 67, 67], &device))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 3 channels"), "{err}");
    // A tap of another architecture is refused, not misread.
    let foreign = Arch::ResNet18
        .tap("layer4")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(model.forward_taps(input, &[foreign]).is_err());
}

#[test]
fn plain_pytorch_state_dict_reads() {
    let path = fixture("tiny_state.pth");
    let mut state = StateDict::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&str> = state.keys().collect();
    assert_eq!(
        keys,
        ["bn1.num_batches_tracked", "bn1.running_var", "conv1.weight"]
    );
    // float32 and float64 tensors both convert to the formula's f32 values.
    for (key, shape) in [
        ("conv1.weight", vec![4, 3, 1, 1]),
        ("bn1.running_var", vec![4]),
    ] {
        match state.fetch(key, &shape) {
            Ok(Fetch::Values(v)) => assert_eq!(v, SyntheticWeights::values(key, &shape), "{key}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    assert!(
        matches!(state.fetch("conv1.weight", &[4, 3, 3, 3]), Ok(Fetch::Shape(s)) if s == [4, 3, 1, 1])
    );
    assert!(matches!(
        state.fetch("fc.weight", &[2, 2]),
        Ok(Fetch::Missing)
    ));
    let err = state
        .fetch("bn1.num_batches_tracked", &[1])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`bn1.num_batches_tracked` has unsupported element type i64"),
        "{err}"
    );
}

#[test]
fn training_checkpoint_errors_list_every_problem() {
    let path = fixture("tiny_checkpoint.pth.tar");
    let device = gpu::cpu_device();
    let err = Model::load(&path, ArchChoice::Named(Arch::ResNet18), &device).unwrap_err();
    let message = err.to_string();
    match err {
        ModelError::Mismatch {
            missing,
            unexpected,
            shapes,
            ..
        } => {
            assert!(
                missing.contains(&"layer1.0.conv1.weight".to_string()),
                "{missing:?}"
            );
            assert!(missing.contains(&"fc.bias".to_string()));
            // The stem's BatchNorm was found under `state_dict.module.bn1.*`.
            assert!(
                !missing.iter().any(|k| k.starts_with("bn1.")),
                "{missing:?}"
            );
            assert_eq!(unexpected, ["extra.weight"]);
            assert_eq!(shapes.len(), 1);
            assert_eq!(shapes[0].key, "conv1.weight");
            assert_eq!(
                (shapes[0].expected.clone(), shapes[0].found.clone()),
                (vec![64, 3, 7, 7], vec![64, 3, 3, 3])
            );
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    assert!(
        message.contains("tiny_checkpoint.pth.tar does not fit resnet18"),
        "{message}"
    );
    assert!(
        message.contains("`conv1.weight` expected [64, 3, 7, 7] found [64, 3, 3, 3]"),
        "{message}"
    );
    let err = Model::load(&path, ArchChoice::Auto, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot infer the architecture"), "{err}");
    assert!(err.contains("resnet18") && err.contains("alexnet"), "{err}");
}

#[test]
fn missing_and_non_checkpoint_files_are_errors() {
    let device = gpu::cpu_device();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let absent = dir.path().join("nope.pth");
    let err = Model::load(&absent, ArchChoice::Auto, &device)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("checkpoint {} does not exist", absent.display())
    );
    for name in ["junk.pth", "junk.safetensors"] {
        let junk = dir.path().join(name);
        std::fs::write(&junk, b"this is not a checkpoint").unwrap_or_else(|e| panic!("{e}"));
        let err = Model::load(&junk, ArchChoice::Auto, &device).unwrap_err();
        assert!(
            matches!(err, ModelError::NotACheckpoint { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

/// Records the keys and shapes an architecture asks for, answering with the formula.
#[derive(Default)]
struct Recorder(Vec<(String, Vec<usize>)>);

impl ParamSource for Recorder {
    fn fetch(&mut self, key: &str, shape: &[usize]) -> Result<Fetch, ModelError> {
        self.0.push((key.to_string(), shape.to_vec()));
        Ok(Fetch::Values(SyntheticWeights::values(key, shape)))
    }
}

fn wanted_keys(arch: Arch, num_classes: usize) -> Vec<(String, Vec<usize>)> {
    let mut recorder = Recorder::default();
    let device = gpu::cpu_device();
    Model::from_source(
        arch,
        num_classes,
        &mut recorder,
        Path::new("<recorder>"),
        &device,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    recorder.0
}

/// Writes `tensors` (key, dtype, shape, little-endian bytes) as a safetensors file.
fn write_safetensors(path: &Path, tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, dtype, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .unwrap_or_else(|e| panic!("{e}"));
            (k.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{e}"));
}

/// The formula's weights for `arch` as f32 safetensors entries under `prefix`.
fn synthetic_entries(
    arch: Arch,
    num_classes: usize,
    prefix: &str,
) -> Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    wanted_keys(arch, num_classes)
        .iter()
        .map(|(key, shape)| {
            let bytes = SyntheticWeights::values(key, shape)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (
                format!("{prefix}{key}"),
                safetensors::Dtype::F32,
                shape.clone(),
                bytes,
            )
        })
        .collect()
}

#[test]
fn safetensors_round_trip_with_auto_detection() {
    let device = gpu::cpu_device();
    // torchvision names, DataParallel prefix, BatchNorm counters as int64.
    let mut tensors = synthetic_entries(Arch::ResNet18, 10, "module.");
    tensors.push((
        "module.bn1.num_batches_tracked".into(),
        safetensors::Dtype::I64,
        vec![],
        vec![0; 8],
    ));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("resnet18.safetensors");
    write_safetensors(&path, &tensors);

    let loaded = Model::load(&path, ArchChoice::Auto, &device).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((loaded.arch(), loaded.num_classes()), (Arch::ResNet18, 10));
    let reference = Model::synthetic(Arch::ResNet18, 10, &device).unwrap_or_else(|e| panic!("{e}"));
    let input = formula_input([1, 3, 32, 32], &device);
    let a = values(
        loaded
            .forward(input.clone())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let b = values(reference.forward(input).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(a, b);

    // The same file under the wrong architecture: every resnet34 extra block is missing.
    let err = Model::load(&path, ArchChoice::Named(Arch::ResNet34), &device).unwrap_err();
    match err {
        ModelError::Mismatch {
            missing,
            unexpected,
            ..
        } => {
            assert!(
                missing.contains(&"layer3.5.conv2.weight".to_string()),
                "{missing:?}"
            );
            assert!(unexpected.is_empty(), "{unexpected:?}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn googlenet_checkpoint_with_aux_heads_loads() {
    let device = gpu::cpu_device();
    let mut tensors = synthetic_entries(Arch::GoogLeNet, 3, "");
    // Training-time auxiliary classifiers: present in torchvision checkpoints, unused here.
    tensors.push((
        "aux1.fc2.weight".into(),
        safetensors::Dtype::F32,
        vec![2],
        vec![0; 8],
    ));
    tensors.push((
        "aux2.conv.conv.weight".into(),
        safetensors::Dtype::F32,
        vec![1],
        vec![0; 4],
    ));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("googlenet.safetensors");
    write_safetensors(&path, &tensors);
    let model = Model::load(&path, ArchChoice::Auto, &device).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((model.arch(), model.num_classes()), (Arch::GoogLeNet, 3));
    // The same file is not a ResNet: the error names both sides of the mismatch.
    let err = Model::load(&path, ArchChoice::Named(Arch::ResNet18), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing keys (conv1.weight, bn1.weight"),
        "{err}"
    );
    assert!(
        err.contains("unexpected keys (aux1.fc2.weight, aux2.conv.conv.weight"),
        "{err}"
    );
}

#[test]
fn auto_detection_of_every_architecture() {
    let path = Path::new("listing.pth");
    for arch in Arch::ALL {
        // Shapes only: detection never reads values.
        let listing = wanted_keys(arch, 365);
        let state = StateDict::from_shapes(path, listing);
        assert_eq!(detect_arch(&state).ok(), Some(arch), "{arch}");
    }
    // A ResNet with a block count the zoo lacks names the candidates.
    let mut listing = wanted_keys(Arch::ResNet18, 2);
    listing.push(("layer4.2.conv1.weight".into(), vec![512, 512, 3, 3]));
    let err = detect_arch(&StateDict::from_shapes(path, listing))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 2, 2, 3] basic blocks"), "{err}");
    assert!(
        err.contains("candidates: resnet18, resnet34, resnet50, resnet101, resnet152"),
        "{err}"
    );
}

/// Copies a buffer range back to the host through a staging buffer.
fn read_range(setup: &WgpuSetup, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Vec<f32> {
    let staging = setup.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("test staging"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = setup
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
    setup.queue.submit([encoder.finish()]);
    let slice = staging.slice(..);
    slice.map_async(wgpu::MapMode::Read, |r| {
        if let Err(e) = r {
            panic!("map: {e}");
        }
    });
    setup
        .device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap_or_else(|e| panic!("{e}"));
    let data = slice.get_mapped_range().unwrap_or_else(|e| panic!("{e:?}"));
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn tensor_buffer_exposes_device_memory_in_place() {
    let (device, setup) = wgpu_runtime();
    let info = gpu::adapter_info(setup);
    assert!(!info.name.is_empty());
    let base: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let x = Tensor::<3>::from_data(TensorData::new(base.clone(), [2, 3, 4]), device);
    // Pending fused work and a non-contiguous view: the guard must flush and compact both.
    let y = (x * 2.0 + 1.0).swap_dims(1, 2);
    let expected = values(y.clone());
    let guard = gpu::tensor_buffer(y).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(guard.shape(), [2, 4, 3]);
    assert!(guard.size() >= 24 * 4, "{guard:?}");
    let got = read_range(setup, guard.buffer(), guard.offset(), 24 * 4);
    assert_eq!(got, expected);
    assert_eq!(got[1], 2.0 * 4.0 + 1.0, "element [0,0,1] is x[0,1,0]");

    let cpu = Tensor::<2>::zeros([2, 2], &gpu::cpu_device());
    let err = gpu::tensor_buffer(cpu).unwrap_err().to_string();
    assert!(err.starts_with("tensor is not on a wgpu device"), "{err}");
}

#[test]
fn burn_runs_on_an_embedding_apps_device() {
    // An app's own instance/adapter/device/queue, requested with the adapter's features and
    // limits as Burn needs.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster_block(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    let (app_device, queue) = pollster_block(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("embedding app"),
        required_features: adapter.features(),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let setup = WgpuSetup {
        instance,
        adapter,
        device: app_device,
        queue,
        backend: wgpu::Backend::Vulkan,
    };
    let device = gpu::init_wgpu_shared(setup.clone()).unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [4]), &device);
    let guard = gpu::tensor_buffer(x.exp()).unwrap_or_else(|e| panic!("{e}"));
    let got = read_range(&setup, guard.buffer(), guard.offset(), 16);
    let want: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|v| v.exp()).collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4 * w, "{got:?} vs {want:?}");
    }
}

/// Drives a future to completion on this thread (wgpu's requests resolve immediately on
/// native backends once polled).
fn pollster_block<F: std::future::Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

#[test]
fn state_dict_keys_cover_every_parameter() {
    // Every key the builder asks for is unique; the count matches torchvision's state_dict
    // (parameters + BatchNorm buffers, without num_batches_tracked).
    let cases = [
        (Arch::ResNet18, 102),
        (Arch::ResNet50, 267),
        (Arch::AlexNet, 16),
        (Arch::Vgg16Bn, 84),
        (Arch::GoogLeNet, 287),
        (Arch::DenseNet161, 806),
    ];
    for (arch, count) in cases {
        let keys = wanted_keys(arch, 1000);
        let unique: HashMap<_, _> = keys.iter().cloned().collect();
        assert_eq!((keys.len(), unique.len()), (count, count), "{arch}");
    }
}

/// Synthetic weights with one tensor's values replaced.
struct Poisoned {
    key: &'static str,
    value: f32,
}

impl ParamSource for Poisoned {
    fn fetch(&mut self, key: &str, shape: &[usize]) -> Result<Fetch, ModelError> {
        let mut v = SyntheticWeights::values(key, shape);
        if key == self.key {
            v[1] = self.value;
        }
        Ok(Fetch::Values(v))
    }
}

#[test]
fn nan_infinite_weights_and_negative_variances_are_refused_by_name() {
    let device = gpu::cpu_device();
    for (key, value, want) in [
        ("conv1.weight", f32::NAN, "NaN or infinite"),
        ("fc.bias", f32::INFINITY, "NaN or infinite"),
        ("bn1.running_var", -0.5, "negative variances"),
    ] {
        let mut source = Poisoned { key, value };
        let origin = Path::new("poisoned.pth");
        let err = Model::from_source(Arch::TinyResNet, 10, &mut source, origin, &device)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(key) && err.contains(want) && err.contains("poisoned.pth"),
            "{key}: {err}"
        );
    }
}
