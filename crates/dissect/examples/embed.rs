//! Embedding the engine in a wgpu application.
//!
//! The app owns the wgpu instance, adapter, device and queue; it builds its
//! own small Burn network on them (not from the zoo), dissects one of its
//! layers over a Broden-format dataset, and then goes on using the device
//! for its own work.
//!
//! `cargo run -p netdissect-dissect --example embed [DATASET]`; without a
//! dataset it generates a small synthetic one. `tests/embed.rs` runs this
//! same code on lavapipe in CI.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::TensorData;
use burn::tensor::activation::relu;
use dissect::{
    Device, DissectError, Dissector, FieldMap, GeoOp, LayerTap, Network, Options, Outcome, Preset,
    Tensor, WgpuSetup, wgpu,
};

/// The app's own network: two strided 3x3 convolutions with fixed weights.
#[derive(Module, Debug)]
pub struct AppNet {
    conv1: Conv2d,
    conv2: Conv2d,
}

/// A 3x3, stride 2, padding 1 convolution with deterministic weights.
fn conv(device: &Device, c_in: usize, c_out: usize, salt: f32) -> Conv2d {
    let mut conv = Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device);
    let n = c_out * c_in * 9;
    let values: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.37 + salt).sin() * 0.5) / (c_in as f32).sqrt())
        .collect();
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(values, [c_out, c_in, 3, 3]),
        device,
    ));
    conv
}

impl AppNet {
    pub fn new(device: &Device) -> Self {
        Self {
            conv1: conv(device, 3, 8, 0.1),
            conv2: conv(device, 8, 16, 0.7),
        }
    }
}

/// The two layers the engine may dissect, with their receptive fields.
const LAYERS: [&str; 2] = ["conv1", "conv2"];
const CONV: GeoOp = GeoOp::conv(3, 2, 1);

impl Network for AppNet {
    fn name(&self) -> String {
        "app-net".into()
    }

    fn layer(&self, name: &str) -> Result<LayerTap, DissectError> {
        let index = LAYERS.iter().position(|l| *l == name).ok_or_else(|| {
            DissectError::Input(format!(
                "app-net has no layer `{name}`; valid: conv1, conv2"
            ))
        })?;
        Ok(LayerTap {
            name: name.into(),
            index,
            field: Some(FieldMap::of_path(&[CONV; 2][..=index])),
        })
    }

    fn forward_layers(
        &self,
        input: Tensor<4>,
        layers: &[LayerTap],
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        let a1 = relu(self.conv1.forward(input));
        let a2 = relu(self.conv2.forward(a1.clone()));
        Ok(layers
            .iter()
            .map(|l| if l.index == 0 { a1.clone() } else { a2.clone() })
            .collect())
    }
}

/// The app's own wgpu objects. Burn needs the adapter's features and
/// limits on the device (its kernels use 64-bit integers, among others).
pub fn app_wgpu() -> Result<WgpuSetup, String> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .map_err(|e| format!("no wgpu adapter: {e}"))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("my-app"),
        required_features: adapter.features(),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .map_err(|e| format!("no wgpu device: {e}"))?;
    let backend = adapter.get_info().backend;
    Ok(WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend,
    })
}

/// The app's own work on its device after the dissection: upload, copy and
/// read back a buffer. Returns what came back.
pub fn app_work(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    values: &[u32],
) -> Result<Vec<u32>, String> {
    let size = (values.len() * 4) as u64;
    let src = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app-src"),
        size,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let dst = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app-dst"),
        size,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    queue.write_buffer(&src, 0, &bytes);
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
    queue.submit([encoder.finish()]);
    let slice = dst.slice(..);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    let _ = device.poll(wgpu::PollType::wait_indefinitely());
    let out = slice
        .get_mapped_range()
        .map_err(|e| format!("reading the app's buffer: {e}"))?
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    dst.unmap();
    Ok(out)
}

/// The dissection options for the app's network (64 px input).
pub fn app_options() -> Options {
    let mut opts = Options::preset(Preset::Original, &broden::Preprocess::torchvision(64));
    opts.batch_size = 4;
    opts.top_k = 3;
    opts
}

/// What the example did: the dissection, and the app's own read-back.
#[derive(Debug)]
pub struct Embedded {
    pub outcome: Outcome,
    pub app_readback: Vec<u32>,
}

/// Dissects `conv2` of the app's network on the app's own device, then
/// goes on using the device.
pub fn run(dataset: &Path) -> Result<Embedded, Box<dyn std::error::Error>> {
    let setup = app_wgpu()?;
    let (device, queue) = (setup.device.clone(), setup.queue.clone());
    let dissector = Dissector::with_wgpu(setup)?;
    let net = AppNet::new(dissector.device());
    let data = broden::Dataset::open(dataset, &Default::default())?;
    let layers = vec!["conv2".to_string()];
    let outcome = dissector.run(&net, &layers, &data, &app_options(), &mut |_| {})?;
    let app_readback = app_work(&device, &queue, &[7, 11, 13])?;
    Ok(Embedded {
        outcome,
        app_readback,
    })
}

/// A small synthetic Broden dataset at the network's input size, in `dir`.
pub fn synthetic_dataset(dir: &Path, images: usize) -> Result<(), broden::BrodenError> {
    let synth = broden::synth::SynthOptions {
        images,
        seed: 3,
        size: 64,
        swatch_percent: 0,
    };
    broden::synth::generate(dir, &synth).map(|_| ())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp;
    let dataset = match std::env::args_os().nth(1) {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            tmp = tempfile::tempdir()?;
            let dir = tmp.path().join("broden");
            synthetic_dataset(&dir, 12)?;
            dir
        }
    };
    let done = run(&dataset)?;
    let layer = &done.outcome.dissection.layers[0];
    println!(
        "dissected {} ({} units) on {}: {} detectors",
        layer.name, layer.n_units, done.outcome.dissection.adapter, layer.summary.detectors
    );
    println!("the app's own buffer came back as {:?}", done.app_readback);
    Ok(())
}
