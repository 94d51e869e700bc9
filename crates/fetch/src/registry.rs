//! The registry: every file `netdissect fetch` and `--weights NAME` know,
//! by name. The built-in one is `registry.json` beside this crate's
//! `Cargo.toml`, compiled in; [`Registry::add_file`] adds or overrides
//! items from a file of the same form:
//!
//! ```json
//! {"items": {"NAME": {"file": "x.zip", "size": 123, "sha256": "...",
//!   "mirrors": ["http://host/path/"], "unpack": "zip", "kind": "broden"}}}
//! ```
//!
//! `size` and `sha256` are optional (without a digest the first verified
//! download's is recorded beside the file); `arch` names the zoo
//! architecture of a `weights` item; `about` is a line for listings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::FetchError;

/// What an item is, which decides the checks after it is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// A Broden-format dataset in a zip: its structure is checked.
    Broden,
    /// A checkpoint: it must load as its architecture.
    Weights,
}

/// How a downloaded file becomes what is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unpack {
    /// Used as it is.
    #[default]
    None,
    /// Unpacked into a folder.
    Zip,
}

/// One fetchable file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// The file's name, under each mirror and on disk.
    pub file: String,
    /// Its size in bytes, where known.
    #[serde(default)]
    pub size: Option<u64>,
    /// Its SHA-256 (hex), where published.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The file name carries the first hex digits of its SHA-256 after its
    /// last `-` (torchvision's `resnet18-f37072fd.pth`), checked as
    /// `torch.hub` checks them.
    #[serde(default)]
    pub hash_prefix: bool,
    /// Base URLs under which `file` is fetched, tried in order.
    pub mirrors: Vec<String>,
    #[serde(default)]
    pub unpack: Unpack,
    pub kind: ItemKind,
    /// The zoo architecture of a `weights` item.
    #[serde(default)]
    pub arch: Option<String>,
    /// One line for listings.
    #[serde(default)]
    pub about: Option<String>,
}

impl Item {
    /// How the item's file is checked, for listings and the README.
    pub fn checked_by(&self) -> &'static str {
        if self.sha256.is_some() {
            "SHA-256 in the registry"
        } else if self.hash_prefix && crate::digest::name_prefix(&self.file).is_some() {
            "SHA-256 prefix in its name, as torch.hub checks it"
        } else {
            "SHA-256 recorded at its first download"
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    items: BTreeMap<String, Item>,
}

/// Items by name, with where each came from.
#[derive(Debug, Clone)]
pub struct Registry {
    items: BTreeMap<String, (Item, String)>,
}

const BUILT_IN: &str = include_str!("../registry.json");

impl Registry {
    /// The registry compiled into this build.
    pub fn built_in() -> Registry {
        let mut registry = Registry {
            items: BTreeMap::new(),
        };
        registry
            .add_text(BUILT_IN, Path::new("(built-in registry)"))
            .expect("the built-in registry is valid (a test checks it)");
        registry
    }

