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
        eprintln!("gpu: {}", describe(&found));
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
            "lavapipe was installed but no Vulkan driver is visible: check `vulkaninfo --summary`"
        );
    }
    eprintln!("gpu: {} (installed just now)", describe(&found));
    Ok(found)
}

/// The Vulkan drivers the loader would find (Linux), without opening a
/// device: xtask stays free of wgpu so that CI builds it once, quickly.
/// Elsewhere the system's Metal or DX12 driver is assumed.
fn adapters() -> Vec<String> {
    if !cfg!(target_os = "linux") {
        return vec!["the system's Metal or DX12 driver".into()];
    }
    let loader = Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libvulkan.so.1"));
    if !loader {
        return Vec::new();
    }
    if let Ok(files) =
        std::env::var("VK_DRIVER_FILES").or_else(|_| std::env::var("VK_ICD_FILENAMES"))
    {
        return files
            .split(':')
            .map(|f| driver_name(std::path::Path::new(f)))
            .collect();
    }
    let mut found: Vec<String> = [
        "/usr/share/vulkan/icd.d",
        "/etc/vulkan/icd.d",
        "/usr/local/share/vulkan/icd.d",
    ]
    .iter()
    .filter_map(|dir| std::fs::read_dir(dir).ok())
    .flatten()
    .flatten()
    .map(|e| e.path())
    .filter(|p| p.extension().is_some_and(|x| x == "json"))
    .map(|p| driver_name(&p))
    .collect();
    found.sort();
    found
}

/// One line for the drivers found.
fn describe(found: &[String]) -> String {
    if cfg!(target_os = "linux") {
        format!("Vulkan drivers {}", found.join(", "))
    } else {
        found.join(", ")
    }
}

/// A Vulkan driver manifest's short name: `lvp_icd.x86_64.json` is `lvp`.
fn driver_name(manifest: &std::path::Path) -> String {
    let file = manifest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.split('.')
        .next()
        .unwrap_or(&file)
        .trim_end_matches("_icd")
        .to_string()
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
