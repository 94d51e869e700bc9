"""Record a PyTorch model's activations over a Broden-format dataset, for
:func:`netdissect.dissect`. Pure Python: needs ``torch`` and ``Pillow``.

    import torchvision, netdissect, netdissect.torch
    model = torchvision.models.resnet18(weights="IMAGENET1K_V1").eval()
    acts = netdissect.torch.record(model, "broden1_224", layers=["layer3", "layer4"])
    results = netdissect.dissect("broden1_224", acts, out="results")

Images are read in ``index.csv`` order (after ``split`` and ``max_images``,
which must then be given to :func:`netdissect.dissect` too), resized to
``size`` x ``size`` and normalised as the ``preprocess`` spec says, the same
specs the Rust engine applies to the zoo's models.
"""

from __future__ import annotations

import csv
from os import PathLike, fspath
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

# (channel order, range, mean, std), as broden::Preprocess defines them.
SPECS = {
    "torchvision": ("rgb", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe": ("bgr", 255.0, (109.5388, 118.6897, 124.6901), (1.0, 1.0, 1.0)),
    "lite": ("rgb", 255.0, (124.6901, 118.6897, 109.5388), (255.0 * 0.224,) * 3),
}


def image_rows(dataset: Union[str, "PathLike[str]"], split: Optional[str] = None,
               max_images: Optional[int] = None) -> List[str]:
    """The image paths (relative to ``images/``) of ``index.csv``, in order."""
    with open(Path(fspath(dataset)) / "index.csv", newline="") as f:
        rows = [r["image"] for r in csv.DictReader(f) if split is None or r.get("split") == split]
    return rows if max_images is None else rows[:max_images]


def preprocess_image(path: Union[str, Path], spec: str = "torchvision", size: int = 224) -> np.ndarray:
    """One image as a ``3 x size x size`` float32 array."""
    from PIL import Image

    order, scale, mean, std = SPECS[spec]
    image = Image.open(path).convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    rgb = np.asarray(image, dtype=np.float32)
    if order == "bgr":
        rgb = rgb[:, :, ::-1]
    planes = rgb.transpose(2, 0, 1) * (scale / 255.0)
    mean_ = np.asarray(mean, dtype=np.float32)[:, None, None]
    std_ = np.asarray(std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((planes - mean_) / std_, dtype=np.float32)


def record(
    model,
    dataset: Union[str, "PathLike[str]"],
    layers: Sequence[str],
    out: Optional[Union[str, "PathLike[str]"]] = None,
    *,
    batch_size: int = 32,
    preprocess: Union[str, Callable[[Path], np.ndarray]] = "torchvision",
    size: int = 224,
    split: Optional[str] = None,
    max_images: Optional[int] = None,
    device: Optional[str] = None,
    dtype=np.float32,
) -> Dict[str, np.ndarray]:
    """Runs ``model`` over the dataset's images with forward hooks on the
    modules named in ``layers`` (as ``model.named_modules()`` names them) and
    returns each layer's activations (``N x C x H x W``, or ``N x T x C`` for
    token outputs). With ``out``, also saves ``<out>/<layer>.npy`` for
    ``netdissect dissect --activations``."""
    import torch

    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        known = ", ".join(n for n in modules if n)
        raise ValueError(f"no module named {', '.join(missing)} in the model; it has {known}")
    root = Path(fspath(dataset))
    paths = image_rows(root, split, max_images)
    load = preprocess if callable(preprocess) else (
        lambda p: preprocess_image(p, preprocess, size))
    collected: Dict[str, list] = {name: [] for name in layers}

    def hook(name):
        def keep(_module, _inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            collected[name].append(output.detach().float().cpu().numpy().astype(dtype, copy=False))
        return keep

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        model.eval()
        if device is not None:
            model.to(device)
        with torch.no_grad():
            for start in range(0, len(paths), batch_size):
                batch = np.stack([load(root / "images" / p) for p in paths[start:start + batch_size]])
                tensor = torch.from_numpy(batch)
                if device is not None:
                    tensor = tensor.to(device)
                model(tensor)
    finally:
        for h in handles:
            h.remove()
    arrays = {name: np.ascontiguousarray(np.concatenate(parts)) for name, parts in collected.items()}
    if out is not None:
        folder = Path(fspath(out))
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            tmp = folder / f".{name}.npy.tmp"
            with open(tmp, "wb") as f:
                np.save(f, array)
            tmp.replace(folder / f"{name}.npy")
    return arrays
