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
    /// Write a deterministic synthetic Broden dataset.
    GenBroden {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        images: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Image size; the segmentation is half of it, as in broden1_224.
        #[arg(long, default_value_t = 224)]
        size: u32,
    },
    /// Make sure a GPU adapter exists (installing lavapipe where possible)
    /// and print the adapters found.
    Adapter,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Dissect { out, args } => dissect(&out, &args),
        Cmd::Test => test(),
        Cmd::GenBroden {
            out,
            images,
            seed,
            size,
        } => gen_broden(&out, images, seed, size),
        Cmd::Adapter => adapter::ensure().map(|_| ()),
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

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn dissect(out: &Path, args: &[String]) -> Result<()> {
    adapter::ensure()?;
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--package", "netdissect-cli", "--"]);
    if args.is_empty() {
        cmd.arg("dissect").arg("--default").arg("--out").arg(out);
    } else {
        cmd.arg("dissect").args(args).arg("--out").arg(out);
    }
    run(&mut cmd)?;
    println!("results: {}", workspace_root().join(out).display());
    Ok(())
}

fn test() -> Result<()> {
    adapter::ensure()?;
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
        run(cargo().args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--failure-output",
            "final",
        ]))?;
        // nextest does not run doctests.
        run(cargo().args(["test", "--workspace", "--doc"]))?;
    } else {
        run(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    }
    Ok(())
}

fn gen_broden(out: &Path, images: usize, seed: u64, size: u32) -> Result<()> {
    let started = std::time::Instant::now();
    let opts = broden::synth::SynthOptions { images, seed, size };
    broden::synth::generate(out, &opts)
        .with_context(|| format!("generating a synthetic Broden dataset in {}", out.display()))?;
    println!(
        "wrote {images} images (seed {seed}, size {size}) to {} in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
