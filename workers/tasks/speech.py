"""Spoken vowels: ten vowels synthesised from published formants, classified from log-mel
spectrograms.

The sounds (no recordings, no download): a source-filter synthesis, the textbook model of
vowel production. A glottal pulse train at the speaker's pitch F0 (with drift and jitter),
smoothed to the glottal spectrum's -12 dB/octave, goes through three second-order resonators
at the formants F1-F3 (Klatt 1980's cascade resonators), a lip-radiation difference, an
onset/offset ramp, and white noise at 5-25 dB SNR.

The formants are Peterson & Barney's (1952) averages for men, for the vowels of heed, hid,
head, had, hod, hawed, hood, who'd, hud, heard (/i ɪ ɛ æ ɑ ɔ ʊ u ʌ ɝ/). Speakers are men,
women (formants about 17% higher, F0 165-255 Hz) and children (about 30% higher, F0 250-320
Hz), each utterance with its own vocal-tract scale (±8%) and formant jitter (±12%): the vowel
regions of different speakers overlap, as in Peterson & Barney's plots, so the task is
learnable but not trivial.

The features: 16 kHz audio, 0.25 s per utterance, a 512-point STFT (32 ms Hann windows,
16 ms hop) through 40 triangular mel filters (HTK mel scale), log, standardised with the
training set's mean and deviation: ``(40, 14)`` per utterance, computed with ``torch.stft``
(torchaudio is not needed). 1500 training and 450 validation utterances, balanced over vowels
and speaker kinds, from ``numpy.random.default_rng(0)`` whatever the trial's seed.

The model: two 1-D convolutions over time (40 -> 32 -> 32 channels, kernel 3, ReLU), average
pooling over time, a linear layer to the 10 vowels. Reports ``accuracy``.

Example::

    task = vowels(seed=0)
    X_val, y_val = task.val.tensors          # (450, 40, 14) float32, (450,) int64
"""

from __future__ import annotations

from functools import lru_cache
from typing import cast

import numpy as np
import torch
from scipy.signal import lfilter
from torch import nn
from torch.utils.data import TensorDataset

from tuner.task import Task
from workers.tasks._metrics import accuracy

__all__ = ["FORMANTS", "VOWELS", "VowelNet", "log_mel", "synthesise", "vowels"]

# Peterson & Barney (1952), men's average formants F1, F2, F3 in Hz.
FORMANTS: dict[str, tuple[float, float, float]] = {
    "i": (270, 2290, 3010),   # heed
    "ɪ": (390, 1990, 2550),   # hid
    "ɛ": (530, 1840, 2480),   # head
    "æ": (660, 1720, 2410),   # had
    "ɑ": (730, 1090, 2440),   # hod
    "ɔ": (570, 840, 2410),    # hawed
    "ʊ": (440, 1020, 2240),   # hood
    "u": (300, 870, 2240),    # who'd
    "ʌ": (640, 1190, 2390),   # hud
    "ɝ": (490, 1350, 1690),   # heard
}
VOWELS = tuple(FORMANTS)
# Speaker kinds: formant scale and F0 range (Hz). Women ~15-20% and children ~30% above men
# (Peterson & Barney); F0 of men 85-180 Hz, women 165-255 Hz; children's ~250-320 Hz.
SPEAKERS = {"man": (1.0, (85.0, 180.0)), "woman": (1.17, (165.0, 255.0)),
            "child": (1.3, (250.0, 320.0))}

RATE = 16_000
DURATION = 0.25
N_FFT = 512
HOP = 256
MELS = 40
TRAIN_PER_CELL = 50  # per vowel and speaker kind: 10 x 3 x 50 = 1500
VAL_PER_CELL = 15  # 450
DATA_SEED = 0  # fixed: the data must not move with the trial's seed


def _resonator(signal: np.ndarray, frequency: float, bandwidth: float) -> np.ndarray:
    """Klatt's (1980) second-order resonator: unit gain at 0 Hz, a peak at ``frequency``."""
    t = 1.0 / RATE
    c = -np.exp(-2 * np.pi * bandwidth * t)
    b = 2 * np.exp(-np.pi * bandwidth * t) * np.cos(2 * np.pi * frequency * t)
    a = 1.0 - b - c
    return cast(np.ndarray, lfilter([a], [1.0, -b, -c], signal))  # SciPy is untyped


