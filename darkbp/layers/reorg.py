"""[reorg]: Darknet's (pjreddie) reorg_cpu permutation, its flatten, or extra appended zeros."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, register
from darkbp.ops.reorg import flatten, reorg_backward, reorg_forward


@register
class ReorgLayer(Layer):
    """x: (N, C, H, W) -> (N, C·s², H/s, W/s); reverse: (N, C/s², H·s, W·s);
    extra: (N, C·H·W + extra, 1, 1).

    The values are permuted as pjreddie's reorg_cpu does (ops/reorg.py): reverse=1 is
    depth-to-space; reverse=0 (YOLOv2's passthrough) is its inverse applied to the input's
    memory read as (C/s², H·s, W·s). flatten=1 keeps the shape rule but only moves each
    image between channel-major and pixel-major memory (Darknet's flatten, stride unused).
    extra=k copies the image to a flat vector and appends k zeros (go.cfg: 361 board points
    and one more output, a constant logit 0 for the softmax after it). Backward is the exact
    adjoint of each.
    """

    sections = ("reorg",)
    options = frozenset({"stride", "reverse", "flatten", "extra"})

    def __init__(self, in_shape, stride: int, reverse: bool, flatten: bool, extra: int):
        c, h, w = in_shape
        s = stride
        if extra:
            out_shape = (c * h * w + extra, 1, 1)
        elif reverse:
            out_shape = (c // (s * s), h * s, w * s)
        else:
            out_shape = (c * s * s, h // s, w // s)
        super().__init__(in_shape, out_shape)
        self.stride, self.reverse, self.flatten, self.extra = stride, reverse, flatten, extra
        self.flat = bool(extra)          # Darknet sets out_w = out_h = out_c = 0: a vector

    @classmethod
    def build(cls, s, inputs):
        c, h, w = cls.image_input(s, inputs[0])
        stride = s.get_int("stride", 1, minimum=1)
        reverse = bool(s.get_int("reverse", 0, minimum=0))
        flat = bool(s.get_int("flatten", 0, minimum=0))
        extra = s.get_int("extra", 0, minimum=0)
        where = s.line_of("stride")
        if extra:
            # Darknet's forward then copies the input and ignores these; its backward
            # reorders for reverse=1, and flatten=1 reads extra values past each image.
            for key, value in (("reverse", reverse), ("flatten", flat), ("stride", stride != 1)):
                if value:
                    raise s.error(f"extra={extra} copies the input and appends {extra} zeros: "
                                  f"it cannot be combined with {key}={s.get_str(key, '')} "
                                  f"(Darknet's forward ignores it, its backward does not)",
                                  s.line_of(key))
        elif reverse:
            if c % (stride * stride):
                raise s.error(f"reverse=1 with stride={stride} makes {c}/{stride * stride} "
                              f"channels: the {c} input channels must be a multiple of "
                              f"stride² = {stride * stride}", where)
        else:
            if h % stride or w % stride:
                raise s.error(f"stride={stride} must divide the input's width and height "
                              f"({w} x {h}): a {w // stride} x {h // stride} x "
                              f"{c * stride * stride} output cannot hold its {c * h * w} values",
                              where)
            if not flat and c % (stride * stride):
                raise s.error(f"Darknet's reorg_cpu reads the input as {c}/{stride * stride} "
                              f"channels of {w * stride} x {h * stride} pixels: the {c} input "
                              f"channels must be a multiple of stride² = {stride * stride}",
                              where)
        return cls(inputs[0].shape, stride=stride, reverse=reverse, flatten=flat, extra=extra)

    def darknet_line(self):
        if self.extra:
            return "reorg              %4d   ->  %4d\n" % (self.inputs, self.outputs)
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("reorg              /%2d  %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (self.stride, w, h, c, ow, oh, oc))

    def alexeyab_line(self):
        # AlexeyAB's [reorg] is its reorg_old layer (its own reorg is [reorg3d]), which reads
        # neither flatten (the shapes are the same) nor extra (they are not).
        if self.extra:
            raise NotImplementedError(f"AlexeyAB's [reorg] ignores extra={self.extra}: its "
                                      f"network has other shapes from this layer on")
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("reorg_old              /%2d  %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (self.stride, w, h, c, ow, oh, oc))

    def describe(self):
        return {"stride": self.stride, "reverse": int(self.reverse),
                "flatten": int(self.flatten), "extra": self.extra}

    def summary_cells(self):
        return "reorg", "", f"+{self.extra}" if self.extra else f"/{self.stride}"

    def forward(self, x, ctx):
        n = x.shape[0]
        if self.extra:
            y = np.zeros((n, self.outputs), x.dtype)
            y[:, :self.inputs] = x.reshape(n, -1)
        elif self.flatten:
            y = flatten(x, self.in_shape, pixel_major=not self.reverse)
        else:
            y = reorg_forward(x, self.stride, self.reverse, self.out_shape)
        return y.reshape((n,) + self.out_shape)

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        n = dy.shape[0]
        if self.extra:
            dx = dy.reshape(n, -1)[:, :self.inputs].copy()   # the zeros depend on nothing
        elif self.flatten:
            dx = flatten(dy, self.in_shape, pixel_major=self.reverse)
        else:
            dx = reorg_backward(dy, self.stride, self.reverse, self.in_shape)
        return dx.reshape((n,) + self.in_shape)

    def to_onnx(self, graph, inputs):
        # The permutations of ops/reorg.py, each a Reshape and a Transpose of the batch.
        x, s = inputs[0], self.stride
        c, h, w = self.in_shape
        if self.extra:                                           # the image, then extra zeros
            return graph.as_image(graph.pad(graph.flatten(x), [0, 0], [0, self.extra]))
        if self.flatten:                                         # (C, H·W) <-> (H·W, C)
            rows = (h * w, c) if self.reverse else (c, h * w)
            y = graph.node("Transpose", [graph.reshape(x, [0, *rows])], perm=[0, 2, 1])
        elif self.reverse:                                       # depth_to_space
            y = graph.node("Transpose", [graph.reshape(x, [0, s, s, c // (s * s), h, w])],
                           perm=[0, 3, 4, 1, 5, 2])
        else:        # space_to_depth of x's values read as (C/s², H·s, W·s)
            y = graph.node("Transpose", [graph.reshape(x, [0, c // (s * s), h, s, w, s])],
                           perm=[0, 3, 5, 1, 2, 4])
        return graph.reshape(y, [0, *self.out_shape])
