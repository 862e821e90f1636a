"""The studies: class forgetting (the quick start), uniform, multi-round, ablation; their
configs, their bad-input errors and their plots.

The study tests run the real pipeline on the embedded digits with a tiny configuration (one
seed, a width-16 ConvNet, 2 original epochs, 1 unlearning epoch, 2 Blend iterations). The
original model is trained once (by the uniform study) and its checkpoint copied into the other
studies' workdirs, which is what a resumed study would find.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from experiments import (
    ablations,
    class_forget,
    cli,
    io,
    multiround,
    plots,
    seeds,
    study,
    uniform_forget,
)
from experiments.configs import cinic10, svhn
from experiments.configs.base import NetSettings, TrainSchedule
from experiments.configs.uniform import DATASET_CONFIGS, dataset_config
from experiments.configs.uniform import get_config as uniform_config
from jaxunlearn import evaluate
from jaxunlearn.condense import blend_lr
from jaxunlearn.unlearn import available_methods

WRITE_PLOTS = plots.write_plots  # the real one (the study tests stub it out)


def _tiny(cfg):
    cfg.seeds = (0,)
    cfg.model_kwargs = dict(depth=2, width=16)
    cfg.original = TrainSchedule(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64,
                                 epochs=2, warmup_epochs=0)
    cfg.condense_net = NetSettings(width=16, depth=None)
    cfg.methods = ("cf",)
    _set_hparams(cfg, "cf", epochs=1, warmup_epochs=0)
    cfg.blend = dataclasses.replace(cfg.blend, iterations=2)
    return cfg


def _set_hparams(cfg, method, **values):
    cfg.method_hparams[method] = {**cfg.method_hparams.get(method, {}), **values}


def _copy_original(src: str, dst: str) -> None:
    os.makedirs(os.path.join(dst, "checkpoints"), exist_ok=True)
    for name in ("original_seed0", "original_seed0.json"):
        s, d = os.path.join(src, "checkpoints", name), os.path.join(dst, "checkpoints", name)
        (shutil.copytree if os.path.isdir(s) else shutil.copy)(s, d)


@pytest.fixture(scope="module")
def no_plots():
    """Study tests check records and tables; the figures are tested on their own below."""
    saved = plots.write_plots
    plots.write_plots = lambda workdir, records: []
    yield
    plots.write_plots = saved


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory, no_plots):
    cfg = _tiny(uniform_forget.get_config())
    workdir = str(tmp_path_factory.mktemp("uniform"))
    return cfg, workdir, uniform_forget.run(cfg, workdir)


# ---------------------------------------------------------------------------------------------
# Configs


def test_dataset_configs_carry_the_papers_settings():
    assert set(DATASET_CONFIGS) == {"digits", "cifar10", "svhn", "cinic10", "synthetic"}
    s, c = svhn.get_config(), cinic10.get_config()
    assert (s.dataset, s.model, s.ipc) == ("svhn", "resnet18", 100)
    assert (c.dataset, c.model, c.ipc) == ("cinic10", "resnet18", 800)
    # SVHN keeps the library's A-CF learning rate (2.4e-4, docs/method.md §4); CINIC-10 sets its own
    assert "a_cf" not in s.method_hparams and c.hparams("a_cf", False)["lr"] == 1e-4
    # the paper's with-condensation values apply over the factories' defaults
    # (every value is checked against the reference's files in test_reference_hparams.py)
    assert c.hparams("scrub", True) == {"lr": 1e-3, "m_steps": 10}
    assert s.hparams("scrub", True) == {"lr": 5e-3, "m_steps": 9}
    assert s.hparams("scrub", False) == {}
    # clusters keep the paper's size in the CPU variants (≈45 SVHN, ≈11 CINIC-10 per cluster),
    # and Blend keeps the paper's per-cluster step lr/S there (bench/blend_lr.py)
    assert svhn.get_config("cpu").ipc == 11 and cinic10.get_config("cpu").ipc == 44
    assert svhn.get_config().blend.lr is None  # the reference's blend_lr(ipc)
    assert svhn.get_config("cpu").blend.lr == pytest.approx(blend_lr(100) * 11 / 100)
    for name in DATASET_CONFIGS:
        for scale in (None, "cpu"):
            cfg = uniform_config(name, 0.5, scale)
            assert cfg.scenario == "uniform" and cfg.forget_fraction == 0.5
            assert cfg.seeds == (0, 1, 2)
            study.validate_config(cfg)
            study.build_methods(cfg, lambda p, x: x, lambda k: None)  # every method builds
    assert dataset_config("cifar10", "cpu").model == "convnet"
    with pytest.raises(ValueError, match="unknown config 'mnist'"):
        dataset_config("mnist")
    with pytest.raises(ValueError, match="scale"):
        svhn.get_config("tpu")
    with pytest.raises(ValueError, match="CPU-sized"):
        dataset_config("digits", "paper")


def test_cli_rejects_unknown_config_and_bad_fraction(tmp_path, capsys):
    with pytest.raises(SystemExit):
        uniform_forget.main(["--workdir", str(tmp_path), "--config", "nope"])
    code = uniform_forget.main(["--workdir", str(tmp_path), "--set", "forget_fraction=1.5"])
    assert code == 2 and "forget_fraction" in capsys.readouterr().err


def test_synthetic_data_is_cifar_shaped_and_learnable():
    ds = seeds.synthetic_dataset(20, 5)
    assert ds.x_train.shape == (200, 32, 32, 3) and ds.x_test.shape == (50, 32, 32, 3)
    assert np.bincount(ds.y_train).tolist() == [20] * 10
    # class structure: nearest class mean of the training set classifies most test images
    means = np.stack([ds.x_train[ds.y_train == c].mean(0) for c in range(10)])
    d = ((ds.x_test[:, None] - means[None]) ** 2).sum((2, 3, 4))
    assert (d.argmin(1) == ds.y_test).mean() > 0.5


# ---------------------------------------------------------------------------------------------
# Class forgetting (the README's quick start)

RECORD_FIELDS = {"method", "condensed", "seed", "scenario", "retain_acc", "forget_acc",
                 "test_acc", "mia", "mia_auc", "unlearn_s", "compile_s", "retain_size",
                 "train_size"}
STAGE_FIELDS = {"embed_s", "kmeans_s", "split_s", "blend_s"}


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """The quick start's study, tiny, end to end: records, results.md and the real plots."""
    cfg = _tiny(class_forget.get_config())
    cfg.methods = ("retrain", "cf", "a_cf")
    _set_hparams(cfg, "retrain", epochs=1, warmup_epochs=0)
    workdir = str(tmp_path_factory.mktemp("class_forget"))
    saved, plots.write_plots = plots.write_plots, WRITE_PLOTS  # whatever stub is active
    try:
        return cfg, workdir, class_forget.run(cfg, workdir)
    finally:
        plots.write_plots = saved


