//! Every struct of every registered shader against the `#[repr(C)]` Rust
//! struct that mirrors it, member by member, as naga lays the WGSL out: a
//! field added, moved or retyped on one side only fails here, not as wrong
//! numbers on a GPU. A struct added to a shader without a mirror in the
//! table fails too.

use wgpu::naga;

use crate::count::AxisSample;
use crate::count::records::{ImageRecord, Params as CountParams};
use crate::quantile::Params as QuantileParams;
use crate::registry::{COUNT, QUANTILE, SELECT, SHADERS, TOPK, source};
use crate::select::Params as SelectParams;
use crate::topk::Params as TopkParams;

/// The members (name, offset) and the span of the struct `name` of a
/// WGSL module; padding members (`_pad…`) are left out, as the Rust side
/// may pad with an array.
fn wgsl_layout(module: &naga::Module, name: &str) -> Option<(Vec<(String, u32)>, u32)> {
    let (_, ty) = (module.types.iter()).find(|(_, ty)| ty.name.as_deref() == Some(name))?;
    match &ty.inner {
        naga::TypeInner::Struct { members, span } => {
            let members = (members.iter())
                .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
                .filter(|(name, _)| !name.starts_with("_pad"));
            Some((members.collect(), *span))
        }
        _ => None,
    }
}

/// The named structs of a WGSL module.
fn wgsl_structs(module: &naga::Module) -> Vec<String> {
    (module.types.iter())
        .filter(|(_, ty)| matches!(ty.inner, naga::TypeInner::Struct { .. }))
        .filter_map(|(_, ty)| ty.name.clone())
        .collect()
}

/// The fields (name, offset) and the size of a Rust struct, in the form of
/// [`wgsl_layout`] (padding fields are not listed).
macro_rules! rust_layout {
    ($ty:ty { $($field:ident),+ $(,)? }) => {
        (
            vec![$((stringify!($field).to_string(), std::mem::offset_of!($ty, $field) as u32)),+],
            std::mem::size_of::<$ty>() as u32,
        )
    };
}

#[test]
fn every_shader_struct_matches_its_rust_mirror() {
    let cases = [
        (
            COUNT,
            "Params",
            rust_layout!(CountParams {
                elem_offset,
                n_images,
                n_units,
                h,
                w,
                sh,
                sw,
                n_labels,
                n_categories,
                never,
                acc_unit_pixels,
                acc_cat_original,
                acc_cat_lite,
                row_shift,
                col_shift,
                live_lanes,
                live_lane_shift,
                col_blocks,
                grid_rows,
                grid_cols,
            }),
        ),
        (
            COUNT,
            "ImageRecord",
            rust_layout!(ImageRecord {
                present_categories,
                image_label_categories,
                first_image_label,
                n_image_labels,
                first_plane,
                n_planes,
            }),
        ),
        (
            COUNT,
            "AxisSample",
            rust_layout!(AxisSample { i0, i1, w0, w1 }),
        ),
        (
            SELECT,
            "Params",
            rust_layout!(SelectParams {
                elem_offset,
                n_images,
                n_units,
                plane,
                cap,
                rank,
                last,
                group_images,
            }),
        ),
        (
            TOPK,
            "Params",
            rust_layout!(TopkParams {
                elem_offset,
                n_images,
                n_units,
                plane,
                k,
                first_image,
                lanes,
                lane_shift,
            }),
        ),
        (
            QUANTILE,
            "Params",
            rust_layout!(QuantileParams {
                elem_offset,
                n_elems,
                n_units,
                plane,
                round,
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (shader, name, want) in &cases {
        let module = naga::front::wgsl::parse_str(source(shader).unwrap()).unwrap();
        match wgsl_layout(&module, name) {
            Some(got) if &got == want => {}
            got => failures.push(format!("{shader}.wgsl {name}: {got:?}, Rust {want:?}")),
        }
    }
    // Every struct of every shader has a row above.
    for (shader, src) in SHADERS {
        let module = naga::front::wgsl::parse_str(src).unwrap();
        for name in wgsl_structs(&module) {
            if !cases.iter().any(|(s, n, _)| s == shader && *n == name) {
                failures.push(format!("{shader}.wgsl {name}: no Rust mirror checked"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