    /// Adds the items of the registry file `path`, replacing items of the
    /// same name.
    pub fn add_file(&mut self, path: &Path) -> Result<(), FetchError> {
        let text = std::fs::read_to_string(path).map_err(|e| FetchError::Registry {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        self.add_text(&text, path)
    }

    fn add_text(&mut self, text: &str, path: &Path) -> Result<(), FetchError> {
        let bad = |message: String| FetchError::Registry {
            path: path.to_path_buf(),
            message,
        };
        let parsed: RegistryFile = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        for (name, mut item) in parsed.items {
            check_item(&name, &mut item).map_err(|m| bad(format!("item `{name}`: {m}")))?;
            self.items.insert(name, (item, path.display().to_string()));
        }
        Ok(())
    }

    /// The item called `name`.
    pub fn get(&self, name: &str) -> Result<&Item, FetchError> {
        self.items
            .get(name)
            .map(|(item, _)| item)
            .ok_or_else(|| FetchError::Unknown {
                name: name.to_string(),
                known: self.items.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Whether the registry holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.items.contains_key(name)
    }

    /// Every item in name order, with the registry it came from.
    pub fn items(&self) -> impl Iterator<Item = (&str, &Item, &str)> {
        (self.items.iter()).map(|(name, (item, from))| (name.as_str(), item, from.as_str()))
    }

    /// The registry files of the environment variable
    /// `NETDISSECT_REGISTRY` (separated as `PATH` is), then `files`, added
    /// to the built-in one.
    pub fn with_files(files: &[PathBuf]) -> Result<Registry, FetchError> {
        let mut registry = Registry::built_in();
        let from_env: Vec<PathBuf> = std::env::var_os("NETDISSECT_REGISTRY")
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for file in from_env.iter().chain(files) {
            registry.add_file(file)?;
        }
        Ok(registry)
    }
}

/// Validates `item` and normalises its digest to lower case.
fn check_item(name: &str, item: &mut Item) -> Result<(), String> {
    let word = |w: &str, extra: &[u8]| {
        !w.is_empty()
            && !w.starts_with('.')
            && (w.bytes())
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b) || extra.contains(&b))
    };
    if !word(name, b"") {
        return Err("a name is letters, digits, `_` and `-`".into());
    }
    let file = &item.file;
    if !word(file, b".+") {
        return Err(format!(
            "`file` must be a plain file name of letters, digits, `.`, `_`, `-` and `+`, not `{file}`"
        ));
    }
    if file == name {
        return Err("`file` must differ from the item's name (a dataset unpacks into a folder of that name)".into());
    }
    if let Some(digest) = &mut item.sha256 {
        *digest = digest.to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`sha256` must be 64 hex digits, not `{digest}`"));
        }
    }
    if item.mirrors.is_empty() {
        return Err("`mirrors` lists no URL".into());
    }
    if let Some(m) =
        (item.mirrors.iter()).find(|m| !(m.starts_with("http://") || m.starts_with("https://")))
    {
        return Err(format!("mirror `{m}` is not an http:// or https:// URL"));
    }
    match (item.kind, item.unpack) {
        (ItemKind::Broden, Unpack::None) => {
            Err("a `broden` item unpacks: `\"unpack\": \"zip\"`".into())
        }
        (ItemKind::Weights, Unpack::Zip) => {
            Err("a `weights` item is one file: drop `unpack`".into())
        }
        _ => Ok(()),
    }
}

/// Fails unless `mirror` is an `http://` or `https://` URL with a host.
pub fn check_mirror(mirror: &str) -> Result<(), String> {
    let rest = (mirror.strip_prefix("http://"))
        .or_else(|| mirror.strip_prefix("https://"))
        .ok_or_else(|| format!("mirror `{mirror}` is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || mirror.contains(char::is_whitespace) {
        return Err(format!("mirror `{mirror}` names no host"));
    }
    Ok(())
}

/// The URL of `file` under the base URL `mirror` (a `/` added between
/// them where the base has none).
pub fn mirror_url(mirror: &str, file: &str) -> String {
    if mirror.ends_with('/') {
        format!("{mirror}{file}")
    } else {
        format!("{mirror}/{file}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_registry_is_valid_and_names_what_the_readme_promises() {
        let r = Registry::built_in();
        for name in ["broden1_224", "broden1_227", "broden1_384"] {
            let item = r.get(name).unwrap();
            assert_eq!(item.kind, ItemKind::Broden);
            assert_eq!(item.file, format!("{name}.zip"));
        }
        let resnet = r.get("resnet18_imagenet").unwrap();
        assert_eq!(resnet.kind, ItemKind::Weights);
        assert_eq!(resnet.arch.as_deref(), Some("resnet18"));
        assert!(r.get("resnet18_places365").is_ok());
        // Every weights item names its architecture.
        for (name, item, _) in r.items() {
            if item.kind == ItemKind::Weights {
                assert!(item.arch.is_some(), "{name}");
            }
        }
    }

    #[test]
    fn a_file_adds_and_overrides_items() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.json");
        std::fs::write(
            &path,
            r#"{"items": {"broden1_224": {"file": "broden1_224.zip", "size": 5,
                "sha256": "AB00000000000000000000000000000000000000000000000000000000000000",
                "mirrors": ["http://127.0.0.1:1/data"], "unpack": "zip", "kind": "broden"},
              "mine": {"file": "m.pth", "mirrors": ["https://h/"], "kind": "weights", "arch": "resnet18"}}}"#,
        )
        .unwrap();
        let mut r = Registry::built_in();
        r.add_file(&path).unwrap();
        let item = r.get("broden1_224").unwrap();
        assert_eq!(item.size, Some(5));
        assert!(
            item.sha256.as_deref().unwrap().starts_with("ab00"),
            "lower-cased"
        );
        assert_eq!(r.get("mine").unwrap().file, "m.pth");
        assert!(r.contains("resnet18_imagenet"), "the others stay");
    }

    #[test]
    fn bad_registries_name_the_file_and_the_item() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            (
                r#"{"items": {"a": {"file": "../x.zip", "mirrors": ["http://h/"], "unpack": "zip", "kind": "broden"}}}"#,
                "plain file name",
            ),
            (
                r#"{"items": {"a": {"file": "x.zip", "mirrors": [], "unpack": "zip", "kind": "broden"}}}"#,
                "lists no URL",
            ),
            (
                r#"{"items": {"a": {"file": "x.zip", "mirrors": ["ftp://h/"], "unpack": "zip", "kind": "broden"}}}"#,
                "not an http",
            ),
            (
                r#"{"items": {"a": {"file": "x.zip", "sha256": "12", "mirrors": ["http://h/"], "unpack": "zip", "kind": "broden"}}}"#,
                "64 hex digits",
            ),
            (
                r#"{"items": {"a": {"file": "x.zip", "mirrors": ["http://h/"], "kind": "broden"}}}"#,
                "unpacks",
            ),
            (
                r#"{"items": {"a": {"file": "x.zip", "mirrors": ["http://h/"], "kind": "dataset"}}}"#,
                "unknown variant",
            ),
            (
                r#"{"items": {"a": {"file": "x.zip", "mirror": ["http://h/"], "kind": "weights"}}}"#,
                "unknown field",
            ),
            ("{", "EOF"),
        ];
        for (i, (text, says)) in cases.iter().enumerate() {
            let path = tmp.path().join(format!("r{i}.json"));
            std::fs::write(&path, text).unwrap();
            let e = Registry::built_in().add_file(&path).unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(&path.display().to_string()), "{shown}");
            assert!(shown.contains(says), "{text}: {shown}");
        }
        let missing = Registry::built_in()
            .add_file(&tmp.path().join("none.json"))
            .unwrap_err();
        assert!(missing.to_string().contains("none.json"), "{missing}");
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = Registry::built_in().get("broden2").unwrap_err().to_string();
        assert!(e.contains("`broden2` is not in the registry"), "{e}");
        assert!(e.contains("broden1_224"), "{e}");
    }

    #[test]
    fn mirror_urls_join_with_one_slash() {
        assert_eq!(mirror_url("http://h/data/", "b.zip"), "http://h/data/b.zip");
        assert_eq!(mirror_url("http://h/data", "b.zip"), "http://h/data/b.zip");
    }
}
