"""The Python package against the CLI: the same activations, given as numpy
arrays or as .npy files, dissect to the same results.

Run by `cargo xtask test`, which builds the extension, puts the package on
PYTHONPATH and the CLI in NETDISSECT_BIN. Datasets come from `netdissect
synth` (seeded); activations are deterministic numpy arrays.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import netdissect

BIN = os.environ.get("NETDISSECT_BIN", "netdissect")
N_IMAGES = 8


def run_cli(*args):
    done = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "broden"
    run_cli("synth", "--out", out, "--images", N_IMAGES, "--seed", 4, "--size", 112)
    return out


def activations(units=6, size=7, seed=0):
    """Smooth maps with a unit-specific bump, so thresholds and IoUs vary."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size]
    out = np.empty((N_IMAGES, units, size, size), dtype=np.float32)
    for i in range(N_IMAGES):
        for u in range(units):
            cy, cx = rng.uniform(0, size, 2)
            out[i, u] = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (1.0 + u)) + 0.01 * rng.random((size, size))
    return out


def comparable(results_json):
    """A results.json without what legitimately differs between two runs."""
    d = dict(results_json)
    for key in ("duration_secs", "timings", "model"):
        d.pop(key, None)
    return d


def test_arrays_dissect_exactly_as_the_cli_dissects_their_npy_files(dataset, tmp_path):
    acts = activations()
    folder = tmp_path / "acts"
    folder.mkdir()
    np.save(folder / "conv.npy", acts)
    run_cli("dissect", "--activations", folder, "--layers", "conv", "--dataset", dataset,
            "--out", tmp_path / "cli", "--quiet", "--top-k", 3)
    res = netdissect.dissect(dataset, {"conv": acts}, out=tmp_path / "py", top_k=3)

    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    py = json.loads((tmp_path / "py" / "results.json").read_text())
    assert comparable(py) == comparable(cli)
    assert comparable(res.dissection) == comparable(cli)
    layer = res["conv"]
    assert layer.iou.shape == (6, len(res.labels))
    assert layer.iou.dtype == np.float32
    np.testing.assert_array_equal(layer.iou, np.load(tmp_path / "cli" / "conv-iou.npy"))
    np.testing.assert_array_equal(layer.thresholds, np.load(tmp_path / "cli" / "conv-thresholds.npy"))
    np.testing.assert_array_equal(layer.thresholds, np.float32(cli["layers"][0]["thresholds"]))
    # Each unit's best label is the top of its IoU row.
    for unit, rec in enumerate(layer.record["units"]):
        if rec["category"] is not None:
            best = rec["per_category"][rec["category"]]
            assert layer.iou[unit, best["label"]] == np.float32(best["iou"])
            assert layer.iou[unit].max() == layer.iou[unit, best["label"]]
    for name in ("report.html", "conv-tally.csv", "conv-topk.npy"):
        assert (tmp_path / "py" / name).is_file()
    assert res.copied == []


