//! `netdissect fetch` and `--weights NAME`: Broden and published
//! checkpoints by name, through the registry (`fetch::Registry`), checked
//! for what they are before they are installed.
//!
//! - A `broden` item downloads its zip beside the destination, unpacks it
//!   through a staging folder and installs it only if it opens as a
//!   Broden dataset (index rows, labels, every category's file, every file
//!   the index names) and a sample of its images and masks decodes.
//! - A `weights` item goes to PyTorch's checkpoint folder
//!   (`$TORCH_HOME/hub/checkpoints`), where a file torch fetched is used
//!   as it is; it must load as its architecture.
//!
//! Where the registry records no SHA-256, the first verified download's is
//! written beside what was installed (`<name>.sha256`) and later uses are
//! checked against it.

use std::path::{Path, PathBuf};

use broden::{Dataset, DatasetOptions};
use fetch::{Expect, FetchError, Fetcher, Item, ItemKind, Progress, Registry, Retry};
use models::{ArchChoice, Model};

use crate::error::{Error, Kind, Result, chain};

/// Where fetched files come from, beyond the registry's own mirrors.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Registry files that add or override items (after those of
    /// `NETDISSECT_REGISTRY`).
    pub registry: Vec<PathBuf>,
    /// Base URLs tried before the item's own mirrors (after those of
    /// `NETDISSECT_MIRROR`, separated by spaces).
    pub mirrors: Vec<String>,
}

impl Sources {
    /// The registry: built in, then the environment's files, then ours.
    pub fn registry(&self) -> Result<Registry> {
        Registry::with_files(&self.registry).map_err(fetch_error)
    }

    /// Our mirrors, then the environment's (`NETDISSECT_MIRROR`, separated
    /// by spaces), each checked to be a URL.
    fn given_mirrors(&self) -> Result<Vec<String>> {
        let from_env = std::env::var("NETDISSECT_MIRROR").unwrap_or_default();
        let given = (self.mirrors.iter().map(|m| (m.as_str(), "--mirror"))).chain(
            from_env
                .split_whitespace()
                .map(|m| (m, "NETDISSECT_MIRROR")),
        );
        given
            .map(|(m, from)| {
                fetch::check_mirror(m).map_err(|e| Error::usage(format!("{from}: {e}")))?;
                Ok(m.to_string())
            })
            .collect()
    }

    /// The mirrors of `item` in the order tried: ours, the environment's,
    /// the item's.
    fn mirrors(&self, item: &Item) -> Result<Vec<String>> {
        let mut all = self.given_mirrors()?;
        all.extend(item.mirrors.iter().cloned());
        Ok(all)
    }
}

/// One `netdissect fetch`.
#[derive(Debug, Clone)]
pub struct FetchJob {
    /// A registry name (`broden1_224`, `resnet18_places365`, ...).
    pub name: String,
    /// The folder to install into: for a dataset, the folder that gets
    /// `<name>/` (default: the working folder); for weights, instead of
    /// PyTorch's checkpoint folder.
    pub to: Option<PathBuf>,
    /// A copy of the item's file the user already has, instead of a
    /// download.
    pub from: Option<PathBuf>,
    pub sources: Sources,
}

/// Fetches `job.name`; returns what was installed (the dataset folder or
/// the checkpoint file).
pub fn fetch_item(job: &FetchJob, progress: &mut dyn Progress) -> Result<PathBuf> {
    job.sources.given_mirrors()?;
    let registry = job.sources.registry()?;
    let item = registry.get(&job.name).map_err(fetch_error)?;
    if let Some(from) = &job.from
        && !from.is_file()
    {
        return Err(Error::new(
            Kind::Input,
            format!("--from {}: no such file", from.display()),
        ));
    }
    match item.kind {
        ItemKind::Broden => fetch_dataset(job, item, progress),
        ItemKind::Weights => fetch_weights(job, item, progress),
    }
}

/// The checkpoints of `given`, where a name that is no file and that the
/// registry knows as weights is fetched (or found in PyTorch's checkpoint
/// folder) first. `model` is the architecture the job names.
pub fn resolve_weights(
    given: &[PathBuf],
    model: &str,
    sources: &Sources,
    progress: &mut dyn Progress,
) -> Result<Vec<PathBuf>> {
    let mut registry = None;
    let mut out = Vec::with_capacity(given.len());
    for path in given {
        let text = path.to_string_lossy();
        let plain_name = !path.exists()
            && path.components().count() == 1
            && !text.contains(['*', '?', '[', '.']);
        if !plain_name {
            out.push(path.clone());
            continue;
        }
        let registry = match &mut registry {
            Some(r) => r,
            none => {
                sources.given_mirrors()?;
                none.insert(sources.registry()?)
            }
        };
        match registry.get(&text) {
            Ok(item) if item.kind == ItemKind::Weights => {
                if let Some(arch) = &item.arch
                    && !model.eq_ignore_ascii_case("auto")
                    && !model.eq_ignore_ascii_case(arch)
                {
                    return Err(Error::usage(format!(
                        "--weights {text} is a {arch} checkpoint, but --model says {model}"
                    )));
                }
                let job = FetchJob {
                    name: text.into_owned(),
                    to: None,
                    from: None,
                    sources: sources.clone(),
                };
                out.push(fetch_weights(&job, item, progress)?);
            }
            Ok(_) => {
                return Err(Error::usage(format!(
                    "--weights {text} is a dataset: `netdissect fetch {text}` installs it for --dataset"
                )));
            }
            // Not a name: left to the file checks, which say so.
            Err(_) => out.push(path.clone()),
        }
    }
    Ok(out)
}

