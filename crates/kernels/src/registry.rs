//! The registry of WGSL shaders: every file in the top-level `shaders/` folder, embedded by name.
//!
//! Pipelines are built from these sources and cached per (shader, entry point) by [`crate::Gpu`];
//! a kernel is named by an enum of its shader's entry points ([`CountKernel::MarkLive`]), never
//! by a string.

/// Name of the smoke-test shader (doubles an array).
pub const SMOKE: &str = "smoke";
/// Name of the radix-select quantile shader.
pub const QUANTILE: &str = "quantile";
/// Name of the per-image maximum and top-k shader.
pub const TOPK: &str = "topk";
/// Name of the upsample-binarize-count shader.
pub const COUNT: &str = "count";
/// Name of the one-pass rank-select shader.
pub const SELECT: &str = "select";

/// The file of the shared key functions (not a shader of its own).
pub const KEYS_PART: &str = "keys.wgsl";
/// The file of the shared indirect-dispatch sizing (not a shader of its own).
pub const INDIRECT_PART: &str = "indirect.wgsl";

/// A shader made of the parts named first (files of `shaders/` that are not
/// shaders of their own, such as `keys.wgsl`, the order-preserving float
/// keys), then the file itself.
macro_rules! with_parts {
    ($($part:literal),+ ; $file:literal) => {
        concat!(
            $(include_str!(concat!("../../../shaders/", $part)), "\n",)+
            include_str!(concat!("../../../shaders/", $file))
        )
    };
}

/// Every shader, by name (its file is `shaders/<name>.wgsl`).
pub const SHADERS: &[(&str, &str)] = &[
    (SMOKE, include_str!("../../../shaders/smoke.wgsl")),
    (QUANTILE, with_parts!("keys.wgsl"; "quantile.wgsl")),
    (TOPK, with_parts!("keys.wgsl"; "topk.wgsl")),
    (COUNT, with_parts!("indirect.wgsl"; "count.wgsl")),
    (
        SELECT,
        with_parts!("keys.wgsl", "indirect.wgsl"; "select.wgsl"),
    ),
];

/// A compute entry point of a registered shader: what [`crate::Gpu::pipeline`] builds.
pub trait Kernel: Copy {
    /// The name of the shader the entry point is in.
    fn shader(self) -> &'static str;
    /// The entry point's function name in the WGSL.
    fn entry_point(self) -> &'static str;
}

/// Declares the entry points of one shader as an enum implementing [`Kernel`], with a list of
/// them all (for the test that checks them against the WGSL).
macro_rules! entry_points {
    ($(#[$doc:meta])* $name:ident in $shader:ident {
        $($(#[$variant_doc:meta])* $variant:ident => $entry:literal,)+
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_doc])* $variant,)+
        }

        impl $name {
            /// Every entry point of the shader.
            pub const ALL: &[$name] = &[$($name::$variant,)+];
        }

        impl Kernel for $name {
            fn shader(self) -> &'static str {
                $shader
            }

            fn entry_point(self) -> &'static str {
                match self {
                    $($name::$variant => $entry,)+
                }
            }
        }
    };
}

entry_points! {
    /// The entry points of the smoke-test shader.
    SmokeKernel in SMOKE {
        /// Doubles every value of its buffer.
        Double => "double",
    }
}

entry_points! {
    /// The entry points of the radix-select quantile shader.
    QuantileKernel in QUANTILE {
        /// Histograms the next digit of the keys that share the digits chosen so far.
        Histogram => "histogram",
        /// Walks each unit's bins to the one holding the wanted rank, narrowing prefix and rank.
        SelectBin => "select_bin",
    }
}

entry_points! {
    /// The entry points of the per-image maximum and top-k shader.
    TopKernel in TOPK {
        /// The maximum of every (image, unit) map.
        ImageMax => "image_max",
        /// Merges a batch's maxima into each unit's top k.
        MergeTop => "merge_top",
    }
}

entry_points! {
    /// The entry points of the upsample-binarize-count shader, in the order a batch runs them.
    CountKernel in COUNT {
        /// Marks each map's live rows and columns, and lists the live maps.
        MarkLive => "mark_live",
        /// Sizes `count_pixels`' indirect dispatch to the live maps.
        LiveDispatch => "live_dispatch",
        /// Counts the batch intersections and masked pixels of the live maps.
        CountPixels => "count_pixels",
        /// Folds the batch intersections into the u64 totals.
        FoldMatrix => "fold_matrix",
        /// Folds the masked pixels into unit pixels, unions and image-level intersections.
        FoldUnits => "fold_units",
        /// Folds the masked pixels per block and their products into the moments.
        FoldGram => "fold_gram",
        /// Test hook: writes every bilinear sample.
        UpsampleProbe => "upsample_probe",
    }
}

