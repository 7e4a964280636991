"""[local_avgpool]: AlexeyAB's windowed average pooling, its windows laid out as [maxpool]'s."""

from __future__ import annotations

from darkbp.layers.base import Layer, c_float, register
from darkbp.layers.maxpool import MaxpoolLayer
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.local_avgpool import (local_avgpool_backward, local_avgpool_forward,
                                      window_counts)


@register
class LocalAvgpoolLayer(Layer):
    """x: (N, C, H, W) -> (N, C, OH, OW), OH = (H + padding − size)/stride_y + 1 and
    OW = (W + padding − size)/stride_x + 1, each output the mean of its window's cells
    inside the input (ops/local_avgpool.py).

    AlexeyAB's parse_local_avgpool: stride (1), stride_x and stride_y (stride), size
    (stride), padding (size − 1), as its [maxpool].
    """

    sections = ("local_avgpool",)
    options = frozenset({"size", "stride", "stride_x", "stride_y", "padding"})

    def __init__(self, in_shape, size: int, stride_y: int, stride_x: int, padding: int):
        c, h, w = in_shape
        super().__init__(in_shape, (c, (h + padding - size) // stride_y + 1,
                                    (w + padding - size) // stride_x + 1))
        self.size, self.stride_y, self.stride_x, self.padding = size, stride_y, stride_x, padding

    @classmethod
    def build(cls, s, inputs):
        _, h, w = cls.image_input(s, inputs[0])
        stride = s.get_int("stride", 1, minimum=1)
        stride_x = s.get_int("stride_x", stride, minimum=1)
        stride_y = s.get_int("stride_y", stride, minimum=1)
        size = s.get_int("size", stride, minimum=1)
        padding = s.get_int("padding", size - 1, minimum=0)
        if h + padding < size or w + padding < size:
            raise s.error(f"a {size}x{size} window with padding {padding} does not fit the "
                          f"{w} x {h} input: the output would have no pixels")
        layer = cls(inputs[0].shape, size=size, stride_y=stride_y, stride_x=stride_x,
                    padding=padding)
        _, out_h, out_w = layer.out_shape
        if not window_counts((h, w), (out_h, out_w), size, stride_y, stride_x,
                             padding).all():
            raise s.error(f"padding={padding} puts a whole {size}x{size} window outside the "
                          f"{w} x {h} input: its average would be 0/0 (AlexeyAB outputs nan "
                          f"there); padding must be below {2 * size - 1}", s.line_of("padding"))
        return layer

    def darknet_line(self):
        # pjreddie's Darknet has no [local_avgpool]: its [maxpool] line, "avg" for "max", and
        # " /2x1 " for its " / 2  " where the strides along x and y differ.
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        stride = ("/ %d " % self.stride_x if self.stride_x == self.stride_y
                  else "/%dx%d" % (self.stride_x, self.stride_y))
        return ("avg          %d x %d %s %4d x%4d x%4d   ->  %4d x%4d x%4d\n"
                % (self.size, self.size, stride, w, h, c, ow, oh, oc))

    def alexeyab_line(self):
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        if self.stride_x == self.stride_y:
            stride = "%2d   " % self.stride_x
        else:
            stride = "%2dx%2d " % (self.stride_x, self.stride_y)
        head = "avg               " if self.stride_x == self.stride_y else "avg              "
        return (head + "%2dx%2d/" % (self.size, self.size) + stride
                + "%4d x%4d x%4d -> %4d x%4d x%4d %5.3f BF\n"
                % (w, h, c, ow, oh, oc, c_float(self.alexeyab_bflops)))

    alexeyab_bflops = MaxpoolLayer.alexeyab_bflops        # size²·C·out_h·out_w / 1e9

    def describe(self):
        return {"size": self.size, "stride_x": self.stride_x, "stride_y": self.stride_y,
                "padding": self.padding}

    def summary_cells(self):
        stride = (f"{self.stride_x}" if self.stride_x == self.stride_y
                  else f"{self.stride_x}x{self.stride_y}")
        return "local avg", "", f"{self.size} x {self.size} / {stride}"

    @kernel_buffers
    def forward(self, x, ctx):
        return local_avgpool_forward(x, self.size, self.stride_y, self.stride_x, self.padding,
                                     self.out_shape[1:])

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        return local_avgpool_backward(dy, self.size, self.stride_y, self.stride_x,
                                      self.padding, self.in_shape)

    def to_onnx(self, graph, inputs):
        # The windows start padding//2 cells before the input; ONNX pads the end as far as the
        # last window reaches, and count_include_pad=0 leaves every padded cell out of the mean.
        _, h, w = self.in_shape
        _, out_h, out_w = self.out_shape
        top = self.padding // 2
        bottom = max(0, (out_h - 1) * self.stride_y + self.size - top - h)
        right = max(0, (out_w - 1) * self.stride_x + self.size - top - w)
        return graph.node("AveragePool", inputs, kernel_shape=[self.size] * 2,
                          strides=[self.stride_y, self.stride_x],
                          pads=[top, top, bottom, right], count_include_pad=0)
