"""The runnable examples (``examples/*.py``): each one's ``main`` at a small size, checking what
the example shows. Run in this process, so they compile with the tests' XLA flags (conftest)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    """The example ``examples/<name>.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"jaxunlearn_example_{name}",
                                                  EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_unlearn_a_class_forgets_on_a_verified_seed(capsys):
    # seed 4 is one of the seeds where A-CF at the digits study's settings forgets the class
    # (the example's docstring lists every seed tried; on others it does not)
    out = _load("unlearn_a_class").main(["--seed", "4"])
    assert out["original"]["forget_acc"] >= 95.0
    assert out["a_cf"]["forget_acc"] <= 5.0
    assert out["a_cf"]["test_retained_acc"] >= 95.0
    assert out["a_cf"]["retain_acc"] >= 95.0
    assert out["forgot"]
    printed = capsys.readouterr().out
    assert "forget acc %" in printed and "forgotten (forget acc <= 5%)" in printed


def test_blend_your_own_model_condenses_the_retain_set(capsys):
    out = _load("blend_your_own_model").main(["--ipc", "4", "--iterations", "3"])
    red, part, forget = out["condensed"], out["partition"], out["forget"]
    x, y = out["train"]
    s = red.sizes
    assert s["n_retain"] == len(forget.retain_idx)
    assert s["n_reduced"] == red.x.shape[0] == red.y.shape[0] < s["n_retain"]
    assert s["n_residual"] > 0 and s["n_free"] > 0  # uniform forgetting: both parts
    # one blended image per free cluster, labelled with its cluster's class, after the residuals
    blend = red.blend
    assert blend.images.shape == (s["n_free"], *x.shape[1:])
    np.testing.assert_array_equal(blend.cluster_ids, red.split.free_clusters)
    np.testing.assert_array_equal(blend.labels, red.split.free_clusters // part.ipc)
    np.testing.assert_array_equal(np.asarray(red.y)[s["n_residual"]:], blend.labels)
    # each blended image is the weighted sum of its cluster's retain images, none forgotten
    members = blend.member_idx
    assert not np.isin(members[members >= 0], forget.forget_idx).any()
    np.testing.assert_allclose(
        np.asarray(blend.images),
        np.einsum("sm,smhwc->shwc", blend.weights, x[np.maximum(members, 0)]), atol=1e-4)
    assert int(out["unlearn_data"].retain.n) == s["n_reduced"]
    assert "blended, one per free cluster" in capsys.readouterr().out


def test_audit_with_ulira_reports_an_accuracy_and_its_interval(capsys):
    out = _load("audit_with_ulira").main(
        ["--shadows", "2", "--targets", "2", "--forget_size", "6", "--epochs", "2",
         "--bootstrap", "50"])
    for res in (out["method"], out["original"]):
        lo, hi = res.accuracy_ci
        assert 0.0 <= lo <= res.accuracy <= hi <= 1.0
        assert 0.0 <= res.auc <= 1.0
        assert res.n_pairs == (2 + 2) * 6
    assert "U-LiRA acc [95% CI]" in capsys.readouterr().out
