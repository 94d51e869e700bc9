//! The `netdissect` command-line tool: its arguments mapped onto the
//! application layer (`app`), and what it says printed.
//!
//! Exit codes: 0 success; 1 a failure while running; 2 invalid arguments;
//! 3 invalid input (dataset, checkpoint, layer names); 4 no usable GPU
//! adapter; 130 stopped by Ctrl-C or a termination signal.

mod args;
mod jobs;
mod listing;
mod progress;
mod runtime_dir;
mod signals;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, DissectArgs, FetchArgs, SynthArgs};
use progress::Terminal;

fn main() -> ExitCode {
    runtime_dir::ensure();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dissect(a) => dissect(&a),
        Command::Models(a) => listing::models(&a.sources()),
        Command::Fetch(a) => fetch(&a),
        Command::Devices => {
            listing::devices();
            Ok(())
        }
        Command::Info { dataset, no_decode } => info(&dataset, no_decode),
        Command::Report { results } => app::regenerate_report(&results).map(print_path),
        Command::Compare(a) => app::compare(&a.job()).map(|written| {
            written.into_iter().for_each(print_path);
        }),
        Command::Explain(a) => app::explain(&a.job(), &mut Terminal::new(false)).map(print_path),
        Command::Ablate(a) => {
            let mut terminal = Terminal::new(a.quiet);
            let page = app::ablate(&a.job(), &mut terminal);
            app::Events::passes_done(&mut terminal);
            page.map(print_path)
        }
        Command::Merge(a) => app::merge(&a.job(), &mut Terminal::new(false)).map(|_| ()),
        Command::Synth(a) => synth(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(exit_code(error.kind()))
        }
    }
}

/// The exit code of an error's kind.
fn exit_code(kind: app::Kind) -> u8 {
    match kind {
        app::Kind::Run => 1,
        app::Kind::Usage => 2,
        app::Kind::Input => 3,
        app::Kind::Adapter => 4,
        app::Kind::Stopped => 130,
    }
}

fn print_path(path: impl AsRef<Path>) {
    println!("{}", path.as_ref().display());
}

/// `dissect`: a run, a warm-up or one shard.
fn dissect(a: &DissectArgs) -> app::Result<()> {
    let mut terminal = Terminal::new(a.quiet);
    // Names fetched before the job (and its Ctrl-C handler) starts.
    let weights = match (&a.activations, &a.model) {
        (None, Some(model)) => {
            let mut bars = progress::FetchBars::new(a.quiet);
            app::resolve_weights(&a.weights, model, &a.sources.sources(), &mut bars)?
        }
        _ => a.weights.clone(),
    };
    let mut job = a.job();
    if let app::Source::Model { weights: w, .. } = &mut job.source {
        *w = weights;
    }
    if a.warm_up {
        app::warm_up(job, &mut terminal)
    } else if let Some(spec) = a.shard_spec() {
        app::run_shard(job, &spec, &mut terminal)
    } else {
        app::run(job, &mut terminal).map(|_| ())
    }
}

/// `info`: the dataset's summary, and every image and mask decoded.
fn info(dir: &Path, no_decode: bool) -> app::Result<()> {
    let ds = app::open_dataset(dir)?;
    print!("{}", ds.summary());
    if no_decode {
        println!("images and masks not decoded (--no-decode)");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let found = app::decode_all(&ds)?;
    println!(
        "decoded {} images and {} masks: ok ({:.1} s)",
        found.images,
        found.masks,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `fetch`: a dataset or checkpoint installed; prints where.
fn fetch(a: &FetchArgs) -> app::Result<()> {
    let job = app::FetchJob {
        name: a.name.clone(),
        to: a.to.clone(),
        from: a.from.clone(),
        sources: a.sources.sources(),
    };
    let mut bars = progress::FetchBars::new(a.quiet);
    app::fetch_item(&job, &mut bars).map(print_path)
}

/// `synth`: a generated Broden-format dataset.
fn synth(a: &SynthArgs) -> app::Result<()> {
    let started = std::time::Instant::now();
    let opts = broden::synth::SynthOptions {
        images: a.images,
        seed: a.seed,
        size: a.size,
        swatch_percent: a.swatch_percent,
    };
    let written = match a.shape {
        args::ShapeArg::Small => broden::synth::generate(&a.out, &opts),
        args::ShapeArg::Broden if a.swatch_percent > 0 => {
            return Err(app::Error::usage(
                "--swatch-percent goes with --shape small: --shape broden mixes its own sources",
            ));
        }
        args::ShapeArg::Broden => {
            let shaped = broden::synth::ShapedOptions {
                images: a.images,
                seed: a.seed,
                size: a.size,
            };
            let bar = progress::count_bar(a.images as u64, "writing images");
            let done =
                broden::synth::generate_shaped(&a.out, &shaped, &|n| bar.set_position(n as u64));
            bar.finish_and_clear();
            done
        }
    };
    written.map_err(|e| {
        let shown = format!("generating a synthetic dataset in {}", a.out.display());
        // A folder that cannot be written or a full disk is a failure of
        // the run; options and a non-empty folder are the user's to fix.
        let kind = if e.is_io() {
            app::Kind::Run
        } else {
            app::Kind::Input
        };
        app::Error::context(kind, shown, e)
    })?;
    let mix = match a.shape {
        args::ShapeArg::Small => format!("{}% swatches", a.swatch_percent),
        args::ShapeArg::Broden => "Broden's shape, 1,197 labels".to_string(),
    };
    println!(
        "wrote {} images (seed {}, size {}, {mix}) to {} in {:.1} s",
        a.images,
        a.seed,
        a.size,
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
