"""Network Dissection of any network's activations.

``netdissect.dissect(dataset, layers={"layer4": array}, out=...)`` labels every
unit of each layer with the concept it detects, by the IoU of its thresholded,
upsampled maps with the concept masks of a Broden-format dataset. The arrays
are a layer's activations over the dataset's images, one row per image in
``index.csv`` order: ``N x C x H x W`` (a convolutional layer), or ``N x T x C``
with ``token_grid=(14, 14)`` and ``skip_tokens`` (a transformer). Record them
with :func:`netdissect.torch.record`, or with your own forward hooks.

The engine is the netdissect-rs library (on the GPU when the machine has one,
else on every CPU core); ``out`` gets the same folder the ``netdissect`` CLI
writes (tally CSVs, ``results.json``, ``report.html``, ``<layer>-iou.npy``).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _netdissect

__all__ = ["dissect", "ablate", "Results", "LayerResults", "__version__"]
__version__ = _netdissect.__version__

Path = Union[str, "PathLike[str]"]


@dataclass
class LayerResults:
    """One layer's scores: ``iou[unit, label]`` over every label number (0 for
    labels not scored), each unit's threshold ``T_k``, and the parsed
    ``results.json`` entry (``units``, ``summary``, ``top_images``...)."""

    name: str
    iou: np.ndarray
    thresholds: np.ndarray
    record: Dict[str, Any] = field(repr=False)

    @property
    def summary(self) -> Dict[str, Any]:
        return self.record["summary"]

    @property
    def best_labels(self) -> List[Optional[str]]:
        """Each unit's best label name (``None`` where nothing scored)."""
        out = []
        for unit in self.record["units"]:
            c = unit["category"]
            out.append(None if c is None else unit["per_category"][c]["name"])
        return out

    @property
    def p_values(self) -> List[Optional[float]]:
        """Each unit's best label's p-value under the null of chance (``None``
        where nothing scored; the README's "Is it chance?" states the null)."""
        return [u["significance"]["p_value"] if u.get("significance") else None for u in self.record["units"]]

    @property
    def significant(self) -> List[bool]:
        """Whether each unit's best label is a Benjamini-Hochberg discovery
        at 5% over the layer's units x labels."""
        return [bool(u.get("significance", {}).get("significant")) for u in self.record["units"]]

    @property
    def formulas(self) -> List[Optional[str]]:
        """Each unit's best formula (with ``formula_length``; ``None`` where
        no search ran or nothing scored)."""
        return [u["formulas"][0]["formula"] if u.get("formulas") else None for u in self.record["units"]]


@dataclass
class Results:
    """What a dissection found: per layer a :class:`LayerResults`, the label
    names by number, the whole ``results.json`` as a dict, and the layers whose
    arrays had to be copied (not C-contiguous)."""

    layers: Dict[str, LayerResults]
    labels: List[str]
    dissection: Dict[str, Any] = field(repr=False)
    copied: List[str] = field(default_factory=list)

    def __getitem__(self, layer: str) -> LayerResults:
        return self.layers[layer]


