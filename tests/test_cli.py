"""Tests of experiments.cli's ``--set``: every value is checked against its field's type."""

import pytest

from experiments import class_forget, cli, dc_compare


def _set(*items, get_config=class_forget.get_config):
    cfg = get_config()
    argv = ["--workdir", "w"]
    for item in items:
        argv += ["--set", item]
    return cli.apply_args(cfg, cli.build_parser("x", cfg).parse_args(argv))


@pytest.mark.parametrize("item,match", [
    ("ipc=[1,", r"--set ipc: expected int, got '\[1,' \(not valid JSON\)"),
    ("ipc=2.5", "--set ipc: expected int, got 2.5"),
    ("ipc=true", "--set ipc: expected int, got true"),
    ("original.epochs=x", "--set original.epochs: expected int, got 'x'"),
    ('original={"epochs": "a"}', '--set original.epochs: expected int, got "a"'),
    ("blend.momentum=fast", "--set blend.momentum: expected float"),
    ("max_per_class_train=1.5", "expected int or null, got 1.5"),
    ("condensation=true", "--set condensation: expected tuple"),
    ("blend=3", "--set blend: expected a JSON object of its fields, got 3"),
    ("name=3", "--set name: expected str, got 3"),
])
def test_a_value_of_the_wrong_type_is_a_one_line_error(item, match):
    with pytest.raises(ValueError, match=match):
        _set(item)


def test_values_of_the_right_type_are_conformed():
    cfg = _set("ipc=3", "original.lr=1", "name=my study", "data_dir=/tmp/a b",
               "max_per_class_train=null", "forget_classes=[2, 3]", "blend.weights=softmax",
               "method_hparams.cf.lr=0.5")
    assert cfg.ipc == 3 and cfg.original.lr == 1.0 and isinstance(cfg.original.lr, float)
    assert cfg.name == "my study" and cfg.data_dir == "/tmp/a b"  # bare strings where str
    assert cfg.max_per_class_train is None and cfg.forget_classes == (2, 3)
    assert cfg.blend.weights == "softmax" and cfg.method_hparams["cf"]["lr"] == 0.5
    dc = _set("ipcs=[1, 5]", "eval.steps=7", get_config=dc_compare.get_config)
    assert dc.ipcs == (1, 5) and dc.eval.steps == 7


def test_the_command_line_prints_the_error_without_a_traceback(tmp_path, capsys):
    code = class_forget.main(["--workdir", str(tmp_path / "w"), "--set", "ipc=[1,"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--set ipc: expected int" in err
    assert "Traceback" not in err


def test_the_mia_options_are_a_section_checked_before_any_work():
    from experiments import study

    cfg = _set('mia={"swap": "flip"}', "mia.standardize=true")
    assert (cfg.mia.phi, cfg.mia.swap, cfg.mia.standardize) == ("reference", "flip", True)
    with pytest.raises(ValueError, match="mia.swap must be one of"):
        study.validate_config(_set("mia.swap=max"))
    with pytest.raises(ValueError, match="--set mia.standardize: expected bool"):
        _set("mia.standardize=1")


def test_print_config_shows_every_methods_effective_hyper_parameters(capsys):
    import json

    assert class_forget.main(["--print_config", "--methods", "a_cf,cf",
                              "--set", "method_hparams.cf.epochs=3"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    a_cf = cfg["resolved_methods"]["a_cf"]
    # the factory's defaults (base method's included) merged with the config's values
    assert (a_cf["method"], a_cf["batch_size"], a_cf["lam"], a_cf["optimizer"]) == (
        "a_cf", 16, 34.0, "adam")
    assert cfg["resolved_methods"]["cf"]["epochs"] == 3
    assert cfg["resolved_methods"]["cf +DC"]["momentum"] == 0.502
    assert class_forget.main(["--print_config", "--set", "method_hparams.cf.lamda=1"]) == 2
    assert "takes no ['lamda']" in capsys.readouterr().err


def test_usability_of_the_command_line(tmp_path, capsys):
    import os

    from experiments.io import atomic_write, log, prepare_workdir

    cfg = class_forget.get_config()
    parser = cli.build_parser(class_forget.__doc__, cfg)
    assert parser.parse_args([]).workdir == os.path.join("runs", "class_forget")  # a default
    assert "``" not in parser.format_help()  # no raw reST literals
    with pytest.raises(ValueError, match="did you mean 'original'"):
        _set("origial.epochs=3")
    paths = prepare_workdir(str(tmp_path / "w"))
    atomic_write(paths.results, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(paths.results).st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    log("a line for the log file")
    assert "a line for the log file" in capsys.readouterr().out
    assert "a line for the log file" in (tmp_path / "w" / "run.log").read_text()


def test_the_compile_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXUNLEARN_COMPILE_CACHE", "0")
    assert cli.compile_cache_dir() is None
    monkeypatch.setenv("JAXUNLEARN_COMPILE_CACHE", str(tmp_path))
    assert cli.compile_cache_dir() == str(tmp_path)
    monkeypatch.delenv("JAXUNLEARN_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert cli.compile_cache_dir() == str(tmp_path / "c" / "jaxunlearn" / "jax")


def test_a_method_entry_that_is_not_an_object_is_a_one_line_error(capsys):
    assert class_forget.main(["--print_config", "--set", "method_hparams.cf=3"]) == 2
    assert "method_hparams.cf must be a JSON object" in capsys.readouterr().err