def test_class_forget_study_writes_every_field_and_both_columns(class_run):
    cfg, workdir, records = class_run
    assert {(r["method"], r["condensed"]) for r in records} == {
        ("original", False), *((m, c) for m in cfg.methods for c in (False, True))}
    original = next(r for r in records if r["method"] == "original")
    assert original["forget_acc"] > 50  # the original model knows the class to forget
    n_cls = 10
    for r in records:
        assert RECORD_FIELDS <= set(r), RECORD_FIELDS - set(r)
        assert r["scenario"] == "classwise" and len(r["forget_classes"]) == 1
        for f in ("retain_acc", "forget_acc", "test_acc", "test_retained_acc", "mia", "mia_auc"):
            assert 0.0 <= r[f] <= 100.0
        assert r["retain_size"] + r["forget_size"] == original["train_size"]
        if r["method"] == "original":
            continue
        assert r["unlearn_s"] > 0 and r["compile_s"] >= 0
        if r["condensed"]:
            # class-wise: every cluster of a retained class is free and becomes one image
            assert STAGE_FIELDS <= set(r)
            assert r["train_size"] == (n_cls - 1) * cfg.ipc - r["n_empty_free"]
            assert r["n_residual"] == 0 and r["train_size"] < r["retain_size"]
        else:
            assert r["train_size"] == r["retain_size"]
    # retrain trains from scratch without the class: it cannot predict it
    assert next(r for r in records if r["method"] == "retrain" and not r["condensed"])[
        "forget_acc"] == 0.0
    for name in ("blend_grid.png", "tradeoff.png", "loss_hist.png"):
        with open(os.path.join(workdir, name), "rb") as f:
            png = f.read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000, name
    text = open(os.path.join(workdir, "results.md")).read()
    assert "Without condensation" in text and "With Blend condensation" in text
    for m in cfg.methods:
        assert text.count(f"| {m} |") == 4  # a mean row and a per-seed row per column
        # every seed's outcome: forget acc / test acc / MIA score, per column
        for cond in (False, True):
            r = next(r for r in records if r["method"] == m and r["condensed"] == cond)
            assert (f"| {m} | {'yes' if cond else 'no'} | {r['forget_acc']:.0f} / "
                    f"{r['test_acc']:.1f} / {r['mia']:.0f} |") in text
    assert "## Every seed" in text
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["methods"] == list(cfg.methods)


def test_class_forget_rerun_recomputes_nothing(class_run, monkeypatch):
    cfg, workdir, records = class_run

    def fail(*a, **k):
        raise AssertionError("a finished record was recomputed")

    monkeypatch.setattr(study, "run_one", fail)
    monkeypatch.setattr(seeds.train, "fit", fail)
    again = class_forget.run(cfg, workdir)
    key = study.record_ledger(os.path.join(workdir, "records.jsonl")).key
    assert [key(r) for r in again] == [key(r) for r in records]


