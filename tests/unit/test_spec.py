"""The job file (tuner.spec): a valid file, the defaults, and every bad field at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import search_spaces
from tuner import JobSpec, SpecError, TunerError, load_job_file, parse_job
from tuner.task import task_names

SPACES = ", ".join(search_spaces.available())
TASKS = ", ".join(task_names())
FIELDS = (
    "name, task, optimizers, trials, epochs, metric, mode, sampler, pruner, diverged_as, "
    "lr_range_test, reproducible, seed, final_seeds, resources, max_concurrent, timeout_s, "
    "target, space_overrides, code, requirements, trainer"
)
TRAINER_DEFAULTS = {"val_batch_size": 1024, "num_workers": 0, "pin_memory": None, "amp": "off",
                    "grad_clip": None}
MINIMAL = {"task": "digits-mlp", "optimizers": ["adam"]}

VALID_FILE = """\
name: digits-optimizers
task: digits-mlp
optimizers: [sgd, momentum, adam]
trials: 30
epochs: 12
metric: val_accuracy
mode: max
sampler: random
pruner: hyperband
seed: 7
final_seeds: 5
resources: {cpus_per_trial: 0.5, gpus_per_trial: 0.25}
max_concurrent: 4
timeout_s: 3600
target: 0.95
space_overrides:
  adam: {lr: {low: 1.0e-4, high: 1.0e-2}, beta1: {low: 0.8, high: 0.99}}
  momentum: {momentum: {choices: [0.99]}, batch_size: {choices: [128]}}