def synthesise(vowel: str, speaker: str, rng: np.random.Generator) -> np.ndarray:
    """One utterance of ``vowel`` by a random speaker of kind ``speaker``: float32 samples."""
    n = int(RATE * DURATION)
    scale, (f0_low, f0_high) = SPEAKERS[speaker]
    scale *= 1.0 + rng.uniform(-0.08, 0.08)  # this speaker's vocal-tract length
    formants = [f * scale * (1.0 + rng.uniform(-0.12, 0.12)) for f in FORMANTS[vowel]]
    # The source: a pulse train at a drifting, jittered F0, smoothed like a glottal pulse.
    f0 = rng.uniform(f0_low, f0_high) * np.linspace(1.0, 1.0 + rng.uniform(-0.08, 0.08), n)
    f0 *= 1.0 + 0.01 * rng.standard_normal(n)
    phase = np.cumsum(f0 / RATE)
    source = np.diff(np.floor(phase), prepend=0.0)  # one impulse per period
    source = lfilter([1.0], [1.0, -0.97], lfilter([1.0], [1.0, -0.97], source))
    source += 0.02 * rng.standard_normal(n)  # aspiration
    # The vocal tract: F1-F3 in cascade, bandwidths growing with frequency; lip radiation.
    wave: np.ndarray = source
    for formant in formants:
        wave = _resonator(wave, formant, 50.0 + 0.06 * formant)
    wave = np.diff(wave, prepend=0.0)
    ramp = int(0.02 * RATE)
    envelope = np.ones(n)
    envelope[:ramp] = envelope[-ramp:][::-1] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
    wave *= envelope
    wave /= np.sqrt(np.mean(wave**2)) + 1e-12
    snr_db = rng.uniform(5.0, 25.0)
    wave += rng.standard_normal(n) * 10 ** (-snr_db / 20)
    return wave.astype(np.float32)


def _mel_filters() -> torch.Tensor:
    """``(MELS, N_FFT // 2 + 1)`` triangular filters, evenly spaced on the HTK mel scale."""
    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    bins = np.linspace(0, RATE / 2, N_FFT // 2 + 1)
    edges = hz(np.linspace(mel(np.array(0.0)), mel(np.array(RATE / 2)), MELS + 2))
    filters = np.zeros((MELS, len(bins)))
    for i in range(MELS):
        low, center, high = edges[i : i + 3]
        rising = (bins - low) / (center - low)
        falling = (high - bins) / (high - center)
        filters[i] = np.clip(np.minimum(rising, falling), 0.0, None)
    return torch.tensor(filters, dtype=torch.float32)


def log_mel(waves: torch.Tensor) -> torch.Tensor:
    """``(batch, samples)`` -> log-mel spectrograms ``(batch, MELS, frames)``."""
    spectrum = torch.stft(
        waves, N_FFT, hop_length=HOP, window=torch.hann_window(N_FFT), center=False,
        return_complex=True,
    )
    power = spectrum.abs() ** 2  # (batch, N_FFT // 2 + 1, frames)
    return torch.log(_mel_filters() @ power + 1e-6)


@lru_cache(maxsize=1)
def _tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(DATA_SEED)
    sets = []
    for per_cell in (TRAIN_PER_CELL, VAL_PER_CELL):
        waves, labels = [], []
        for label, vowel in enumerate(VOWELS):
            for speaker in SPEAKERS:
                for _ in range(per_cell):
                    waves.append(synthesise(vowel, speaker, rng))
                    labels.append(label)
        sets.append((log_mel(torch.tensor(np.stack(waves))), torch.tensor(labels)))
    (X_train, y_train), (X_val, y_val) = sets
    mean, std = X_train.mean(), X_train.std()
    return (X_train - mean) / std, y_train, (X_val - mean) / std, y_val


class VowelNet(nn.Module):
    """Two 1-D convolutions over time, average pooling, a linear layer to the vowels."""

    def __init__(self, *, mels: int = MELS, channels: int = 32, classes: int = len(VOWELS)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(mels, channels, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )
        self.head = nn.Linear(channels, classes)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """``(batch, mels, frames)`` -> logits ``(batch, classes)``."""
        return cast(torch.Tensor, self.head(self.features(spectrogram)))


def vowels(seed: int) -> Task:
    """Classify ten synthesised vowels from log-mel spectrograms; reports ``accuracy``."""
    torch.manual_seed(seed)
    X_train, y_train, X_val, y_val = _tensors()
    return Task(
        model=VowelNet(),
        train=TensorDataset(X_train, y_train),
        val=TensorDataset(X_val, y_val),
        loss=nn.CrossEntropyLoss(),
        metrics={"accuracy": accuracy},
    )