@contextmanager
def _runtime_dir():
    """``XDG_RUNTIME_DIR`` set, for the duration of a native call, where it is
    unset or not an absolute path (a server, a container, a CI runner).

    Enumerating Vulkan adapters makes Mesa's device-select layer ask libwayland
    for a display, which prints ``error: XDG_RUNTIME_DIR is invalid or not set
    in the environment.`` to stderr on runs that succeed. The CLI re-executes
    itself with the variable; here it is set in the process (``os.environ``
    calls ``putenv``) to a private folder, as the XDG spec asks of a program
    without one, and taken back afterwards.
    """
    name = "XDG_RUNTIME_DIR"
    before = os.environ.get(name)
    if before is not None and os.path.isabs(before):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="netdissect-runtime-") as private:
        os.environ[name] = private
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def dissect(
    dataset: Path,
    layers: Mapping[str, np.ndarray],
    out: Optional[Path] = None,
    *,
    preset: str = "original",
    quantile: Optional[float] = None,
    iou_threshold: Optional[float] = None,
    union: Optional[str] = None,
    categories: Optional[Sequence[str]] = None,
    split: Optional[str] = None,
    max_images: Optional[int] = None,
    batch_size: Optional[int] = None,
    top_k: Optional[int] = None,
    formula_length: Optional[int] = None,
    beam: Optional[int] = None,
    token_grid: Optional[Tuple[int, int]] = None,
    skip_tokens: int = 0,
    backend: str = "auto",
    force: bool = False,
) -> Results:
    """Dissects ``layers`` (name -> float32/float16 array) over ``dataset``.

    Options are those of ``netdissect dissect``: ``preset`` ("original" or
    "lite"), ``quantile``, ``iou_threshold``, ``union`` ("original": the unit's
    pixels in images where the label's category is present; "lite": all of
    them), ``categories``, ``split`` and ``max_images`` (the arrays then hold
    those images only), ``batch_size``, ``top_k``, ``formula_length`` and
    ``beam`` (the formula search; each unit's formulas are then in the
    results' units, ``formulas``, best first). Maps are upsampled with
    half-pixel centres: recorded activations carry no receptive fields.
    C-contiguous arrays are read in place; others are copied once.
    Raises ``ValueError`` for bad input (shapes, dtypes, row counts, options)
    and ``RuntimeError`` when the run fails.
    """
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError("layers must be a non-empty dict of layer name to array")
    arrays = {str(k): v for k, v in layers.items()}
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"layer `{name}`: expected a numpy array, got {type(value).__name__}")
    with _runtime_dir():
        raw = _netdissect.dissect(
            fspath(dataset),
            arrays,
            None if out is None else fspath(out),
            preset=preset,
            quantile=quantile,
            iou_threshold=iou_threshold,
            union=union,
            categories=None if categories is None else list(categories),
            split=split,
            max_images=max_images,
            batch_size=batch_size,
            top_k=top_k,
            formula_length=formula_length,
            beam=beam,
            token_grid=None if token_grid is None else tuple(token_grid),
            skip_tokens=skip_tokens,
            backend=backend,
            force=force,
        )
    dissection = json.loads(raw["results"])
    records = {layer["name"]: layer for layer in dissection["layers"]}
    per_layer = {
        name: LayerResults(name, arrays_["iou"], arrays_["thresholds"], records[name])
        for name, arrays_ in raw["layers"].items()
    }
    return Results(per_layer, list(raw["labels"]), dissection, list(raw["copied"]))


def ablate(
    results: Path,
    weights: Path,
    dataset: Path,
    *,
    classes: Optional[Path] = None,
    layer: Optional[str] = None,
    ablate_to: str = "zero",
    method: str = "auto",
    sizes: Optional[Sequence[int]] = None,
    units: Optional[Sequence[int]] = None,
    concept: Optional[str] = None,
    out: Optional[Path] = None,
    batch_size: int = 32,
    backend: str = "auto",
) -> Dict[str, Any]:
    """Which units a classifier needs (``netdissect ablate``): units of the
    layer dissected in ``results`` are removed (their maps set to zero, or
    with ``ablate_to="mean"`` to their mean) and each class's accuracy on the
    labelled images of ``dataset`` is measured.

    ``dataset`` is an ImageFolder tree (one folder per class), a CSV of
    ``image,class``, or a Broden folder whose scene labels name ``classes``
    (a file of class names, one per line). Per class, units are ranked by the
    mean drop of the class's margin when each alone is removed, then its top
    units are removed together for each of ``sizes``; or one chosen set
    (``units``, numbered from 1 as files number them, or every unit labelled
    ``concept``) is removed. ``method``: "auto", "closed-form" (exact for the
    last layer under a pooled linear head) or "re-run".

    Returns the parsed ``ablation.json`` with ``"page"``, the path of
    ``ablation.html`` (``ablation.csv`` is beside it; by default in
    ``<results>/ablation``). Raises ``ValueError`` for bad input and options.
    """
    opt = lambda p: None if p is None else fspath(p)  # noqa: E731
    with _runtime_dir():
        page = _netdissect.ablate(
            fspath(results),
            fspath(weights),
            fspath(dataset),
            classes=opt(classes),
            layer=layer,
            ablate_to=ablate_to,
            method=method,
            sizes=None if sizes is None else [int(s) for s in sizes],
            units=None if units is None else [int(u) for u in units],
            concept=concept,
            out=opt(out),
            batch_size=batch_size,
            backend=backend,
        )
    page = os.fspath(page)
    with open(os.path.join(os.path.dirname(page), "ablation.json"), encoding="utf-8") as f:
        record = json.load(f)
    record["page"] = page
    return record
