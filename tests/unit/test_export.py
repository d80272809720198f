"""The export (tuner.analysis.export): YAML / JSON / Python out, ``torch.optim`` back in.

The document is built by hand from every shipped search space at its defaults
(``search_spaces.load(name).optimizer_config(defaults)``), so each ``torch.optim`` class that
tuner ships is loaded once through every path docs/design.md promises.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import search_spaces
from tuner import TunerError, load_optimizer
from tuner.analysis.export import FORMATS, build_export, render_export
from tuner.analysis.statistics import leaderboard
from tuner.results import FinalRun, JobProgress, OptimizerProgress, OptimizerResult
from tuner.spec import parse_job

NAMES = search_spaces.available()
TRAIN_SIZE = 1437


def entry(name: str, *, best: float = 0.5, trial: int = 0) -> dict[str, Any]:
    space = search_spaces.load(name)
    config = space.optimizer_config(space.defaults(train_size=TRAIN_SIZE), train_size=TRAIN_SIZE)
    return {
        **config.to_dict(),
        "score": {"best": best, "mean": best + 0.01, "std": 0.002, "seeds": 3},
        "trial": trial,
        "mlflow_run_id": f"run-{name}",
    }


def document(names: list[str] = NAMES, best: str | None = "adam") -> dict[str, Any]:
    return {
        "job": 7,
        "task": "digits-mlp",
        "metric": {"name": "val_loss", "mode": "min"},
        "best": best,
        "optimizers": {name: entry(name, best=0.1 * (i + 1)) for i, name in enumerate(names)},
    }


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def one_step(optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> None:
    module(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


# -- round trips -------------------------------------------------------------------------------


def test_formats_are_yaml_json_python() -> None:
    assert FORMATS == ("yaml", "json", "python")


def test_yaml_round_trip_keeps_every_value_and_the_order() -> None:
    doc = document()

    loaded = yaml.safe_load(render_export(doc, "yaml"))

    assert loaded == doc
    assert list(loaded) == ["job", "task", "metric", "best", "optimizers"]
    assert list(loaded["optimizers"]) == NAMES


def test_json_round_trip_keeps_every_value() -> None:
    doc = document()

    text = render_export(doc, "json")

    assert text.endswith("\n")
    assert json.loads(text) == doc


def test_an_unknown_format_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(TunerError) as info:
        render_export(document(), "xml")

    assert str(info.value) == "--format: unknown format 'xml'; allowed: yaml, json, python"


def test_python_export_is_a_module_that_builds_real_optimizers_and_schedules() -> None:
    doc = document()
    doc["optimizers"]["sgd"]["scheduler"] = None  # a constant learning rate

    source = render_export(doc, "python")
    namespace: dict[str, Any] = {}
    exec(compile(source, "best.py", "exec"), namespace)

    assert namespace["BEST"] == "adam"
    assert namespace["BATCH_SIZE"] == {name: doc["optimizers"][name]["batch_size"]
                                       for name in NAMES}
    for name in NAMES:
        module = model()
        optimizer, scheduler = namespace[f"make_{name}"](module.parameters())
        expected = doc["optimizers"][name]
        assert type(optimizer).__name__ == expected["class"].rsplit(".", 1)[1]
        for key, value in expected["kwargs"].items():
            got = optimizer.defaults[key]
            assert (list(got) if key == "betas" else got) == value, (name, key)
        if expected["scheduler"] is None:
            assert scheduler is None
        else:
            assert isinstance(scheduler, torch.optim.lr_scheduler.ExponentialLR)
            assert scheduler.gamma == expected["scheduler"]["kwargs"]["gamma"]
        one_step(optimizer, module)
        if scheduler is not None:
            scheduler.step()
    best, _ = namespace["make_best"](model().parameters())
    assert isinstance(best, torch.optim.Adam)


def test_python_export_without_any_optimizer_is_still_valid_python() -> None:
    doc = {**document([]), "best": None}

    namespace: dict[str, Any] = {}
    exec(compile(render_export(doc, "python"), "best.py", "exec"), namespace)

    assert namespace["BEST"] is None
    assert "make_best" not in namespace


# -- docs/design.md: getattr(torch.optim, cls)(model.parameters(), **kwargs) ------------------


@pytest.mark.parametrize("name", NAMES)
def test_getattr_torch_optim_works_on_every_entry_as_it_stands(name: str) -> None:
    # Through the YAML text, as a user reads the file.
    doc = yaml.safe_load(render_export(document(), "yaml"))
    item = doc["optimizers"][name]
    module = model()

    optimizer = getattr(torch.optim, item["class"].split(".")[-1])(
        module.parameters(), **item["kwargs"]
    )
    scheduler = None
    if item["scheduler"]:
        scheduler_cls = getattr(torch.optim.lr_scheduler,
                                item["scheduler"]["class"].split(".")[-1])
        scheduler = scheduler_cls(optimizer, **item["scheduler"]["kwargs"])
    one_step(optimizer, module)
    if scheduler is not None:
        scheduler.step()
    assert item["batch_size"] >= 1 and isinstance(item["batch_size"], int)


# -- load_optimizer ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_load_optimizer_from_a_file_builds_the_best(tmp_path: Path, fmt: str) -> None:
    # JSON writes 1e-08; a YAML 1.1 reader takes that for the string "1e-08", not a float.
    path = tmp_path / f"best.{fmt}"
    path.write_text(render_export(document(), fmt))

    optimizer, scheduler = load_optimizer(path, model().parameters())

    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ExponentialLR)


def test_load_optimizer_from_a_path_given_as_text(tmp_path: Path) -> None:
    path = tmp_path / "best.yaml"
    path.write_text(render_export(document(), "yaml"))

    optimizer, _ = load_optimizer(str(path), model().parameters())

    assert isinstance(optimizer, torch.optim.Adam)


@pytest.mark.parametrize("name", NAMES)
def test_load_optimizer_picks_the_named_optimizer_from_a_dict(name: str) -> None:
    doc = document()
    module = model()

    optimizer, scheduler = load_optimizer(doc, module.parameters(), optimizer=name)

    expected = doc["optimizers"][name]
    assert f"torch.optim.{type(optimizer).__name__}" == expected["class"]
    assert optimizer.defaults["lr"] == expected["kwargs"]["lr"]
    assert (scheduler is None) == (expected["scheduler"] is None)
    one_step(optimizer, module)


def test_load_optimizer_from_a_single_entry() -> None:
    item = entry("nag")
    item["scheduler"] = None

    optimizer, scheduler = load_optimizer(item, model().parameters())

    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["nesterov"] is True
    assert optimizer.defaults["momentum"] == 0.9
    assert scheduler is None


def test_load_optimizer_accepts_parameter_groups() -> None:
    module = model()
    groups: list[dict[str, Any]] = [{"params": [module.weight]},
                                    {"params": [module.bias], "lr": 0.5}]

    optimizer, _ = load_optimizer(document(), groups, optimizer="minibatch")

    assert [g["lr"] for g in optimizer.param_groups] == [0.001, 0.5]


def test_load_optimizer_names_what_the_export_has() -> None:
    with pytest.raises(TunerError) as info:
        load_optimizer(document(["adam", "sgd"]), model().parameters(), optimizer="lion")

    assert str(info.value) == "optimizer 'lion' is not in the export; it has: adam, sgd"


def test_load_optimizer_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(TunerError) as info:
        load_optimizer(path, model().parameters())

    assert str(info.value) == (
        f"{path}: cannot read the export: [Errno 2] No such file or directory: '{path}'"
    )


def test_load_optimizer_refuses_a_class_outside_torch_optim() -> None:
    item = {"class": "os.system", "kwargs": {}, "batch_size": 1, "scheduler": None}

    with pytest.raises(ValueError, match=r"^not a torch.optim class: 'os.system'$"):
        load_optimizer(item, model().parameters())


# -- build_export: the document of a finished job ----------------------------------------------


def test_build_export_follows_the_leaderboard_and_skips_optimizers_without_a_result() -> None:
    spec = parse_job({"task": "digits-mlp", "optimizers": ["sgd", "adam", "rmsprop"],
                      "final_seeds": 2})
    results: dict[str, OptimizerResult] = {}
    progress = JobProgress(job_id=3, metric="val_loss", mode="min")
    for name, best, finals in (("sgd", 0.4, [0.41, 0.43]), ("adam", 0.2, [0.21, 0.22]),
                               ("rmsprop", None, [])):
        space = search_spaces.load(name)
        result = OptimizerResult(name=name, space=space)
        if best is not None:
            params = space.defaults(train_size=TRAIN_SIZE)
            result.best_value, result.best_trial, result.best_params = best, 4, params
            result.hyperparameters = space.hyperparameters(params, train_size=TRAIN_SIZE)
            result.config = space.optimizer_config(params, train_size=TRAIN_SIZE).to_dict()
            result.best_run_id = f"run-{name}"
            result.finals = [FinalRun(seed=42 + i, value=v, state="COMPLETE", epochs=[])
                             for i, v in enumerate(finals)]
        results[name] = result
        progress.optimizers[name] = OptimizerProgress(name=name, budget=5)

    board = leaderboard(spec, results, progress)
    export = build_export(3, spec, results, board)

    assert export["job"] == 3 and export["task"] == "digits-mlp"
    assert export["metric"] == {"name": "val_loss", "mode": "min"}
    assert export["best"] == "adam"
    assert list(export["optimizers"]) == ["adam", "sgd"]
    adam = export["optimizers"]["adam"]
    assert adam["class"] == "torch.optim.Adam"
    assert adam["trial"] == 4 and adam["mlflow_run_id"] == "run-adam"
    assert adam["score"]["seeds"] == 2
    assert adam["score"]["mean"] == pytest.approx(0.215)
    optimizer, _ = load_optimizer(yaml.safe_load(render_export(export)), model().parameters())
    assert isinstance(optimizer, torch.optim.Adam)
