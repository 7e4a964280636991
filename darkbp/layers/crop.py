"""[crop]: a window of the input (random in training, the centre at inference), times 2 minus 1."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.passes import EVAL


@register
class CropLayer(Layer):
    """x: (N, C, H, W) -> (N, C, crop_height, crop_width), times 2 minus 1 unless noadjust.

    As Darknet's forward_crop_layer (CPU): one offset (dh, dw) for the whole pass, drawn
    in training with dh uniform in [0, H − crop_height] and dw in [0, W − crop_width], and
    with flip=1 a mirror image half of the time; at inference the centre, rounded down,
    unmirrored. Mirrored, output column j reads input column W − 1 − dw − j.
    Backward passes the gradient to the window it came from (Darknet passes none).
    """

    sections = ("crop",)
    options = frozenset({"crop_height", "crop_width", "flip", "noadjust"})
    # Darknet applies these only on the GPU (forward_crop_layer_gpu).
    ignored = Layer.ignored | {"angle", "saturation", "exposure", "shift"}

    def __init__(self, in_shape, crop_height: int, crop_width: int, flip: bool,
                 noadjust: bool):
        c, _, _ = in_shape
        super().__init__(in_shape, (c, crop_height, crop_width))
        self.crop_height, self.crop_width = crop_height, crop_width
        self.flip, self.noadjust = flip, noadjust

    @classmethod
    def build(cls, s, inputs):
        _, h, w = cls.image_input(s, inputs[0])
        crop_height = s.get_int("crop_height", 1, minimum=1)
        crop_width = s.get_int("crop_width", 1, minimum=1)
        for key, size, side, name in (("crop_height", crop_height, h, "height"),
                                      ("crop_width", crop_width, w, "width")):
            if size > side:
                raise s.error(f"{key}={size} is larger than the input's {name} {side}: "
                              f"the crop must fit inside its {w} x {h} input", s.line_of(key))
        return cls(inputs[0].shape, crop_height=crop_height, crop_width=crop_width,
                   flip=bool(s.get_int("flip", 0, minimum=0)),
                   noadjust=bool(s.get_int("noadjust", 0, minimum=0)))

    def darknet_line(self):
        c, h, w = self.in_shape
        return ("Crop Layer: %d x %d -> %d x %d x %d image\n"
                % (h, w, self.crop_height, self.crop_width, c))

    def alexeyab_line(self):
        return self.darknet_line()               # make_crop_layer prints the same line

    def describe(self):
        return {"crop_height": self.crop_height, "crop_width": self.crop_width,
                "flip": int(self.flip), "noadjust": int(self.noadjust)}

    def summary_cells(self):
        return "crop", "", f"{self.crop_height} x {self.crop_width}"

    def offset(self, ctx) -> tuple[int, int, bool]:
        """(dh, dw, mirrored) of this pass's window."""
        _, h, w = self.in_shape
        rows, cols = h - self.crop_height, w - self.crop_width
        if not ctx.train:
            return rows // 2, cols // 2, False
        # Darknet's order: the flip (drawn only when flip=1), then dh, then dw, each
        # rand() % (range + 1); one draw for the whole pass.
        flip = (2,) if self.flip else ()
        draws = ctx.noise.integers(self.index, flip + (rows + 1, cols + 1))
        return draws[-2], draws[-1], self.flip and draws[0] == 1

    def _window(self, a: np.ndarray, dh: int, dw: int, mirrored: bool) -> np.ndarray:
        """The (N, C, crop_height, crop_width) view of a (N, C, H, W) `a` the crop reads."""
        w = self.in_shape[2]
        rows = a[:, :, dh:dh + self.crop_height]
        if mirrored:
            return rows[:, :, :, w - dw - self.crop_width:w - dw][:, :, :, ::-1]
        return rows[:, :, :, dw:dw + self.crop_width]

    @property
    def scale(self) -> int:
        return 1 if self.noadjust else 2

    @kernel_buffers
    def forward(self, x, ctx):
        self._offset = self.offset(ctx)
        window = self._window(x, *self._offset)
        if self.noadjust:
            return window.copy()
        y = window * x.dtype.type(2)          # exact; Darknet's input·2 − 1 rounds once
        y -= x.dtype.type(1)
        return y

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        dx = np.zeros((dy.shape[0],) + self.in_shape, dy.dtype)
        np.multiply(dy, dy.dtype.type(self.scale), out=self._window(dx, *self._offset))
        return dx

    def to_onnx(self, graph, inputs):
        dh, dw, _ = self.offset(EVAL)          # the centre, unmirrored: the window at inference
        window = graph.slice(inputs[0], [2, 3], [dh, dw],
                             [dh + self.crop_height, dw + self.crop_width])
        if self.noadjust:
            return window
        return graph.node("Sub", [graph.scale(window, 2), graph.scalar(1)])
