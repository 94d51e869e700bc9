//! Which configurations a benchmark runs: sizes, models, layers, backends
//! and cache modes, as jobs a child process can decode.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::BenchArgs;

/// Which sizes and models to run.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Plan {
    planted_sizes: Vec<usize>,
    resnet_sizes: Vec<usize>,
    backends: Vec<Backend>,
    batch_size: usize,
    baselines: bool,
    quick: bool,
}

impl Plan {
    /// The plan `args` ask for, with the defaults filled in and checked.
    pub(super) fn from_args(args: &BenchArgs) -> Result<Plan> {
        let (planted, resnet) = if args.quick {
            (vec![20, 40, 80], vec![8, 16])
        } else {
            (vec![40, 80, 160], vec![16, 32, 64])
        };
        let planted_sizes = args.sizes.clone().unwrap_or(planted);
        let mut resnet_sizes = args.resnet_sizes.clone().unwrap_or(resnet);
        resnet_sizes.retain(|&n| n > 0);
        if planted_sizes.contains(&0) {
            bail!("--sizes: every size must be at least 1 image, got {planted_sizes:?}");
        }
        if args.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let backends = args
            .backends
            .iter()
            .map(|name| match name.as_str() {
                "wgpu" => Ok(Backend::Wgpu),
                "cpu" => Ok(Backend::Cpu),
                other => bail!("--backends: unknown backend `{other}` (wgpu, cpu)"),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan {
            planted_sizes,
            resnet_sizes,
            backends,
            batch_size: args.batch_size,
            baselines: !args.no_baselines,
            quick: args.quick,
        })
    }

    /// The largest dataset any job reads.
    pub(super) fn max_images(&self) -> usize {
        self.planted_sizes
            .iter()
            .chain(&self.resnet_sizes)
            .copied()
            .max()
            .unwrap_or(1)
    }

    /// Every configuration, cheapest first so a quick look needs no wait.
    pub(super) fn jobs(&self, data: &Path) -> Vec<Job> {
        let dissect = |model, layers: &[&str], images, recompute| Job::Dissect {
            backend: Backend::Wgpu,
            model,
            layers: layers.iter().map(|s| s.to_string()).collect(),
            images,
            batch_size: self.batch_size,
            dataset: data.to_path_buf(),
            recompute,
        };
        let mut jobs = Vec::new();
        // Both cache modes for the cheap model: cached activations grow with
        // the data, the re-running fallback keeps memory flat.
        for recompute in [false, true] {
            for &n in &self.planted_sizes {
                jobs.push(dissect(
                    ModelKind::Planted,
                    &["color4", "color16"],
                    n,
                    recompute,
                ));
            }
        }
        for &n in &self.resnet_sizes {
            jobs.push(dissect(
                ModelKind::ResNet18,
                &["layer3", "layer4"],
                n,
                false,
            ));
        }
        // Layer width: 256 units at 14x14 against 512 units at 7x7, same images.
        if let Some(&n) = self.resnet_sizes.get(self.resnet_sizes.len() / 2) {
            for layer in ["layer3", "layer4"] {
                jobs.push(dissect(ModelKind::ResNet18, &[layer], n, false));
            }
        }
        // The whole engine on Burn's CPU backend, for the same configurations
        // (both cache modes: on the CPU the cache is host memory).
        let on_cpu: Vec<Job> = jobs
            .iter()
            .filter_map(|job| match job {
                Job::Dissect { layers, .. } if layers.len() == 2 => {
                    let mut job = job.clone();
                    if let Job::Dissect { backend, .. } = &mut job {
                        *backend = Backend::Cpu;
                    }
                    Some(job)
                }
                _ => None,
            })
            .collect();
        jobs.extend(on_cpu);
        jobs.retain(|job| match job {
            Job::Dissect { backend, .. } => self.backends.contains(backend),
            Job::Baselines { .. } => true,
        });
        if self.baselines {
            jobs.push(Job::Baselines {
                quick: self.quick,
                batch_size: self.batch_size,
            });
        }
        jobs
    }
}

/// Which network a dissection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ModelKind {
    Planted,
    ResNet18,
}

