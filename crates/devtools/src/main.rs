//! `netdissect-dev`: the heavy developer tools that `cargo xtask` runs
//! (benchmarks, training the default model). They live in their own binary
//! so that xtask itself builds in seconds and shares no build with Burn.

mod bench;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "netdissect-dev", about = "NetDissect-rs developer tools")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Benchmarks: throughput, stage shares, memory, CPU vs device baselines.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Bench(args) => bench::bench(args),
    }
}
