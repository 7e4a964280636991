"""One forward pass's context: training or not, its random numbers, its shards.

Every layer's `forward(x, ctx)` gets a `Pass`; nothing is set on layers
around a pass. A training pass carries:

- `noise`: the random numbers of the pass. Dropout masks and crop offsets are
  drawn from a generator derived from (seed, batch number, subdivision, layer
  index) alone, for the whole pass, and each shard takes its images' rows: so
  `--threads 1` and `--threads 2` draw the same masks, and a resumed run the
  same as an uninterrupted one.
- `shards`: when the pass is split across worker processes, the reduction
  that sums batch statistics over all the shards (ops/batchnorm.Shards).
- `images` and `offset`: the images of the whole pass, and where this shard's
  first image is among them.

    ctx = Pass.training(Noise(seed, batch_num, subdivision))
    y = network.forward(x, ctx)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from darkbp.ops.batchnorm import Shards

_STREAM = 2     # the first word of every pass's seed: the `random` lr policy uses 1


@dataclass(frozen=True)
class Noise:
    """The random numbers of one training pass, derived from (seed, batch_num, subdivision)."""

    seed: int = 0
    batch_num: int = 0
    subdivision: int = 0

    def generator(self, layer: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _STREAM, self.batch_num, self.subdivision,
                                      layer])

    def uniform(self, layer: int, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform [0, 1) float32 draws of `shape` for the whole pass (first axis: images)."""
        return self.generator(layer).random(shape, dtype=np.float32)

    def integers(self, layer: int, highs: tuple[int, ...]) -> tuple[int, ...]:
        """One draw per pass of integers in [0, high) for each of `highs`."""
        generator = self.generator(layer)
        return tuple(int(generator.integers(high)) for high in highs)


@dataclass(frozen=True)
class Pass:
    """The context of one forward pass (and its backward), see the module doc."""

    train: bool = False
    noise: Noise = field(default_factory=Noise)
    shards: Shards | None = None
    images: int | None = None     # in the whole pass; None: this shard's are all
    offset: int = 0
    # Evaluation only: batch norm divides by sqrt(var) + 1e-6, as pjreddie's Darknet's
    # inference does (darkbp and AlexeyAB: sqrt(var + 1e-5); ops.batchnorm.eval_inv_std).
    pjreddie_batchnorm: bool = False

    @classmethod
    def training(cls, noise: Noise | None = None) -> "Pass":
        return cls(train=True, noise=noise or Noise())

    def shard(self, offset: int, images: int, shards: Shards | None) -> "Pass":
        """This pass as seen by a shard starting at image `offset` of `images`."""
        return replace(self, offset=offset, images=images, shards=shards)

    def uniform(self, layer: int, n: int, per_image: tuple[int, ...]) -> np.ndarray:
        """This shard's rows of the pass's uniform draws for `layer`: (n, *per_image)."""
        total = n if self.images is None else self.images
        return self.noise.uniform(layer, (total, *per_image))[self.offset:self.offset + n]


EVAL = Pass()
PJREDDIE_EVAL = Pass(pjreddie_batchnorm=True)
