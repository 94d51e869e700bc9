//! Keeps the Vulkan adapter probe quiet where `XDG_RUNTIME_DIR` is not set
//! (a server, a container, a CI runner).
//!
//! wgpu enables `VK_KHR_wayland_surface` whenever the driver offers it, and
//! Mesa's device-select layer then asks libwayland for a display on every
//! adapter enumeration; without `XDG_RUNTIME_DIR` libwayland prints
//! `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` to
//! stderr, twice per probe, on runs that succeed. Neither wgpu nor the
//! Vulkan loader can skip that probe short of an environment variable, and
//! setting one in a running process needs `unsafe` (the workspace denies
//! it), so the program replaces itself with a copy that has the variable.

/// Re-executes this program (same process, arguments and `argv[0]`) with
/// `XDG_RUNTIME_DIR` set to the temporary folder when it is unset or not
/// an absolute path, as the XDG spec asks of a program without one. Does
/// nothing where it is valid, or where the re-execution fails.
#[cfg(all(unix, not(target_os = "macos"), not(target_os = "android")))]
pub fn ensure() {
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};

    const VAR: &str = "XDG_RUNTIME_DIR";
    if std::env::var_os(VAR).is_some_and(|d| Path::new(&d).is_absolute()) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // The copy must find the variable valid, or it would re-execute again.
    let dir = Some(std::env::temp_dir())
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` returns only when it failed: the run then goes on as it is.
    let _ = command.args(args).env(VAR, dir).exec();
}

/// Elsewhere there is no Wayland probe to quiet.
#[cfg(not(all(unix, not(target_os = "macos"), not(target_os = "android"))))]
pub fn ensure() {}
