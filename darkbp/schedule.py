"""Learning-rate policies of Darknet's [net] section: `Schedule.rate(batch_num)`.

Follows `get_current_rate` in pjreddie/darknet src/network.c. batch_num is the
number of updates done so far. burn_in is checked first, for every policy:

    batch_num < burn_in    lr · (batch_num / burn_in)^power
    constant               lr
    step                   lr · scale^(batch_num // step)
    steps                  lr · Π scales[i] over the leading steps[i] <= batch_num
    exp                    lr · gamma^batch_num
    poly                   lr · (1 − batch_num / max_batches)^power
    sig                    lr / (1 + e^(gamma · (batch_num − step)))
    random                 lr · u^power,  u ~ uniform[0, 1) from the given Generator

Darknet's cfg spells the sigmoid policy `sigmoid`; darkbp accepts `sig` too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from darkbp.errors import DarkbpError

POLICIES = ("constant", "step", "steps", "exp", "poly", "random", "sig")
_ALIASES = {"sigmoid": "sig"}


@dataclass(frozen=True)
class Schedule:
    """The [net] options that decide the learning rate, with Darknet's defaults."""

    learning_rate: float = 0.001
    policy: str = "constant"
    step: int = 1
    scale: float = 1.0
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    gamma: float = 1.0
    power: float = 4.0
    burn_in: int = 0
    max_batches: int = 0

    def __post_init__(self):
        policy = _ALIASES.get(self.policy, self.policy)
        if policy not in POLICIES:
            raise DarkbpError(f"unknown policy '{self.policy}': expected one of "
                              + ", ".join(POLICIES))
        object.__setattr__(self, "policy", policy)
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if policy == "steps":
            if not self.steps or not self.scales:
                raise DarkbpError("policy=steps needs both 'steps' and 'scales'")
            if len(self.steps) != len(self.scales):
                raise DarkbpError(f"policy=steps: {len(self.steps)} steps but "
                                  f"{len(self.scales)} scales; they must pair up")
        if policy == "step" and self.step <= 0:
            raise DarkbpError(f"policy=step needs step > 0, got {self.step}")
        if self.burn_in < 0:
            raise DarkbpError(f"burn_in must be >= 0, got {self.burn_in}")

    def rate(self, batch_num: int, rng: np.random.Generator | None = None) -> float:
        """The learning rate for the update that follows `batch_num` updates."""
        lr = self.learning_rate
        if batch_num < self.burn_in:
            return lr * (batch_num / self.burn_in) ** self.power
        policy = self.policy
        if policy == "constant":
            return lr
        if policy == "step":
            return lr * self.scale ** (batch_num // self.step)
        if policy == "steps":
            # Darknet stops at the first step not yet reached (`steps[i] > batch_num`),
            # so a scale applies from batch_num == steps[i] on.
            for step, scale in zip(self.steps, self.scales):
                if step > batch_num:
                    break
                lr *= scale
            return lr
        if policy == "exp":
            return lr * self.gamma ** batch_num
        if policy == "poly":
            if self.max_batches <= 0:
                raise DarkbpError("policy=poly needs max_batches > 0 (or --epochs)")
            # Past max_batches the base would turn negative; training has ended there.
            return lr * max(0.0, 1.0 - batch_num / self.max_batches) ** self.power
        if policy == "sig":
            z = self.gamma * (batch_num - self.step)
            if z > 0:  # the same value, without overflowing exp for large z
                e = math.exp(-z)
                return lr * e / (1.0 + e)
            return lr / (1.0 + math.exp(z))
        # random
        if rng is None:
            raise ValueError("policy=random needs a numpy Generator (rng=...)")
        return lr * float(rng.random()) ** self.power
