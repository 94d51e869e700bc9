//! `netdissect report RESULTS_DIR`: regenerates `report.html` and its image
//! strips from a saved results folder (`results.json` and the top-image
//! maps), without the network or a GPU.

use std::path::Path;

use anyhow::Context;

/// Which step failed: reading the results is bad input, writing the
/// report a run failure.
#[derive(Debug)]
pub enum Step {
    Read(anyhow::Error),
    Write(anyhow::Error),
}

/// Reads the results in `results_dir` and writes the report beside them.
pub fn run(results_dir: &Path) -> Result<(), Step> {
    let (dissection, top_maps) = report::output::read_results(results_dir)
        .with_context(|| format!("reading the results in {}", results_dir.display()))
        .map_err(Step::Read)?;
    let path = report::html::write_report(results_dir, &dissection, &top_maps)
        .with_context(|| format!("writing the report into {}", results_dir.display()))
        .map_err(Step::Write)?;
    println!("{}", path.display());
    Ok(())
}
