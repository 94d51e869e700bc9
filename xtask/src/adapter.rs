//! Makes sure a GPU adapter (Vulkan, Metal or DX12) exists before anything
//! that needs one runs. On Linux without one, Mesa's software Vulkan driver
//! (lavapipe, Debian package `mesa-vulkan-drivers`) is installed when we are
//! root with apt; otherwise we stop with the exact command to run.

use std::process::Command;

use anyhow::{Result, bail};

const PACKAGES: [&str; 2] = ["mesa-vulkan-drivers", "libvulkan1"];

/// Returns the names of the adapters found, after installing lavapipe if
/// that was needed and possible.
pub fn ensure() -> Result<Vec<String>> {
    let found = adapters();
    if !found.is_empty() {
        for name in &found {
            eprintln!("gpu adapter: {name}");
        }
        return Ok(found);
    }
    let install = format!("apt-get install -y {}", PACKAGES.join(" "));
    if !cfg!(target_os = "linux") {
        bail!(
            "no GPU adapter found (Vulkan, Metal or DX12): install your GPU's driver and try again"
        );
    }
    if !can_install() {
        bail!(
            "no GPU adapter found: install Mesa's software Vulkan driver (lavapipe) with\n    sudo apt-get update && sudo {install}\nand try again"
        );
    }
    eprintln!("no GPU adapter found: installing Mesa lavapipe ({install})");
    apt_install(&PACKAGES)?;
    let found = adapters();
    if found.is_empty() {
        bail!(
            "lavapipe was installed but wgpu still finds no adapter: check `vulkaninfo --summary`"
        );
    }
    for name in &found {
        eprintln!("gpu adapter: {name} (installed just now)");
    }
    Ok(found)
}

fn adapters() -> Vec<String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .map(|a| {
            let info = a.get_info();
            format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
        })
        .collect()
}

/// Whether packages can be installed here without asking: Linux, root, apt.
pub fn can_install() -> bool {
    cfg!(target_os = "linux") && is_root() && has_apt()
}

/// `apt-get update && apt-get install -y <packages>`.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let ok = |cmd: &mut Command| cmd.status().is_ok_and(|s| s.success());
    let updated = ok(Command::new("apt-get").args(["update", "-qq"]));
    let installed = ok(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages));
    if !(updated && installed) {
        bail!(
            "installing {} failed: run `apt-get update && apt-get install -y {}` and try again",
            packages.join(" "),
            packages.join(" ")
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn has_apt() -> bool {
    Command::new("apt-get")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
