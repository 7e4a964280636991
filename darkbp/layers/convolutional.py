"""[convolutional]: grouped convolution (im2col + GEMM), optional batch norm, bias, activation."""

from __future__ import annotations

import math

from darkbp.layers.affine import AffineLayer
from darkbp.layers.base import c_float, read_activation, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.conv import conv_backward, conv_forward
from darkbp.ops.layout import as_nchw, ordered


@register
class ConvolutionalLayer(AffineLayer):
    """x: (N, C, H, W) -> (N, filters, out_h, out_w).

    weights: (filters, C/groups, size, size), Darknet's layout; with batch_normalize
    the order is conv -> normalise -> scale -> + bias -> activation, as in Darknet.
    """

    sections = ("convolutional", "conv")
    options = frozenset({"filters", "size", "stride", "pad", "padding", "groups", "activation",
                         "batch_normalize"})
    ignored = AffineLayer.ignored | {"binary", "xnor", "flipped", "dot"}
    backward_cache = AffineLayer.backward_cache + ("_conv_cache",)

    def __init__(self, in_shape, filters: int, size: int, stride: int, padding: int,
                 groups: int, activation: str, batch_normalize: bool):
        c, h, w = in_shape
        out_h = (h + 2 * padding - size) // stride + 1
        out_w = (w + 2 * padding - size) // stride + 1
        super().__init__(in_shape, (filters, out_h, out_w), activation, batch_normalize,
                         ("biases", "scales", "rolling_mean", "rolling_variance", "weights"))
        self.filters, self.size, self.stride = filters, size, stride
        self.padding, self.groups = padding, groups

    @classmethod
    def build(cls, s, inputs):
        c, h, w = cls.image_input(s, inputs[0])
        filters = s.get_int("filters", 1, minimum=1)
        size = s.get_int("size", 1, minimum=1)
        stride = s.get_int("stride", 1, minimum=1)
        pad = s.get_int("pad", 0, minimum=0)
        padding = s.get_int("padding", 0, minimum=0)
        if pad:
            padding = size // 2                          # Darknet: pad=1 overrides padding
        groups = s.get_int("groups", 1, minimum=1)
        if c % groups:
            raise s.error(f"groups={groups} does not divide the {c} input channels",
                          s.line_of("groups"))
        if filters % groups:
            raise s.error(f"groups={groups} does not divide filters={filters}",
                          s.line_of("groups"))
        if h + 2 * padding < size or w + 2 * padding < size:
            raise s.error(f"a {size}x{size} kernel with padding {padding} does not fit the "
                          f"{w} x {h} input: the output would have no pixels")
        return cls(inputs[0].shape, filters=filters, size=size, stride=stride, padding=padding,
                   groups=groups, activation=read_activation(s),
                   batch_normalize=s.get_int("batch_normalize", 0, minimum=0))

    def darknet_line(self):
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("conv  %5d %2d x%2d /%2d  %4d x%4d x%4d   ->  %4d x%4d x%4d  %5.3f BFLOPs\n"
                % (self.filters, self.size, self.size, self.stride, w, h, c, ow, oh, oc,
                   self.bflops))

    def alexeyab_line(self):
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        filters = ("%5d/%4d " % (self.filters, self.groups) if self.groups > 1
                   else "%5d      " % self.filters)
        return ("conv  " + filters + "%2d x%2d/%2d   %4d x%4d x%4d -> %4d x%4d x%4d %5.3f BF\n"
                % (self.size, self.size, self.stride, w, h, c, ow, oh, oc,
                   c_float(self.alexeyab_bflops)))

    @property
    def alexeyab_bflops(self) -> float:
        return self.bflops                       # 2·nweights·out_h·out_w / 1e9, as pjreddie's

    def describe(self):
        return {"filters": self.filters, "size": self.size, "stride": self.stride,
                "padding": self.padding, "groups": self.groups, **super().describe()}

    def summary_cells(self):
        kind = "conv" + (f" g{self.groups}" if self.groups > 1 else "")
        kind += " bn" if self.batch_normalize else ""
        return (f"{kind} {self.activation}", str(self.filters),
                f"{self.size} x {self.size} / {self.stride}")

    @property
    def bflops(self) -> float:
        c = self.in_shape[0]
        _, out_h, out_w = self.out_shape
        return 2.0 * self.filters * self.size * self.size * (c // self.groups) * out_h * out_w / 1e9

    def param_shapes(self):
        c = self.in_shape[0]
        return {"weights": (self.filters, c // self.groups, self.size, self.size),
                **self._channel_shapes(self.filters)}

    def _init_values(self, rng):
        fan_in = self.size * self.size * (self.in_shape[0] // self.groups)
        self.weights[...] = rng.standard_normal(self.weights.shape) * math.sqrt(2.0 / fan_in)
        self._init_scales()

    @kernel_buffers
    def forward(self, x, ctx):
        # The output, and dx, stay in the layout the convolution runs in (ops/layout.py).
        # Without batch norm the biases come next: the convolution adds them in its GEMM.
        biases = None if self.batch_normalize else self.biases
        if not hasattr(self, "_buffers"):
            self._buffers = {}           # the columns' memory, reused from call to call
        z, self._conv_cache = conv_forward(x, self.weights, self.stride, self.padding,
                                           self.groups, keep_layout=True, biases=biases,
                                           buffers=self._buffers)
        zl = ordered(z, self._conv_cache.layout)
        y = self._tail_forward(self._channels_view(zl), ctx, add_bias=biases is None)
        return as_nchw(y.reshape(zl.shape), self._conv_cache.layout)

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        layout = self._conv_cache.layout
        dyl = ordered(dy, layout)
        biased = self._conv_cache.biased
        dz = self._tail_backward(self._channels_view(dyl), bias_grad=not biased).reshape(dyl.shape)
        dx, dweights, *dbiases = conv_backward(as_nchw(dz, layout), self._conv_cache,
                                               self.weights, need_dx=need_dx)
        self.weight_grads += dweights
        if biased:
            self.bias_grads += dbiases[0]
        return dx

    def to_onnx(self, graph, inputs):
        conv = [inputs[0], graph.constant(self.weights, "weights")]
        if not self.batch_normalize:           # the biases come after the normalisation
            conv.append(graph.constant(self.biases, "biases"))
        z = graph.node("Conv", conv, kernel_shape=[self.size] * 2, strides=[self.stride] * 2,
                       pads=[self.padding] * 4, group=self.groups)
        return self._tail_to_onnx(graph, z)

    def _channels_view(self, a):
        """A batch in the conv's layout as the tail's (A, F, B): (N, F, OH·OW) or (1, F, OH·OW·N)."""
        if self._conv_cache.layout == "NCHW":
            return a.reshape(a.shape[0], self.filters, -1)
        return a.reshape(1, self.filters, -1)
