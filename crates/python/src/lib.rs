//! `netdissect._netdissect`: the native half of the Python package.
//! `dissect` ([`dissect_arrays`]) runs the engine on numpy arrays of recorded
//! activations; `ablate` ([`ablate_job`]) runs `netdissect ablate`'s job (the
//! pure-Python `netdissect` package wraps both).
//!
//! Arrays reach the engine without a copy when they are C-contiguous
//! float32 or float16; others are copied once into C order (the result
//! says which).

use std::path::PathBuf;

use app::{Backend, EngineSpec, Job, Settings, Source};
use dissect::npy::DType;
use dissect::options::Overrides;
use dissect::recorded::{RecordedArray, TokenLayout};
use dissect::{Alignment, Preset, UnionRule};
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// An application error as a Python exception: bad input and usage are
/// `ValueError`s, failures `RuntimeError`s.
fn py_error(e: app::Error) -> PyErr {
    match e.kind() {
        app::Kind::Usage | app::Kind::Input => PyValueError::new_err(e.to_string()),
        app::Kind::Run | app::Kind::Adapter => PyRuntimeError::new_err(e.to_string()),
        app::Kind::Stopped => pyo3::exceptions::PyKeyboardInterrupt::new_err(e.to_string()),
    }
}

fn value_error(m: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(m.to_string())
}

/// One layer's array, borrowed in place or copied into C order.
enum Held<'py> {
    F32(numpy::PyReadonlyArrayDyn<'py, f32>),
    F16(numpy::PyReadonlyArrayDyn<'py, half::f16>),
    Copied(DType, Vec<u8>),
}

impl Held<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            // C-contiguity was checked when the array was taken.
            Held::F32(a) => a.as_slice().map(bytemuck::cast_slice).unwrap_or(&[]),
            Held::F16(a) => a.as_slice().map(bytemuck::cast_slice).unwrap_or(&[]),
            Held::Copied(_, bytes) => bytes,
        }
    }

    fn dtype(&self) -> DType {
        match self {
            Held::F32(_) => DType::F32,
            Held::F16(_) => DType::F16,
            Held::Copied(d, _) => *d,
        }
    }
}

/// Takes `value` as a float32 or float16 array: in place when it is
/// C-contiguous, else copied in C order. Returns the array and its shape.
fn hold<'py>(name: &str, value: &Bound<'py, PyAny>) -> PyResult<(Held<'py>, Vec<usize>)> {
    if let Ok(a) = value.cast::<PyArrayDyn<f32>>() {
        return Ok(take(a, DType::F32, Held::F32));
    }
    if let Ok(a) = value.cast::<PyArrayDyn<half::f16>>() {
        return Ok(take(a, DType::F16, Held::F16));
    }
    Err(value_error(format!(
        "layer `{name}`: expected a float32 or float16 numpy array, got {}",
        value.get_type().name()?
    )))
}

/// A typed array, borrowed by `wrap` when C-contiguous, else copied into C
/// order (native byte order, as the borrowed ones are).
fn take<'py, T: numpy::Element + bytemuck::Pod>(
    a: &Bound<'py, PyArrayDyn<T>>,
    dtype: DType,
    wrap: fn(numpy::PyReadonlyArrayDyn<'py, T>) -> Held<'py>,
) -> (Held<'py>, Vec<usize>) {
    let shape = a.shape().to_vec();
    let ro = a.readonly();
    if a.is_c_contiguous() {
        return (wrap(ro), shape);
    }
    let values: Vec<T> = ro.as_array().iter().copied().collect();
    let bytes = bytemuck::cast_slice::<T, u8>(&values).to_vec();
    (Held::Copied(dtype, bytes), shape)
}

/// A name of `choices` (`what` names the argument in the error).
fn pick<T: Copy>(what: &str, value: &str, choices: &[(&str, T)]) -> PyResult<T> {
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            value_error(format!("{what} `{value}`: use {}", names.join(" or ")))
        })
}