def test_strided_arrays_are_copied_once_and_give_the_same_results(dataset):
    acts = activations(seed=1)
    plain = netdissect.dissect(dataset, {"conv": acts})
    # The same values as an N x H x W x C buffer seen through a transpose.
    strided = np.ascontiguousarray(acts.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert not strided.flags.c_contiguous
    again = netdissect.dissect(dataset, {"conv": strided})
    assert again.copied == ["conv"] and plain.copied == []
    np.testing.assert_array_equal(again["conv"].iou, plain["conv"].iou)


def test_float16_tokens_with_a_class_token_equal_the_same_maps(dataset):
    acts = activations(seed=2).astype(np.float16)
    n, c, h, w = acts.shape
    tokens = np.concatenate(
        [np.full((n, 1, c), 100.0, dtype=np.float16), acts.reshape(n, c, h * w).transpose(0, 2, 1)], axis=1)
    want = netdissect.dissect(dataset, {"vit": acts})
    got = netdissect.dissect(dataset, {"vit": np.ascontiguousarray(tokens)}, token_grid=(h, w), skip_tokens=1)
    np.testing.assert_array_equal(got["vit"].iou, want["vit"].iou)
    np.testing.assert_array_equal(got["vit"].thresholds, want["vit"].thresholds)


def test_each_unit_has_a_p_value_and_a_flag_counted_in_the_summary(dataset):
    layer = netdissect.dissect(dataset, {"conv": activations(seed=4)})["conv"]
    p = layer.p_values
    assert len(p) == 6 and len(layer.significant) == 6
    assert all(v is None or 0.0 <= v <= 1.0 for v in p)
    summary = layer.summary["significance"]
    assert summary["fdr"] == 0.05
    assert summary["detectors"] == sum(layer.significant)
    # A unit is flagged only where its p-value is at most the cut.
    for v, flag in zip(p, layer.significant):
        if flag:
            assert v <= summary["p_cut"]


def test_formula_search_keeps_a_beam_and_never_scores_below_the_label(dataset):
    acts = activations(seed=3)
    plain = netdissect.dissect(dataset, {"conv": acts})
    res = netdissect.dissect(dataset, {"conv": acts}, formula_length=2, beam=3)
    assert res.dissection["options"]["formula"] == {"length": 2, "beam": 3}
    layer = res["conv"]
    assert len(layer.formulas) == 6
    assert plain["conv"].formulas == [None] * 6
    np.testing.assert_array_equal(layer.iou, plain["conv"].iou)
    for unit, formula in zip(layer.record["units"], layer.formulas):
        beam = unit.get("formulas", [])
        assert len(beam) <= 3
        if formula is not None:
            label_iou = unit["per_category"][unit["category"]]["iou"]
            assert beam[0]["iou"] >= label_iou
            assert len(beam[0]["terms"]) <= 2
    with pytest.raises(ValueError, match=r"formula length"):
        netdissect.dissect(dataset, {"conv": acts}, formula_length=0)


def test_bad_input_raises_value_errors_that_name_the_layer(dataset):
    with pytest.raises(ValueError, match=r"array `conv`.*rows"):
        netdissect.dissect(dataset, {"conv": activations()[:5]})
    with pytest.raises(ValueError, match=r"float32 or float16"):
        netdissect.dissect(dataset, {"conv": activations().astype(np.float64)})
    with pytest.raises(ValueError, match=r"token-grid"):
        netdissect.dissect(dataset, {"conv": activations().reshape(N_IMAGES, 6, 49)})
    with pytest.raises(ValueError, match=r"quantile"):
        netdissect.dissect(dataset, {"conv": activations()}, quantile=2.0)


def test_torch_record_feeds_dissect(dataset, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed: netdissect.torch.record was not tested")
    import netdissect.torch as nt

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, stride=4, padding=2), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 6, 3, stride=2, padding=1))
    acts = nt.record(model, dataset, layers=["1", "2"], out=tmp_path / "acts", batch_size=3, size=112)
    assert acts["2"].shape == (N_IMAGES, 6, 14, 14)
    assert (tmp_path / "acts" / "2.npy").is_file()
    # The hook saw what the model computes on the same inputs.
    x = torch.from_numpy(np.stack([nt.preprocess_image(dataset / "images" / p, size=112)
                                   for p in nt.image_rows(dataset)]))
    np.testing.assert_allclose(acts["2"], model(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    res = netdissect.dissect(dataset, acts)
    assert set(res.layers) == {"1", "2"}


def test_a_run_without_xdg_runtime_dir_prints_no_wayland_error(dataset, tmp_path):
    # libwayland writes to file descriptor 2 from C, which only a child
    # process's captured stderr shows; the adapter probe of backend "auto"
    # is what used to print it.
    script = (
        "import sys, numpy as np, netdissect\n"
        "acts = np.random.default_rng(0).random((%d, 3, 7, 7), dtype=np.float32)\n"
        "r = netdissect.dissect(sys.argv[1], {'x': acts}, backend='auto')\n"
        "import os; assert 'XDG_RUNTIME_DIR' not in os.environ, 'not taken back'\n"
        "print(r['x'].iou.shape)\n" % N_IMAGES
    )
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(dataset)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "XDG_RUNTIME_DIR" not in done.stderr, done.stderr
    assert done.stdout.strip().startswith("(3,"), done.stdout


ASSETS = Path(__file__).resolve().parents[3] / "assets" / "default"


def test_ablate_matches_the_cli_and_refuses_bad_units(tmp_path):
    weights = ASSETS / "model.safetensors"
    run = tmp_path / "run"
    run_cli("dissect", "--model", "tiny-resnet", "--weights", weights, "--dataset", ASSETS / "probe",
            "--layers", "layer4", "--out", run, "--quiet")
    common = dict(classes=ASSETS / "classes.txt", sizes=[2, 30], backend="cpu")
    got = netdissect.ablate(run, weights, ASSETS / "probe", out=tmp_path / "py", **common)
    assert got["method"] == "closed-form" and got["layer"] == "layer4"
    assert [c["name"] for c in got["classes"]][:2] == ["street-s", "kitchen-s"]
    assert [p["removed"] for p in got["classes"][0]["curve"]] == [0, 2, 30]
    assert Path(got["page"]).is_file()
    run_cli("ablate", "--results", run, "--weights", weights, "--dataset", ASSETS / "probe",
            "--classes", ASSETS / "classes.txt", "--sizes", "2,30", "--out", tmp_path / "cli", "--quiet")
    assert (tmp_path / "py" / "ablation.csv").read_text() == (tmp_path / "cli" / "ablation.csv").read_text()
    with pytest.raises(ValueError, match=r"unit 999 is out of range"):
        netdissect.ablate(run, weights, ASSETS / "probe", units=[999], **common)
    with pytest.raises(ValueError, match=r"method `fast`"):
        netdissect.ablate(run, weights, ASSETS / "probe", method="fast", **common)
