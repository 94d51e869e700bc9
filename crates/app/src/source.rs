//! The network a job dissects: a zoo model with its checkpoints, the
//! planted demo network, or recorded activations (files or arrays in
//! memory); and the network loaded, with the input it expects.

use std::path::{Path, PathBuf};

use broden::Preprocess;
use dissect::planted::PlantedColors;
use dissect::recorded::{RecordedArray, TokenLayout};
use dissect::{Dissector, Network};
use models::{ArchChoice, Model};

use crate::error::{Error, Result};
use crate::events::Events;

/// The name of the planted demo network (`dissect::planted`).
pub const PLANTED: &str = "planted-colors";

/// Where the activations come from.
#[derive(Debug)]
pub enum Source<'a> {
    /// A zoo network by name (`resnet18`, `auto`, ...) or [`PLANTED`], with
    /// its checkpoints: paths, or patterns matching several.
    Model { name: String, weights: Vec<PathBuf> },
    /// Recorded activations: one `LAYER.npy` per layer in `dir`.
    Recorded { dir: PathBuf, tokens: TokenLayout },
    /// Recorded activations in memory, one array per layer in layer order.
    Arrays {
        arrays: Vec<RecordedArray<'a>>,
        tokens: TokenLayout,
    },
}

/// A zoo architecture, or `None` for the planted demo network.
pub(crate) type Choice = Option<ArchChoice>;