def test_an_interrupted_study_keeps_its_records_and_resumes(class_run, tmp_path, monkeypatch):
    cfg, src, _ = class_run
    cfg = _tiny(class_forget.get_config())
    cfg.methods = ("cf", "a_cf")
    cfg.condensation = (False,)
    workdir = str(tmp_path / "w")
    _copy_original(src, workdir)
    real = study.run_one
    calls = []

    def crash_second(*args, **kwargs):
        calls.append(args[4])
        if len(calls) == 2:
            raise _Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "run_one", crash_second)
    with pytest.raises(_Crash):
        class_forget.run(cfg, workdir)
    kept = io.load_records(os.path.join(workdir, "records.jsonl"))
    assert [r["method"] for r in kept] == ["original", "cf"]
    with open(os.path.join(workdir, "records.jsonl"), "a") as f:
        f.write('{"method": "a_cf", "condensed": fal')  # killed while writing a record
    monkeypatch.setattr(study, "run_one", real)
    done = class_forget.run(cfg, workdir)
    assert [r["method"] for r in done] == ["original", "cf", "a_cf"]
    assert done[1] == kept[1]  # the record written before the crash is untouched
    with open(os.path.join(workdir, "records.jsonl")) as f:
        assert [json.loads(line)["method"] for line in f] == ["original", "cf", "a_cf"]


@pytest.mark.parametrize("overrides, match", [
    (dict(forget_classes=(12,)), "class 12 does not exist"),
    (dict(forget_classes=()), "empty"),
    (dict(forget_classes=(3, 3)), "must not repeat"),
    (dict(scenario="k_classwise", k_classes=10), "every class"),
    (dict(ipc=500), "ipc=500"),
    (dict(methods=("cf", "nope")), "unknown method"),
    (dict(dataset="cifar10", data_dir="/nonexistent/cifar"), "CIFAR-10"),
    (dict(dataset="nope"), "nope"),
    (dict(scenario="uniform", forget_fraction=0.001), "MIA needs at least 5"),
    (dict(model="vgg"), "unknown model"),
    (dict(model="resnet18", model_kwargs=dict(depth=2)), "does not take"),
])
def test_bad_study_input_fails_before_any_training(tmp_path, monkeypatch, overrides, match):
    def no_training(*a, **k):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(seeds.train, "fit", no_training)
    # a missing CIFAR-10 is "downloaded" from a closed local port: fails at once, offline
    import socket

    from jaxunlearn.data import cifar10 as cifar10_mod

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(cifar10_mod, "CIFAR10_URL", f"http://127.0.0.1:{port}/c.tar.gz")
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    cfg = class_forget.get_config()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    workdir = tmp_path / "w"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        class_forget.run(cfg, str(workdir))
    assert not workdir.exists()  # nothing is created for a study that cannot run


