"""search_spaces: every shipped file, the Optuna/torch mapping, overrides and error texts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution

import search_spaces
from search_spaces import OptimizerConfig, SearchSpace
from tuner.errors import SearchSpaceError

optuna.logging.set_verbosity(optuna.logging.WARNING)

TRAIN_SIZE = 1437  # the digits task's training split
MISSION = ["gd", "sgd", "minibatch", "momentum", "nag", "rmsprop", "adam"]
MODERN = ["adamw", "nadam", "radam", "adagrad", "adadelta", "adamax"]


def _sample(space: SearchSpace, seed: int = 0) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return study.ask(space.distributions()).params


def _write(tmp_path: Path, body: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


GOOD = """\
    name: x
    description: a test space
    class: Adam
    params:
      lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
      batch_size: {type: categorical, choices: [32]}
"""


# --- shipped files -------------------------------------------------------------------------


def test_available_lists_every_shipped_file() -> None:
    names = search_spaces.available()
    assert names == sorted(names)
    assert set(MISSION + MODERN) <= set(names)
    files = sorted(p.stem for p in Path(search_spaces.__file__).parent.glob("*.yaml"))
    assert names == files


@pytest.mark.parametrize("name", search_spaces.available())
def test_shipped_space_loads(name: str) -> None:
    space = search_spaces.load(name)
    assert space.name == name
    assert space.description and "\n" not in space.description
    assert issubclass(getattr(torch.optim, space.torch_class), torch.optim.Optimizer)
    for required in ("lr", "batch_size", "weight_decay", "lr_decay"):
        assert required in space.params, required
    assert space.params["lr"].log
    assert space.params["lr_decay"].low == pytest.approx(1e-3)
    assert space.params["lr_decay"].high == pytest.approx(1e-1)


@pytest.mark.parametrize("name", search_spaces.available())
def test_shipped_space_comments_cite_a_source(name: str) -> None:
    text = (Path(search_spaces.__file__).parent / f"{name}.yaml").read_text()
    sources = ("DeepOBS", "Crowded Valley", "AlgoPerf", "Choi", "Sivaprasad")
    assert any(s in text for s in sources)
    assert "one_minus" in text  # the q-space convention is documented in every file


@pytest.mark.parametrize("name", search_spaces.available())
def test_optimizer_config_builds_and_steps_a_real_model(name: str) -> None:
    space = search_spaces.load(name)
    for seed in range(3):
        params = _sample(space, seed)
        cfg = space.optimizer_config(params, train_size=TRAIN_SIZE)
        assert isinstance(cfg, OptimizerConfig)
        assert cfg.optimizer == f"torch.optim.{space.torch_class}"
        assert isinstance(cfg.batch_size, int) and cfg.batch_size >= 1
        for v in cfg.kwargs.values():
            assert type(v) in (float, int, bool, list), (name, cfg.kwargs)
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        cls = getattr(torch.optim, cfg.optimizer.rsplit(".", 1)[1])
        opt = cls(model.parameters(), **cfg.kwargs)
        sched = None
        if cfg.scheduler is not None:
            assert cfg.scheduler["class"] == "torch.optim.lr_scheduler.ExponentialLR"
            sched_cls = getattr(torch.optim.lr_scheduler, cfg.scheduler["class"].rsplit(".")[-1])
            sched = sched_cls(opt, **cfg.scheduler["kwargs"])
        before = [p.detach().clone() for p in model.parameters()]
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        d = cfg.to_dict()
        assert set(d) == {"class", "kwargs", "batch_size", "scheduler"}


@pytest.mark.parametrize("name", search_spaces.available())
def test_defaults_lie_in_the_distributions(name: str) -> None:
    space = search_spaces.load(name)
    point = space.defaults(train_size=TRAIN_SIZE)
    dists = space.distributions()
    assert set(point) == set(dists)
    for key, value in point.items():
        assert dists[key]._contains(dists[key].to_internal_repr(value)), (key, value)
    space.optimizer_config(point, train_size=TRAIN_SIZE)


def test_defaults_are_the_library_defaults_where_in_range() -> None:
    adam = search_spaces.load("adam").defaults(train_size=TRAIN_SIZE)
    assert adam["lr"] == 1e-3
    assert adam["one_minus_beta1"] == pytest.approx(0.1)
    assert adam["one_minus_beta2"] == pytest.approx(1e-3)
    assert adam["eps"] == 1e-8
    assert adam["weight_decay"] == 0.0
    assert search_spaces.load("momentum").defaults(train_size=1)["one_minus_momentum"] == 0.1


def test_import_is_light() -> None:
    code = "import sys, search_spaces; print('torch' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- mapping to Optuna and torch -----------------------------------------------------------


def test_gd_resolves_full_batch_to_train_size() -> None:
    space = search_spaces.load("gd")
    assert space.params["batch_size"].choices == ("full",)
    assert "batch_size" not in space.distributions()  # a single choice is a constant
    params = _sample(space)
    assert space.hyperparameters(params, train_size=TRAIN_SIZE)["batch_size"] == TRAIN_SIZE
    cfg = space.optimizer_config(params, train_size=TRAIN_SIZE)
    assert cfg.batch_size == TRAIN_SIZE
    assert cfg.kwargs["momentum"] == 0.0


def test_full_stays_a_string_in_a_categorical_distribution(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("choices: [32]", "choices: [full, 32]"))
    dist = search_spaces.load_file(path).distributions()["batch_size"]
    assert isinstance(dist, optuna.distributions.CategoricalDistribution)
    assert dist.choices == ("full", 32)


def test_one_minus_params_are_sampled_as_q_and_converted_back() -> None:
    space = search_spaces.load("adam")
    dists = space.distributions()
    assert "beta1" not in dists and "beta2" not in dists
    q1 = dists["one_minus_beta1"]
    assert isinstance(q1, optuna.distributions.FloatDistribution)
    assert q1.log and (q1.low, q1.high) == (1e-3, 0.5)
    point = {
        "lr": 3e-4,
        "batch_size": 64,
        "one_minus_beta1": 0.1,
        "one_minus_beta2": 0.001,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "lr_decay": 0.03,
    }
    hp = space.hyperparameters(point, train_size=TRAIN_SIZE)
    assert hp == {
        "lr": 3e-4,
        "batch_size": 64,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "lr_decay": 0.03,
    }
    cfg = space.optimizer_config(point, train_size=TRAIN_SIZE)
    assert cfg.to_dict() == {
        "class": "torch.optim.Adam",
        "kwargs": {"lr": 3e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
        "batch_size": 64,
        "scheduler": {
            "class": "torch.optim.lr_scheduler.ExponentialLR",
            "kwargs": {"gamma": pytest.approx(0.97)},
            "step": "epoch",
        },
    }


def test_nag_fixes_nesterov_and_momentum_is_one_minus() -> None:
    space = search_spaces.load("nag")
    point = {
        "lr": 0.1,
        "batch_size": 32,
        "one_minus_momentum": 0.01,
        "weight_decay": 1e-4,
        "lr_decay": 0.01,
    }
    cfg = space.optimizer_config(point, train_size=TRAIN_SIZE)
    assert cfg.kwargs == {"nesterov": True, "lr": 0.1, "momentum": 0.99, "weight_decay": 1e-4}


def test_lr_decay_zero_means_no_scheduler() -> None:
    space = search_spaces.load("minibatch", {"lr_decay": {"choices": [0.0]}})
    assert "lr_decay" not in space.distributions()
    cfg = space.optimizer_config(_sample(space), train_size=TRAIN_SIZE)
    assert cfg.scheduler is None
    assert space.hyperparameters(_sample(space), train_size=TRAIN_SIZE)["lr_decay"] == 0.0


def test_hyperparameters_names_a_missing_optuna_param() -> None:
    space = search_spaces.load("momentum")
    with pytest.raises(SearchSpaceError) as e:
        space.hyperparameters({"lr": 0.1}, train_size=TRAIN_SIZE)
    assert str(e.value) == (
        "momentum: no value for Optuna parameter(s) batch_size, one_minus_momentum, "
        "weight_decay, lr_decay; expected: lr, batch_size, one_minus_momentum, weight_decay, "
        "lr_decay"
    )


# --- overrides -----------------------------------------------------------------------------


def test_override_range_and_log() -> None:
    space = search_spaces.load("momentum", {"lr": {"low": 1.0e-5, "high": 1.0e2}})
    lr = space.distributions()["lr"]
    assert isinstance(lr, FloatDistribution)
    assert (lr.low, lr.high, lr.log) == (1e-5, 1e2, True)
    space = search_spaces.load("adam", {"lr": {"high": 0.01}})
    assert (space.params["lr"].low, space.params["lr"].high) == (1e-5, 0.01)


def test_override_single_choice_fixes_the_value() -> None:
    space = search_spaces.load(
        "momentum", {"momentum": {"choices": [0.99]}, "batch_size": {"choices": [128]}}
    )
    dists = space.distributions()
    assert "one_minus_momentum" not in dists and "momentum" not in dists
    assert "batch_size" not in dists
    params = _sample(space)
    hp = space.hyperparameters(params, train_size=TRAIN_SIZE)
    assert hp["momentum"] == 0.99 and hp["batch_size"] == 128
    cfg = space.optimizer_config(params, train_size=TRAIN_SIZE)
    assert cfg.kwargs["momentum"] == 0.99 and cfg.batch_size == 128


def test_override_several_choices_of_a_one_minus_param_are_values() -> None:
    space = search_spaces.load("adam", {"beta2": {"choices": [0.99, 0.999]}})
    dist = space.distributions()["beta2"]
    assert isinstance(dist, CategoricalDistribution)
    assert dist.choices == (0.99, 0.999)
    hp = space.hyperparameters(_sample(space), train_size=TRAIN_SIZE)
    assert hp["beta2"] in (0.99, 0.999)


def test_override_beta1_range_is_converted_to_q() -> None:
    space = search_spaces.load("adam", {"beta1": {"low": 0.8, "high": 0.99}})
    q = space.distributions()["one_minus_beta1"]
    assert isinstance(q, FloatDistribution)
    assert (q.low, q.high, q.log) == (0.01, 0.2, True)
    # Only one end given: the other comes from the file (q high 0.5 -> beta1 low 0.5).
    space = search_spaces.load("adam", {"beta1": {"high": 0.95}})
    q = space.distributions()["one_minus_beta1"]
    assert isinstance(q, FloatDistribution)
    assert (q.low, q.high) == (0.05, 0.5)


def test_validate_overrides_accepts_good_ones() -> None:
    good = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "weight_decay": {"choices": [0.0]}}
    assert search_spaces.validate_overrides("adam", good) == []
    assert search_spaces.validate_overrides("adam", {}) == []


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        (
            "adam",
            {"momentum": {"choices": [0.9]}},
            "space_overrides.adam.momentum: unknown parameter; 'adam' has: batch_size, beta1, "
            "beta2, eps, lr, lr_decay, weight_decay",
        ),
        (
            "adam",
            {"lr": {"lo": 1e-4}},
            "space_overrides.adam.lr: unknown key 'lo'; allowed: choices, high, log, low",
        ),
        (
            "adam",
            {"lr": {"low": 1.0, "high": 0.1}},
            "space_overrides.adam.lr: `low <= high` must hold, but got low=1.0, high=0.1",
        ),
        (
            "adam",
            {"lr": {"high": 1e-6}},
            "space_overrides.adam.lr: `low <= high` must hold, but got low=1e-05, high=1e-06",
        ),
        (
            "minibatch",
            {"lr": {"low": 0.0}},
            "space_overrides.minibatch.lr: a log range must be > 0, but got low=0.0",
        ),
        (
            "adam",
            {"lr": {"choices": []}},
            "space_overrides.adam.lr: choices must be a non-empty list, but got []",
        ),
        (
            "adam",
            {"lr": {"choices": [0.1], "low": 0.01}},
            "space_overrides.adam.lr: give either choices or low/high/log, not both",
        ),
        (
            "sgd",
            {"batch_size": {"low": 1, "high": 8}},
            "space_overrides.sgd.batch_size: batch_size is categorical in "
            "search_spaces/sgd.yaml; use choices: [...] instead of low/high",
        ),
        (
            "sgd",
            {"batch_size": {"choices": [0]}},
            "space_overrides.sgd.batch_size: choices: batch_size must be a positive integer or "
            "'full', but got 0",
        ),
        (
            "adam",
            {"beta1": {"low": 0.8, "high": 1.0}},
            "space_overrides.adam.beta1: beta1 must lie in [0, 1), but got high=1.0",
        ),
        (
            "adam",
            {"beta1": {"low": 0.99, "high": 0.9}},
            "space_overrides.adam.beta1: `low <= high` must hold, but got low=0.99, high=0.9",
        ),
        (
            "adam",
            {"lr": {"low": "1e-4"}},
            "space_overrides.adam.lr: low must be a number, but got '1e-4' (YAML reads 1e-4 as "
            "a string; write it with a dot, e.g. 1.0e-5)",
        ),
        (
            "adam",
            {"lr": 0.001},
            "space_overrides.adam.lr: must be a mapping with low/high/log or choices (one choice "
            "fixes the value), but got 0.001",
        ),
        (
            "adam",
            ["lr"],
            "space_overrides.adam: must be a mapping of parameter -> {low, high, log} or "
            "{choices: [...]}, but got ['lr']",
        ),
        (
            "nosuch",
            {},
            "unknown search space 'nosuch'; available: " + ", ".join(search_spaces.available()),
        ),
    ],
)
def test_bad_overrides_are_reported(name: str, overrides: object, message: str) -> None:
    assert search_spaces.validate_overrides(name, overrides) == [message]  # type: ignore[arg-type]
    with pytest.raises(SearchSpaceError) as e:
        search_spaces.load(name, overrides)  # type: ignore[arg-type]
    assert str(e.value) == message


def test_validate_overrides_collects_every_problem() -> None:
    problems = search_spaces.validate_overrides(
        "adam", {"nope": {}, "lr": {"low": 1.0, "high": 0.1}}
    )
    assert len(problems) == 2
    assert problems[0].startswith("space_overrides.adam.nope: unknown parameter")
    with pytest.raises(SearchSpaceError) as e:
        search_spaces.load("adam", {"nope": {}, "lr": {"low": 1.0, "high": 0.1}})
    assert str(e.value) == "; ".join(problems)


# --- bad files -----------------------------------------------------------------------------


def test_user_file_loads(tmp_path: Path) -> None:
    space = search_spaces.load_file(_write(tmp_path, GOOD))
    assert space.name == "x" and space.torch_class == "Adam"
    assert set(space.distributions()) == {"lr"}


def _torch_optimizers() -> str:
    return ", ".join(
        sorted(
            n
            for n in dir(torch.optim)
            if isinstance(getattr(torch.optim, n), type)
            and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
            and n != "Optimizer"
        )
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("class: Adam", "class: Adamm", "class: unknown torch.optim class 'Adamm'; available: "),
        (
            "low: 1.0e-4, high: 1.0e-1",
            "low: 1.0, high: 1.0e-1",
            "params.lr: `low <= high` must hold, but got low=1.0, high=0.1",
        ),
        (
            "low: 1.0e-4, high: 1.0e-1",
            "low: 0.0, high: 1.0e-1",
            "params.lr: a log range must be > 0, but got low=0.0",
        ),
        (
            "      lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}\n",
            "",
            "params.lr: missing; every search space tunes the learning rate",
        ),
        (
            "low: 1.0e-4,",
            "low: 1e-4,",
            "params.lr: low must be a number, but got '1e-4' (YAML reads 1e-4 as a string; "
            "write it with a dot, e.g. 1.0e-5)",
        ),
        (
            "type: float",
            "type: real",
            "params.lr: type: unknown type 'real'; allowed: categorical, float, int",
        ),
        (
            "log: true}",
            "log: true, step: 2}",
            "params.lr: unknown key 'step'; allowed: high, log, low, one_minus, type",
        ),
        (
            "choices: [32]",
            "choices: []",
            "params.batch_size: choices must be a non-empty list, but got []",
        ),
    ],
)
def test_bad_file_is_reported(tmp_path: Path, old: str, new: str, message: str) -> None:
    body = textwrap.dedent(GOOD).replace(textwrap.dedent(old) if "\n" in old else old, new)
    assert body != textwrap.dedent(GOOD)
    path = _write(tmp_path, body)
    with pytest.raises(SearchSpaceError) as e:
        search_spaces.load_file(path)
    if message.endswith("available: "):
        message += _torch_optimizers()
    assert str(e.value) == f"{path}: {message}"


def test_bad_file_param_names_are_checked_against_torch(tmp_path: Path) -> None:
    path = _write(
        tmp_path, GOOD + "      rho: {type: float, low: 1.0e-3, high: 0.5, one_minus: true}\n"
    )
    with pytest.raises(SearchSpaceError) as e:
        search_spaces.load_file(path)
    assert str(e.value).startswith(
        f"{path}: params.rho: unknown parameter for torch.optim.Adam; allowed: amsgrad, "
        "batch_size, beta1, beta2, "
    )


def test_bad_file_one_minus_range_must_be_below_one(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        GOOD + "      beta1: {type: float, low: 0.5, high: 2.0, one_minus: true}\n"
        "      beta2: {type: float, low: 1.0e-4, high: 0.2, one_minus: true}\n",
    )
    with pytest.raises(SearchSpaceError) as e:
        search_spaces.load_file(path)
    assert (
        str(e.value) == f"{path}: params.beta1: one_minus: q = 1 - beta1 must lie in (0, 1], "
        "but got high=2.0"
    )


def test_bad_file_fixed_reserved_lr_decay(tmp_path: Path) -> None:
    body = GOOD.replace("class: Adam", "class: Adagrad") + "    fixed: {lr_decay: 0.1}\n"
    path = _write(tmp_path, body)
    with pytest.raises(SearchSpaceError) as e:
        search_spaces.load_file(path)
    assert str(e.value) == (
        f"{path}: fixed.lr_decay: the name lr_decay is reserved for the learning-rate schedule "
        "(params.lr_decay)"
    )


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SearchSpaceError) as e:
        search_spaces.load_file(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}: no such file"
    path = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(SearchSpaceError) as e:
        search_spaces.load_file(path)
    assert str(e.value).startswith(f"{path}: invalid YAML at line ")


def test_unknown_space_name() -> None:
    with pytest.raises(SearchSpaceError) as e:
        search_spaces.load("foo")
    assert str(e.value) == (
        "unknown search space 'foo'; available: " + ", ".join(search_spaces.available())
    )


def test_public_api() -> None:
    assert search_spaces.__all__ == [
        "FULL",
        "SCHEDULER_CLASS",
        "SCHEDULES",
        "OptimizerConfig",
        "ParamSpec",
        "SearchSpace",
        "available",
        "load",
        "load_file",
        "schedule_config",
        "validate_overrides",
    ]
