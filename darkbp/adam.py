"""AlexeyAB's Adam (`[net] adam=1`, with B1, B2, eps), as its GPU build computes it.

AlexeyAB's CPU build parses adam=1 and then ignores it: its CPU update is plain SGD
with momentum (the fixture alexeyab-new/adam is byte for byte its SGD twin). Adam
exists only in its GPU update, update_convolutional_layer_gpu -> adam_update_gpu
(src/convolutional_kernels.cu, src/blas_kernels.cu), which darkbp follows, because
that is what AlexeyAB's users train with. With d the negative gradient summed over
the B images of the batch (Darknet's `*_updates`) and t the number of this update
(1 for the first; AlexeyAB's get_current_batch after the batch is counted):

    d ← d − decay·B·w
    m ← B1·m + (1 − B1)·d
    v ← B2·v + (1 − B2)·d²
    w ← w + lr · (m / (1 − B1^t)) / (sqrt(v / (1 − B2^t)) + eps)

for the weights, the biases and the batch-norm scales of every [convolutional] layer
alike: unlike SGD, the decay applies to biases and scales too, nothing is divided by
B (Adam's step does not depend on the gradient's scale, except against eps and the
decay), and momentum is not used. AlexeyAB has Adam in no other layer: the others
([connected], [batchnorm], [local], ...) keep Darknet's SGD with momentum (darkbp.sgd),
as there. m and v start at 0 and are optimiser state: they go in the training state
(darkbp.checkpoint) with t, so that --resume continues bit for bit.

Every operation is one float operation in the parameters' dtype, in the GPU code's
order (its `powf` is the float nearest B^t). AlexeyAB's update also sets non-finite
values of d and w to 0 (reset_nan_and_inf, fix_nan_and_inf); darkbp stops a run whose
loss is not finite instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from darkbp.errors import DarkbpError
from darkbp.layers.base import Layer
from darkbp.layers.convolutional import ConvolutionalLayer
from darkbp.sgd import SGD, load_buffers

_M, _V, _T = "adam.m.", "adam.v.", "adam.t"


class Adam(SGD):
    """Adam for the [convolutional] layers of `layers`, SGD with momentum for the others."""

    def __init__(self, layers: Sequence[Layer], momentum: float, decay: float, batch: int,
                 b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6):
        super().__init__(layers, momentum, decay, batch)
        if not (0 <= b1 < 1 and 0 <= b2 < 1 and eps > 0):
            raise DarkbpError(f"Adam needs 0 <= B1, B2 < 1 and eps > 0, got B1={b1:g}, "
                              f"B2={b2:g}, eps={eps:g}")
        self.b1, self.b2, self.eps = b1, b2, eps
        self.t = 0                  # updates done
        moments = [(f"{i}.{name}", w) for i, layer in enumerate(self.layers)
                   if not self.with_momentum(layer) for name, w, _ in layer.parameters()]
        self.m = {_M + key: np.zeros_like(w) for key, w in moments}
        self.v = {_V + key: np.zeros_like(w) for key, w in moments}

    def with_momentum(self, layer: Layer) -> bool:
        return not isinstance(layer, ConvolutionalLayer)

    def step(self, lr: float) -> None:
        self.t += 1
        super().step(lr)

    def update(self, index: int, layer: Layer, lr: float) -> None:
        if self.with_momentum(layer):
            super().update(index, layer, lr)
            return
        for name, w, g in layer.parameters():
            key = f"{index}.{name}"
            self._adam(w, g, self.m[_M + key], self.v[_V + key], lr)

    def _adam(self, w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray,
              lr: float) -> None:
        """adam_update_gpu on one array, in place (g, the gradient, is left as it was)."""
        f = w.dtype.type
        b1, b2, t = f(self.b1), f(self.b2), self.t
        m *= b1
        v *= b2
        d = np.multiply(w, f(-self.decay) * f(self.batch))
        d -= g                                   # d = −g − decay·B·w
        m += d * (f(1) - b1)
        np.multiply(d, d, out=d)
        v += d * (f(1) - b2)
        # adam_kernel: x += rate * mhat / (sqrtf(vhat) + eps)
        m_hat = m / (f(1) - f(float(b1) ** t))
        v_hat = v / (f(1) - f(float(b2) ** t))
        np.sqrt(v_hat, out=v_hat)
        v_hat += f(self.eps)
        m_hat *= f(lr)
        m_hat /= v_hat
        w += m_hat

    def state_dict(self) -> dict[str, np.ndarray]:
        """The momentum buffers of the SGD layers, copies of m ('adam.m.<layer>.<name>') and
        v ('adam.v.<layer>.<name>') of the others, and t ('adam.t')."""
        state = super().state_dict()
        state.update({key: a.copy() for key, a in (*self.m.items(), *self.v.items())})
        state[_T] = np.array(self.t, np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        if _T not in state:
            raise DarkbpError("saved Adam moments do not match the network: missing adam.t")
        super().load_state_dict(state)
        load_buffers(self.m, state, _M, "Adam moments")
        load_buffers(self.v, state, _V, "Adam moments")
        self.t = int(state[_T])


def optimizer(layers: Sequence[Layer], config, batch: int) -> SGD:
    """The update rule the [net] section `config` (a NetConfig) asks for: Adam with adam=1,
    else Darknet's SGD; `batch` images per update."""
    if config.adam:
        return Adam(layers, config.momentum, config.decay, batch, config.b1, config.b2,
                    config.eps)
    return SGD(layers, config.momentum, config.decay, batch)