def test_a_missing_optional_extra_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    from jaxunlearn.data import tfds_source

    def no_tfds():
        raise ImportError('loading tfds datasets needs TensorFlow Datasets: pip install '
                          '"jaxunlearn[tfds]"')

    monkeypatch.setattr(tfds_source, "_import_tfds", no_tfds)
    code = uniform_forget.main(["--config", "svhn", "--scale", "cpu", "--workdir",
                                str(tmp_path / "w")])
    assert code == 2 and "jaxunlearn[tfds]" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_a_workdir_that_is_a_file_is_refused_and_kept(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(ValueError, match="not a directory"):
        class_forget.run(class_forget.get_config(), str(path))
    assert path.read_text() == "mine"


def _args(cfg, *argv):
    return cli.apply_args(cfg, cli.build_parser("x", cfg).parse_args(["--workdir", "w", *argv]))


def test_seed_flag_counts_and_lists(tmp_path, capsys):
    cfg = class_forget.get_config()
    assert _args(cfg, "--seeds", "2").seeds == (0, 1)
    assert _args(cfg, "--seeds", "7,").seeds == (7,)
    # another --model drops the config's ConvNet keywords
    got = _args(class_forget.get_config(), "--model", "resnet18")
    assert got.model == "resnet18" and got.model_kwargs == {}
    assert class_forget.main(["--workdir", str(tmp_path / "w"), "--seeds", "0"]) == 2
    assert "selects no seed" in capsys.readouterr().err


def test_set_reaches_sections_dicts_and_variants():
    from experiments.configs.base import StudyConfig, from_json, to_json

    cfg = _args(class_forget.get_config(), "--set", "original.epochs=5", "--set",
                "method_hparams.cf.lr=0.5", "--set", 'blend={"iterations": 3}', "--set",
                "forget_classes=[2]", "--set", 'method_hparams.my_cf={"method": "cf", "epochs": 2}',
                "--methods", "cf,my_cf")
    assert cfg.original.epochs == 5 and cfg.original.lr == 0.05  # the rest of the section stays
    assert cfg.blend.iterations == 3 and cfg.blend.momentum == 0.5  # omitted: the defaults
    assert cfg.forget_classes == (2,) and cfg.methods == ("cf", "my_cf")
    assert cfg.hparams("my_cf", False) == {"lr": 0.5, "epochs": 2}  # cf's entry, then its own
    study.validate_config(cfg)
    assert from_json(StudyConfig, to_json(cfg)) == cfg  # config.json round-trips
    for bad, match in (("original.epochz=5", "unknown config field 'original.epochz'"),
                       ("nope=1", "unknown config field 'nope'"),
                       ('blend={"iters": 3}', "unexpected keyword"),
                       ("original.epochs.x=1", "not a section")):
        with pytest.raises(ValueError, match=match):
            _args(class_forget.get_config(), "--set", bad)
    with pytest.raises(ValueError, match="unknown method"):
        study.validate_config(_args(class_forget.get_config(), "--methods", "a_cf[ecdf=paper]"))
    scaled = cli.build_parser("x", uniform_forget.get_config(), list(DATASET_CONFIGS), True)
    args = scaled.parse_args(["--workdir", "w", "--config", "cinic10", "--scale", "cpu"])
    assert uniform_forget.get_config(args.config, scale=args.scale).ipc == 44


def test_seed_keys_keep_their_purposes():
    import jax

    keys = seeds.seed_keys(3)
    assert list(keys) == list(seeds.PURPOSES)  # appended, never reordered: records depend on it
    root = jax.random.key(3)
    for i, name in enumerate(("data", "init", "train", "partition", "extractor", "forget",
                              "unlearn", "mia", "dm")):
        np.testing.assert_array_equal(jax.random.key_data(keys[name]),
                                      jax.random.key_data(jax.random.fold_in(root, i)))


# ---------------------------------------------------------------------------------------------
# Uniform forgetting


def test_uniform_study_records_tables_and_resume(uniform_run):
    cfg, workdir, records = uniform_run
    assert {(r["method"], r["condensed"]) for r in records} == {
        ("original", False), ("cf", False), ("cf", True)}
    n_train = records[0]["forget_size"] + records[0]["retain_size"]
    for r in records:
        assert r["scenario"] == "uniform" and r["round"] == 0 and r["forget_classes"] == []
        assert abs(r["forget_size"] / n_train - 0.1) < 0.002
        hist = r["loss_hist"]  # counts of every forget example, before and after
        assert sum(hist["forget"]) == r["forget_size"]
        assert len(hist["edges"]) == len(hist["forget"]) + 1
    dc = next(r for r in records if r["condensed"])
    assert dc["train_size"] < dc["retain_size"]  # Blend reduced the retain set
    assert dc["total_s"] == pytest.approx(
        dc["unlearn_s"] + dc["embed_s"] + dc["kmeans_s"] + dc["split_s"] + dc["blend_s"])
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["scenario"] == "uniform"
    text = open(os.path.join(workdir, "results.md")).read()
    assert "scenario uniform" in text and "| cf |" in text and "gap to Retrain" in text
    # a rerun recomputes nothing
    again = uniform_forget.run(cfg, workdir)
    assert len(again) == len(records)


def test_uniform_study_rejects_another_scenario(tmp_path):
    cfg = uniform_forget.get_config()
    cfg.scenario = "classwise"
    with pytest.raises(ValueError, match="uniform"):
        uniform_forget.run(cfg, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Multi-round


class _Crash(Exception):
    """A simulated interruption."""


def _param_sum(params) -> float:
    import jax

    return float(sum(np.asarray(x, np.float64).sum() for x in jax.tree.leaves(params)))


@pytest.mark.slow
def test_multiround_continues_each_method_and_reuses_the_partition(uniform_run, tmp_path,
                                                                  monkeypatch):
    import experiments.condensation as glue

    _, src, _ = uniform_run
    cfg = _tiny(multiround.get_config())
    cfg.condensation = (True,)
    workdir = str(tmp_path / "mr")
    _copy_original(src, workdir)

    calls, partitions, given = [], [], []
    real_run_method, real_partition = study.run_method, glue.partition_by_class

    def recording_run_method(method, params, data, key, **kw):
        if len(calls) == 1 and crash["on"]:  # an interruption during round 1
            raise _Crash
        out = real_run_method(method, params, data, key, **kw)
        calls.append((_param_sum(params), _param_sum(out.params)))
        given.append(int(data.forget.n))
        return out

    def counting_partition(*a, **kw):
        partitions.append(1)
        return real_partition(*a, **kw)

    crash = {"on": True}
    monkeypatch.setattr(study, "run_method", recording_run_method)
    monkeypatch.setattr(glue, "partition_by_class", counting_partition)
    with pytest.raises(_Crash):
        multiround.run(cfg, workdir)
    crash["on"] = False
    records = multiround.run(cfg, workdir)  # resumes at round 1 from the round-0 checkpoint

    assert len(partitions) == 1  # the k-means partition is computed once, then reused
    assert len(calls) == 3  # round 0 (first run), rounds 1 and 2 (resumed); nothing recomputed
    for (_, out_prev), (start, _) in zip(calls[:-1], calls[1:], strict=True):
        assert start == pytest.approx(out_prev, rel=1e-6)  # each round starts where it stopped
    cf = sorted((r for r in records if r["method"] == "cf"), key=lambda r: r["round"])
    assert [r["round"] for r in cf] == [0, 1, 2]
    n = cf[0]["forget_size"] + cf[0]["retain_size"]
    for r, frac in zip(cf, (0.1, 0.19, 0.271), strict=True):
        assert abs(r["forget_size"] / n - frac) < 0.005
        assert r["forget_size"] + r["retain_size"] == n
    # each round's method acts on, and is evaluated against, the images that round adds
    assert given == [r["new_forget_size"] for r in cf]
    assert all(r["round_target"] == "new" for r in cf)
    assert cf[1]["new_forget_size"] < cf[1]["forget_size"]
    assert cf[0]["embed_s"] > 0 and cf[0]["kmeans_s"] > 0
    for r in cf[1:]:  # later rounds: split + Blend only, the partition time is not charged
        assert r["embed_s"] == 0 and r["kmeans_s"] == 0 and r["partition_reused_s"] > 0
        assert r["total_s"] == pytest.approx(r["unlearn_s"] + r["split_s"] + r["blend_s"])
    originals = [r for r in records if r["method"] == "original"]
    assert sorted(r["round"] for r in originals) == [0, 1, 2]
    text = open(os.path.join(workdir, "results.md")).read()
    assert "### Round 2" in text and "## Over all rounds" in text
    assert "## Blend stages, round 1" in text
    assert os.listdir(os.path.join(workdir, "checkpoints", "multiround")) == []  # cleaned up
    assert len(multiround.run(cfg, workdir)) == len(records)  # finished: nothing to do


def test_a_full_retain_method_trains_on_the_real_retain_set_with_blend(uniform_run, tmp_path):
    # the reference's multi-round A-SCRUB (multiround.get_config's full_retain_methods): in the
    # Blend column it takes the real retain set while the others take the reduced one
    _, src, _ = uniform_run
    cfg = _tiny(multiround.get_config())
    cfg.rounds, cfg.condensation, cfg.full_retain_methods = 1, (True,), ("cf",)
    cfg.method_hparams["cf_reduced"] = {"method": "cf"}
    cfg.methods = ("cf", "cf_reduced")
    workdir = str(tmp_path / "full")
    _copy_original(src, workdir)
    by = {r["method"]: r for r in multiround.run(cfg, workdir) if r["method"] != "original"}
    assert by["cf"]["retain_set"] == "full" and by["cf"]["train_size"] == by["cf"]["retain_size"]
    assert "retain_set" not in by["cf_reduced"]
    assert by["cf_reduced"]["train_size"] < by["cf_reduced"]["retain_size"]
    assert by["cf"]["blend_s"] == by["cf_reduced"]["blend_s"]  # one condensation for the column


def test_a_round_targets_its_new_images_or_all_forgotten_so_far():
    cfg = _tiny(multiround.get_config())
    ds = seeds.load_study_dataset(cfg)
    splits = seeds.seed_splits(cfg, ds, 0)
    forgets = seeds.round_forget_sets(cfg, splits, 0)
    new = [study.round_target(cfg, forgets, r) for r in range(3)]
    assert np.array_equal(new[0].forget_idx, forgets[0].forget_idx)
    for r in (1, 2):
        assert np.array_equal(new[r].retain_idx, forgets[r].retain_idx)  # cumulative retain
        want = np.setdiff1d(forgets[r].forget_idx, forgets[r - 1].forget_idx)
        assert np.array_equal(new[r].forget_idx, want) and len(want) > 0
    cfg.round_target = "cumulative"
    assert study.round_target(cfg, forgets, 2) is forgets[2]
    cfg.round_target = "latest"
    with pytest.raises(ValueError, match="round_target must be one of"):
        study.validate_config(cfg)


def test_multiround_rejects_class_forgetting(tmp_path):
    cfg = multiround.get_config()
    cfg.scenario = "classwise"
    with pytest.raises(ValueError, match="uniform"):
        multiround.run(cfg, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Ablation


@pytest.mark.slow
def test_ablation_variants_train_on_the_right_sets(uniform_run, tmp_path):
    _, src, _ = uniform_run
    cfg = _tiny(ablations.get_config())
    method = "l1_sparse" if "l1_sparse" in available_methods() else "cf"
    cfg.methods = (method,)
    if method != "cf":
        _set_hparams(cfg, method, epochs=1)
    cfg.variants = ("blend", "residual_raw", "full_retain")  # the others: sizes checked below
    workdir = str(tmp_path / "abl")
    _copy_original(src, workdir)
    records = ablations.run(cfg, workdir)
    by = {r.get("variant"): r for r in records}
    assert set(by) == {None, *cfg.variants}
    o = by[None]
    assert o["method"] == "original" and o["free_acc"] is not None
    n_free, n_res, n_clusters = o["n_free_images"], o["n_residual"], o["n_free_clusters"]
    assert n_free + n_res == o["retain_size"] and 0 < n_clusters < n_free
    assert by["full_retain"]["train_size"] == o["retain_size"]
    assert by["residual_raw"]["train_size"] == n_res
    assert by["blend"]["train_size"] == n_res + n_clusters
    for v, r in by.items():
        if v is None:
            continue
        assert r["method"] == method and r["condensed"] == (v == "blend")
        assert r["dc_hparams"] is True  # every variant: the DC values, as the reference
        assert 0 <= r["free_acc"] <= 100 and 0 <= r["residual_acc"] <= 100
        if v == "full_retain":
            assert r["total_s"] == r["unlearn_s"]
        else:
            assert r["total_s"] >= r["unlearn_s"] + r["embed_s"] + r["kmeans_s"]
    text = open(os.path.join(workdir, "results.md")).read()
    assert "free retain acc" in text and "residual raw + condensed free (the method)" in text
    assert os.path.exists(os.path.join(workdir, "blend_grid.png"))
    assert len(ablations.run(cfg, workdir)) == len(records)  # resumed: nothing recomputed

    # every variant's retain set, from the same (cached) partition
    opened = study.open_study(cfg, workdir, ablations.VARIANT_COLUMNS.of_config(cfg))
    ctx = seeds.prepare_seed(cfg, opened.paths, opened.ds, 0, opened.apply_fn, opened.init_fn)
    forget = seeds.make_forget(cfg, ctx.splits, 0)
    vs = ablations.variant_sets(cfg, opened.paths, ctx, forget, tuple(ablations.VARIANTS))
    size = {v: len(got[1]) for v, got in vs["sets"].items()}
    y = ctx.splits.train_y
    assert size["free_raw"] == n_free and size["blend"] == n_res + n_clusters
    # v1/v3/v5 re-cluster their subset: k = min(ipc, n_c) clusters per class (fewer only if
    # k-means leaves a cluster empty)
    for v, idx in (("condense_all", forget.retain_idx), ("condensed_free", vs["free_idx"]),
                   ("condensed_residual", vs["residual_idx"])):
        bound = int(np.minimum(np.bincount(y[idx], minlength=10), cfg.ipc).sum())
        assert 0.9 * bound <= size[v] <= bound, v
        assert vs["sets"][v][2]["kmeans_s"] > vs["partition"].timings["kmeans_s"] or (
            np.bincount(y[idx]).max() <= cfg.ipc), v
    cfg.recluster = False  # the original partition's clusters instead
    orig = ablations.variant_sets(cfg, opened.paths, ctx, forget, ("condensed_free",))
    assert len(orig["sets"]["condensed_free"][1]) == n_clusters
    cfg.variant_hparams = "by_set"
    cols = {c.variant: c.takes_dc_hparams for c in ablations.VARIANT_COLUMNS.of_config(cfg)}
    assert cols == {"blend": True, "residual_raw": False, "full_retain": False}
    for v in ("free_raw", "residual_raw", "full_retain"):  # raw sets keep the true labels
        idx = {"free_raw": vs["free_idx"], "residual_raw": vs["residual_idx"],
               "full_retain": forget.retain_idx}[v]
        np.testing.assert_array_equal(np.sort(vs["sets"][v][1]), np.sort(y[idx]))
    for v in ("condense_all", "condensed_residual"):  # blended sets: one image per cluster
        assert vs["sets"][v][2]["blend_s"] > 0


def test_ablation_rejects_unknown_variants(tmp_path):
    cfg = ablations.get_config()
    cfg.variants = ("blend", "everything")
    with pytest.raises(ValueError, match="everything"):
        ablations.run(cfg, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Plots


def test_per_example_loss_and_histogram_match_hand_computation():
    w = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -0.5]], np.float32)  # 2 features → 3 classes

    def apply_fn(params, x):
        return x.reshape(x.shape[0], -1) @ params

    x = np.random.default_rng(0).normal(size=(37, 1, 1, 2)).astype(np.float32)
    y = np.arange(37) % 3
    logits = x.reshape(37, 2).astype(np.float64) @ w
    expected = np.log(np.exp(logits).sum(1)) - logits[np.arange(37), y]
    got = evaluate.per_example_loss(apply_fn, w, x, y, batch_size=16)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    h = evaluate.loss_histogram(apply_fn, w, (x, y), (x[:10], y[:10]), batch_size=16)
    assert sum(h["forget"]) == 37 and sum(h["unseen"]) == 10
    assert h["forget_mean"] == pytest.approx(expected.mean(), rel=1e-5)
    json.dumps(h)  # JSON-ready


def _fake_records(rounds=1, variants=False):
    rng = np.random.default_rng(0)
    k = len(evaluate.LOSS_EDGES) - 1
    hist = {"edges": evaluate.LOSS_EDGES.tolist(), "forget": rng.integers(0, 5, k).tolist(),
            "unseen": rng.integers(0, 5, k).tolist(), "forget_mean": 0.3, "unseen_mean": 0.5}
    base = dict(study="s", dataset="digits", model="convnet", scenario="uniform", loss_hist=hist,
                retain_size=700, forget_size=80)
    out = []
    for seed in range(3):
        for rnd in range(rounds):
            out.append({**base, "method": "original", "condensed": False, "seed": seed,
                        "round": rnd, "mia": 55.0, "test_acc": 95.0, "forget_acc": 99.0,
                        "retain_acc": 99.0, "unlearn_s": 0.0, "train_size": 800})
            keys = ([("l1_sparse", v, v in ablations._BLEND_OF) for v in ablations.VARIANTS]
                    if variants else [(m, None, c) for m in ("retrain", "cf", "a_cf")
                                      for c in (False, True)])
            for m, v, c in keys:
                r = {**base, "method": m, "condensed": c, "seed": seed, "round": rnd,
                     "mia": 50 + rng.normal(), "test_acc": 90 + rng.normal(),
                     "forget_acc": 90 + rng.normal(), "retain_acc": 99.0,
                     "unlearn_s": 1.0 + rng.random(), "total_s": 2.0 + rng.random() * (3 - c),
                     "train_size": 400 if c else 700}
                if v:
                    r.update(variant=v, variant_desc=ablations.VARIANTS[v], free_acc=99.0,
                             residual_acc=98.0)
                out.append(r)
    return out


@pytest.mark.parametrize("rounds,variants,expected", [
    (1, False, {"tradeoff.png", "loss_hist.png"}),
    (3, False, {"tradeoff.png", "loss_hist.png", "rounds.png"}),
    (1, True, {"tradeoff.png", "loss_hist.png"}),
])
def test_write_plots_makes_readable_pngs(tmp_path, rounds, variants, expected):
    from matplotlib.image import imread

    from experiments.report import write_report

    records = _fake_records(rounds, variants)
    paths = WRITE_PLOTS(str(tmp_path), records)
    assert {os.path.basename(p) for p in paths} == expected
    for p in paths:
        img = imread(p)
        assert img.shape[0] > 300 and img.shape[1] > 600 and img.std() > 0.05  # drawn, not blank
    text = write_report(str(tmp_path), records)
    if rounds > 1:
        assert "## Over all rounds" in text and "total s, all rounds" in text
    if variants:
        assert "condensed residual images only" in text and "gap to Retrain w" not in text


def test_blend_grid_draws_blends_next_to_members(tmp_path):
    from matplotlib.image import imread

    from jaxunlearn.condense import BlendOutput

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8, 8, 3)).astype(np.float32)
    idx = np.array([[0, 1, 2, -1], [3, 4, -1, -1], [5, 6, 7, 8]], np.int32)
    w = np.where(idx >= 0, 1.0, 0.0).astype(np.float32)
    w /= w.sum(1, keepdims=True)
    images = np.stack([(w[s, :, None, None, None] * x[np.maximum(idx[s], 0)]).sum(0)
                       for s in range(3)])
    blend = BlendOutput(images, np.array([0, 1, 2]), np.arange(3), w, idx, np.zeros(2), 0, 1.0,
                        {})
    p = plots.blend_grid_from_output(str(tmp_path / "g.png"), x, blend, rows=2, title="t")
    img = imread(p)
    assert img.shape[1] > img.shape[0] * 0.8  # 2 rows of up to 1 + 4 images
    gray = plots.blend_grid(str(tmp_path / "h.png"), x[:2, :, :, :1],
                            [x[:3, :, :, :1], x[3:4, :, :, :1]], labels=[0, 1])
    assert os.path.getsize(gray) > 1000
    with pytest.raises(ValueError, match="member arrays"):
        plots.blend_grid(str(tmp_path / "bad.png"), x[:2], [x[:3]])