/// The architecture `name` stands for, checked against `layers`.
pub(crate) fn choose(name: &str, layers: &[String]) -> Result<Choice> {
    let choice = match name {
        PLANTED => None,
        name => Some(name.parse::<ArchChoice>().map_err(Error::input)?),
    };
    match choice {
        Some(ArchChoice::Named(arch)) => {
            for layer in layers {
                arch.tap(layer).map_err(Error::input)?;
            }
        }
        None => {
            let names = PlantedColors::layer_names();
            if let Some(layer) = layers.iter().find(|l| !names.contains(&l.as_str())) {
                return Err(Error::new(
                    crate::Kind::Input,
                    format!(
                        "{PLANTED} has no layer `{layer}`; valid layers: {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        Some(ArchChoice::Auto) => {}
    }
    Ok(choice)
}

/// A loaded network: a zoo model (which can also explain its
/// predictions), or any other.
pub(crate) enum Net<'a> {
    Zoo(Box<Model>),
    Other(Box<dyn Network + 'a>),
}

/// A network ready to dissect and the input it expects.
pub(crate) struct Loaded<'a> {
    pub net: Net<'a>,
    pub preprocess: Preprocess,
    /// Its layers have no receptive fields: half-pixel alignment only.
    pub half_pixel: bool,
    /// Recorded activation files, for a sharded run's digest.
    pub activations: Vec<PathBuf>,
}

impl Loaded<'_> {
    pub(crate) fn zoo(model: Model) -> Self {
        Self {
            preprocess: model.arch().default_preprocess_spec(),
            net: Net::Zoo(Box::new(model)),
            half_pixel: false,
            activations: Vec::new(),
        }
    }

    /// The network to dissect.
    pub fn network(&self) -> &dyn Network {
        match &self.net {
            Net::Zoo(model) => model.as_ref(),
            Net::Other(net) => net.as_ref(),
        }
    }

    /// The zoo model, when it is one.
    pub fn model(&self) -> Option<&Model> {
        match &self.net {
            Net::Zoo(model) => Some(model.as_ref()),
            Net::Other(_) => None,
        }
    }
}

/// The network of `choice` with `weights`.
pub(crate) fn load(
    choice: Choice,
    weights: Option<&Path>,
    dissector: &Dissector,
    events: &mut dyn Events,
) -> Result<Loaded<'static>> {
    Ok(match (choice, weights) {
        (None, _) => Loaded {
            net: Net::Other(Box::new(PlantedColors::new(dissector.device()))),
            preprocess: PlantedColors::preprocess(),
            half_pixel: false,
            activations: Vec::new(),
        },
        (Some(choice), Some(path)) => {
            Loaded::zoo(Model::load(path, choice, dissector.device()).map_err(Error::input)?)
        }
        (Some(ArchChoice::Named(arch)), None) => {
            events.note("warning: no --weights given: using deterministic untrained weights");
            Loaded::zoo(Model::synthetic(arch, 1000, dissector.device()).map_err(Error::input)?)
        }
        (Some(ArchChoice::Auto), None) => {
            return Err(Error::usage("--model auto needs --weights"));
        }
    })
}

/// The checkpoints of `given`: each path as given, or, where it does not
/// exist and holds a wildcard, the files matching it in name order. A
/// missing file, a pattern matching nothing, or two checkpoints with one
/// folder name are errors.
pub fn checkpoints(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let input = |m: String| Error::new(crate::Kind::Input, m);
    let mut out = Vec::new();
    for path in given {
        let text = path.to_string_lossy();
        if !path.exists() && text.contains(['*', '?', '[']) {
            let mut matched: Vec<PathBuf> = glob::glob(&text)
                .map_err(|e| input(format!("--weights {text}: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if matched.is_empty() {
                return Err(input(format!("--weights {text} matches no file")));
            }
            matched.sort();
            out.extend(matched);
        } else if path.is_file() {
            out.push(path.clone());
        } else {
            return Err(input(format!(
                "{}: weights file not found (nor the name of a published checkpoint: `netdissect models` lists them)",
                path.display()
            )));
        }
    }
    let mut stems = std::collections::BTreeMap::new();
    for w in &out {
        if let Some(first) = stems.insert(checkpoint_stem(w), w) {
            return Err(input(format!(
                "{} and {} would share the output folder {}: give checkpoints distinct names",
                first.display(),
                w.display(),
                checkpoint_stem(w)
            )));
        }
    }
    Ok(out)
}

/// The folder name of a checkpoint's results: its file name without
/// `.safetensors`, `.pth.tar`, `.pth` or `.pt`.
pub fn checkpoint_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "weights".into());
    [".safetensors", ".pth.tar", ".pth", ".pt", ".tar"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .filter(|s| !s.is_empty())
        .map_or(name.clone(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_drop_checkpoint_extensions() {
        for (path, stem) in [
            ("a/epoch-3.pth", "epoch-3"),
            ("b.pth.tar", "b"),
            ("c.safetensors", "c"),
            ("d.pt", "d"),
            (".pth", ".pth"),
            ("plain", "plain"),
        ] {
            assert_eq!(checkpoint_stem(Path::new(path)), stem, "{path}");
        }
    }

    #[test]
    fn patterns_expand_in_name_order_and_clashes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["e2.pth", "e10.pth", "e1.pth"] {
            std::fs::write(tmp.path().join(name), b"x").unwrap();
        }
        let found = checkpoints(&[tmp.path().join("e*.pth")]).unwrap();
        let names: Vec<_> = (found.iter())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["e1.pth", "e10.pth", "e2.pth"]);
        let none = checkpoints(&[tmp.path().join("z*.pth")]).unwrap_err();
        assert!(none.to_string().contains("matches no file"), "{none}");
        std::fs::write(tmp.path().join("e1.pt"), b"x").unwrap();
        let clash = checkpoints(&[tmp.path().join("e1.pt*")]).unwrap_err();
        assert!(
            clash.to_string().contains("share the output folder e1"),
            "{clash}"
        );
    }

    #[test]
    fn layer_names_are_checked_by_architecture() {
        assert!(choose(PLANTED, &["color4".into()]).unwrap().is_none());
        let e = choose(PLANTED, &["nope".into()]).unwrap_err();
        assert!(e.to_string().contains("has no layer `nope`"), "{e}");
        assert!(choose("resnet18", &["layer9".into()]).is_err());
        assert!(choose("resnet18", &["layer4".into()]).is_ok());
    }
}
