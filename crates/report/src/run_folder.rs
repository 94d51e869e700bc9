//! The one list of what a run's folder (a results folder or a shard folder)
//! may hold: every file and folder a run writes there, by name or by family.
//! The writers take their names from it and the staging rules
//! ([`crate::output::Staging`]) read it to tell a run's folder from a
//! folder of the user's, so a new output cannot be known to one and not to
//! the other: it is one new line in the list below.

use std::path::{Path, PathBuf};

use crate::ReportError;

/// How the entries of one kind are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// One file or folder of this name.
    Fixed(&'static str),
    /// One file per layer: the layer's safe name (see
    /// [`dissect::results::safe_file_stem`]), then this suffix.
    PerLayer(&'static str),
    /// A file being written beside its final name, `.<name>.<pid>.tmp`.
    Temp,
}

/// Declares [`RunFile`] from the list of a run folder's entries, with
/// [`RunFile::ALL`] and [`RunFile::naming`] taken from the same list, so
/// that no kind can be left out of either.
macro_rules! run_folder {
    ($($(#[$doc:meta])* $kind:ident: $naming:expr,)*) => {
        /// A kind of entry a run's folder may hold.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum RunFile {
            $($(#[$doc])* $kind,)*
        }

        impl RunFile {
            /// Every kind, in the order of the list.
            pub const ALL: &'static [RunFile] = &[$(RunFile::$kind,)*];

            /// How the entries of this kind are named.
            pub const fn naming(self) -> Naming {
                match self {
                    $(RunFile::$kind => $naming,)*
                }
            }
        }
    };
}

run_folder! {
    /// `results.json`: the saved dissection, written last; it marks a
    /// complete results folder.
    Results: Naming::Fixed("results.json"),
    /// `report.html`: the report's page.
    Report: Naming::Fixed("report.html"),
    /// `strips/`: the report's image strips, `strips/<layer>/unit-NNNN.jpg`
    /// and `unit-NNNN-concept.jpg`.
    Strips: Naming::Fixed("strips"),
    /// `explain/`: the CLI's example explanation of a few probe images
    /// (`explain.json` and `explain.html`), which the report links to.
    Explain: Naming::Fixed("explain"),
    /// `ablation/`: what `netdissect ablate` wrote by default
    /// (`ablation.json`, `ablation.csv`, `ablation.html`), which the
    /// report links to.
    Ablation: Naming::Fixed("ablation"),
    /// `<layer>-tally.csv`: the reference tools' tally.
    Tally: Naming::PerLayer("-tally.csv"),
    /// `<layer>-topmaps.f32`: the maps of the layer's top images, in a
    /// results folder and in a phase-2 shard folder; the run names them
    /// with [`dissect::results::top_maps_file_name`].
    TopMaps: Naming::PerLayer("-topmaps.f32"),
    /// `<layer>-iou.npy`: units x labels IoUs, float32.
    IouArray: Naming::PerLayer("-iou.npy"),
    /// `<layer>-thresholds.npy`: the units' thresholds, float32.
    ThresholdArray: Naming::PerLayer("-thresholds.npy"),
    /// `<layer>-topk.npy`: units x k, int64 image indices into the selected
    /// images, -1 where a unit has fewer.
    TopArray: Naming::PerLayer("-topk.npy"),
    /// `shard.json`: what a shard is; written last, it marks a complete
    /// shard folder.
    Shard: Naming::Fixed(dissect::shard::files::SHARD_JSON),
    /// `thresholds.json`: the merged thresholds a phase-2 shard counted
    /// with.
    ShardThresholds: Naming::Fixed(dissect::shard::files::THRESHOLDS_JSON),
    /// `<layer>-candidates.u32`: a phase-1 shard's threshold candidates.
    Candidates: Naming::PerLayer(dissect::shard::files::CANDIDATES_SUFFIX),
    /// `<layer>-counts.u64`: a phase-2 shard's counts and moments.
    Counts: Naming::PerLayer(dissect::shard::files::COUNTS_SUFFIX),
    /// A temp file of [`crate::write_atomic`], left behind when a write was
    /// stopped.
    Temp: Naming::Temp,
}

impl RunFile {
    /// The name of a kind with a fixed name. Only constants below call it,
    /// so asking it of another kind fails the build, not a run.
    const fn fixed(self) -> &'static str {
        match self.naming() {
            Naming::Fixed(name) => name,
            Naming::PerLayer(_) | Naming::Temp => panic!("not a kind with a fixed name"),
        }
    }

    /// The suffix of a per-layer kind; like [`RunFile::fixed`], for
    /// constants only.
    const fn suffix(self) -> &'static str {
        match self.naming() {
            Naming::PerLayer(suffix) => suffix,
            Naming::Fixed(_) | Naming::Temp => panic!("not a per-layer kind"),
        }
    }

    /// Whether `name`, an entry of a folder, is of this kind.
    pub fn matches(self, name: &str) -> bool {
        match self.naming() {
            Naming::Fixed(fixed) => name == fixed,
            Naming::PerLayer(suffix) => name.ends_with(suffix),
            Naming::Temp => is_temp_file(name),
        }
    }
}

/// The file that marks a complete results folder.
pub const RESULTS_JSON: &str = RunFile::Results.fixed();
/// The report's page.
pub const REPORT_HTML: &str = RunFile::Report.fixed();
/// The folder of the report's strips.
pub const STRIPS_DIR: &str = RunFile::Strips.fixed();
/// The folder of the example explanation.
pub const EXPLAIN_DIR: &str = RunFile::Explain.fixed();
/// `ablation/`.
pub const ABLATION_DIR: &str = RunFile::Ablation.fixed();
/// The suffix of a layer's tally.
pub(crate) const TALLY_SUFFIX: &str = RunFile::Tally.suffix();
/// The suffixes of a layer's NumPy arrays: IoUs, thresholds, top images.
pub(crate) const NPY_SUFFIXES: [&str; 3] = [
    RunFile::IouArray.suffix(),
    RunFile::ThresholdArray.suffix(),
    RunFile::TopArray.suffix(),
];

/// The file of `layer` with `suffix` (one of the per-layer kinds').
pub(crate) fn layer_file_name(layer: &str, suffix: &str) -> String {
    format!("{}{suffix}", crate::output::safe_name(layer))
}

/// Whether `name` is a temp file of [`store::temp_file_name`]
/// (`.<name>.<pid>.tmp`) for a file that a run writes. Nothing else is: a
/// user's own `.tmp…` file is foreign, so that a forced run never deletes
/// it.
fn is_temp_file(name: &str) -> bool {
    let Some(inner) = (name.strip_prefix('.')).and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((written, pid)) = inner.rsplit_once('.') else {
        return false;
    };
    let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    is_pid && (RunFile::ALL.iter()).any(|&kind| kind != RunFile::Temp && kind.matches(written))
}

/// The checkpoint folder of the results folder `dest`: `.<name>.checkpoint`
/// beside it, removed once the results are written.
pub fn checkpoint_dir(dest: &Path) -> PathBuf {
    let name = crate::output::dest_name(dest);
    store::parent_of(dest).join(format!(".{name}.checkpoint"))
}

/// The longest name of one folder entry that the file systems a run meets
/// take (Linux's `NAME_MAX`; also macOS's and Windows').
pub const NAME_MAX: usize = 255;
/// The longest path the system calls take (`PATH_MAX`, less its
/// terminating zero: 4096 on Linux, 1024 on macOS and the BSDs).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const PATH_MAX: usize = 4095;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const PATH_MAX: usize = 1023;

/// Errors unless every name a run of `layers` makes at `dest` fits
/// [`NAME_MAX`] and [`PATH_MAX`]: the folders beside it (staging, moved
/// aside, the lock and its temporary files, the checkpoint) and the files in
/// it and in the checkpoint's folders, temporary names included, so that a
/// run too long for its file system fails before it starts, not at its
/// first checkpoint.
pub fn check_names_fit(dest: &Path, layers: &[String]) -> Result<(), ReportError> {
    let name = crate::output::dest_name(dest);
    // The widest process number and staging counter.
    let pid = u32::MAX;
    let beside = [
        format!("{}{pid}-999.old", crate::swap::staging_prefix(&name)),
        format!(".{name}.lock.{pid}.stale"),
        format!("..{name}.lock.{pid}-{}-{}.tmp", u64::MAX, u64::MAX),
        format!(".{name}.checkpoint"),
    ];
    let mut inside: Vec<String> = (RunFile::ALL.iter())
        .filter_map(|kind| match kind.naming() {
            Naming::Fixed(fixed) => Some(vec![fixed.to_string()]),
            Naming::PerLayer(suffix) => {
                Some(layers.iter().map(|l| layer_file_name(l, suffix)).collect())
            }
            Naming::Temp => None,
        })
        .flatten()
        .collect();
    inside.extend(inside.clone().iter().map(|n| format!(".{n}.{pid}.tmp")));
    let longest = |names: &[String]| names.iter().map(String::len).max().unwrap_or(0);
    for (names, what) in [(&beside[..], "folders beside it"), (&inside[..], "files")] {
        let bytes = longest(names);
        if bytes > NAME_MAX {
            return Err(ReportError::NameTooLong {
                path: dest.to_path_buf(),
                what,
                bytes,
                limit: NAME_MAX,
            });
        }
    }
    // The deepest path: a file of a checkpoint's part folder.
    let parent = std::path::absolute(store::parent_of(dest)).unwrap_or_default();
    let deepest = parent.as_os_str().len()
        + 1
        + longest(&beside)
        + 1
        + format!("candidates-{}", u64::MAX).len()
        + 1
        + longest(&inside);
    if deepest > PATH_MAX {
        return Err(ReportError::NameTooLong {
            path: dest.to_path_buf(),
            what: "paths",
            bytes: deepest,
            limit: PATH_MAX,
        });
    }
    Ok(())
}

/// What a folder may hold for [`crate::output::Staging`] to replace it: the
/// entries a run writes, and nothing else of the user's.
pub fn is_result_file(name: &str) -> bool {
    RunFile::ALL.iter().any(|kind| kind.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, entries};

    #[test]
    fn names_too_long_for_a_file_system_are_refused_before_anything_is_made() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = vec!["layer4".to_string()];
        let fits = tmp.path().join("r".repeat(150));
        check_names_fit(&fits, &layers).unwrap();
        // Fits as a name, but its staging folder's name would not.
        let long = tmp.path().join("r".repeat(240));
        let err = check_names_fit(&long, &layers).unwrap_err();
        assert!(
            matches!(
                err,
                ReportError::NameTooLong {
                    what: "folders beside it",
                    ..
                }
            ),
            "{err}"
        );
        assert!(Staging::begin(&long, false, &layers).is_err());
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "nothing made"
        );
        // A layer whose file names would not fit.
        let err = check_names_fit(&fits, &["l".repeat(250)]).unwrap_err();
        assert!(
            matches!(err, ReportError::NameTooLong { what: "files", .. }),
            "{err}"
        );
        // A path too deep, though each name fits.
        let deep: PathBuf = (0..20).map(|_| "d".repeat(200)).collect();
        let err = check_names_fit(&tmp.path().join(deep).join("out"), &layers).unwrap_err();
        assert!(
            matches!(err, ReportError::NameTooLong { what: "paths", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("choose a shorter --out"), "{err}");
        // The checkpoint folder sits beside the results.
        let out = Path::new("a/r18");
        assert_eq!(checkpoint_dir(out), Path::new("a/.r18.checkpoint"));
    }
    use crate::output::Staging;
    use store::temp_file_name;

    /// Writes, under `root`, a results folder with every output a run
    /// writes (the CLI's example explanation and the NumPy arrays
    /// included), a phase-1 and a phase-2 shard folder; returns the three.
    fn write_every_output(root: &Path) -> [std::path::PathBuf; 3] {
        let dataset = root.join("data");
        fixture::write_images(&dataset);
        let layers = vec![fixture::layer("conv1", 5, 0), fixture::layer("a/b c", 4, 3)];
        let (d, maps) = fixture::dissection(&dataset, layers);
        let ious: Vec<Vec<f32>> = (d.layers.iter())
            .map(|l| vec![0.1; l.n_units * 6])
            .collect();
        let results = root.join("run");
        // The CLI writes its example explanation into the folder first.
        let explain = results.join(EXPLAIN_DIR);
        std::fs::create_dir_all(&explain).unwrap();
        for page in ["explain.json", "explain.html"] {
            crate::write_atomic(&explain.join(page), b"{}").unwrap();
        }
        // And `netdissect ablate` its pages, later.
        let ablation = results.join(ABLATION_DIR);
        std::fs::create_dir_all(&ablation).unwrap();
        crate::write_atomic(&ablation.join("ablation.html"), b"<p>").unwrap();
        crate::output::write_all(&results, &d, &maps, &ious).unwrap();
        let (phase1, phase2, merged) = fixture::shards(&d, &maps);
        let (shard1, shard2) = (root.join("shard-1"), root.join("shard-2"));
        for dir in [&shard1, &shard2] {
            std::fs::create_dir_all(dir).unwrap();
        }
        dissect::shard::files::write_threshold_shard(&shard1, &phase1).unwrap();
        dissect::shard::files::write_count_shard(&shard2, &phase2, &merged).unwrap();
        [results, shard1, shard2]
    }

    #[test]
    fn every_output_of_a_run_is_a_result_file_and_a_users_file_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let folders = write_every_output(tmp.path());
        let mut names = Vec::new();
        for dir in &folders {
            for name in entries(dir) {
                assert!(is_result_file(&name), "{}: {name}", dir.display());
                names.push(name);
            }
            // So a forced run may replace the folder.
            drop(Staging::begin(dir, true, &[]).unwrap());
        }
        // The folders hold every kind of the list (a temp file only while
        // a write is under way).
        for kind in RunFile::ALL.iter().filter(|&&k| k != RunFile::Temp) {
            assert!(
                names.iter().any(|n| kind.matches(n)),
                "no {kind:?} in {names:?}"
            );
        }
        assert!(is_result_file(&temp_file_name(RESULTS_JSON)));
        assert!(is_result_file(&temp_file_name("conv1-tally.csv")));
        for users in [
            ".tmp123",
            ".tmpAbC12",
            ".notes.123.tmp",
            ".results.json.tmp",
            ".results.json.12x.tmp",
            &format!(".{}", temp_file_name(RESULTS_JSON)),
            "thesis.tex",
            "notes",
            "results.json.bak",
            "report.html~",
            "strips.zip",
            "tally.csv",
            ".git",
        ] {
            assert!(!is_result_file(users), "{users}");
        }
        // A user's file among the outputs keeps the folder from being
        // replaced, and the refusal names it.
        std::fs::write(folders[0].join("thesis.tex"), "mine").unwrap();
        let err = Staging::begin(&folders[0], true, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("thesis.tex"), "{err}");
    }

    #[test]
    fn names_agree_with_those_made_elsewhere() {
        // The run names its top-image maps in the dissect crate.
        for layer in ["layer4", "features.28", "a/b c"] {
            assert_eq!(
                layer_file_name(layer, RunFile::TopMaps.suffix()),
                dissect::results::top_maps_file_name(layer)
            );
        }
        assert!(crate::html::EXPLANATION.starts_with(&format!("{EXPLAIN_DIR}/")));
        assert!(crate::html::ABLATION.starts_with(&format!("{ABLATION_DIR}/")));
    }
}
