"""[convolutional]: grouped convolution (im2col + GEMM), optional batch norm, bias, activation.

AlexeyAB's fork adds two options (src/convolutional_layer.c):

    dilation=d      kernel taps d pixels apart.  AlexeyAB pads by padding·d, but sizes the
                    output as without dilation, (in + 2·padding − size)/stride + 1; its
                    im2col fills the grid the dilated kernel fits, (in + 2·padding·d −
                    d·(size − 1) − 1)/stride + 1.  The two agree for pad=1 and an odd size
                    (padding = size/2: the output keeps the input's size at stride 1), and
                    darkbp runs exactly that convolution.  Where they disagree, AlexeyAB's
                    buffers do not match: its CPU and plain-CUDA builds multiply columns
                    laid out for one grid as if for the other (and write past the column
                    buffer when the im2col grid is the larger), its cuDNN build describes
                    the output with one size and the convolution with the other.  No build
                    computes a defined result, and darkbp refuses the cfg.  size=1 ignores
                    dilation, as AlexeyAB does.
    antialiasing=1  the convolution runs at stride 1, then a fixed 3x3 blur ([1 2 1]ᵀ[1 2 1]
                    / 16, per channel, padding 1) at the cfg's stride; antialiasing=2 a 2x2
                    box blur (1/4, no padding).  The blur has no parameters: AlexeyAB neither
                    trains nor saves it, and passes the gradient back through it (its GPU
                    build; its CPU backward ignores the blur).
"""

from __future__ import annotations

import math

import numpy as np

from darkbp.layers.affine import AffineLayer
from darkbp.layers.base import c_float, read_activation, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.conv import conv_backward, conv_forward
from darkbp.ops.im2col import conv_out_size
from darkbp.ops.layout import as_nchw, ordered

# antialiasing -> (blur kernel, its padding), AlexeyAB's make_convolutional_layer
BLURS = {
    1: (np.outer([1, 2, 1], [1, 2, 1]) / 16.0, 1),
    2: (np.full((2, 2), 0.25), 0),
}