/// Dissects `layers` (name to array, N x C x H x W, or N x T x C with
/// `token_grid`) over the Broden dataset at `dataset`; writes the output
/// folder `out` as the CLI does when given. Returns a dict: `results` (the
/// JSON of `results.json`), `layers` (per layer `iou`, units x labels, and
/// `thresholds`), `labels` (names by label number) and `copied` (layers
/// whose arrays had to be copied).
#[pyfunction(name = "dissect")]
#[pyo3(signature = (
    dataset, layers, out=None, *, preset="original", quantile=None, iou_threshold=None,
    union=None, categories=None, split=None, max_images=None, batch_size=None, top_k=None,
    formula_length=None, beam=None, token_grid=None, skip_tokens=0, backend="auto", force=false
))]
#[allow(clippy::too_many_arguments)]
fn dissect_arrays<'py>(
    py: Python<'py>,
    dataset: PathBuf,
    layers: &Bound<'py, PyDict>,
    out: Option<PathBuf>,
    preset: &str,
    quantile: Option<f64>,
    iou_threshold: Option<f64>,
    union: Option<String>,
    categories: Option<Vec<String>>,
    split: Option<String>,
    max_images: Option<usize>,
    batch_size: Option<usize>,
    top_k: Option<usize>,
    formula_length: Option<usize>,
    beam: Option<usize>,
    token_grid: Option<(usize, usize)>,
    skip_tokens: usize,
    backend: &str,
    force: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let (preset, union, backend) = named_choices(preset, union.as_deref(), backend)?;
    let overrides = Overrides {
        quantile,
        iou_threshold,
        categories,
        union,
        // Recorded activations carry no receptive fields.
        alignment: Some(Alignment::HalfPixel),
        preprocess: None,
        split,
        max_images,
        batch_size,
        top_k,
        formula_length,
        beam,
        rotate: None,
    };
    let names: Vec<String> = (layers.keys().iter())
        .map(|k| k.extract::<String>())
        .collect::<PyResult<_>>()?;
    let held = hold_all(layers, &names)?;
    let arrays = recorded_arrays(&names, &held);
    let job = Job {
        source: Source::Arrays {
            arrays,
            tokens: TokenLayout {
                grid: token_grid.map(|(h, w)| [h, w]),
                skip: skip_tokens,
            },
        },
        layers: names.clone(),
        dataset,
        settings: Settings {
            preset,
            overrides,
            preprocess: None,
            rotate: Vec::new(),
            rotate_seed: 0,
            random_baseline: None,
        },
        engine: EngineSpec::of(backend),
        out,
        force,
        // Arrays in memory: no checkpoints (they are for zoo models).
        resume: app::Resume::default(),
        stop: None,
    };
    let finished = app::run(job, &mut app::Silent).map_err(py_error)?;
    let label_names = finished.labels;
    let Some(outcome) = finished.outcomes.into_iter().next() else {
        return Err(PyRuntimeError::new_err("the run returned no results"));
    };
    let copied: Vec<&str> = (names.iter().zip(&held))
        .filter(|(_, (h, _))| matches!(h, Held::Copied(..)))
        .map(|(n, _)| n.as_str())
        .collect();
    results_dict(py, outcome, label_names, copied)
}

