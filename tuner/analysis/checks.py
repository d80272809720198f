"""Warnings about how a job was set up: a best value at the edge of its search range
(docs/reference.md protocol 6), and a general optimizer clearly worse than one it includes
(Choi et al. 2019; protocol 7)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tuner.analysis.ranking import ALPHA, welch_p
from tuner.results import LeaderboardRow, StoredParam, better, is_finite

__all__ = ["EDGE_MARGIN", "INCLUSIONS", "edge_warnings", "inclusion_warnings"]

#: A continuous parameter whose best value lies in the outer 5% of its (log) range is "at the
#: edge": the optimum may lie outside the range (docs/reference.md protocol 6).
EDGE_MARGIN = 0.05

#: Inclusion relations (Choi et al. 2019): the first optimizer can express the second (Adam
#: with a large eps is Momentum with a rescaled rate), so tuned properly it never loses to it.
#: A clear loss means its search space was too narrow. Only pairs our shipped spaces keep:
#: RMSprop includes Momentum only with its own momentum tuned, AdamW only with decay 0.
INCLUSIONS: tuple[tuple[str, str], ...] = (
    ("adam", "momentum"),
    ("nadam", "nag"),
)


def edge_warnings(name: str, hyperparameters: Mapping[str, Any] | None,
                  params: Mapping[str, StoredParam] | None, *,
                  margin: float = EDGE_MARGIN) -> list[str]:
    """Warn for each tuned continuous parameter whose best value lies at the edge of its range.

    ``params`` is the optimizer's search space (``StoredOptimizer.params``; ranges of
    ``one_minus`` parameters are of ``q = 1 - value``). The position is measured on the
    sampling scale (log for log-uniform): the outer ``margin`` of it on either side is the
    edge. Categorical parameters (batch size, weight decay grids) are not checked, nor the
    lower edge of ``lr_decay`` (all but a constant rate: the natural end of that range).
    docs/reference.md protocol 6.

    Example:
        >>> lr = StoredParam("float", low=1e-5, high=0.1, log=True)
        >>> edge_warnings("adam", {"lr": 0.095}, {"lr": lr})  # doctest: +ELLIPSIS
        ['adam: the best lr=0.095 lies at the upper edge of its range [1e-05, 0.1]; ...']
    """
    if not hyperparameters or not params:
        return []
    out: list[str] = []
    for param, p in params.items():
        if p.kind not in ("float", "int") or param not in hyperparameters:
            continue
        value, low, high = hyperparameters[param], p.low, p.high
        if not (is_finite(value) and is_finite(low) and is_finite(high)) or high <= low:
            continue
        x = 1.0 - value if p.one_minus else value
        log = p.log or p.one_minus
        if log and (x <= 0 or low <= 0):
            continue
        if log:
            position = (math.log(x) - math.log(low)) / (math.log(high) - math.log(low))
        else:
            position = (x - low) / (high - low)
        if margin <= position <= 1 - margin:
            continue
        if param == "lr_decay" and position < margin:
            continue  # the lower edge of the decay is all but a constant rate: nothing to widen
        # Say it in the value's terms: for one_minus the value's upper edge is q's lower one.
        lo_v, hi_v = (1.0 - high, 1.0 - low) if p.one_minus else (low, high)
        side = ("upper" if position < margin else "lower") if p.one_minus else (
            "lower" if position < margin else "upper")
        out.append(
            f"{name}: the best {param}={value:.3g} lies at the {side} edge of its range "
            f"[{lo_v:.3g}, {hi_v:.3g}]; the optimum may lie outside it: widen it "
            f"(space_overrides.{name}.{param})"
        )
    return out


def inclusion_warnings(rows: Sequence[LeaderboardRow], *, mode: str,
                       alpha: float = ALPHA) -> list[str]:
    """Warn where a more general optimizer is clearly worse than one it includes.

    Choi et al. (2019): with Momentum ⊆ Adam and Nesterov ⊆ NAdam (:data:`INCLUSIONS`), a tuned
    general optimizer never loses to the special one; "clearly worse" is a worse mean of the
    final re-runs with Welch's p < ``alpha``. docs/reference.md protocol 7.
    """
    by_name = {row.optimizer: row for row in rows}
    out: list[str] = []
    for general, special in INCLUSIONS:
        g, s = by_name.get(general), by_name.get(special)
        if g is None or s is None or g.mean is None or s.mean is None:
            continue
        if not better(s.mean, g.mean, mode):
            continue
        p = welch_p(g.finals, s.finals)
        if p is None or p >= alpha:
            continue
        out.append(
            f"{general} is clearly worse than {special} (final mean {g.mean:.4g} vs "
            f"{s.mean:.4g}, Welch p={p:.2g}), although {general} includes {special} "
            f"(Choi et al. 2019): {general}'s search space was too narrow or its budget too "
            f"small: tune eps on a log scale up to 1 and beta1 over [0.5, 0.999], or give it more "
            f"trials"
        )
    return out
