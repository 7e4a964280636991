"""[maxpool]: Darknet's max pooling (window starts at -padding/2, first maximum wins)."""

from __future__ import annotations

from darkbp.layers.base import Layer
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.maxpool import maxpool_backward, maxpool_forward


class MaxpoolLayer(Layer):
    """x: (N, C, H, W) -> (N, C, (H + padding - size)/stride + 1, (W + padding - size)/stride + 1)."""

    type = "maxpool"

    def __init__(self, in_shape, size: int, stride: int, padding: int):
        c, h, w = in_shape
        super().__init__(in_shape, (c, (h + padding - size) // stride + 1,
                                    (w + padding - size) // stride + 1))
        self.size, self.stride, self.padding = size, stride, padding

    @kernel_buffers
    def forward(self, x, train):
        y, self._cache = maxpool_forward(x, self.size, self.stride, self.padding, backward=train)
        return y

    @kernel_buffers
    def backward(self, dy):
        return maxpool_backward(dy, self._cache)
