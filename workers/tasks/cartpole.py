"""REINFORCE on CartPole-v1: a policy-gradient agent, written as a training loop.

Reinforcement learning does not fit the ``Task`` shape (there is no dataset: the agent makes
its own data by acting), so this task is a ``@tuner.training_loop``: it proves the contract.

- Environment: gymnasium's ``CartPole-v1`` (episodes cap at 500 steps; "solved" at an average
  return of 475). gymnasium is the optional extra ``tuner[rl]``.
- Agent: a softmax policy, an MLP 4 -> 32 -> 2 with tanh. REINFORCE (Williams 1992) with
  discounted returns (gamma 0.99) normalised per update as a baseline; the loss is
  ``-mean(log pi(a|s) * G)``.
- ``batch_size``: the environment steps one update learns from; whole episodes are collected
  until at least that many steps are in (the shared spaces' 32..128).
- An epoch: ``STEPS_PER_EPOCH`` environment steps of training, then ``EVAL_EPISODES`` greedy
  episodes on fixed seeds (the same for every trial: one problem instance).
- Reports: ``val_return`` (mean return of the greedy evaluation episodes, up to 500: use
  ``mode: max``), ``train_return`` (mean return of the epoch's training episodes) and
  ``train_loss`` (mean policy loss; NaN or inf makes the trial DIVERGED).

REINFORCE learns CartPole in a few hundred episodes and is noisy across seeds: that is where
the final re-runs with several seeds matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

import tuner
from tuner.errors import TaskError

__all__ = ["EVAL_EPISODES", "STEPS_PER_EPOCH", "Policy", "reinforce"]

GAMMA = 0.99
STEPS_PER_EPOCH = 2048
EVAL_EPISODES = 5
EVAL_SEED = 10_000  # the evaluation episodes' seeds: fixed, whatever the trial's seed
HIDDEN = 32


def _gymnasium() -> Any:
    try:
        import gymnasium
    except ImportError as e:
        raise TaskError(
            "task 'cartpole-reinforce' needs gymnasium: pip install 'tuner[rl]' "
            f"(or pip install gymnasium); {e}"
        ) from e
    return gymnasium


class Policy(nn.Module):
    """A softmax policy over CartPole's two actions."""

    def __init__(self, observations: int = 4, actions: int = 2, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(observations, hidden), nn.Tanh(), nn.Linear(hidden, actions)
        )

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """Observations ``(batch, 4)`` -> action logits ``(batch, 2)``."""
        return cast(torch.Tensor, self.net(observation))


def _discounted(rewards: list[float]) -> list[float]:
    out, running = [], 0.0
    for reward in reversed(rewards):
        running = reward + GAMMA * running
        out.append(running)
    return out[::-1]


class _Acting:
    """The policy's current weights in NumPy: acting needs no autograd, and torch's per-call
    overhead (~100 us) would dominate a 4-32-2 MLP evaluated once per environment step."""

    def __init__(self, policy: Policy) -> None:
        first, last = policy.net[0], policy.net[2]
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        weights = [t.detach().cpu().numpy().astype(np.float64)
                   for t in (first.weight, first.bias, last.weight, last.bias)]
        self.w1, self.b1, self.w2, self.b2 = weights

    def logits(self, observation: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        return self.w2 @ np.tanh(self.w1 @ observation + self.b1) + self.b2

    def finite(self) -> bool:
        return all(np.isfinite(w).all() for w in (self.w1, self.b1, self.w2, self.b2))


def _evaluate(env: Any, acting: _Acting) -> float:
    """Mean return of greedy episodes on fixed seeds."""
    returns = []
    for episode in range(EVAL_EPISODES):
        observation, _ = env.reset(seed=EVAL_SEED + episode)
        total, done = 0.0, False
        while not done:
            action = int(np.argmax(acting.logits(observation)))
            observation, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


@dataclass
class _Rollout:
    """The episodes one update learns from: each step's observation, action and discounted
    return, and each episode's total reward."""

    observations: list[NDArray[np.floating[Any]]] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)


def _play(env: Any, acting: _Acting, observation: Any, rng: np.random.Generator,
          rollout: _Rollout) -> Any:
    """One episode from ``observation``, acted by sampling (no autograd here; one batched
    forward in :func:`_learn` recomputes the log-probabilities), added to ``rollout``; the
    next episode's first observation."""
    rewards: list[float] = []
    done = False
    while not done:
        left, right = acting.logits(observation)
        p_right = 1.0 / (1.0 + np.exp(left - right))  # softmax of two
        action = int(rng.random() < p_right)
        rollout.observations.append(observation)
        rollout.actions.append(action)
        observation, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        done = terminated or truncated
    rollout.totals.append(sum(rewards))
    observation, _ = env.reset()
    rollout.returns.extend(_discounted(rewards))
    return observation


def _learn(policy: Policy, optimizer: torch.optim.Optimizer, rollout: _Rollout,
           device: Any) -> float:
    """The policy-gradient step on the rollout's steps; its loss."""
    states = torch.as_tensor(np.stack(rollout.observations), device=device)
    taken = torch.as_tensor(rollout.actions, device=device)
    log_probs = torch.log_softmax(policy(states), dim=-1)
    log_pi = log_probs.gather(1, taken.unsqueeze(1)).squeeze(1)
    g = torch.tensor(rollout.returns, device=device)
    g = (g - g.mean()) / (g.std() + 1e-8)  # the baseline: normalised returns
    loss = -(log_pi * g).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.item())


@tuner.training_loop
def reinforce(trial: tuner.Trial) -> None:
    """REINFORCE on CartPole-v1; reports ``val_return``, ``train_return``, ``train_loss``."""
    gymnasium = _gymnasium()
    torch.manual_seed(trial.seed)
    env = gymnasium.make("CartPole-v1")
    eval_env = gymnasium.make("CartPole-v1")
    env.action_space.seed(trial.seed)
    policy = Policy().to(trial.device)
    optimizer, scheduler = trial.build_optimizer(policy.parameters())
    steps_per_update = max(1, trial.batch_size)
    rng = np.random.default_rng(trial.seed)  # the agent's action draws
    observation, _ = env.reset(seed=trial.seed)
    try:
        for epoch in range(1, trial.epochs + 1):
            steps, losses, episode_returns = 0, [], []
            while steps < STEPS_PER_EPOCH:
                # act: whole episodes until the update has its steps; then learn from them
                acting = _Acting(policy)
                if not acting.finite():
                    # The last update blew the weights up: a divergence, not a bug.
                    trial.report(epoch, val_return=0.0, train_loss=float("nan"))
                rollout = _Rollout()
                while len(rollout.actions) < steps_per_update:
                    observation = _play(env, acting, observation, rng, rollout)
                losses.append(_learn(policy, optimizer, rollout, trial.device))
                episode_returns.extend(rollout.totals)
                steps += len(rollout.actions)
            if scheduler is not None:
                scheduler.step()
            trial.report(
                epoch,
                val_return=_evaluate(eval_env, _Acting(policy)),
                train_return=float(np.mean(episode_returns)),
                train_loss=float(np.mean(losses)),
            )
    finally:
        env.close()
        eval_env.close()
