"""What [convolutional] and [connected] share: a linear map, then Darknet's tail.

The tail, in Darknet's order: optional batch normalisation (which replaces the
linear map's output by scales·x̂), + bias (the shift), activation. Both layers
hand it their linear output viewed as (A, filters, B), with the filters' values
over the A·B images and pixels: (N, filters, pixels) for a batch stored NCHW,
(1, filters, pixels·N) for one stored CHWN (ops/layout.py); per-channel batch
norm, bias and activation do not care which.
"""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer
from darkbp.ops.activations import ACTIVATIONS
from darkbp.ops.batchnorm import batchnorm_backward, batchnorm_forward
from darkbp.ops.tail import bn_tail_backward, bn_tail_forward, fusable

BATCH_NORM_STATE = ("rolling_mean", "rolling_variance")


class AffineLayer(Layer):
    """Base of the layers with weights, biases and optionally batch-norm scales."""

    backward_cache = ("_tail", "_bn_cache", "_z", "_y")     # _tail_forward's

    def __init__(self, in_shape, out_shape, activation: str, batch_normalize: bool,
                 file_order: tuple[str, ...]):
        """file_order: the arrays in `.weights` files, with the batch-norm ones where Darknet
        puts them."""
        super().__init__(in_shape, out_shape)
        self.activation = activation
        self.batch_normalize = bool(batch_normalize)
        bn = ("scales", *BATCH_NORM_STATE)
        self.file_order = file_order if self.batch_normalize else tuple(
            name for name in file_order if name not in bn)
        self.param_names = tuple(name for name in self.file_order if name not in BATCH_NORM_STATE)
        self.state_names = BATCH_NORM_STATE if self.batch_normalize else ()

    def weights_order(self):
        return self.file_order

    @property
    def batch_statistics(self) -> bool:
        return self.batch_normalize

    def describe(self):
        return {"activation": self.activation, "batch_normalize": int(self.batch_normalize)}

    def margin(self, xs):
        if self._tail is None:
            z = self._z
        else:                     # the fused tail keeps x̂, not z
            z = self._tail.x_hat * self.scales[:, None] + self.biases[:, None]
        return ACTIVATIONS[self.activation].margin(z)

    def _channel_shapes(self, channels: int) -> dict[str, tuple[int, ...]]:
        names = ("biases", "scales", *BATCH_NORM_STATE) if self.batch_normalize else ("biases",)
        return {name: (channels,) for name in names}

    def _init_scales(self) -> None:
        if self.batch_normalize:
            self.scales.fill(1)

    def _tail_forward(self, z: np.ndarray, ctx, add_bias: bool = True) -> np.ndarray:
        """z: (A, F, B), the linear map's output -> activation(bn(z) + bias), (A, F, B).

        add_bias=False: the linear map has added the bias already.  z may be overwritten.
        Batch norm with an activation whose derivative follows from its output runs
        fused (ops/tail.py), x̂'s memory kept from call to call.
        """
        train = ctx.train
        act = ACTIVATIONS[self.activation]
        self._tail = None
        if self.batch_normalize and fusable(act):
            y, self._tail = bn_tail_forward(z, self.scales, self.biases, self.rolling_mean,
                                            self.rolling_variance, act, train,
                                            shards=ctx.shards if train else None,
                                            x_hat=getattr(self, "_x_hat", None),
                                            pjreddie=ctx.pjreddie_batchnorm)
            if train:
                self._x_hat = self._tail.x_hat
            return y
        if self.batch_normalize:
            z, self._bn_cache = batchnorm_forward(z, self.scales, self.rolling_mean,
                                                  self.rolling_variance, train,
                                                  shards=ctx.shards if train else None,
                                                  pjreddie=ctx.pjreddie_batchnorm)
        if add_bias:
            z += self.biases[:, None]
        if not train:  # nothing to keep for a backward: z can take the activation in place
            return act.apply(z)
        self._z = z
        self._y = act.forward(z)
        return self._y

    def _tail_backward(self, dy: np.ndarray, bias_grad: bool = True) -> np.ndarray:
        """dy: (A, F, B), as z -> the gradient at the linear map's output; adds bias and scale grads
        (bias_grad=False: the linear map's backward gives the bias gradient).  dy may be
        overwritten."""
        if self._tail is not None:
            dz, dbiases, dscales = bn_tail_backward(dy, self._tail)
            self.bias_grads += dbiases
            self.scale_grads += dscales
            return dz
        dz = ACTIVATIONS[self.activation].backward_over(self._z, self._y, dy)   # dy is ours
        if bias_grad:
            self.bias_grads += np.einsum("acb->c", dz)   # ~1.5x faster than dz.sum(axis=(0, 2))
        if self.batch_normalize:
            dz, dscales = batchnorm_backward(dz, self._bn_cache)
            self.scale_grads += dscales
        return dz

    def _tail_to_onnx(self, graph, z: str) -> str:
        """The evaluation tail in ONNX: z (N, F, ...), the linear map's output, with its
        bias already added unless there is batch norm (which adds it) -> activation(bn(z))."""
        if self.batch_normalize:
            z = graph.batchnorm(z, self)
        return graph.activation(self.activation, z)