"""


def problems_of(document: object, source: str = "job.yaml") -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_job(document, source=source)
    assert info.value.source == source
    assert str(info.value) == f"{source}: " + "; ".join(info.value.problems)
    return info.value.problems


def unknown_optimizer(index: int, name: str) -> str:
    return (
        f"optimizers[{index}]: unknown optimizer {name!r}; available: {SPACES} (see tuner spaces)"
    )


def unknown_task(name: str) -> str:
    return (
        f"task: unknown task {name!r}; available: {TASKS} or package.module:factory "
        "(see tuner tasks)"
    )


# -- valid documents ---------------------------------------------------------------------------


def test_a_valid_file_is_read_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(VALID_FILE)

    spec = load_job_file(path)

    assert isinstance(spec, JobSpec)
    assert spec.model_dump(mode="json") == {
        "name": "digits-optimizers",
        "task": "digits-mlp",
        "optimizers": ["sgd", "momentum", "adam"],
        "trials": 30,
        "epochs": 12,
        "metric": "val_accuracy",
        "mode": "max",
        "sampler": "random",
        "pruner": "hyperband",
        "diverged_as": "worst",
        "lr_range_test": False,
        "reproducible": False,
        "seed": 7,
        "final_seeds": 5,
        "resources": {"cpus_per_trial": 0.5, "gpus_per_trial": 0.25},
        "max_concurrent": 4,
        "timeout_s": 3600.0,
        "target": 0.95,
        "space_overrides": {
            "adam": {"lr": {"low": 1.0e-4, "high": 1.0e-2}, "beta1": {"low": 0.8, "high": 0.99}},
            "momentum": {"momentum": {"choices": [0.99]}, "batch_size": {"choices": [128]}},
        },
        "code": None,
        "requirements": None,
        "trainer": TRAINER_DEFAULTS,
    }
    assert spec.direction == "maximize"
    assert spec.study_name(7, "adam") == "job-7-adam"


def test_the_defaults_of_a_minimal_job() -> None:
    spec = parse_job(MINIMAL)

    assert spec.model_dump(mode="json") == {
        "name": "job",
        "task": "digits-mlp",
        "optimizers": ["adam"],
        "trials": 20,
        "epochs": 20,
        "metric": "val_loss",
        "mode": "min",
        "sampler": "tpe",
        "pruner": "none",
        "diverged_as": "worst",
        "lr_range_test": False,
        "reproducible": False,
        "seed": 0,
        "final_seeds": 3,
        "resources": {"cpus_per_trial": 1.0, "gpus_per_trial": 0.0},
        "max_concurrent": 2,
        "timeout_s": None,
        "target": None,
        "space_overrides": {},
        "code": None,
        "requirements": None,
        "trainer": TRAINER_DEFAULTS,
    }
    assert spec.direction == "minimize"


def test_a_module_path_task_is_accepted_without_importing_it() -> None:
    spec = parse_job({**MINIMAL, "task": "no_such_package.tasks:build"})

    assert spec.task == "no_such_package.tasks:build"


def test_the_rest_body_and_the_file_give_the_same_spec(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(VALID_FILE)

    assert parse_job(yaml.safe_load(VALID_FILE)) == load_job_file(path)


# -- one bad field at a time: the exact line -----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"optimizers": ["nosuchopt"]}, [unknown_optimizer(0, "nosuchopt")]),
        ({"optimizers": ["adam", "sgd", "adam"]}, ["optimizers[2]: 'adam' is listed twice"]),
        ({"trials": -1}, ["trials: got -1; input should be greater than or equal to 1"]),
        ({"task": "nosuch"}, [unknown_task("nosuch")]),
        (
            {"sampler": "bogus"},
            ["sampler: got 'bogus'; input should be 'tpe', 'random', 'cmaes', 'gp' or 'qmc'"],
        ),
        (
            {"pruner": "asha"},
            ["pruner: got 'asha'; input should be 'none', 'median', 'sha' or 'hyperband'"],
        ),
        ({"mode": "up"}, ["mode: got 'up'; input should be 'min' or 'max'"]),
        ({"diverged_as": "nan"}, ["diverged_as: got 'nan'; input should be 'worst' or 'fail'"]),
        ({"reproducible": "maybe"},
         ["reproducible: got 'maybe'; input should be a valid boolean, unable to interpret "
          "input"]),
        ({"colour": "red"}, [f"colour: unknown field; allowed: {FIELDS}"]),
        (
            {"resources": {"cpus_per_trial": 0, "disks": 1}},
            [
                "resources.cpus_per_trial: got 0; input should be greater than 0",
                "resources.disks: unknown field; allowed: cpus_per_trial, gpus_per_trial",
            ],
        ),
        (
            {"metric": "accuracy"},
            [
                "metric: task 'digits-mlp' does not report 'accuracy'; allowed: val_loss, "
                "train_loss, val_accuracy"
            ],
        ),
        (
            {"space_overrides": {"adam": {"nope": {"low": 1.0}}}},
            [
                "space_overrides.adam.nope: unknown parameter; 'adam' has: batch_size, beta1, "
                "beta2, eps, lr, lr_decay, weight_decay"
            ],
        ),
        (
            {"space_overrides": {"adam": {"lr": {"low": 0.1, "high": 0.01}}}},
            ["space_overrides.adam.lr: `low <= high` must hold, but got low=0.1, high=0.01"],
        ),
        (
            {"space_overrides": {"sgd": {"lr": {"low": 0.1}}}},
            ["space_overrides.sgd: 'sgd' is not one of this job's optimizers (adam)"],
        ),
        (
            {"space_overrides": {"adam": {"lr": {"choices": []}}}},
            ["space_overrides.adam.lr: choices must be a non-empty list, but got []"],
        ),
    ],
    ids=[
        "unknown-optimizer", "duplicate-optimizer", "negative-trials", "unknown-task",
        "unknown-sampler", "unknown-pruner", "bad-mode", "bad-diverged-as", "bad-reproducible",
        "unknown-field", "bad-resources",
        "bad-metric", "override-unknown-param", "override-low-above-high",
        "override-other-optimizer", "override-empty-choices",
    ],
)
def test_one_bad_field_gets_its_exact_line(change: dict, expected: list[str]) -> None:
    assert problems_of({**MINIMAL, **change}) == expected


def test_a_missing_task_is_named() -> None:
    assert problems_of({"optimizers": ["adam"]}) == ["task: required field is missing"]


def test_every_cross_field_problem_is_reported_at_once() -> None:
    document = {
        "task": "nosuch",
        "optimizers": ["nosuchopt", "adam", "adam"],
        "metric": "accuracy",
        "space_overrides": {
            "adam": {"nope": {"low": 1.0}, "lr": {"low": 1.0, "high": 0.1}},
            "sgd": {"lr": {"low": 0.1}},
        },
    }

    # One line per problem; the order follows the fields, which is not part of the contract.
    assert sorted(problems_of(document)) == sorted([
        unknown_optimizer(0, "nosuchopt"),
        "optimizers[2]: 'adam' is listed twice",
        unknown_task("nosuch"),
        "metric: 'accuracy' is not reported; allowed: val_loss, train_loss or val_<metric> "
        "of the task (see tuner tasks)",
        "space_overrides.adam.nope: unknown parameter; 'adam' has: batch_size, beta1, beta2, "
        "eps, lr, lr_decay, weight_decay",
        "space_overrides.adam.lr: `low <= high` must hold, but got low=1.0, high=0.1",
        "space_overrides.sgd: 'sgd' is not one of this job's optimizers (nosuchopt, adam, adam)",
    ])


def test_every_bad_field_is_reported_at_once_field_errors_and_name_errors_together() -> None:
    # docs/design.md / docs/style.md: "All errors of one input at once". A bad number must not
    # hide an unknown optimizer, task, sampler or override in the same document.
    document = {
        "task": "nosuch",
        "optimizers": ["nosuchopt", "adam", "adam"],
        "trials": -1,
        "sampler": "bogus",
        "pruner": "asha",
        "colour": "red",
        "metric": "accuracy",
        "space_overrides": {"adam": {"lr": {"low": 1.0, "high": 0.1}}, "sgd": {}},
    }

    problems = problems_of(document)

    assert sorted(problems) == sorted([
        unknown_optimizer(0, "nosuchopt"),
        "optimizers[2]: 'adam' is listed twice",
        "trials: got -1; input should be greater than or equal to 1",
        unknown_task("nosuch"),
        "sampler: got 'bogus'; input should be 'tpe', 'random', 'cmaes', 'gp' or 'qmc'",
        "pruner: got 'asha'; input should be 'none', 'median', 'sha' or 'hyperband'",
        f"colour: unknown field; allowed: {FIELDS}",
        "metric: 'accuracy' is not reported; allowed: val_loss, train_loss or val_<metric> "
        "of the task (see tuner tasks)",
        "space_overrides.adam.lr: `low <= high` must hold, but got low=1.0, high=0.1",
        "space_overrides.sgd: 'sgd' is not one of this job's optimizers (nosuchopt, adam, adam)",
    ])


def test_a_bad_list_item_is_named_like_the_other_optimizer_errors() -> None:
    # One field, one spelling: the name checks say optimizers[1], so must the type check.
    assert problems_of({**MINIMAL, "optimizers": ["adam", 3]}) == [
        "optimizers[1]: got 3; input should be a valid string"
    ]


def test_a_boolean_is_not_a_trial_count() -> None:
    # YAML's `trials: yes` is True; pydantic's lax mode would read it as 1 trial.
    assert problems_of({**MINIMAL, "trials": True}) == [
        "trials: got True; input should be a valid integer"
    ]


# -- the file itself --------------------------------------------------------------------------


def test_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\ntask: digits-mlp\noptimizers: [adam\ntrials: 3\n")

    with pytest.raises(SpecError) as info:
        load_job_file(path)

    assert info.value.problems == [
        "not valid YAML at line 4, column 7: expected ',' or ']', but got ':'"
    ]
    assert str(info.value) == (
        f"{path}: not valid YAML at line 4, column 7: expected ',' or ']', but got ':'"
    )


def test_bad_indentation_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\ntask: digits-mlp\n  optimizers: [adam]\n")

    with pytest.raises(SpecError) as info:
        load_job_file(path)

    assert info.value.problems == [
        "not valid YAML at line 3, column 13: mapping values are not allowed here"
    ]


def test_a_file_that_is_a_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("- task: digits-mlp\n- optimizers: [adam]\n")

    with pytest.raises(SpecError) as info:
        load_job_file(path)

    assert str(info.value) == (
        f"{path}: a job is a mapping of fields (name, task, optimizers, ...), got list"
    )


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(SpecError) as info:
        load_job_file(path)

    assert str(info.value) == f"{path}: cannot read the job file: No such file or directory"


def test_field_errors_of_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("task: digits-mlp\noptimizers: [nosuchopt]\n")

    with pytest.raises(SpecError) as info:
        load_job_file(path)

    assert str(info.value) == f"{path}: {unknown_optimizer(0, 'nosuchopt')}"


def test_spec_error_is_a_value_error_and_a_tuner_error() -> None:
    with pytest.raises(SpecError) as info:
        parse_job({})

    assert isinstance(info.value, ValueError) and isinstance(info.value, TunerError)
    assert info.value.problems == [
        "task: required field is missing",
        "optimizers: required field is missing",
    ]


def test_code_is_a_sha256_and_requirements_are_pep508_each_bad_one_named() -> None:
    with pytest.raises(SpecError) as error:
        parse_job({"task": "digits-mlp", "optimizers": ["adam"], "code": "ABC",
                   "requirements": ["termcolor>=2", "-e .", "torch==2.4"]})

    assert error.value.problems == [
        "code: got 'ABC'; allowed: the SHA-256 (64 lowercase hex digits) of a code archive "
        "uploaded with POST /v1/code (tuner submit --code DIR sends it)",
        "requirements[1]: '-e .' is not a pip requirement (Expected package name at the start "
        "of dependency specifier); allowed: a PEP 508 requirement such as 'termcolor>=2' or "
        "'pkg==1.0'",
    ]
    spec = parse_job({"task": "digits-mlp", "optimizers": ["adam"], "code": "0f" * 32,
                      "requirements": ["termcolor>=2"]})
    assert (spec.code, spec.requirements) == ("0f" * 32, ["termcolor>=2"])


# -- trainer: ----------------------------------------------------------------------------------


def test_trainer_options_are_read_and_yaml_off_means_off(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("task: digits-mlp\noptimizers: [adam]\n"
                    "trainer: {val_batch_size: 256, num_workers: 2, pin_memory: true, amp: off,"
                    " grad_clip: 1.0}\n")

    spec = load_job_file(path)

    assert spec.trainer.model_dump() == {"val_batch_size": 256, "num_workers": 2,
                                         "pin_memory": True, "amp": "off", "grad_clip": 1.0}
    assert parse_job({**MINIMAL, "trainer": {"amp": "bf16"}}).trainer.amp == "bf16"


def test_every_bad_trainer_option_is_named() -> None:
    problems = problems_of({**MINIMAL, "trainer": {
        "val_batch_size": 0, "num_workers": -1, "amp": "fp8", "grad_clip": 0, "colour": 1}})

    assert sorted(problems) == sorted([
        "trainer.val_batch_size: got 0; input should be greater than or equal to 1",
        "trainer.num_workers: got -1; input should be greater than or equal to 0",
        "trainer.amp: got 'fp8'; input should be 'off', 'bf16' or 'fp16'",
        "trainer.grad_clip: got 0; input should be greater than 0",
        "trainer.colour: unknown field; allowed: val_batch_size, num_workers, pin_memory, amp, "
        "grad_clip",
    ])


def test_fp16_needs_a_gpu_per_trial() -> None:
    assert problems_of({**MINIMAL, "trainer": {"amp": "fp16"}}) == [
        "trainer.amp: fp16 needs a GPU (resources.gpus_per_trial > 0); on CPU use bf16 or off"
    ]
    spec = parse_job({**MINIMAL, "trainer": {"amp": "fp16"},
                      "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5}})
    assert spec.trainer.amp == "fp16"


def test_a_module_path_may_report_any_metric_name() -> None:
    # A user's training loop reports what it likes; the workers check the name when it runs.
    spec = parse_job({**MINIMAL, "task": "mymodel.gan:train", "metric": "val_w1"})

    assert spec.metric == "val_w1"


def test_the_lr_range_test_cannot_drive_a_training_loop() -> None:
    assert problems_of({"task": "cartpole-reinforce", "optimizers": ["adam"],
                        "metric": "val_return", "mode": "max", "lr_range_test": True}) == [
        "lr_range_test: task 'cartpole-reinforce' is a training loop; the range test trains a "
        "Task (a model, data and a loss) and cannot drive a loop"
    ]


def test_an_unknown_field_lists_the_fields_of_the_model_it_is_in() -> None:
    # Found by following the field's path through the models, not by its spelling: a
    # top-level key written "resources.disks" is a field of the job, not of resources.
    assert problems_of({**MINIMAL, "resources.disks": 1}) == [
        f"resources.disks: unknown field; allowed: {FIELDS}"]
    assert problems_of({**MINIMAL, "resources": {"disks": 1}}) == [
        "resources.disks: unknown field; allowed: cpus_per_trial, gpus_per_trial"]
