"""Several devices and several processes. 2 CPU processes on 127.0.0.1 (JAX's multi-controller
runtime, one device each, collectives over gloo) give the numbers of 1 process with 2 forced
host devices (the same global mesh of 2 devices, the same global batches), which give those of
1 device; and a study run as 2 processes resumes after being killed.

Every process is started in its own session and killed (with its children) when a test fails
or times out, so a hung collective never outlives the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import xla_flags_for_tests

from experiments import class_forget

TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int = 1) -> dict:
    # every placement checks that all processes supplied the same host values
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXUNLEARN_CHECK_REPLICAS="1")
    env["XLA_FLAGS"] = xla_flags_for_tests(
        f"--xla_force_host_platform_device_count={devices}" if devices > 1 else "")
    for key in [k for k in env if "_proxy" in k.lower()]:  # gRPC would route 127.0.0.1 there
        del env[key]
    return env


def _launch(commands: list[list[str]], logs: Path, env: dict, stop_when=None) -> bool:
    """Run ``commands`` at once, each in its own session, logging to ``logs``/p{i}.log.

    Returns False when ``stop_when()`` became true first (every process is then killed: an
    interrupted run), True when all exited with code 0. Raises AssertionError, with the logs'
    tails, when one fails or the time runs out; every process is killed on the way out.
    """
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for i, cmd in enumerate(commands):
            with open(logs / f"p{i}.log", "w") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            codes = [p.poll() for p in procs]
            if any(c not in (None, 0) for c in codes):
                raise AssertionError(f"a process failed (exit codes {codes})\n{_tails(logs)}")
            if all(c == 0 for c in codes):
                return True
            if stop_when is not None and stop_when():
                return False
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {TIMEOUT_S}s\n{_tails(logs)}")
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _tails(logs: Path) -> str:
    return "\n".join(f"--- {f.name}\n" + "\n".join(f.read_text().splitlines()[-15:])
                     for f in sorted(logs.glob("p*.log")))


def _two_processes(args: list[str], logs: Path, stop_when=None) -> bool:
    """``args`` run as 2 processes (one CPU device each) coordinated on 127.0.0.1."""
    coordinator = f"127.0.0.1:{_free_port()}"
    return _launch([[*args, "--coordinator", coordinator, "--num_processes", "2",
                     "--process_id", str(i)] for i in range(2)], logs, _env(), stop_when)


def _one_process(args: list[str], logs: Path, devices: int = 2) -> bool:
    """``args`` run as 1 process with ``devices`` forced host devices."""
    return _launch([args], logs, _env(devices))


# ---------------------------------------------------------------------------------------------
# The library: fit and A-CF, one model and a stack of models

_SCRIPT = textwrap.dedent("""
    import argparse, sys
    import numpy as np
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--coordinator")
    p.add_argument("--num_processes", type=int)
    p.add_argument("--process_id", type=int)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    from jaxunlearn import sharding
    if args.coordinator:
        sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    import jax
    from jaxunlearn import ensemble, optim, pools, train
    from jaxunlearn.models import build_model, init_fn_for
    from jaxunlearn.unlearn import make_method, make_unlearn_data, run_method, stack_unlearn_data
    assert jax.process_count() == (2 if args.coordinator else 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 4, 96).astype(np.int32)
    model = build_model("convnet", 4, depth=2, width=8)
    init_fn = init_fn_for(model, (8, 8, 1))
    sgd = dict(optimizer=optim.sgd(0.05, 0.9), lr_schedule=optim.cosine_with_warmup(0.05, 2, 1))
    out = {}

    def keep(name, params, history):
        out.update({f"{name}/p{i}": a for i, a in enumerate(
            sharding.to_host(jax.tree.leaves(params)))})
        out[f"{name}/loss"] = np.array([h[k] for h in history for k in sorted(h)
                                        if k.endswith("/loss")], np.float64)

    # one model: the batch of every step is split over the 2 devices (one per process)
    pool = pools.make_pool(x, y)
    fit = train.fit(model.apply, init_fn(jax.random.key(0)), pool, jax.random.key(1),
                    epochs=2, batch_size=16, **sgd)
    keep("fit", fit.params, fit.history)
    if not args.smoke:  # the smoke test stops at one model's fit
        f, r = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
        data = make_unlearn_data((x[r], y[r]), (x[f], y[f]), (x[:20], y[:20]), 4)
        acf = run_method(make_method("a_cf", model.apply, batch_size=8), fit.params, data,
                         jax.random.key(2))
        keep("a_cf", acf.params, acf.history)
        out["a_cf/logits"] = np.asarray(model.apply(sharding.to_host(acf.params), x))
        # 4 models: the models axis is split over the 2 devices, 2 whole models on each
        M = 4
        inc = np.zeros((M, pool.y.shape[0]), bool)
        inc[:, :96] = ensemble.random_halves(jax.random.key(3), 96, M)
        fits = train.fit(model.apply, ensemble.init_models(init_fn, jax.random.split(
            jax.random.key(4), M)), pool, jax.random.split(jax.random.key(5), M), epochs=2,
            batch_size=16, include=inc, models=M, **sgd)
        keep("fit_models", fits.params, fits.history)
        if jax.device_count() > 1:  # the models axis is split over the devices
            assert sharding.models_axis_name(M) == "data"
            assert len(jax.tree.leaves(fits.params)[0].sharding.device_set) == jax.device_count()
        datas = []
        for m in range(M):
            idx = np.flatnonzero(inc[m, :96])
            f, r = idx[y[idx] == 1], idx[y[idx] != 1]
            datas.append(make_unlearn_data((x[r], y[r]), (x[f], y[f]), (x[:20], y[:20]), 4))
        acfs = run_method(make_method("a_cf", model.apply, batch_size=8), fits.params,
                          stack_unlearn_data(datas),
                          jax.random.split(jax.random.key(6), M), models=M)
        keep("a_cf_models", acfs.params, acfs.history)
        out["a_cf_models/logits"] = ensemble.predict_models(model.apply, acfs.params, x)
    # process 0's answer, and its error, reach every process; different host data is refused
    out["agreed"] = np.array(sharding.agree(lambda: jax.process_index() + 7))
    try:
        sharding.agree(lambda: int("x"))
    except ValueError as e:
        out["agreed_error"] = np.array("invalid literal" in str(e))
    if jax.process_count() > 1:
        try:
            sharding.replicate(np.full(3, jax.process_index(), np.float32))
        except RuntimeError as e:
            out["refused"] = np.array("processes hold different values" in str(e))
    np.savez(f"{args.out}.{jax.process_index()}.npz", **out)