/// Runs `netdissect ablate` on the same job layer as the CLI: units of
/// the dissected layer in `results` removed, each class's accuracy on the
/// labelled images of `dataset` measured (see `netdissect ablate --help`).
/// Returns the path of the `ablation.html` written (`ablation.json` and
/// `ablation.csv` beside it).
#[pyfunction(name = "ablate")]
#[pyo3(signature = (
    results, weights, dataset, *, classes=None, layer=None, ablate_to="zero", method="auto",
    sizes=None, units=None, concept=None, out=None, batch_size=32, backend="auto"
))]
#[allow(clippy::too_many_arguments)]
fn ablate_job(
    results: PathBuf,
    weights: PathBuf,
    dataset: PathBuf,
    classes: Option<PathBuf>,
    layer: Option<String>,
    ablate_to: &str,
    method: &str,
    sizes: Option<Vec<usize>>,
    units: Option<Vec<usize>>,
    concept: Option<String>,
    out: Option<PathBuf>,
    batch_size: usize,
    backend: &str,
) -> PyResult<PathBuf> {
    let to = pick(
        "ablate_to",
        ablate_to,
        &[("zero", app::AblateTo::Zero), ("mean", app::AblateTo::Mean)],
    )?;
    let method = pick(
        "method",
        method,
        &[
            ("auto", app::Method::Auto),
            ("closed-form", app::Method::ClosedForm),
            ("re-run", app::Method::Rerun),
        ],
    )?;
    let backend = backend_named(backend)?;
    let job = app::AblateJob {
        results,
        weights,
        dataset,
        classes,
        layer,
        to,
        method,
        sizes: sizes.unwrap_or_default(),
        units: units.unwrap_or_default(),
        concept,
        out,
        batch: batch_size,
        backend,
    };
    app::ablate(&job, &mut app::Silent).map_err(py_error)
}

/// The held arrays as the engine reads them.
fn recorded_arrays<'a>(
    names: &'a [String],
    held: &'a [(Held<'_>, Vec<usize>)],
) -> Vec<RecordedArray<'a>> {
    (names.iter().zip(held))
        .map(|(name, (h, shape))| RecordedArray {
            name,
            shape,
            dtype: h.dtype(),
            data: h.bytes(),
        })
        .collect()
}

/// The preset, union rule and backend named by their Python strings.
/// `backend` as the CLI's `--backend` spells it.
fn backend_named(backend: &str) -> PyResult<Backend> {
    pick(
        "backend",
        backend,
        &[
            ("auto", Backend::Auto),
            ("gpu", Backend::Gpu),
            ("cpu", Backend::Cpu),
        ],
    )
}

fn named_choices(
    preset: &str,
    union: Option<&str>,
    backend: &str,
) -> PyResult<(Preset, Option<UnionRule>, Backend)> {
    let preset = pick(
        "preset",
        preset,
        &[("original", Preset::Original), ("lite", Preset::Lite)],
    )?;
    let union = union
        .map(|u| {
            pick(
                "union",
                u,
                &[("original", UnionRule::Original), ("lite", UnionRule::Lite)],
            )
        })
        .transpose()?;
    let backend = backend_named(backend)?;
    Ok((preset, union, backend))
}

/// Every layer's array, in `names` order.
fn hold_all<'py>(
    layers: &Bound<'py, PyDict>,
    names: &[String],
) -> PyResult<Vec<(Held<'py>, Vec<usize>)>> {
    names
        .iter()
        .map(|name| {
            let value = layers
                .get_item(name)?
                .ok_or_else(|| value_error(format!("layer `{name}` vanished")))?;
            hold(name, &value)
        })
        .collect()
}

/// The dict `dissect` returns (see [`dissect_arrays`]).
fn results_dict<'py>(
    py: Python<'py>,
    outcome: dissect::Outcome,
    label_names: Vec<String>,
    copied: Vec<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let result = PyDict::new(py);
    let json = serde_json::to_string(&outcome.dissection).map_err(value_error)?;
    result.set_item("results", json)?;
    let per_layer = PyDict::new(py);
    for (layer, iou) in outcome.dissection.layers.iter().zip(outcome.ious) {
        let entry = PyDict::new(py);
        let labels = iou.len().checked_div(layer.n_units).unwrap_or(0);
        let iou = PyArray1::from_vec(py, iou).reshape([layer.n_units, labels])?;
        entry.set_item("iou", iou)?;
        entry.set_item("thresholds", PyArray1::from_slice(py, &layer.thresholds))?;
        per_layer.set_item(&layer.name, entry)?;
    }
    result.set_item("layers", per_layer)?;
    result.set_item("labels", PyList::new(py, label_names)?)?;
    result.set_item("copied", PyList::new(py, copied)?)?;
    Ok(result)
}

#[pymodule]
fn _netdissect(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dissect_arrays, m)?)?;
    m.add_function(wrap_pyfunction!(ablate_job, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
