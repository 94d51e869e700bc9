//! `bench-conv`: the CPU backend's convolutions, shape by shape, and whole forward passes.
//!
//! Per convolution shape of ResNet-18 at 224 pixels (the stem, 3x3 at stride 1 on 56, 28,
//! 14 and 7 pixel maps, 3x3 at stride 2, 1x1 projections): Burn's `conv2d` and ours
//! (`models::folded::FoldedConv`, which runs Winograd or the 1x1 gemm, else Burn's), in the
//! same process one after the other, best of `--reps`; with `--torch PYTHON` also
//! `torch.nn.functional.conv2d` in a child Python limited to the same number of threads.
//! `--forward` adds whole forward passes (ResNet-18 to layer4, ResNet-50 to layer4, VGG-16
//! to conv5_3, seeded weights): the module tree with Burn's convolutions, our inference form,
//! and torchvision's with `--torch`. Writes a markdown table.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use models::folded::FoldedConv;
use models::{Arch, Model};

#[derive(Debug, clap::Args)]
pub struct ConvArgs {
    /// Images per call.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Timed calls per shape (the best is kept), after one untimed call.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// A Python with torch and torchvision (e.g. /tmp/peers/venv/bin/python) to time
    /// PyTorch on the same shapes and number of threads.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Also time whole forward passes.
    #[arg(long)]
    forward: bool,
    /// Time the forward passes on Burn's wgpu device instead (folding only: our CPU
    /// kernels do not run there); the per-shape table stays on the CPU.
    #[arg(long)]
    wgpu: bool,
    #[arg(long, default_value = "target/bench/conv.md")]
    out: PathBuf,
}

/// `(name, in, out, side, kernel, stride, padding)`.
type Shape = (&'static str, usize, usize, usize, usize, usize, usize);

const SHAPES: [Shape; 10] = [
    ("stem 7x7/2", 3, 64, 224, 7, 2, 3),
    ("layer1 3x3 56", 64, 64, 56, 3, 1, 1),
    ("layer2 3x3/2 56", 64, 128, 56, 3, 2, 1),
    ("layer2 3x3 28", 128, 128, 28, 3, 1, 1),
    ("layer2 1x1/2 56", 64, 128, 56, 1, 2, 0),
    ("layer3 3x3 14", 256, 256, 14, 3, 1, 1),
    ("layer3 3x3/2 28", 128, 256, 28, 3, 2, 1),
    ("layer4 3x3 7", 512, 512, 7, 3, 1, 1),
    ("layer4 1x1/2 14", 256, 512, 14, 1, 2, 0),
    ("resnet50 1x1 56", 64, 256, 56, 1, 1, 0),
];

fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn random(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(conv::testing::values(seed, n), shape),
        device,
    )
}

/// Times every shape (and with `--forward` every network), writes the
/// markdown tables to `--out` and prints them.
pub fn bench_conv(args: ConvArgs) -> Result<()> {
    let device = Device::flex();
    let threads = rayon::current_num_threads();
    let rows = time_shapes(args.batch, args.reps, &device)?;
    let torch = match &args.torch {
        Some(python) => Some(torch_times(
            python,
            threads,
            args.batch,
            args.reps,
            args.forward,
        )?),
        None => None,
    };
    let mut md = shape_table(&args, threads, &rows, torch.as_ref());
    if args.forward {
        let torch = torch.filter(|_| !args.wgpu);
        md += &forward_table(&args, &device, torch.as_ref())?;
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &md).with_context(|| format!("writing {}", args.out.display()))?;
    print!("{md}");
    Ok(())
}

/// One shape's best seconds per call, Burn's and ours.
#[derive(Debug, Clone, Copy)]
struct ShapeTime {
    name: &'static str,
    c_in: usize,
    c_out: usize,
    burn: f64,
    own: f64,
    /// Floating-point operations of one call.
    flops: f64,
}

/// Times Burn's `conv2d` and our folded convolution on every shape of
/// [`SHAPES`], with `b` images per call, on the same random weights.
fn time_shapes(b: usize, reps: usize, device: &Device) -> Result<Vec<ShapeTime>> {
    let mut rows = Vec::new();
    for &(name, c_in, c_out, side, k, s, p) in &SHAPES {
        let x = random([b, c_in, side, side], 1, device);
        let mut conv = Conv2dConfig::new([c_in, c_out], [k, k])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(false)
            .init(device);
        conv.weight = burn::module::Param::from_tensor(random([c_out, c_in, k, k], 2, device));
        let ours = FoldedConv::new(&conv, None).context("explicit padding folds")?;
        let options = ConvOptions::new([s, s], [p, p], [1, 1], 1);
        let burn = best_of(reps, || {
            let y = conv2d(x.clone(), conv.weight.val(), None, options.clone());
            let _ = y.into_data();
        });
        let own = best_of(reps, || {
            let _ = ours.forward(x.clone(), None, false).into_data();
        });
        let out_side = (side + 2 * p - k) / s + 1;
        let flops = 2.0 * (b * c_out * out_side * out_side * c_in * k * k) as f64;
        rows.push(ShapeTime {
            name,
            c_in,
            c_out,
            burn,
            own,
            flops,
        });
    }
    Ok(rows)
}

