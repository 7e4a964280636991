"""[upsample]: nearest-neighbour enlargement × scale; a negative stride sums blocks instead."""

from __future__ import annotations

from darkbp.layers.base import Layer, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.upsample import block_sum, nearest


@register
class UpsampleLayer(Layer):
    """x: (N, C, H, W) -> (N, C, H·s, W·s) for stride s > 0; (N, C, H/s, W/s) for stride −s.

    Darknet's upsample_cpu: stride > 0 copies every value into an s×s block, times scale;
    stride < 0 ("downsample") sums every s×s block, times scale (a sum, not a mean).
    Backward is the other operation, the exact adjoint.
    """

    sections = ("upsample",)
    options = frozenset({"stride", "scale"})

    def __init__(self, in_shape, stride: int, scale: float):
        c, h, w = in_shape
        s = abs(stride)
        super().__init__(in_shape, (c, h * s, w * s) if stride > 0 else (c, h // s, w // s))
        self.stride, self.scale = stride, scale

    @classmethod
    def build(cls, s, inputs):
        _, h, w = cls.image_input(s, inputs[0])
        stride = s.get_int("stride", 2)
        if stride == 0:
            raise s.error("'stride' must not be 0 (2 doubles the width and height, -2 halves "
                          "them)", s.line_of("stride"))
        if stride < 0 and (h % -stride or w % -stride):
            # Darknet's downsample reads the input with rows of out_w·s values: other cells.
            raise s.error(f"stride={stride} sums {-stride}x{-stride} blocks: {-stride} must "
                          f"divide the input's width and height ({w} x {h})",
                          s.line_of("stride"))
        return cls(inputs[0].shape, stride=stride, scale=s.get_float("scale", 1.0))

    @property
    def factor(self) -> int:
        """How many times larger (upsample) or smaller (downsample) each side becomes."""
        return abs(self.stride)

    def darknet_line(self):
        return self._line("%-10s         %2dx  %4d x%4d x%4d   ->  %4d x%4d x%4d\n")

    def alexeyab_line(self):
        return self._line("%-10s              %2dx  %4d x%4d x%4d -> %4d x%4d x%4d\n")

    def _line(self, line: str) -> str:
        """`line` filled as both Darknets print it: the kind, factor, w h c and ow oh oc."""
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        kind = "upsample" if self.stride > 0 else "downsample"
        return line % (kind, self.factor, w, h, c, ow, oh, oc)

    def describe(self):
        return {"stride": self.stride, "scale": self.scale}

    def summary_cells(self):
        return "upsample" if self.stride > 0 else "downsample", "", f"{self.factor}x"

    @kernel_buffers
    def forward(self, x, ctx):
        if self.stride > 0:
            return nearest(x, self.stride, self.scale)
        return block_sum(x, -self.stride, self.scale)

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        if self.stride > 0:
            return block_sum(dy, self.stride, self.scale)
        return nearest(dy, -self.stride, self.scale)

    def to_onnx(self, graph, inputs):
        c, h, w = self.in_shape
        s = self.factor
        if self.stride > 0:                        # every value copied into an s×s block
            blocks = graph.node("Expand", [graph.reshape(inputs[0], [0, c, h, 1, w, 1]),
                                           graph.ints([1, 1, 1, s, 1, s])])
            y = graph.reshape(blocks, [0, c, h * s, w * s])
        else:                                      # every s×s block summed
            y = graph.node("ReduceSum", [graph.reshape(inputs[0], [0, c, h // s, s, w // s, s]),
                                         graph.ints([3, 5])], keepdims=0)
        return graph.scale(y, self.scale)
