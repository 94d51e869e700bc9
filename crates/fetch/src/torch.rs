//! Where PyTorch keeps the checkpoints it downloads, so that a file torch
//! already fetched is used as it is, and ours are torch's to reuse.

use std::path::PathBuf;

/// `$TORCH_HOME/hub/checkpoints`, where `$TORCH_HOME` defaults to
/// `$XDG_CACHE_HOME/torch`, and that to `~/.cache/torch`, as in
/// `torch.hub.get_dir()`. `None` when no home folder is known.
pub fn torch_checkpoints_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let torch_home = match var("TORCH_HOME") {
        Some(home) => PathBuf::from(home),
        None => {
            let cache = match var("XDG_CACHE_HOME") {
                Some(cache) => PathBuf::from(cache),
                None => PathBuf::from(var("HOME").or_else(|| var("USERPROFILE"))?).join(".cache"),
            };
            cache.join("torch")
        }
    };
    Some(torch_home.join("hub").join("checkpoints"))
}