entry_points! {
    /// The entry points of the one-pass rank-select shader.
    SelectKernel in SELECT {
        /// Appends the batch's keys above each unit's floor to its candidates.
        Collect => "collect",
        /// Keeps a listed unit's r largest candidates and raises its floor (or writes its threshold).
        Compact => "compact",
        /// Sizes `compact`'s indirect dispatch to the units that need it.
        CompactDispatch => "compact_dispatch",
    }
}

/// The WGSL source of shader `name`, if registered.
pub fn source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Runs the smoke shader on `values` and returns them doubled (proves the device executes WGSL).
pub fn smoke(gpu: &crate::Gpu, values: &[f32]) -> Result<Vec<f32>, crate::KernelError> {
    let buffer = gpu.storage_init("smoke", values);
    let pipeline = gpu.pipeline(SmokeKernel::Double);
    gpu.record(|encoder| {
        crate::gpu::dispatch(
            gpu,
            encoder,
            &pipeline,
            &[crate::gpu::whole(0, &buffer)],
            [(values.len() as u32).div_ceil(64).max(1), 1, 1],
        );
    });
    gpu.read_buffer(&buffer, 0, values.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::naga;

    #[test]
    fn every_shader_parses_and_validates() {
        let mut failures = Vec::new();
        for (name, src) in SHADERS {
            let path = format!("shaders/{name}.wgsl");
            match naga::front::wgsl::parse_str(src) {
                Err(e) => failures.push(e.emit_to_string_with_path(src, &path)),
                Ok(module) => {
                    // Empty capabilities: anything beyond core WGSL (which lavapipe might lack) fails here.
                    let mut validator = naga::valid::Validator::new(
                        naga::valid::ValidationFlags::all(),
                        naga::valid::Capabilities::empty(),
                    );
                    if let Err(e) = validator.validate(&module) {
                        failures.push(e.emit_to_string_with_path(src, &path));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "shader validation failed:\n{}",
            failures.join("\n")
        );
    }

    /// (shader, entry point) of every kernel of an entry-point enum.
    fn named<K: Kernel>(all: &[K]) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        all.iter().map(|k| (k.shader(), k.entry_point()))
    }

    #[test]
    fn every_kernel_enum_names_exactly_the_entry_points_of_its_shader() {
        let named: Vec<(&str, &str)> = (named(SmokeKernel::ALL))
            .chain(named(QuantileKernel::ALL))
            .chain(named(TopKernel::ALL))
            .chain(named(CountKernel::ALL))
            .chain(named(SelectKernel::ALL))
            .collect();
        for (name, src) in SHADERS {
            let module = naga::front::wgsl::parse_str(src).expect("every shader parses");
            let mut in_shader: Vec<&str> = (module.entry_points.iter())
                .filter(|e| e.stage == naga::ShaderStage::Compute)
                .map(|e| e.name.as_str())
                .collect();
            let mut in_enum: Vec<&str> = (named.iter())
                .filter(|(shader, _)| shader == name)
                .map(|(_, entry)| *entry)
                .collect();
            in_shader.sort_unstable();
            in_enum.sort_unstable();
            assert_eq!(in_enum, in_shader, "entry points of shaders/{name}.wgsl");
        }
    }

    #[test]
    fn every_shader_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("shaders folder exists")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        // keys.wgsl and indirect.wgsl are parts that other shaders start with.
        let mut registered: Vec<String> = SHADERS
            .iter()
            .map(|(n, _)| format!("{n}.wgsl"))
            .chain([KEYS_PART.to_string(), INDIRECT_PART.to_string()])
            .collect();
        registered.sort();
        for name in [QUANTILE, TOPK, SELECT] {
            assert!(source(name).unwrap().contains("fn key_of"), "{name}");
        }
        for name in [COUNT, SELECT] {
            assert!(
                source(name).unwrap().contains("fn indirect_counts"),
                "{name}"
            );
        }
        assert_eq!(on_disk, registered);
    }

    #[test]
    fn smoke_shader_doubles_on_the_device() {
        // Fails loudly when no adapter exists: CI guarantees lavapipe.
        let gpu = crate::gpu::tests::gpu();
        let values: Vec<f32> = (0..1000).map(|i| i as f32 - 500.5).collect();
        let out = smoke(gpu, &values).expect("smoke run");
        let want: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
        assert_eq!(out, want);
    }
}
