"""Learning-rate policies of Darknet's [net] section: `Schedule.rate(batch_num)`.

Follows `get_current_rate` in pjreddie/darknet src/network.c, which AlexeyAB's
fork keeps unchanged and extends by `sgdr`. batch_num is the number of updates
done so far. burn_in is checked first, for every policy (both forks):

    batch_num < burn_in    lr · (batch_num / burn_in)^power
    constant               lr
    step                   lr · scale^(batch_num // step)
    steps                  lr · Π scales[i] over the leading steps[i] <= batch_num
    exp                    lr · gamma^batch_num
    poly                   lr · (1 − batch_num / max_batches)^power
    sig                    lr / (1 + e^(gamma · (batch_num − step)))
    random                 lr · u^power,  u ~ uniform[0, 1) from the given Generator
    sgdr                   AlexeyAB's cosine restarts: cycles of sgdr_cycle batches
                           (default max_batches), each sgdr_mult times the last; within
                           a cycle that started at s and lasts c batches
                           lr_min + ½(lr − lr_min)(1 + cos(π (batch_num − s) / c)),
                           lr_min = learning_rate_min. A cycle ends at s + c inclusive
                           (there the rate is lr_min); the next starts one batch later.

Darknet's cfg spells the sigmoid policy `sigmoid`; darkbp accepts `sig` too. As
AlexeyAB's, sgdr ignores `steps` and `scales`.

The rate is computed in Darknet's arithmetic: the cfg's numbers are C floats
(float32), each operation in float or double as Darknet's expression has it, and
the result a float. So the rates are Darknet's to the bit (checked against
AlexeyAB's own at every listed batch: tests/test_schedule_alexeyab.py), not only
to float32 rounding: `exp` with gamma=0.999 would otherwise be 2.6e-5 off at
batch 2000, as 0.999 is not a float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from darkbp.errors import DarkbpError

POLICIES = ("constant", "step", "steps", "exp", "poly", "random", "sig", "sgdr")
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
    sgdr_cycle: int = 0             # 0: max_batches, as AlexeyAB's default
    sgdr_mult: int = 2
    learning_rate_min: float = 1e-5

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
        # AlexeyAB's cycle loop never ends with a cycle of 0 batches.
        if self.sgdr_cycle < 0:
            raise DarkbpError(f"sgdr_cycle must be >= 1, got {self.sgdr_cycle}")
        if self.sgdr_mult < 1:
            raise DarkbpError(f"sgdr_mult must be >= 1, got {self.sgdr_mult}")

    def rate(self, batch_num: int, rng: np.random.Generator | None = None) -> float:
        """The learning rate for the update that follows `batch_num` updates: Darknet's float."""
        return float(np.float32(self._double_rate(batch_num, rng)))

    def _double_rate(self, batch_num: int, rng: np.random.Generator | None) -> float:
        """get_current_rate's expression before its return rounds it to a float. `_f` marks
        a C float (a cfg number, a float operation); Python floats are C doubles."""
        lr = float(_f(self.learning_rate))
        power = float(_f(self.power))
        if batch_num < self.burn_in:
            # (float)batch_num / burn_in is a float division; pow() a double one.
            return lr * float(_f(batch_num) / _f(self.burn_in)) ** power
        policy = self.policy
        if policy == "constant":
            return lr
        if policy == "step":
            return lr * float(_f(self.scale)) ** (batch_num // self.step)
        if policy == "steps":
            # Darknet stops at the first step not yet reached (`steps[i] > batch_num`),
            # so a scale applies from batch_num == steps[i] on. `rate *= scales[i]` in float.
            rate = _f(self.learning_rate)
            for step, scale in zip(self.steps, self.scales):
                if step > batch_num:
                    break
                rate = rate * _f(scale)
            return float(rate)
        if policy == "exp":
            return lr * float(_f(self.gamma)) ** batch_num
        if policy == "poly":
            if self.max_batches <= 0:
                raise DarkbpError("policy=poly needs max_batches > 0 (or --epochs)")
            base = float(_f(1) - _f(batch_num) / _f(self.max_batches))
            # Past max_batches the base would turn negative; training has ended there.
            return lr * max(0.0, base) ** power
        if policy == "sig":
            z = float(_f(self.gamma) * _f(batch_num - self.step))    # a float product
            return lr * (1.0 / (1.0 + (math.exp(z) if z < 709 else math.inf)))
        if policy == "sgdr":
            return self._sgdr(batch_num)
        # random
        if rng is None:
            raise ValueError("policy=random needs a numpy Generator (rng=...)")
        return lr * float(rng.random()) ** power

    def _sgdr(self, batch_num: int) -> float:
        cycle = self.sgdr_cycle or self.max_batches
        if cycle <= 0:
            raise DarkbpError("policy=sgdr needs sgdr_cycle or max_batches > 0 (or --epochs)")
        start = 0
        if self.sgdr_mult == 1:      # the loop below in one step: cycles of equal length
            start = max(0, (batch_num - 1) // cycle) * cycle
        else:
            while start + cycle < batch_num:
                start += cycle
                cycle *= self.sgdr_mult
        low = _f(self.learning_rate_min)
        half_span = 0.5 * float(_f(self.learning_rate) - low)       # float difference
        # AlexeyAB's pi is 3.14159265; (float)(batch_num - start) times it in double.
        angle = float(_f(batch_num - start)) * 3.14159265 / cycle
        return float(low) + half_span * (1.0 + math.cos(angle))


def _f(value) -> np.float32:
    """A C float."""
    return np.float32(value)
