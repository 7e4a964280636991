"""[reorg3d]: AlexeyAB's reorg (its reorg_layer.c), a true space-to-depth."""

from __future__ import annotations

from darkbp.layers.base import Layer, register
from darkbp.ops.reorg import reorg3d_backward, reorg3d_forward


@register
class Reorg3dLayer(Layer):
    """x: (N, C, H, W) -> (N, C·s², H/s, W/s); reverse=1: (N, C/s², H·s, W·s).

    reverse=0 moves pixel (j·s + o div s, i·s + o mod s) of channel c to channel o·C + c
    at (j, i) (ops/reorg.py: space_to_depth, as the YOLOv4 cfgs use it). reverse=1 is
    AlexeyAB's reorg_cpu with the output's sizes, which permutes x's memory read as
    C/s² channels (ops/reorg.py reorg3d_forward; it needs C a multiple of s⁴). Backward is
    the inverse permutation, added into the previous layer's gradient (AlexeyAB assigns it).
    """

    sections = ("reorg3d",)
    options = frozenset({"stride", "reverse"})

    def __init__(self, in_shape, stride: int, reverse: bool):
        c, h, w = in_shape
        s = stride
        out_shape = (c // (s * s), h * s, w * s) if reverse else (c * s * s, h // s, w // s)
        super().__init__(in_shape, out_shape)
        self.stride, self.reverse = stride, reverse

    @classmethod
    def build(cls, s, inputs):
        c, h, w = cls.image_input(s, inputs[0])
        stride = s.get_int("stride", 1, minimum=1)
        reverse = bool(s.get_int("reverse", 0, minimum=0))
        if reverse and c % stride ** 4:
            raise s.error(f"reverse=1 with stride={stride}: AlexeyAB's reorg_cpu reads the "
                          f"{c} input channels as {c}/{stride * stride} channels of "
                          f"{w * stride} x {h * stride} pixels and splits those by "
                          f"stride² again, so they must be a multiple of stride⁴ = "
                          f"{stride ** 4}", s.line_of("reverse"))
        if not reverse and (h % stride or w % stride):
            raise s.error(f"stride={stride} must divide the input's width and height "
                          f"({w} x {h}): a {w // stride} x {h // stride} x "
                          f"{c * stride * stride} output cannot hold its {c * h * w} values",
                          s.line_of("stride"))
        return cls(inputs[0].shape, stride=stride, reverse=reverse)

    def darknet_line(self):
        # pjreddie's Darknet has no [reorg3d]: its [reorg] line.
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("reorg3d            /%2d  %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (self.stride, w, h, c, ow, oh, oc))

    def alexeyab_line(self):
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("reorg                    /%2d %4d x%4d x%4d -> %4d x%4d x%4d\n"
                % (self.stride, w, h, c, ow, oh, oc))

    def describe(self):
        return {"stride": self.stride, "reverse": int(self.reverse)}

    def summary_cells(self):
        return "reorg3d", "", f"/{self.stride}" + (" reverse" if self.reverse else "")

    def forward(self, x, ctx):
        return reorg3d_forward(x, self.stride, self.reverse)

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        return reorg3d_backward(dy, self.stride, self.reverse)

    def to_onnx(self, graph, inputs):
        x, s = inputs[0], self.stride
        if not self.reverse:
            return graph.node("SpaceToDepth", [x], blocksize=s)    # channel o·C + c: as ours
        c, h, w = self.in_shape
        as_b = graph.reshape(x, [0, c // (s * s), h * s, w * s])
        y = graph.node("DepthToSpace", [as_b], blocksize=s, mode="DCR")
        return graph.reshape(y, [0, *self.out_shape])
