//! `netdissect models` and `netdissect devices`: what this build can
//! dissect, and the GPU adapters this machine has.

use dissect::planted::PlantedColors;
use models::Arch;
use models::gpu::wgpu;

/// Every network by name, with its input size and its layers; then what
/// the registry can fetch.
pub fn models(sources: &app::Sources) -> app::Result<()> {
    println!(
        "{:<12} input 224  {} (demo network with hand-planted colour detectors)",
        app::PLANTED,
        PlantedColors::layer_names().join(", ")
    );
    for arch in Arch::ALL {
        let taps: Vec<String> = arch
            .taps()
            .iter()
            .map(|t| {
                if t.aliases.is_empty() {
                    t.name.clone()
                } else {
                    format!("{} ({})", t.name, t.aliases.join(", "))
                }
            })
            .collect();
        println!(
            "{:<10} input {:>3}  {}",
            arch.name(),
            arch.input_size(),
            taps.join(", ")
        );
    }
    let registry = sources.registry()?;
    for (kind, heading) in [
        (
            fetch::ItemKind::Weights,
            "published checkpoints (`--weights NAME`, fetched into $TORCH_HOME/hub/checkpoints):",
        ),
        (
            fetch::ItemKind::Broden,
            "datasets (`netdissect fetch NAME`):",
        ),
    ] {
        println!("\n{heading}");
        for (name, item, from) in registry.items().filter(|(_, i, _)| i.kind == kind) {
            let digest = item.checked_by();
            let from = if from.starts_with('(') {
                String::new()
            } else {
                format!(", from {from}")
            };
            println!(
                "  {name:<22} {:<12} {} ({digest}{from})",
                item.arch.as_deref().unwrap_or(""),
                item.about.as_deref().unwrap_or(&item.file)
            );
        }
    }
    Ok(())
}

/// Every adapter, in `--device` order.
pub fn devices() {
    let adapters = dissect::engine::adapter_summaries();
    if adapters.is_empty() {
        println!(
            "no GPU adapter: on Linux install a Vulkan driver (a GPU's, or Mesa's software one: `apt-get install mesa-vulkan-drivers`); in a container with an NVIDIA GPU, NVIDIA_DRIVER_CAPABILITIES must include `graphics`"
        );
        return;
    }
    println!(
        "{:<3} {:<12} {:<8} {:>10}  name (driver)",
        "n", "type", "backend", "max buffer"
    );
    for (i, a) in adapters.iter().enumerate() {
        let kind = match a.info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete",
            wgpu::DeviceType::IntegratedGpu => "integrated",
            wgpu::DeviceType::VirtualGpu => "virtual",
            wgpu::DeviceType::Cpu => "software",
            wgpu::DeviceType::Other => "other",
        };
        println!(
            "{i:<3} {kind:<12} {:<8} {:>6.1} GiB  {} ({} {})",
            format!("{:?}", a.info.backend).to_lowercase(),
            a.max_buffer_bytes as f64 / f64::from(1u32 << 30),
            a.info.name,
            a.info.driver,
            a.info.driver_info
        );
    }
    println!("wgpu reports no memory sizes; `dissect --device N` runs on adapter N");
}
