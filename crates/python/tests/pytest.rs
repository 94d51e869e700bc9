//! Runs the Python package's pytest suite (`tests/test_netdissect.py`)
//! against the extension this build just made, so `cargo xtask test` (and
//! any `cargo test --workspace`) checks the package too.
//!
//! The interpreter is `$PYO3_PYTHON`, else `python3`; it needs numpy and
//! pytest (Debian: `python3-numpy python3-pytest`, which `cargo xtask test`
//! installs where it may). The package is assembled under `target/python/`
//! from `python/netdissect/` and the built library; the suite drives the
//! `netdissect` CLI of the same build. pytest's JUnit report goes to
//! `target/python/junit.xml`, from which `cargo xtask test` adds the suite's
//! counts and skips to its totals.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>/`, where the test binary's `deps/` folder lives.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

#[test]
fn the_python_package_passes_its_pytest_suite() {
    let profile = profile_dir();
    // A test build leaves the cdylib in deps/ (cargo build copies it up).
    let library = [profile.join("deps"), profile.clone()]
        .iter()
        .flat_map(|dir| {
            [
                "lib_netdissect.so",
                "lib_netdissect.dylib",
                "_netdissect.dll",
            ]
            .map(|n| dir.join(n))
        })
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("the extension library is not in {}", profile.display()));
    let cli = profile.join(format!("netdissect{}", std::env::consts::EXE_SUFFIX));
    assert!(
        cli.is_file(),
        "{} is missing: run the whole workspace's tests",
        cli.display()
    );
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = profile.parent().expect("target/").join("python");
    let package = root.join("netdissect");
    std::fs::create_dir_all(&package).unwrap();
    for entry in std::fs::read_dir(manifest.join("python/netdissect")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, package.join(path.file_name().unwrap())).unwrap();
        }
    }
    let ext = if cfg!(windows) { "pyd" } else { "abi3.so" };
    std::fs::copy(&library, package.join(format!("_netdissect.{ext}"))).unwrap();

    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let junit = root.join("junit.xml");
    let _ = std::fs::remove_file(&junit);
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .arg(format!("--junitxml={}", junit.display()))
        .arg(manifest.join("tests"))
        .env("PYTHONPATH", &root)
        .env("NETDISSECT_BIN", &cli)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e} (install python3)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        !text.contains("No module named pytest") && !text.contains("No module named 'numpy'"),
        "{python} lacks pytest or numpy: install python3-pytest and python3-numpy\n{text}"
    );
    assert!(out.status.success(), "the pytest suite failed:\n{text}");
    assert!(
        junit.is_file(),
        "pytest wrote no report to {}",
        junit.display()
    );
}