fn fetch_dataset(job: &FetchJob, item: &Item, progress: &mut dyn Progress) -> Result<PathBuf> {
    let to = job.to.clone().unwrap_or_else(|| PathBuf::from("."));
    let dest = to.join(&job.name);
    let (_lock, expect) = claim(&to, item, &dest)?;
    // A dataset this command installed has its digest recorded beside it
    // (the last step before it takes its name).
    let recorded = fetch::read_recorded_digest(&dest).map_err(fetch_error)?;
    if dest.join("index.csv").is_file() && recorded.is_some() {
        progress.note(&format!("{} is already there", dest.display()));
        return Ok(dest);
    }
    if std::fs::symlink_metadata(&dest).is_ok() {
        return Err(fetch_error(FetchError::Exists { path: dest }));
    }
    let zip = to.join(&item.file);
    let digest = match &job.from {
        Some(from) => check_given(from, &expect)?,
        // A zip takes its name only once checked: one left by a run that
        // failed to unpack it (a full disk) is used again.
        None => match zip.is_file().then(|| expect.check(&zip)) {
            Some(Ok(digest)) => {
                progress.note(&format!("{}: downloaded before, used again", zip.display()));
                digest
            }
            failed => {
                if failed.is_some() {
                    store::remove(&zip).map_err(|e| Error::context(Kind::Run, zip.display(), e))?;
                }
                download(job, item, &zip, &expect, &mut |_| Ok(()), progress)?
            }
        },
    };
    let source = job.from.as_deref().unwrap_or(&zip);
    let mut check = |root: &Path| {
        check_broden(root)?;
        // The record is the mark of a finished install: written once the
        // dataset passed, before it takes its name.
        fetch::record_digest(&dest, &item.file, &digest).map_err(|e| e.to_string())
    };
    if let Err(e) = fetch::unpack_zip(source, &dest, &mut check, progress) {
        let _ = store::remove(&fetch::digest_record_path(&dest));
        if job.from.is_some() {
            return Err(fetch_error(e));
        }
        // A zip that is no dataset goes; one that a full disk stopped
        // stays for the next run.
        if e.is_input() {
            let _ = store::remove(&zip);
            return Err(fetch_error(e));
        }
        return Err(Error::new(
            Kind::Run,
            format!(
                "{}: the download is kept in {}: run the same command again once the cause is fixed",
                chain(&e),
                zip.display()
            ),
        ));
    }
    if item.sha256.is_none() {
        noted(item, &digest, &dest, progress);
    }
    if job.from.is_none() {
        store::remove(&zip).map_err(|e| Error::context(Kind::Run, zip.display(), e))?;
    }
    Ok(dest)
}

fn fetch_weights(job: &FetchJob, item: &Item, progress: &mut dyn Progress) -> Result<PathBuf> {
    // Before any download: an architecture the zoo does not know.
    let arch = match &item.arch {
        Some(arch) => Some(arch.parse::<ArchChoice>().map_err(|e| {
            Error::new(
                Kind::Input,
                format!("registry item `{}`: `arch`: {}", job.name, chain(&e)),
            )
        })?),
        None => None,
    };
    let dir = match &job.to {
        Some(dir) => dir.clone(),
        None => fetch::torch_checkpoints_dir().ok_or_else(|| {
            Error::usage("no home folder to find PyTorch's checkpoint folder in: set TORCH_HOME")
        })?,
    };
    let dest = dir.join(&item.file);
    let (_lock, expect) = claim(&dir, item, &dest)?;
    if dest.is_file() {
        let digest = expect.check(&dest).map_err(|e| {
            Error::new(
                Kind::Input,
                format!(
                    "{e}: it is not the file `{}` names; remove it to fetch it again",
                    job.name
                ),
            )
        })?;
        if !expect.has_digest() {
            record(&dest, item, &digest, progress)?;
        }
        return Ok(dest);
    }
    let mut check = |path: &Path| match arch {
        Some(arch) => check_weights(path, arch).map_err(|e| {
            format!(
                "does not load as {}: {e}",
                item.arch.as_deref().unwrap_or("")
            )
        }),
        None => Ok(()),
    };
    let digest = match &job.from {
        Some(from) => {
            let digest = check_given(from, &expect)?;
            check(from)
                .map_err(|e| Error::new(Kind::Input, format!("--from {}: {e}", from.display())))?;
            copy_whole(from, &dest)?;
            digest
        }
        None => download(job, item, &dest, &expect, &mut check, progress)?,
    };
    if !expect.has_digest() {
        record(&dest, item, &digest, progress)?;
    }
    Ok(dest)
}