def _seed_records(values, *, methods=("retrain", "cf"), conds=(False, True), rounds=1,
                  field="test_acc"):
    """Records whose ``field`` takes ``values[seed]`` for every method (other metrics fixed)."""
    k = len(evaluate.LOSS_EDGES) - 1
    out = []
    for seed, v in enumerate(values):
        counts = np.zeros(k, int)
        counts[5 + 10 * seed] = 10  # each seed's losses in its own bin
        hist = {"edges": evaluate.LOSS_EDGES.tolist(), "forget": counts.tolist(),
                "unseen": np.roll(counts, 2).tolist(), "forget_mean": 0.1, "unseen_mean": 0.2}
        for rnd in range(rounds):
            for i, m in enumerate(methods):
                for c in conds:
                    r = dict(study="s", dataset="digits", model="convnet", method=m,
                             condensed=c, seed=seed, round=rnd, loss_hist=hist, test_acc=90.0,
                             forget_acc=50.0, mia=50.0, total_s=1.0 + 0.3 * i + seed + c)
                    r[field] = v
                    out.append(r)
    return out


def _drawn_values(ax):
    """Every y-value an axes draws: lines (dots, ranges) and filled bands."""
    ys = [np.asarray(line.get_ydata(), float) for line in ax.get_lines()]
    ys += [p.vertices[:, 1] for c in ax.collections for p in c.get_paths()]
    return np.concatenate(ys) if ys else np.zeros(0)


