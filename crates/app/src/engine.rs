//! Where a job runs: the backend asked for, turned into a
//! [`Dissector`] with its activation cache budget.

use std::path::Path;

use dissect::{Dissector, ErrorKind};

use crate::error::{Error, Kind, Result};
use crate::events::Events;

/// The backend asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The GPU when a hardware adapter exists, else the CPU: on a software
    /// adapter the CPU backend is far faster.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

/// The engine of a job.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineSpec {
    pub backend: Backend,
    /// A GPU adapter by its index in `netdissect devices`.
    pub device: Option<usize>,
    /// Activations kept between passes; `None`: the machine's default.
    pub cache_mib: Option<u64>,
}

impl EngineSpec {
    /// The engine of `backend` with the defaults.
    pub fn of(backend: Backend) -> Self {
        Self {
            backend,
            ..Self::default()
        }
    }

    /// The dissector, with its activation cache budget; both are noted.
    /// On the CPU backend the cache file lives in `cache_dir` (the folder
    /// that holds the results, whose disk then bounds it), else in the
    /// system's temporary folder.
    pub fn start(&self, events: &mut dyn Events, cache_dir: Option<&Path>) -> Result<Dissector> {
        let mut dissector = self.dissector(events)?;
        dissector.cache_dir = cache_dir.map(Path::to_path_buf);
        let cache_note = match self.cache_mib {
            Some(mib) => {
                dissector.cache_budget_bytes = mib.saturating_mul(1 << 20);
                "--cache-mib".to_string()
            }
            None => {
                let budget = dissector.default_cache_budget();
                dissector.cache_budget_bytes = budget.bytes;
                budget.why
            }
        };
        events.note(&format!("running on: {}", dissector.adapter_line()));
        events.note(&format!(
            "activation cache: {} MiB ({cache_note}); activations beyond it run the network \
             again, those before it are replayed",
            dissector.cache_budget_bytes >> 20
        ));
        Ok(dissector)
    }

    /// The dissector alone, its default cache budget kept.
    pub fn dissector(&self, events: &mut dyn Events) -> Result<Dissector> {
        if let Some(n) = self.device {
            if self.backend == Backend::Cpu {
                return Err(Error::usage(format!(
                    "--device {n} picks a GPU adapter: it does not go with --backend cpu"
                )));
            }
            return Dissector::on_adapter(n).map_err(|e| match e.kind() {
                ErrorKind::Usage => Error::from(e),
                _ => Error::new(Kind::Adapter, crate::error::chain(&e)),
            });
        }
        let gpu = match self.backend {
            Backend::Gpu => true,
            Backend::Cpu => false,
            Backend::Auto => hardware_present(events),
        };
        if gpu {
            Dissector::new().map_err(|e| {
                Error::context(
                    Kind::Adapter,
                    "no usable GPU adapter: on Linux without a GPU, install Mesa's software Vulkan driver (`apt-get install mesa-vulkan-drivers`), or use --backend cpu",
                    e,
                )
            })
        } else {
            Ok(Dissector::cpu())
        }
    }
}

/// Whether a hardware GPU adapter exists; when none does, says so.
fn hardware_present(events: &mut dyn Events) -> bool {
    let adapters = dissect::engine::adapters();
    let hardware = dissect::engine::has_hardware_adapter(&adapters);
    if !hardware {
        let found = if adapters.is_empty() {
            "none found".to_string()
        } else {
            (adapters.iter().map(|a| a.name.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        events.note(&format!(
            "note: no hardware GPU adapter ({found}): using the CPU backend (--backend gpu overrides)"
        ));
    }
    hardware
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_does_not_go_with_the_cpu() {
        let spec = EngineSpec {
            backend: Backend::Cpu,
            device: Some(0),
            cache_mib: None,
        };
        let e = spec.dissector(&mut crate::Silent).unwrap_err();
        assert_eq!(e.kind(), Kind::Usage);
        assert!(e.to_string().contains("--device 0"), "{e}");
    }

    #[test]
    fn the_cache_budget_is_noted() {
        let spec = EngineSpec {
            backend: Backend::Cpu,
            device: None,
            cache_mib: Some(3),
        };
        let mut events = crate::events::Recorded::default();
        let d = spec.start(&mut events, None).unwrap();
        assert_eq!(d.cache_budget_bytes, 3 << 20);
        // By default the disk that holds the results bounds the cache, and
        // the note says which folder and why.
        let tmp = tempfile::tempdir().unwrap();
        let spec = EngineSpec {
            cache_mib: None,
            ..spec
        };
        let mut by_disk = crate::events::Recorded::default();
        let d = spec.start(&mut by_disk, Some(tmp.path())).unwrap();
        assert_eq!(d.cache_dir.as_deref(), Some(tmp.path()));
        let note = by_disk
            .notes
            .iter()
            .find(|n| n.starts_with("activation cache:"));
        let note = note.expect("a note of the cache");
        assert!(note.contains(&tmp.path().display().to_string()), "{note}");
        assert!(
            events
                .notes
                .iter()
                .any(|n| n.starts_with("activation cache: 3 MiB (--cache-mib)")),
            "{:?}",
            events.notes
        );
    }
}
