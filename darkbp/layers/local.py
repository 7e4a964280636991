"""[local]: a convolution with its own weights and biases at every output position."""

from __future__ import annotations

import math

from darkbp.layers.affine import AffineLayer
from darkbp.layers.base import read_activation, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.im2col import conv_out_size
from darkbp.ops.layout import as_nchw, ordered
from darkbp.ops.local import local_backward, local_forward


def darknet_out_size(size_in: int, size: int, stride: int, pad: int) -> int:
    """local_out_height/width in Darknet's local_layer.c: (in − (pad ? 1 : size))/stride + 1.

    It reads `pad` as a flag, while im2col pads the input by `pad` pixels (its grid is
    conv_out_size's). For a kernel that fits the padded input the numerator is >= 0, so
    Python's // is C's division.
    """
    return (size_in - (1 if pad else size)) // stride + 1


@register
class LocalLayer(AffineLayer):
    """x: (N, C, H, W) -> (N, filters, out_h, out_w), zero-padded by `pad` pixels.

    weights: (out_h, out_w, filters, C, size, size), at each location a bank of filters
    in [convolutional]'s layout; biases: (filters, out_h, out_w). In C order both are
    Darknet's `.weights` blocks, which store the biases first.
    """

    sections = ("local",)
    options = frozenset({"filters", "size", "stride", "pad", "activation"})
    backward_cache = AffineLayer.backward_cache + ("_cache",)

    def __init__(self, in_shape, filters: int, size: int, stride: int, pad: int,
                 activation: str):
        c, h, w = in_shape
        out_shape = (filters, conv_out_size(h, size, stride, pad),
                     conv_out_size(w, size, stride, pad))
        super().__init__(in_shape, out_shape, activation, batch_normalize=False,
                         file_order=("biases", "weights"))
        self.filters, self.size, self.stride, self.pad = filters, size, stride, pad

    @classmethod
    def build(cls, s, inputs):
        c, h, w = cls.image_input(s, inputs[0])
        filters = s.get_int("filters", 1, minimum=1)
        size = s.get_int("size", 1, minimum=1)
        stride = s.get_int("stride", 1, minimum=1)
        pad = s.get_int("pad", 0, minimum=0)
        # As for [convolutional], a kernel larger than the padded input is an empty output.
        # (Darknet's C division rounds a negative (in − size)/stride up to 0, giving one
        # location whose window hangs over the bottom and right edge, e.g. a 3x3 kernel,
        # stride 2, on 2 x 2.)
        if h + 2 * pad < size or w + 2 * pad < size:
            raise s.error(f"a {size}x{size} kernel with pad {pad} does not fit the {w} x {h} "
                          f"input: the output would have no pixels")
        locations = (darknet_out_size(h, size, stride, pad), darknet_out_size(w, size, stride, pad))
        windows = (conv_out_size(h, size, stride, pad), conv_out_size(w, size, stride, pad))
        if locations != windows:
            # Darknet's products would then read im2col's buffer as rows of out_h·out_w
            # values where im2col wrote rows of its own grid: wrong inputs at most locations.
            # Where the two agree (pad 0; pad = (size − 1)/2; others by rounding with a
            # stride), Darknet computes exactly a locally connected layer over the input
            # zero-padded by `pad` pixels, which is what darkbp computes.
            pixels = "pixel" if pad == 1 else "pixels"
            raise s.error(f"pad={pad} with size={size}, stride={stride} on the {w} x {h} input: "
                          f"Darknet's [local] counts {locations[1]} x {locations[0]} locations "
                          f"(reading pad as a flag: (in - 1)/stride + 1) but im2col pads the "
                          f"input by {pad} {pixels}, which gives {windows[1]} x {windows[0]} "
                          f"windows; use pad=0, or pad=(size-1)/2 with an odd size",
                          s.line_of("pad"))
        return cls(inputs[0].shape, filters=filters, size=size, stride=stride, pad=pad,
                   activation=read_activation(s))

    def darknet_line(self):
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return ("Local Layer: %d x %d x %d image, %d filters -> %d x %d x %d image\n"
                % (h, w, c, self.filters, oh, ow, oc))

    def alexeyab_line(self):
        return self.darknet_line()               # make_local_layer prints the same line

    def describe(self):
        return {"filters": self.filters, "size": self.size, "stride": self.stride,
                "pad": self.pad, "activation": self.activation}

    def summary_cells(self):
        return (f"local {self.activation}", str(self.filters),
                f"{self.size} x {self.size} / {self.stride}")

    @property
    def bflops(self) -> float:
        return 2.0 * self.outputs * self.in_shape[0] * self.size * self.size / 1e9

    def param_shapes(self):
        c = self.in_shape[0]
        f, out_h, out_w = self.out_shape
        return {"biases": (f, out_h, out_w),
                "weights": (out_h, out_w, f, c, self.size, self.size)}

    def _init_values(self, rng):
        # make_local_layer's distribution, scale·U(−1, 1) with scale = sqrt(2/(size²·C)), at
        # every location: Darknet draws only the first location's and leaves the rest 0.
        scale = math.sqrt(2.0 / (self.size * self.size * self.in_shape[0]))
        self.weights[...] = rng.uniform(-1.0, 1.0, self.weights.shape) * scale

    @kernel_buffers
    def forward(self, x, ctx):
        z, cache = local_forward(x, self.weights, self.biases, self.stride, self.pad)
        self._cache = cache if ctx.train else None
        zl = ordered(z, "CHWN")                                  # z's own memory, (F, OH, OW, N)
        y = self._tail_forward(zl.reshape(1, self.filters, -1), ctx, add_bias=False)
        return as_nchw(y.reshape(zl.shape), "CHWN")

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        dyl = ordered(dy, "CHWN")
        dz = self._tail_backward(dyl.reshape(1, self.filters, -1), bias_grad=False)
        dx, dweights, dbiases = local_backward(as_nchw(dz.reshape(dyl.shape), "CHWN"),
                                               self._cache, self.weights, need_dx=need_dx)
        self.weight_grads += dweights
        self.bias_grads += dbiases
        return dx

    def to_onnx(self, graph, inputs):
        c = self.in_shape[0]
        f, out_h, out_w = self.out_shape
        k, s, p = self.size, self.stride, self.pad
        x = graph.pad(inputs[0], [0, 0, p, p], [0, 0, p, p]) if p else inputs[0]
        # im2col's columns: for each kernel offset (i, j) the taps of every window, (N, C, OH, OW)
        taps = [graph.node("Unsqueeze", [graph.slice(x, [2, 3], [i, j],
                                                     [i + s * (out_h - 1) + 1,
                                                      j + s * (out_w - 1) + 1], [s, s]),
                                         graph.ints([2])])
                for i in range(k) for j in range(k)]
        cols = taps[0] if len(taps) == 1 else graph.node("Concat", taps, axis=2)
        cols = graph.reshape(cols, [0, c * k * k, out_h * out_w])     # (N, K, L), rows (c, i, j)
        weights = graph.constant(self.weights.reshape(out_h * out_w, f, -1), "weights")
        z = graph.node("Einsum", [cols, weights], equation="nkl,lfk->nfl")   # (N, F, L)
        z = graph.node("Add", [z, graph.constant(self.biases.reshape(f, -1), "biases")])
        return self._tail_to_onnx(graph, graph.reshape(z, [0, f, out_h, out_w]))