@register
class ConvolutionalLayer(AffineLayer):
    """x: (N, C, H, W) -> (N, filters, out_h, out_w).

    weights: (filters, C/groups, size, size), Darknet's layout; with batch_normalize
    the order is conv -> normalise -> scale -> + bias -> activation, as in Darknet.
    With dilation the kernel's taps lie `dilation` pixels apart and the padding is
    padding·dilation; with antialiasing a fixed blur at `stride` follows a stride-1
    convolution (the module's docstring).
    """

    sections = ("convolutional", "conv")
    options = frozenset({"filters", "size", "stride", "pad", "padding", "groups", "activation",
                         "batch_normalize", "dilation", "antialiasing"})
    ignored = AffineLayer.ignored | {"binary", "xnor", "bin_output", "flipped", "dot"}
    alexeyab_kind = "conv  "       # AlexeyAB's table: "convX " (xnor=1), "convXB" (and bin_output)
    backward_cache = AffineLayer.backward_cache + ("_conv_cache", "_blur_cache")

    def __init__(self, in_shape, filters: int, size: int, stride: int, padding: int,
                 groups: int, activation: str, batch_normalize: bool, dilation: int = 1,
                 antialiasing: int = 0):
        c, h, w = in_shape
        # With antialiasing the convolution runs at stride 1 and the blur strides.
        conv_stride = 1 if antialiasing else stride
        out_h = (h + 2 * padding - size) // conv_stride + 1
        out_w = (w + 2 * padding - size) // conv_stride + 1
        self.conv_hw = (out_h, out_w)
        if antialiasing:
            blur, blur_padding = BLURS[antialiasing]
            out_h = conv_out_size(out_h, len(blur), stride, blur_padding)
            out_w = conv_out_size(out_w, len(blur), stride, blur_padding)
        super().__init__(in_shape, (filters, out_h, out_w), activation, batch_normalize,
                         ("biases", "scales", "rolling_mean", "rolling_variance", "weights"))
        self.filters, self.size, self.stride = filters, size, stride
        self.padding, self.groups = padding, groups
        self.dilation, self.antialiasing, self.conv_stride = dilation, antialiasing, conv_stride

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
        antialiasing = s.get_int("antialiasing", 0, minimum=0)
        if antialiasing and antialiasing not in BLURS:
            raise s.error(f"antialiasing={antialiasing} is not one of 0, 1 (a 3x3 blur), "
                          f"2 (a 2x2 blur)", s.line_of("antialiasing"))
        dilation = 1 if size == 1 else s.get_int("dilation", 1, minimum=1)  # as AlexeyAB
        if c % groups:
            raise s.error(f"groups={groups} does not divide the {c} input channels",
                          s.line_of("groups"))
        if filters % groups:
            raise s.error(f"groups={groups} does not divide filters={filters}",
                          s.line_of("groups"))
        if h + 2 * padding < size or w + 2 * padding < size:
            raise s.error(f"a {size}x{size} kernel with padding {padding} does not fit the "
                          f"{w} x {h} input: the output would have no pixels")
        if dilation > 1:
            cls._check_dilation(s, h, w, size, 1 if antialiasing else stride, padding, dilation)
        layer = cls(inputs[0].shape, filters=filters, size=size, stride=stride, padding=padding,
                    groups=groups, activation=read_activation(s),
                    batch_normalize=s.get_int("batch_normalize", 0, minimum=0),
                    dilation=dilation, antialiasing=antialiasing)
        if min(layer.out_shape[1:]) < 1:
            raise s.error(f"the antialiasing blur leaves no pixels of the {layer.conv_hw[1]} x "
                          f"{layer.conv_hw[0]} convolution output", s.line_of("antialiasing"))
        if s.get_int("xnor", 0, minimum=0):
            # AlexeyAB's XNOR convolution (binary weights and inputs): only its table line
            # differs here; darkbp computes the layer in floats and warns that xnor is unused.
            layer.alexeyab_kind = "convXB" if s.get_int("bin_output", 0, minimum=0) else "convX "
        return layer

    @staticmethod
    def _check_dilation(s, h, w, size, stride, padding, dilation):
        """An error unless AlexeyAB's output size (without dilation) equals the grid its
        im2col fills (padding·dilation around, a dilated kernel): only then is its
        convolution defined (the module's docstring)."""
        sized = [conv_out_size(v, size, stride, padding) for v in (w, h)]
        filled = [conv_out_size(v, size, stride, padding * dilation, dilation) for v in (w, h)]
        if sized != filled:
            overflow = (" (its CPU build writes past its column buffer)"
                        if filled[0] * filled[1] > sized[0] * sized[1] else "")
            raise s.error(
                f"dilation={dilation} with a {size}x{size} kernel and padding {padding}: "
                f"AlexeyAB's Darknet sizes the output {sized[0]} x {sized[1]} (as without "
                f"dilation) but pads by padding x dilation = {padding * dilation} and fills a "
                f"{filled[0]} x {filled[1]} grid, a mismatch after which it computes no "
                f"defined result{overflow}; use pad=1 with an odd size",
                s.line_of("dilation"))

    def darknet_line(self):
        # pjreddie ignores dilation and antialiasing: a plain conv at `stride`, whose output
        # has this layer's shape (a 2x2 blur's excepted) and whose BFLOPs leave out a blur.
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        bflops = 2.0 * self.filters * self.size * self.size * (c // self.groups) * oh * ow / 1e9
        return ("conv  %5d %2d x%2d /%2d  %4d x%4d x%4d   ->  %4d x%4d x%4d  %5.3f BFLOPs\n"
                % (self.filters, self.size, self.size, self.stride, w, h, c, ow, oh, oc, bflops))

    def alexeyab_line(self):
        c, h, w = self.in_shape
        oh, ow = self.conv_hw
        line = _alexeyab_conv_line(self.filters, self.groups, self.size, self.conv_stride,
                                   self.dilation, (w, h, c), (ow, oh, self.filters),
                                   self.alexeyab_bflops, self.alexeyab_kind)
        if self.antialiasing:
            # AlexeyAB's blur is a layer of its own (not counted, not indexed) that prints its
            # line after the host's; the "AA:  " before it goes to stdout.
            blur = len(BLURS[self.antialiasing][0])
            _, blur_h, blur_w = self.out_shape
            line += _alexeyab_conv_line(self.filters, self.filters, blur, self.stride, 1,
                                        (ow, oh, self.filters), (blur_w, blur_h, self.filters),
                                        self._blur_bflops)
        return line

    @property
    def alexeyab_bflops(self) -> float:
        """The convolution's BFLOPs (_conv_bflops); an XNOR convolution's a 32nd of them."""
        return self._conv_bflops / 32 if self.alexeyab_kind != "conv  " else self._conv_bflops

    @property
    def _conv_bflops(self) -> float:
        """2·nweights·out_h·out_w / 1e9, as pjreddie's; with antialiasing the stride-1
        convolution's alone (AlexeyAB's total leaves its blur layer out)."""
        c = self.in_shape[0]
        out_h, out_w = self.conv_hw
        return 2.0 * self.filters * self.size * self.size * (c // self.groups) * out_h * out_w / 1e9

    @property
    def alexeyab_outputs(self) -> int:
        """AlexeyAB's l.outputs: with antialiasing the stride-1 convolution's (the blur's
        output is its hidden layer's)."""
        return self.filters * self.conv_hw[0] * self.conv_hw[1]

    @property
    def _blur_bflops(self) -> float:
        if not self.antialiasing:
            return 0.0
        _, out_h, out_w = self.out_shape
        return 2.0 * self.filters * BLURS[self.antialiasing][0].size * out_h * out_w / 1e9

    def describe(self):
        return {"filters": self.filters, "size": self.size, "stride": self.stride,
                "padding": self.padding, "groups": self.groups, "dilation": self.dilation,
                "antialiasing": self.antialiasing, **super().describe()}

    def summary_cells(self):
        kind = "conv" + (f" g{self.groups}" if self.groups > 1 else "")
        kind += " bn" if self.batch_normalize else ""
        kind += " blur" if self.antialiasing else ""
        size = f"{self.size} x {self.size} / {self.stride}"
        size += f" dil {self.dilation}" if self.dilation > 1 else ""
        return f"{kind} {self.activation}", str(self.filters), size

    @property
    def bflops(self) -> float:
        """The convolution's, and the blur's with antialiasing."""
        return self._conv_bflops + self._blur_bflops

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
        z, self._conv_cache = conv_forward(x, self.weights, self.conv_stride,
                                           self.padding * self.dilation, self.groups,
                                           keep_layout=True, biases=biases,
                                           buffers=self._buffers, dilation=self.dilation)
        zl = ordered(z, self._conv_cache.layout)
        y = self._tail_forward(self._channels_view(zl), ctx, add_bias=biases is None)
        y = as_nchw(y.reshape(zl.shape), self._conv_cache.layout)
        if self.antialiasing:
            y, self._blur_cache = conv_forward(y, self._blur(y.dtype), self.stride,
                                               BLURS[self.antialiasing][1], self.filters,
                                               keep_layout=True)
        return y

    def _blur(self, dtype) -> np.ndarray:
        """The antialiasing blur as depthwise weights (filters, 1, k, k)."""
        blur = BLURS[self.antialiasing][0]
        return np.broadcast_to(blur.astype(dtype), (self.filters, 1) + blur.shape).copy()

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        if self.antialiasing:                  # through the fixed blur, which learns nothing
            dy, _ = conv_backward(dy, self._blur_cache, self._blur(dy.dtype))
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
        z = graph.node("Conv", conv, kernel_shape=[self.size] * 2,
                       strides=[self.conv_stride] * 2, pads=[self.padding * self.dilation] * 4,
                       dilations=[self.dilation] * 2, group=self.groups)
        y = self._tail_to_onnx(graph, z)
        if self.antialiasing:
            blur, padding = BLURS[self.antialiasing]
            y = graph.node("Conv", [y, graph.constant(self._blur(np.float32), "blur")],
                           kernel_shape=list(blur.shape), strides=[self.stride] * 2,
                           pads=[padding] * 4, group=self.filters)
        return y

    def _channels_view(self, a):
        """A batch in the conv's layout as the tail's (A, F, B): (N, F, OH·OW) or (1, F, OH·OW·N)."""
        if self._conv_cache.layout == "NCHW":
            return a.reshape(a.shape[0], self.filters, -1)
        return a.reshape(1, self.filters, -1)


def _alexeyab_conv_line(filters, groups, size, stride, dilation, whc, out_whc, bflops,
                        kind="conv  ") -> str:
    """make_convolutional_layer's line (square kernel, stride_x = stride_y); kind "convX " or
    "convXB" for an XNOR convolution."""
    line = kind + ("%5d/%4d " % (filters, groups) if groups > 1 else "%5d      " % filters)
    line += ("%2d x%2d/%2d(%1d)" % (size, size, stride, dilation) if dilation > 1
             else "%2d x%2d/%2d   " % (size, size, stride))
    return line + ("%4d x%4d x%4d -> %4d x%4d x%4d %5.3f BF\n"
                   % (*whc, *out_whc, c_float(bflops)))