/// Creates `dir` and takes its lock (held while the returned file lives:
/// shards of one run on a shared folder fetch an item once); then what
/// `dest`, the item installed there, must be.
fn claim(dir: &Path, item: &Item, dest: &Path) -> Result<(std::fs::File, Expect)> {
    store::create_dir_all(dir).map_err(|e| Error::context(Kind::Run, dir.display(), e))?;
    let lock = lock(dir)?;
    let hash_prefix = item.hash_prefix;
    let expect = Expect::of(
        item.size,
        item.sha256.as_deref(),
        &item.file,
        hash_prefix,
        dest,
    )
    .map_err(fetch_error)?;
    Ok((lock, expect))
}

/// Holds an exclusive lock on the folder `dir` until dropped: one process
/// at a time downloads and installs into it (the shards of a sharded run
/// on a shared folder); the others then find the item installed. Where a
/// folder cannot be opened as a file (Windows), a lock file in it.
fn lock(dir: &Path) -> Result<std::fs::File> {
    let opened = if cfg!(unix) {
        std::fs::File::open(dir)
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".netdissect-fetch.lock"))
    };
    let file = opened.map_err(|e| Error::context(Kind::Run, dir.display(), e))?;
    file.lock()
        .map_err(|e| Error::context(Kind::Run, format!("locking {}", dir.display()), e))?;
    Ok(file)
}

/// Downloads `item` to `dest` from the job's mirrors, then the item's;
/// `check` sees the file before it takes its name.
fn download(
    job: &FetchJob,
    item: &Item,
    dest: &Path,
    expect: &Expect,
    check: &mut dyn FnMut(&Path) -> std::result::Result<(), String>,
    progress: &mut dyn Progress,
) -> Result<String> {
    let fetcher = Fetcher::new(Retry::default());
    let mirrors = job.sources.mirrors(item)?;
    (fetcher.download(&item.file, &mirrors, dest, expect, check, progress)).map_err(fetch_error)
}

/// Checks the user's own copy of a file against the registry.
fn check_given(from: &Path, expect: &Expect) -> Result<String> {
    expect.check(from).map_err(|e| {
        Error::new(
            Kind::Input,
            format!("--from: {e}: it is not the registry's file"),
        )
    })
}

/// Copies `from` to `dest` under a temporary name, synced, then renamed.
fn copy_whole(from: &Path, dest: &Path) -> Result<()> {
    let tmp = store::with_suffix(dest, ".part");
    let copied = std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| store::rename(&tmp, dest));
    copied.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::context(
            Kind::Run,
            format!("copying {} to {}", from.display(), dest.display()),
            e,
        )
    })
}

/// Records the first verified download's digest beside what it installed.
fn record(installed: &Path, item: &Item, digest: &str, progress: &mut dyn Progress) -> Result<()> {
    fetch::record_digest(installed, &item.file, digest).map_err(fetch_error)?;
    noted(item, digest, installed, progress);
    Ok(())
}

fn noted(item: &Item, digest: &str, installed: &Path, progress: &mut dyn Progress) {
    progress.note(&format!(
        "{}: SHA-256 {digest} (the registry records none): written to {}; later fetches are checked against it",
        item.file,
        fetch::digest_record_path(installed).display()
    ));
}

/// The checks of an unpacked Broden dataset: it opens (index, categories,
/// labels, every category's file, every file the index names) and a
/// sample of its images and masks decodes.
fn check_broden(root: &Path) -> std::result::Result<(), String> {
    let mut ds = Dataset::open(root, &DatasetOptions::default()).map_err(|e| chain(&e))?;
    if ds.images.is_empty() {
        return Err("index.csv lists no images".into());
    }
    if ds.labels.len() < 2 {
        return Err("label.csv lists no labels".into());
    }
    const SAMPLE: usize = 32;
    let n = ds.images.len();
    let step = n.div_ceil(SAMPLE).max(1);
    ds.images = ds.images.iter().step_by(step).cloned().collect();
    crate::decode_all(&ds)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether the checkpoint at `path` loads as `choice`.
fn check_weights(path: &Path, choice: ArchChoice) -> std::result::Result<(), String> {
    let device = models::gpu::cpu_device();
    Model::load(path, choice, &device)
        .map(|_| ())
        .map_err(|e| chain(&e))
}

/// A fetch error with the kind of who can fix it.
fn fetch_error(e: FetchError) -> Error {
    if e.is_input() {
        Error::input(e)
    } else {
        Error::run(e)
    }
}