def test_plot_tradeoff_has_one_panel_per_column_and_percent_axes_in_range():
    fig = plots.tradeoff_figure(_fake_records())
    assert len(fig.axes) == 4  # test accuracy and MIA, each without and with Blend
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any("without Blend" in t for t in titles) and any("with Blend" in t for t in titles)
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        assert 0 <= lo < hi <= 100
        assert ax.get_xscale() == "log"
    only_without = [r for r in _fake_records() if not r["condensed"]]
    assert len(plots.tradeoff_figure(only_without).axes) == 2
    fig = plots.tradeoff_figure(_fake_records(), fields=("forget_acc",))
    assert len(fig.axes) == 2 and "forget accuracy (%)" in fig.axes[0].get_ylabel()


@pytest.mark.parametrize("field", ["test_acc", "mia"])
def test_plot_of_bimodal_seeds_draws_their_range_not_an_interval_off_axis(field):
    """Seeds at 10, 100 and 55: a mean ± t-interval would span 55 ± 112; we draw the seeds."""
    fig = plots.tradeoff_figure(_seed_records([10.0, 100.0, 55.0], field=field))
    row = 0 if field == "test_acc" else 1
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        assert 0 <= lo < hi <= 100
        ys = _drawn_values(ax)
        assert ys.min() >= 0 and ys.max() <= 100
    ax = fig.axes[2 * row]
    spans = [tuple(line.get_ydata()) for line in ax.get_lines() if len(line.get_ydata()) == 2]
    assert (10.0, 100.0) in spans  # the min-max range over seeds, as drawn
    seeds = [line for line in ax.get_lines() if len(line.get_ydata()) == 3]
    assert len(seeds) == 2  # one dot per seed, for each method in this column
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "min–max over seeds" in legend and "one seed" in legend and "mean over 3" in legend


