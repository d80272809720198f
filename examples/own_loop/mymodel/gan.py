"""A GAN with two optimizers: a model that does not fit tuner's ``Task`` shape.

The generator turns noise into samples of a 1-D distribution; the discriminator tells them
from real samples of N(2, 0.5^2). Each epoch is
``STEPS`` alternating updates (discriminator, then generator), each with its own optimizer
built from the trial's settings. The job's metric, ``val_w1``, is the Wasserstein-1 distance
between 4,000 generated and 4,000 real samples (lower is better; 0 is a perfect match).

Run it (from this folder)::

    tuner run gan.yaml
"""

from __future__ import annotations

import torch
from torch import nn

import tuner

STEPS = 50  # updates of each network per epoch
EVAL_SAMPLES = 4000
NOISE = 4


def real_samples(n: int, generator: torch.Generator) -> torch.Tensor:
    """N(2, 0.5^2), shape (n, 1)."""
    return 2.0 + 0.5 * torch.randn(n, 1, generator=generator)


def wasserstein_1(a: torch.Tensor, b: torch.Tensor) -> float:
    """W1 between two 1-D samples of the same size: the mean gap of their sorted values."""
    return float((a.flatten().sort().values - b.flatten().sort().values).abs().mean())


@tuner.training_loop
def train(trial: tuner.Trial) -> None:
    torch.manual_seed(trial.seed)
    data = torch.Generator().manual_seed(trial.seed)  # the real samples of this trial
    held_out = real_samples(EVAL_SAMPLES, torch.Generator().manual_seed(12345))  # fixed
    device = trial.device
    generator = nn.Sequential(nn.Linear(NOISE, 16), nn.ReLU(), nn.Linear(16, 1)).to(device)
    critic = nn.Sequential(nn.Linear(1, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1)).to(device)
    # Two models, the same settings: build_optimizer once for each.
    g_opt, g_sched = trial.build_optimizer(generator.parameters())
    d_opt, d_sched = trial.build_optimizer(critic.parameters())
    bce = nn.BCEWithLogitsLoss()
    batch = trial.batch_size
    ones = torch.ones(batch, 1, device=device)
    zeros = torch.zeros(batch, 1, device=device)

    for epoch in range(1, trial.epochs + 1):
        d_total = g_total = 0.0
        for _ in range(STEPS):
            # the discriminator: real -> 1, generated -> 0
            real = real_samples(batch, data).to(device)
            fake = generator(torch.randn(batch, NOISE, device=device)).detach()
            d_loss = bce(critic(real), ones) + bce(critic(fake), zeros)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            # the generator: make the discriminator say 1
            g_loss = bce(critic(generator(torch.randn(batch, NOISE, device=device))), ones)
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
            d_total += d_loss.item()
            g_total += g_loss.item()
        for scheduler in (g_sched, d_sched):
            if scheduler is not None:
                scheduler.step()  # once per epoch in a training loop
        with torch.no_grad():
            samples = generator(torch.randn(EVAL_SAMPLES, NOISE, device=device)).cpu()
        # A NaN or inf d_loss/g_loss ends the trial as DIVERGED; report raises
        # tuner.TrialPruned when the pruner stops it.
        trial.report(epoch, val_w1=wasserstein_1(samples, held_out),
                     d_loss=d_total / STEPS, g_loss=g_total / STEPS)
