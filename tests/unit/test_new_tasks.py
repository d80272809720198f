"""The tasks of the reinforcement-learning, language and speech applications: what they
report, that they are deterministic, and that they learn."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tuner
from tests.datasets import tensor_dataset
from tuner.task import available_tasks, is_training_loop, resolve_task
from workers.tasks import cartpole, language, speech
from workers.trainer import TrialRun, seed_everything

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
ADAM = {"class": "torch.optim.Adam", "kwargs": {"lr": 1e-2}, "batch_size": 64,
        "scheduler": None}


def test_tuner_tasks_shows_the_new_kinds_and_what_they_report() -> None:
    infos = {info.name: info for info in available_tasks()}

    assert infos["cartpole-reinforce"].kind == "reinforcement learning"
    assert infos["cartpole-reinforce"].loop is True
    assert infos["cartpole-reinforce"].reports == ["val_return", "train_return", "train_loss"]
    assert infos["text-transformer"].kind == "language"
    assert infos["text-transformer"].reports == ["val_loss", "train_loss", "val_perplexity"]
    assert infos["vowels-cnn"].kind == "speech"
    assert infos["vowels-cnn"].reports == ["val_loss", "train_loss", "val_accuracy"]


def test_a_job_on_the_loop_task_may_only_name_what_it_reports() -> None:
    spec = tuner.parse_job({"task": "cartpole-reinforce", "optimizers": ["adam"],
                            "metric": "val_return", "mode": "max"})
    assert spec.metric == "val_return"

    with pytest.raises(tuner.SpecError) as info:
        tuner.parse_job({"task": "cartpole-reinforce", "optimizers": ["adam"]})
    assert info.value.problems == [
        "metric: task 'cartpole-reinforce' does not report 'val_loss'; allowed: val_return, "
        "train_return, train_loss"
    ]


# -- reinforcement learning: REINFORCE on CartPole, a training loop -------------------------


def _cartpole(lr: float, *, seed: int = 0, epochs: int = 2) -> tuner.Trial:
    trial = tuner.Trial({**ADAM, "kwargs": {"lr": lr}}, seed=seed, epochs=epochs,
                        metric="val_return")
    cartpole.reinforce(trial)
    return trial


def test_cartpole_is_a_training_loop_that_reports_every_epoch() -> None:
    assert is_training_loop(resolve_task("cartpole-reinforce"))

    trial = _cartpole(1e-2, epochs=2)

    assert [r["epoch"] for r in trial.reports] == [1, 2]
    for report in trial.reports:
        assert set(report["metrics"]) == {"val_return", "train_return", "train_loss"}
        assert 1 <= report["metrics"]["val_return"] <= 500  # CartPole-v1 caps at 500
    # REINFORCE with a sane step size improves on the random policy (~20 steps).
    assert trial.reports[-1]["metrics"]["val_return"] > 40


def test_cartpole_same_seed_same_returns_other_seed_other() -> None:
    first = [r["metrics"] for r in _cartpole(1e-2, seed=3, epochs=1).reports]
    again = [r["metrics"] for r in _cartpole(1e-2, seed=3, epochs=1).reports]
    other = [r["metrics"] for r in _cartpole(1e-2, seed=4, epochs=1).reports]

    assert first == again
    assert first != other


def test_cartpole_with_a_huge_rate_diverges_or_collapses_without_crashing() -> None:
    trial = tuner.Trial({**ADAM, "kwargs": {"lr": 1e6}}, seed=0, epochs=2)
    try:
        cartpole.reinforce(trial)
    except tuner.TrialPruned:  # TrialDiverged: the weights became NaN or inf
        assert not math.isfinite(trial.reports[-1]["metrics"]["train_loss"])
    else:
        assert all(math.isfinite(r["metrics"]["train_loss"]) for r in trial.reports)


def test_cartpole_without_gymnasium_names_the_extra() -> None:
    # A fresh interpreter where `import gymnasium` fails, as on an install without tuner[rl].
    code = (
        "import sys; sys.modules['gymnasium'] = None\n"
        "import tuner\n"
        "from workers.tasks.cartpole import reinforce\n"
        "try:\n"
        "    reinforce(tuner.Trial({'class': 'torch.optim.Adam', 'kwargs': {'lr': 0.01},"
        " 'batch_size': 64, 'scheduler': None}))\n"
        "except tuner.TaskError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)

    assert done.stdout.startswith(
        "task 'cartpole-reinforce' needs gymnasium: pip install 'tuner[rl]' (or pip install "
        "gymnasium); "
    )


# -- language: a byte-level transformer on pydoc_data.topics --------------------------------


def test_the_text_is_pythons_own_documentation_and_its_hash_is_recorded() -> None:
    from pydoc_data.topics import topics

    text, digest = language.corpus()

    assert len(topics) > 50 and len(text) > 400_000
    assert digest == hashlib.sha256(text).hexdigest()
    task = language.transformer(0)
    X_val, y_val = tensor_dataset(task.val).tensors
    assert X_val.shape == (language.N_VAL, language.CONTEXT)
    assert torch.equal(X_val[:, 1:], y_val[:, :-1])  # targets: the next byte
    assert int(X_val.max()) < 256


def test_the_language_model_is_causal() -> None:
    task = language.transformer(0)
    tokens = tensor_dataset(task.val).tensors[0][:2]
    changed = tokens.clone()
    changed[:, 40:] = (changed[:, 40:] + 1) % 256

    task.model.eval()
    with torch.no_grad():
        a, b = task.model(tokens), task.model(changed)

    torch.testing.assert_close(a[:, :40], b[:, :40])  # the future does not leak back
    assert not torch.allclose(a[:, 40:], b[:, 40:])


def test_the_language_model_reports_perplexity_and_learns() -> None:
    seed_everything(0)
    run = TrialRun(language.transformer(0), {**ADAM, "kwargs": {"lr": 3e-3}, "batch_size": 32},
                   seed=0, device=CPU)

    reports = list(run.epochs(2))

    first, last = reports[0].metrics, reports[-1].metrics
    assert set(first) == {"train_loss", "val_loss", "val_perplexity"}
    assert first["val_perplexity"] == pytest.approx(math.exp(first["val_loss"]), rel=1e-5)
    assert last["val_perplexity"] < first["val_perplexity"] < 256  # better than guessing


# -- speech: synthesised vowels -------------------------------------------------------------


def test_the_vowel_formants_are_peterson_and_barneys() -> None:
    assert speech.FORMANTS["i"] == (270, 2290, 3010)
    assert speech.FORMANTS["ɑ"] == (730, 1090, 2440)
    assert len(speech.VOWELS) == 10


def test_a_synthesised_vowel_has_its_first_formant_where_peterson_and_barney_put_it() -> None:
    # The spectral envelope's low-frequency peak sits near F1: /ɑ/ (730 Hz) above /i/ (270).
    def f1_peak(vowel: str) -> float:
        rng = np.random.default_rng(1)
        waves = np.stack([speech.synthesise(vowel, "man", rng) for _ in range(20)])
        power = (np.abs(np.fft.rfft(waves, axis=1)) ** 2).mean(axis=0)
        freqs = np.fft.rfftfreq(waves.shape[1], 1 / speech.RATE)
        band = (freqs > 150) & (freqs < 1000)
        smooth = np.convolve(power[band], np.ones(25) / 25, mode="same")
        return float(freqs[band][np.argmax(smooth)])

    assert f1_peak("i") < 450 < f1_peak("ɑ")


def test_the_vowels_are_balanced_log_mel_spectrograms() -> None:
    task = speech.vowels(0)
    X_train, y_train = tensor_dataset(task.train).tensors
    X_val, y_val = tensor_dataset(task.val).tensors

    assert X_train.shape == (1500, speech.MELS, 14) and X_val.shape == (450, speech.MELS, 14)
    assert torch.bincount(y_train).tolist() == [150] * 10
    assert abs(float(X_train.mean())) < 1e-4 and float(X_train.std()) == pytest.approx(1, abs=1e-3)


def test_the_vowel_classifier_learns_well_above_chance() -> None:
    seed_everything(0)
    run = TrialRun(speech.vowels(0), ADAM, seed=0, device=CPU)

    reports = list(run.epochs(3))

    assert set(reports[-1].metrics) == {"train_loss", "val_loss", "val_accuracy"}
    assert reports[-1].metrics["val_accuracy"] > 0.5  # chance is 0.1