impl ModelKind {
    /// The model's name in the progress lines.
    fn name(self) -> &'static str {
        match self {
            ModelKind::Planted => "planted-colors",
            ModelKind::ResNet18 => "resnet18 (synthetic)",
        }
    }
}

/// Where the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Backend {
    /// Burn's wgpu backend and the WGSL kernels.
    Wgpu,
    /// Burn's flex CPU backend and the CPU kernels.
    Cpu,
}

impl Backend {
    /// The backend's name in progress lines and tables.
    pub(super) fn name(self) -> &'static str {
        match self {
            Backend::Wgpu => "wgpu",
            Backend::Cpu => "cpu",
        }
    }
}

/// One configuration, run in a child process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Job {
    Dissect {
        backend: Backend,
        model: ModelKind,
        layers: Vec<String>,
        images: usize,
        batch_size: usize,
        dataset: PathBuf,
        /// Force the re-running fallback (no activations kept between passes).
        recompute: bool,
    },
    Baselines {
        quick: bool,
        batch_size: usize,
    },
}

impl Job {
    /// One line naming the job, for progress and failure messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Job::Dissect {
                backend,
                model,
                layers,
                images,
                recompute,
                ..
            } => format!(
                "{} {} {} on {images} images{}",
                backend.name(),
                model.name(),
                layers.join("+"),
                if *recompute { " (recompute)" } else { "" }
            ),
            Job::Baselines { .. } => "CPU vs GPU baselines".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_plan_covers_sizes_widths_and_baselines() {
        let args = BenchArgs {
            sizes: None,
            resnet_sizes: None,
            quick: true,
            batch_size: 8,
            no_baselines: false,
            backends: vec!["wgpu".into(), "cpu".into()],
            out: PathBuf::from("x"),
            in_process: false,
            child: None,
            child_out: None,
        };
        let plan = Plan::from_args(&args).expect("plan");
        assert_eq!(plan.max_images(), 80);
        let jobs = plan.jobs(Path::new("d"));
        // 3 planted sizes x 2 modes, 2 ResNet sizes, 2 single-layer runs,
        // the 8 two-layer runs again on the CPU, baselines.
        assert_eq!(jobs.len(), 6 + 2 + 2 + 8 + 1);
        let cpu = jobs
            .iter()
            .filter(|j| {
                matches!(
                    j,
                    Job::Dissect {
                        backend: Backend::Cpu,
                        recompute: false,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(cpu, 5);
        assert!(matches!(jobs.last(), Some(Job::Baselines { .. })));
        let single: Vec<_> = jobs
            .iter()
            .filter_map(|j| match j {
                Job::Dissect { layers, images, .. } if layers.len() == 1 => {
                    Some((layers[0].as_str(), *images))
                }
                _ => None,
            })
            .collect();
        assert_eq!(single, [("layer3", 16), ("layer4", 16)]);
        let json = serde_json::to_string(&jobs[0]).expect("encode");
        assert_eq!(serde_json::from_str::<Job>(&json).expect("decode"), jobs[0]);

        let no_resnet = BenchArgs {
            resnet_sizes: Some(vec![0]),
            no_baselines: true,
            ..args.clone()
        };
        let jobs = Plan::from_args(&no_resnet)
            .expect("plan")
            .jobs(Path::new("d"));
        assert_eq!(jobs.len(), 6 + 6);
        let cpu_only = BenchArgs {
            backends: vec!["cpu".into()],
            ..no_resnet.clone()
        };
        let jobs = Plan::from_args(&cpu_only)
            .expect("plan")
            .jobs(Path::new("d"));
        assert_eq!(jobs.len(), 6);
        assert!(jobs.iter().all(|j| matches!(
            j,
            Job::Dissect {
                backend: Backend::Cpu,
                ..
            }
        )));
        let unknown = BenchArgs {
            backends: vec!["tpu".into()],
            ..no_resnet
        };
        assert!(Plan::from_args(&unknown).is_err());
        let zero = BenchArgs {
            sizes: Some(vec![10, 0]),
            ..args
        };
        assert!(Plan::from_args(&zero).is_err());
    }
}