def test_plot_labels_do_not_overlap_when_methods_crowd():
    from matplotlib.text import Text

    rng = np.random.default_rng(1)
    records = []
    for i in range(14):  # 14 methods within a few pixels of one another
        for c in (False, True):
            records.append(dict(study="s", dataset="digits", model="convnet", method=f"m{i:02d}",
                                condensed=c, seed=0, round=0, test_acc=98 + rng.random(),
                                mia=55 + rng.random(), total_s=1 + 0.2 * rng.random()))
    fig = plots.tradeoff_figure(records)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # without leader lines
        assert len(boxes) == 14
        frame = ax.get_window_extent(renderer)
        for i, a in enumerate(boxes):
            assert frame.x0 - 1 <= a.x0 and a.x1 <= frame.x1 + 1
            assert frame.y0 - 1 <= a.y0 and a.y1 <= frame.y1 + 1
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)


def test_plot_loss_hist_draws_each_seed_not_the_pool():
    from matplotlib.patches import StepPatch

    records = _seed_records([60.0, 70.0, 80.0], methods=("original", "cf"))
    records = [r for r in records if not (r["method"] == "original" and r["condensed"])]
    fig = plots.loss_hist_figure(records)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3  # original, cf without and with Blend
    for ax in panels:
        outlines = [p for p in ax.patches if isinstance(p, StepPatch) and not p.get_fill()]
        assert len(outlines) == 2 * 3  # forget and unseen, one line per seed
        peaks = sorted(int(np.argmax(p.get_data().values)) for p in outlines)
        assert len(set(peaks)) == 6  # each seed keeps its own bins: nothing summed
        assert [t.get_text() for t in ax.get_yticklabels()] == ["seed 2", "seed 1", "seed 0"]
        assert ax.get_xscale() == "log"


def test_plot_rounds_bands_stay_in_range_with_bimodal_seeds():
    records = _seed_records([0.0, 100.0, 50.0], rounds=3, field="forget_acc")
    fig = plots.rounds_figure(records)
    assert len(fig.axes) == 2 * 4  # (without, with Blend) × (time, test, forget, MIA)
    for ax in fig.axes:
        if ax.get_yscale() == "log":
            continue
        lo, hi = ax.get_ylim()
        assert 0 <= lo < hi <= 100
        ys = _drawn_values(ax)
        assert ys.min() >= 0 and ys.max() <= 100
    assert "min–max over 3 seeds" in fig.get_suptitle()