/// The per-shape table, with PyTorch's columns when it was timed.
fn shape_table(
    args: &ConvArgs,
    threads: usize,
    rows: &[ShapeTime],
    torch: Option<&TorchTimes>,
) -> String {
    let b = args.batch;
    let mut md = format!(
        "# CPU convolutions, batch {b}, {threads} threads (best of {})\n\n\
         | shape | in→out | Burn ms | ours ms | ours GFLOP/s | Burn / ours |{}\n|---|---|---|---|---|---|{}\n",
        args.reps,
        if torch.is_some() {
            " torch ms | torch / ours |"
        } else {
            ""
        },
        if torch.is_some() { "---|---|" } else { "" },
    );
    for (i, row) in rows.iter().enumerate() {
        let ShapeTime {
            name,
            c_in,
            c_out,
            burn,
            own,
            flops,
        } = *row;
        md += &format!(
            "| {name} | {c_in}→{c_out} | {:.2} | {:.2} | {:.0} | {:.2}x |",
            burn * 1e3,
            own * 1e3,
            flops / own / 1e9,
            burn / own
        );
        if let Some(t) = torch {
            md += &format!(" {:.2} | {:.2}x |", t.convs[i] * 1e3, t.convs[i] / own);
        }
        md += "\n";
    }
    md
}

/// Times whole forward passes (on wgpu with `--wgpu`, ResNet-18 only) and
/// returns their table, with PyTorch's columns when it was timed.
fn forward_table(args: &ConvArgs, cpu: &Device, torch: Option<&TorchTimes>) -> Result<String> {
    let b = args.batch;
    let (device, place) = if args.wgpu {
        (models::gpu::default_wgpu_device(), "wgpu")
    } else {
        (cpu.clone(), "CPU")
    };
    let mut md = format!(
        "\n# Forward passes on the {place} device, batch {b}, images/s\n\n| network | module tree (Burn) | ours | ours / Burn |{}\n|---|---|---|---|{}\n",
        if torch.is_some() {
            " torch | ours / torch |"
        } else {
            ""
        },
        if torch.is_some() { "---|---|" } else { "" },
    );
    // lavapipe takes most of a second per ResNet-18 image: ResNet-18 alone there.
    let nets = if args.wgpu {
        &FORWARDS[..1]
    } else {
        &FORWARDS[..]
    };
    for (i, (arch, tap)) in nets.iter().enumerate() {
        let (burn, own) = forward_times(*arch, tap, b, args.reps, &device)?;
        let rate = |t: f64| b as f64 / t;
        md += &format!(
            "| {arch} to {tap} | {:.1} | {:.1} | {:.2}x |",
            rate(burn),
            rate(own),
            burn / own
        );
        if let Some(t) = torch {
            md += &format!(
                " {:.1} | {:.2}x |",
                rate(t.forwards[i]),
                t.forwards[i] / own
            );
        }
        md += "\n";
    }
    Ok(md)
}

const FORWARDS: [(Arch, &str); 3] = [
    (Arch::ResNet18, "layer4"),
    (Arch::ResNet50, "layer4"),
    (Arch::Vgg16, "conv5_3"),
];

/// Seconds per batch: the module tree, then our inference form, on the same weights.
fn forward_times(
    arch: Arch,
    tap: &str,
    b: usize,
    reps: usize,
    device: &Device,
) -> Result<(f64, f64)> {
    let model = Model::synthetic(arch, 1000, device)?;
    let id = model.tap(tap)?;
    let side = arch.input_size() as usize;
    let x = random([b, 3, side, side], 3, device);
    let own = best_of(reps, || {
        let _ = model
            .forward_taps(x.clone(), &[id])
            .map(|t| t[0].clone().into_data());
    });
    let tree = Model::from_net_unfolded(arch, 1000, model.into_net());
    let burn = best_of(reps, || {
        let _ = tree
            .forward_taps(x.clone(), &[id])
            .map(|t| t[0].clone().into_data());
    });
    Ok((burn, own))
}

struct TorchTimes {
    convs: Vec<f64>,
    forwards: Vec<f64>,
}

/// Times PyTorch in a child Python with `threads` threads: the same shapes, then (with
/// `forward`) torchvision's networks cut at the same layers. Prints one number per line.
fn torch_times(
    python: &PathBuf,
    threads: usize,
    b: usize,
    reps: usize,
    forward: bool,
) -> Result<TorchTimes> {
    let shapes: Vec<String> = SHAPES
        .iter()
        .map(|(_, ci, co, side, k, s, p)| format!("({ci},{co},{side},{k},{s},{p})"))
        .collect();
    let script = format!(
        r#"
import time, torch, torchvision
torch.set_num_threads({threads})
torch.manual_seed(0)
def best(f):
    f(); t = float('inf')
    for _ in range({reps}):
        s = time.perf_counter(); f(); t = min(t, time.perf_counter() - s)
    return t
with torch.no_grad():
    for ci, co, side, k, s, p in [{shapes}]:
        x = torch.randn({b}, ci, side, side); w = torch.randn(co, ci, k, k)
        print(best(lambda: torch.nn.functional.conv2d(x, w, stride=s, padding=p)))
    if {forward}:
        m = torchvision.models
        for net, side in [(torch.nn.Sequential(*list(m.resnet18().children())[:-2]), 224),
                          (torch.nn.Sequential(*list(m.resnet50().children())[:-2]), 224),
                          (m.vgg16().features[:30], 224)]:
            net.eval(); x = torch.randn({b}, 3, side, side)
            print(best(lambda: net(x)))
"#,
        shapes = shapes.join(","),
        forward = if forward { "True" } else { "False" },
    );
    let out = Command::new(python)
        .args(["-c", &script])
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .context("reading torch's timings")?;
    let (convs, forwards) = times.split_at(SHAPES.len().min(times.len()));
    Ok(TorchTimes {
        convs: convs.to_vec(),
        forwards: forwards.to_vec(),
    })
}