""")


def _close(got, want, names: list[str]) -> None:
    """Every array ``names`` of ``got`` within 1e-5 × the largest |value| among them in ``want``."""
    scale = max(np.abs(want[k]).max() for k in names)
    for k in names:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5 * scale, err_msg=k)


def test_two_processes_smoke(tmp_path):
    """The default tier's check of the multi-controller runtime (the slow tier has the rest): 2
    processes fit one model with every batch split between them; both hold the same parameters,
    which equal those of the same fit in this process (1 device) within 1e-5 × max |parameter|;
    ``sharding.agree`` hands process 0's answer (or error) to both, and placing host data that
    differs between the processes is refused."""
    import jax

    from jaxunlearn import optim, pools, train
    from jaxunlearn.models import build_model, init_fn_for

    script = tmp_path / "script.py"
    script.write_text(_SCRIPT)
    assert _two_processes([sys.executable, str(script), str(tmp_path / "procs"), "--smoke"],
                          tmp_path / "procs_logs")
    p0, p1 = np.load(tmp_path / "procs.0.npz"), np.load(tmp_path / "procs.1.npz")
    rng = np.random.default_rng(0)  # the script's problem and fit, on this process's device
    x = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 4, 96).astype(np.int32)
    model = build_model("convnet", 4, depth=2, width=8)
    fit = train.fit(model.apply, init_fn_for(model, (8, 8, 1))(jax.random.key(0)),
                    pools.make_pool(x, y), jax.random.key(1), epochs=2, batch_size=16,
                    optimizer=optim.sgd(0.05, 0.9),
                    lr_schedule=optim.cosine_with_warmup(0.05, 2, 1))
    want = {f"fit/p{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(fit.params))}
    want["fit/loss"] = np.array([h[k] for h in fit.history for k in sorted(h)
                                 if k.endswith("/loss")], np.float64)
    names = [k for k in want if k.startswith("fit/p")]
    assert sorted(p0.files) == sorted(p1.files) == sorted(
        [*want, "agreed", "agreed_error", "refused"])
    _close(p0, want, names)
    np.testing.assert_allclose(p0["fit/loss"], want["fit/loss"], rtol=1e-5)
    for k in [*names, "fit/loss"]:
        np.testing.assert_array_equal(p1[k], p0[k], err_msg=k)
    for p in (p0, p1):
        assert int(p["agreed"]) == 7 and bool(p["agreed_error"]) and bool(p["refused"])


@pytest.mark.slow
def test_two_processes_equal_two_devices_equal_one(tmp_path):
    """fit and A-CF, one model (batches split over the devices) and 4 stacked models (the models
    axis split over the devices), as 2 processes, as 1 process with 2 devices and with 1 device.

    - 2 processes = 2 devices: parameters within 1e-5 × max |parameter|, per-epoch losses within
      rtol 1e-5; both processes hold the whole result.
    - 2 devices = 1 device: the same for training; for A-CF its logits on the training images
      (within 1e-5 × max |logit|), not its parameters: Adam turns the rounding noise of the
      bias of a conv followed by instance norm (exact gradient 0, no effect on the output) into
      ±lr steps that differ between any two summation orders (``tests/test_ensemble.py``).
    - ``sharding.agree`` hands process 0's answer (or error) to both processes, and placing host
      data that differs between the processes is refused.
    """
    script = tmp_path / "script.py"
    script.write_text(_SCRIPT)
    cmd = [sys.executable, str(script)]
    assert _two_processes([*cmd, str(tmp_path / "procs")], tmp_path / "procs_logs")
    assert _one_process([*cmd, str(tmp_path / "devices")], tmp_path / "devices_logs")
    assert _one_process([*cmd, str(tmp_path / "one")], tmp_path / "one_logs", devices=1)
    ref, one = np.load(tmp_path / "devices.0.npz"), np.load(tmp_path / "one.0.npz")
    p0, p1 = np.load(tmp_path / "procs.0.npz"), np.load(tmp_path / "procs.1.npz")
    assert sorted(p0.files) == sorted(p1.files) == sorted([*ref.files, "refused"])
    for run in ("fit", "a_cf", "fit_models", "a_cf_models"):
        names = [k for k in ref.files if k.startswith(f"{run}/p")]
        _close(p0, ref, names)
        for k in names:
            np.testing.assert_array_equal(p1[k], p0[k], err_msg=k)
        np.testing.assert_allclose(p0[f"{run}/loss"], ref[f"{run}/loss"], rtol=1e-5)
        np.testing.assert_array_equal(p1[f"{run}/loss"], p0[f"{run}/loss"])
        if run.startswith("fit"):
            _close(ref, one, names)
            np.testing.assert_allclose(ref[f"{run}/loss"], one[f"{run}/loss"], rtol=1e-5)
        else:
            _close(ref, one, [f"{run}/logits"])
            _close(p0, ref, [f"{run}/logits"])
    assert p0["fit_models/p0"].shape[0] == 4  # the stacks came back whole
    for p in (p0, p1):
        assert int(p["agreed"]) == 7 and bool(p["agreed_error"]) and bool(p["refused"])
    assert p0["fit/loss"].shape == (2,) and p0["a_cf_models/loss"].shape == (1, 4)  # epochs, M


# ---------------------------------------------------------------------------------------------
# A study: only process 0 writes, and an interrupted 2-process run resumes

_STUDY = ["--seeds", "1", "--methods", "cf,a_cf",
          "--set", 'model_kwargs={"depth": 2, "width": 16}',
          "--set", "original.epochs=2", "--set", "original.warmup_epochs=0",
          "--set", "method_hparams.cf.epochs=1", "--set", "method_hparams.cf.warmup_epochs=0",
          "--set", "blend.iterations=2", "--set", 'condense_net={"width": 16, "depth": null}']
_TIMES = ("_s", "_s_ci")  # wall-clock fields differ between runs


def _records(workdir: Path) -> dict:
    out = {}
    for line in (workdir / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        key = (r["method"], r["condensed"])
        assert key not in out, f"record {key} written twice"
        out[key] = {k: v for k, v in r.items() if not k.endswith(_TIMES)}
    return out


@pytest.mark.slow
def test_study_as_two_processes_resumes_and_equals_two_devices(tmp_path):
    """class_forget (digits, cf and A-CF, without and with Blend) as 2 processes, killed once the
    original model's record is written, then rerun: it restores the original model from the
    checkpoint both processes saved, writes each record once, and its records equal those of
    1 process with 2 devices run without interruption."""
    cmd = [sys.executable, "-m", "experiments.class_forget", *_STUDY]
    work = tmp_path / "procs"
    records = work / "records.jsonl"
    finished = _two_processes(
        [*cmd, "--workdir", str(work)], tmp_path / "first",
        stop_when=lambda: records.exists() and records.read_text().count("\n") >= 1)
    assert not finished, "the study ended before it could be interrupted"
    assert (work / "checkpoints" / "original_seed0.json").exists()
    assert _two_processes([*cmd, "--workdir", str(work)], tmp_path / "second")
    log0 = (tmp_path / "second" / "p0.log").read_text()
    assert "original model restored" in log0 and "| method |" in log0
    log1 = (tmp_path / "second" / "p1.log").read_text()
    assert "original model" not in log1 and "| method |" not in log1  # process 0 speaks
    assert _one_process([*cmd, "--workdir", str(tmp_path / "devices")], tmp_path / "third")
    got, want = _records(work), _records(tmp_path / "devices")
    assert sorted(got) == sorted(want) == [("a_cf", False), ("a_cf", True), ("cf", False),
                                           ("cf", True), ("original", False)]
    for key in want:
        assert got[key].keys() == want[key].keys()
        # where each record came from: 2 processes of 1 device, or 1 process of 2 devices
        assert got[key]["provenance"]["devices"]["processes"] == 2
        assert want[key]["provenance"]["devices"]["processes"] == 1
        for field, value in want[key].items():
            if field == "provenance":
                continue
            if isinstance(value, float):
                np.testing.assert_allclose(got[key][field], value, rtol=1e-5,
                                           err_msg=f"{key} {field}")
            else:
                assert got[key][field] == value, (key, field)
    for name in ("blend_grid.png", "results.md", "partition_seed0_ipc16_reference.npz"):
        assert (work / name).exists(), name


def test_process_flags_are_checked(capsys):
    """The launch flags: all three or none, and a process id in range, else a one-line error."""
    for flags, message in ((["--num_processes", "2"], "together"),
                           (["--coordinator", "h:1", "--num_processes", "2", "--process_id",
                             "2"], "process_id must be in [0, 2)"),
                           (["--distributed", "--process_id", "0"], "alone")):
        assert class_forget.main(["--workdir", "unused", *flags]) == 2
        assert message in capsys.readouterr().err
