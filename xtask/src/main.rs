//! Project automation, run as `cargo xtask <command>` (aliased in
//! `.cargo/config.toml`). Every command that needs a GPU adapter first makes
//! sure one exists, installing Mesa lavapipe where the machine allows it.

mod adapter;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "NetDissect-rs project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Dissect the embedded default (model and probe set in `assets/`), or
    /// pass extra arguments through to `netdissect dissect`.
    Dissect {
        /// Output folder.
        #[arg(long, default_value = "out/default")]
        out: PathBuf,
        /// Extra arguments for `netdissect dissect`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every check CI runs: formatting, clippy with `-D warnings`, all tests.
    Test,
    /// Write a deterministic synthetic Broden dataset: arguments go to
    /// `netdissect synth` (`--out`, `--images`, `--seed`, `--size`,
    /// `--swatch-percent`).
    GenBroden {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Make sure a GPU adapter exists (installing lavapipe where possible)
    /// and print the adapters found.
    Adapter,
    /// Benchmarks (release build): throughput, stage shares, memory, CPU
    /// versus device baselines; writes target/bench/bench.md and bench.json.
    /// Arguments go to `netdissect-dev bench` (try `--quick`, `--help`).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The CPU backend's convolutions per ResNet-18 shape, Burn's against
    /// ours (release build); writes target/bench/conv.md. Arguments go to
    /// `netdissect-dev bench-conv` (`--batch`, `--reps`, `--forward`,
    /// `--torch /tmp/peers/venv/bin/python` to add PyTorch).
    BenchConv {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The formula search's cost beyond the dissection and its gains
    /// (release build, CPU backend): the default model, and ResNet-18
    /// layer4 over 1500 generated images; writes target/bench/formulas.md.
    /// Arguments go to `netdissect-dev bench-formulas` (`--images`,
    /// `--length`, `--beam`, `--no-default`).
    BenchFormulas {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// What `netdissect ablate` costs beside one forward pass (release
    /// build, CPU backend): ResNet-18 layer4 in closed form over 1500
    /// generated images, layer3 by re-run over 150; and the default model's
    /// classes with their top units removed. Writes target/bench/ablation.md.
    /// Arguments go to `netdissect-dev bench-ablate` (`--images`,
    /// `--rerun-images`).
    BenchAblate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The one prepared check for a machine with a GPU (release build,
    /// reused when there): adapters, GPU = CPU parity under every option,
    /// ResNet-18 end to end at two batch sizes, kernels against the CPU
    /// reference; writes target/bench/gpu.md. On lavapipe it runs at small
    /// sizes and says so. Arguments go to `netdissect-dev gpu-check`.
    GpuCheck {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Train the embedded default model (release build; about 15 minutes
    /// on 2 idle cores) and write assets/default. Arguments go to
    /// `netdissect-dev train-default` (`--epochs`, `--train-images`, `--out`).
    TrainDefault {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Dissect { out, args } => dissect(&out, &args),
        Cmd::Test => test(),
        Cmd::GenBroden { args } => run(cargo()
            .args([
                "run",
                "--quiet",
                "--package",
                "netdissect-cli",
                "--",
                "synth",
            ])
            .args(args)),
        Cmd::Adapter => adapter::ensure().map(|_| ()),
        Cmd::Bench { args } => {
            adapter::ensure()?;
            devtools("bench", &args)
        }
        Cmd::BenchConv { args } => devtools("bench-conv", &args),
        Cmd::BenchFormulas { args } => devtools("bench-formulas", &args),
        Cmd::BenchAblate { args } => devtools("bench-ablate", &args),
        Cmd::GpuCheck { args } => {
            adapter::ensure()?;
            // The build on its own line: a release build already there is
            // reused, and its time is not the check's.
            let started = std::time::Instant::now();
            run(cargo().args([
                "build",
                "--release",
                "--quiet",
                "--package",
                "netdissect-devtools",
            ]))?;
            println!("build: {:.1} s", started.elapsed().as_secs_f64());
            devtools("gpu-check", &args)
        }
        Cmd::TrainDefault { args } => devtools("train-default", &args),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing with the command line when
/// it exits non-zero.
fn run(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(workspace_root());
    quiet_mesa(cmd);
    let line = format!("{cmd:?}");
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed with {status}");
    }
    Ok(())
}

/// Mesa's Vulkan loader prints "XDG_RUNTIME_DIR is invalid or not set" on
/// machines without a desktop session, which reads like a failure. Where
/// the variable is unset, children get a private runtime folder of their
/// own; a set one (a real session, which a display needs) is left alone.
fn quiet_mesa(cmd: &mut Command) {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let dir = std::env::temp_dir().join(format!("netdissect-xdg-{user}"));
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        cmd.env("XDG_RUNTIME_DIR", &dir);
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The embedded default: the trained model and probe set in
/// `assets/default`, described in its README.
const DEFAULT_DIR: &str = "assets/default";

fn dissect(out: &Path, args: &[String]) -> Result<()> {
    adapter::ensure()?;
    let root = workspace_root();
    let built = root.join("target/debug/netdissect").exists();
    eprintln!(
        "building the netdissect CLI (debug profile){}",
        if built {
            ""
        } else {
            ": a first build compiles Burn and wgpu, about 11 minutes on 2 cores"
        }
    );
    let mut cmd = cargo();
    cmd.args(["run", "--package", "netdissect-cli", "--"]);
    cmd.arg("dissect");
    if args.is_empty() {
        let assets = root.join(DEFAULT_DIR);
        let weights = assets.join("model.safetensors");
        if !weights.is_file() {
            bail!(
                "{} is missing: the embedded default ships in the repository \
                 (`cargo xtask train-default --out {DEFAULT_DIR}` remakes it)",
                weights.display()
            );
        }
        let read = |name: &str| {
            let path = assets.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let (model, layers) = (read("model.txt")?, read("layers.txt")?);
        cmd.args(["--model", model.trim(), "--layers", layers.trim()]);
        cmd.arg("--weights").arg(&weights);
        cmd.arg("--dataset").arg(assets.join("probe"));
        cmd.arg("--force");
    } else {
        cmd.args(args);
    }
    cmd.arg("--out").arg(out);
    run(&mut cmd)?;
    println!("results: {}", root.join(out).display());
    Ok(())
}

/// Runs a `netdissect-dev` subcommand in a release build.
fn devtools(command: &str, args: &[String]) -> Result<()> {
    run(cargo()
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "netdissect-devtools",
            "--",
        ])
        .arg(command)
        .args(args))
}

fn test() -> Result<()> {
    adapter::ensure()?;
    ensure_chromium()?;
    ensure_slurm()?;
    // The Python package's build script and its pytest suite (run by a
    // test of crates/python) use this interpreter.
    let python = ensure_python()?;
    ensure_kubernetes_validate(&python)?;
    let cargo = || {
        let mut c = cargo();
        c.env("PYO3_PYTHON", &python);
        c
    };
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let nextest = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nextest {
        // Doc tests first: their per-crate "0 passed" lines must not be the
        // run's last word.
        run(cargo().args(["test", "--workspace", "--doc"]))?;
        let status = cargo()
            .args([
                "nextest",
                "run",
                "--workspace",
                "--no-fail-fast",
                "--failure-output",
                "final",
            ])
            .status()
            .context("running cargo nextest")?;
        let root = workspace_root();
        let junit = root.join("target/nextest/default/junit.xml");
        let py_junit = root.join("target/python/junit.xml");
        match std::fs::read_to_string(&junit) {
            Ok(xml) => {
                let (tests, failed) = junit_totals(&xml);
                // The Python suite runs inside one Rust test; its own
                // tests count in the totals too, and its skips are named.
                let py = std::fs::read_to_string(&py_junit)
                    .map(|x| pytest_totals(&x))
                    .unwrap_or_default();
                if py.tests > 0 {
                    println!(
                        "python: {} passed, {} failed, {} skipped",
                        py.tests - py.failed - py.skipped.len() as u64,
                        py.failed,
                        py.skipped.len()
                    );
                    for why in &py.skipped {
                        println!("python: skipped: {why}");
                    }
                }
                let passed = tests - failed + py.tests - py.failed - py.skipped.len() as u64;
                println!("{passed} passed, {} failed", failed + py.failed);
            }
            Err(e) => eprintln!("no test totals: {}: {e}", junit.display()),
        }
        if !status.success() {
            bail!("tests failed");
        }
    } else {
        run(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    }
    Ok(())
}

/// What pytest's JUnit report counts.
#[derive(Debug, Default, PartialEq)]
struct PytestTotals {
    tests: u64,
    failed: u64,
    /// The reason of each skipped test.
    skipped: Vec<String>,
}

/// The counts of pytest's `<testsuite>` and the messages of its skips.
fn pytest_totals(xml: &str) -> PytestTotals {
    let tag_attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!(" {name}=\"");
        let i = tag.find(&key)? + key.len();
        Some(tag[i..i + tag[i..].find('"')?].to_string())
    };
    let Some(start) = xml.find("<testsuite ") else {
        return PytestTotals::default();
    };
    let suite = &xml[start..start + xml[start..].find('>').unwrap_or(0)];
    let num = |name: &str| {
        tag_attr(suite, name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let skipped = xml
        .match_indices("<skipped")
        .map(|(i, _)| {
            let tag = &xml[i..i + xml[i..].find('>').unwrap_or(0)];
            tag_attr(tag, "message").unwrap_or_else(|| "no reason given".into())
        })
        .collect();
    PytestTotals {
        tests: num("tests"),
        failed: num("failures") + num("errors"),
        skipped,
    }
}

/// A Python 3 with numpy and pytest, for the Python package's tests:
/// `$PYO3_PYTHON`, else Debian's `/usr/bin/python3`, else `python3`;
/// Debian's packages are installed where they are missing and we may.
fn ensure_python() -> Result<String> {
    let has_modules = |python: &str| {
        Command::new(python)
            .args(["-c", "import numpy, pytest"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let candidates: Vec<String> = std::env::var("PYO3_PYTHON")
        .into_iter()
        .chain(["/usr/bin/python3".to_string(), "python3".to_string()])
        .collect();
    if let Some(found) = candidates.iter().find(|p| has_modules(p)) {
        return Ok(found.clone());
    }
    let packages = ["python3", "python3-numpy", "python3-pytest"];
    if !adapter::can_install() {
        bail!(
            "the Python package's tests need Python 3 with numpy and pytest: install them (Debian: `sudo apt-get install -y {}`), or point PYO3_PYTHON at such an interpreter",
            packages.join(" ")
        );
    }
    eprintln!(
        "numpy or pytest not found: installing Debian's {}",
        packages.join(" ")
    );
    adapter::apt_install(&packages)?;
    if has_modules("/usr/bin/python3") {
        Ok("/usr/bin/python3".into())
    } else {
        bail!("/usr/bin/python3 still cannot import numpy and pytest after installing them")
    }
}

/// `(tests, failures + errors)` from nextest's JUnit report: the counts on
/// its `<testsuites>` element.
fn junit_totals(xml: &str) -> (u64, u64) {
    let Some(start) = xml.find("<testsuites") else {
        return (0, 0);
    };
    let tag = &xml[start..start + xml[start..].find('>').unwrap_or(0)];
    let attr = |name: &str| -> u64 {
        let key = format!(" {name}=\"");
        tag.find(&key)
            .and_then(|i| {
                let rest = &tag[i + key.len()..];
                rest[..rest.find('"')?].parse().ok()
            })
            .unwrap_or(0)
    };
    (attr("tests"), attr("failures") + attr("errors"))
}

/// The report tests render pages in headless Chromium; install Debian's
/// package where it is missing and we may.
fn ensure_chromium() -> Result<()> {
    let found = |name: &str| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found("chromium") {
        return Ok(());
    }
    if !adapter::can_install() {
        bail!("the report tests need Chromium: install it with `sudo apt-get install -y chromium`");
    }
    eprintln!("chromium not found: installing Debian's chromium package for the report tests");
    adapter::apt_install(&["chromium"])
}

/// The Slurm test (crates/cli/tests/slurm.rs) starts a one-node cluster of
/// Debian's slurm-wlm and munge; install them where they are missing and we
/// may. Where we may not, the other tests still run and that one fails,
/// saying what to install.
fn ensure_slurm() -> Result<()> {
    let found = |name: &str| {
        Command::new(name)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ["slurmctld", "slurmd", "munged"].iter().all(|n| found(n)) {
        return Ok(());
    }
    if !adapter::can_install() {
        eprintln!(
            "slurm not found and not installable here (root and apt-get needed): the Slurm test will fail; install it with `sudo apt-get install -y slurm-wlm munge`"
        );
        return Ok(());
    }
    eprintln!("slurm not found: installing Debian's slurm-wlm and munge for the Slurm test");
    adapter::apt_install(&["slurm-wlm", "munge"])
}

/// Where `ensure_kubernetes_validate` installs the validator, relative to
/// the workspace root; crates/cli/tests/k8s.rs looks there too.
const KUBERNETES_VALIDATE_VENV: &str = "target/kubernetes-validate";

/// The Kubernetes manifests' test (crates/cli/tests/k8s.rs) validates them
/// against the API's schemas with PyPI's `kubernetes-validate`, offline
/// (`kubectl --dry-run=client` still asks an API server for the schemas):
/// installed into a virtual environment of `python` where missing, with
/// Debian's python3-venv where that is missing and we may install it.
fn ensure_kubernetes_validate(python: &str) -> Result<()> {
    let venv = workspace_root().join(KUBERNETES_VALIDATE_VENV);
    let runs = |tool: &Path| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs(&venv.join("bin/kubernetes-validate")) || runs(Path::new("kubernetes-validate")) {
        return Ok(());
    }
    eprintln!(
        "kubernetes-validate not found: installing it from PyPI into {}",
        venv.display()
    );
    let make_venv = |python: &str| {
        Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !make_venv(python) {
        if !adapter::can_install() {
            bail!(
                "the Kubernetes manifests' test needs kubernetes-validate: `python3 -m venv {0} && {0}/bin/pip install kubernetes-validate`",
                venv.display()
            );
        }
        adapter::apt_install(&["python3", "python3-venv"])?;
        if !make_venv("/usr/bin/python3") {
            bail!(
                "/usr/bin/python3 cannot make a virtual environment even with python3-venv installed"
            );
        }
    }
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "kubernetes-validate==1.37.0",
    ]))
}

#[cfg(test)]
mod tests {
    use super::junit_totals;

    #[test]
    fn totals_come_from_the_testsuites_element() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="118" failures="2" errors="1" uuid="x" time="61.2">
    <testsuite name="a" tests="3" disabled="0" errors="0" failures="0"></testsuite>
</testsuites>"#;
        assert_eq!(junit_totals(xml), (118, 3));
        assert_eq!(junit_totals("not xml"), (0, 0));
    }

    #[test]
    fn pytest_totals_count_tests_failures_and_name_skips() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="6" time="2.1"><testcase classname="t" name="a"/><testcase classname="t" name="b"><skipped type="pytest.skip" message="torch is not installed: netdissect.torch.record was not tested">x</skipped></testcase></testsuite></testsuites>"#;
        let t = super::pytest_totals(xml);
        assert_eq!((t.tests, t.failed), (6, 2));
        assert_eq!(
            t.skipped,
            ["torch is not installed: netdissect.torch.record was not tested"]
        );
        assert_eq!(super::pytest_totals("junk"), super::PytestTotals::default());
    }
}
