"""[route]: earlier layers' outputs concatenated along channels (or one channel group of each)."""

from __future__ import annotations

import numpy as np

from darkbp.layers.base import Layer, earlier_layer, register
from darkbp.ops.buffers import kernel_buffers
from darkbp.ops.layout import as_nchw, layout_of, ordered


@register
class RouteLayer(Layer):
    """xs: [(N, C_i, H, W)] -> (N, Σ C_i / groups, H, W): the inputs in `layers` order.

    With AlexeyAB's groups=G group_id=g each input gives only its g-th of G equal
    channel slices (YOLOv4-tiny's split). Inputs that are vectors ([connected]:
    (n, 1, 1)) concatenate as vectors. Darknet makes a route of inputs of different
    width x height a flat 0 x 0 x 0 layer that no later layer can use: darkbp refuses it.
    """

    sections = ("route",)
    options = frozenset({"layers", "groups", "group_id"})
    arity = None

    def __init__(self, input_shapes, layers: tuple[int, ...], groups: int, group_id: int,
                 flat: bool):
        _, h, w = input_shapes[0]
        out_shape = (sum(c // groups for c, _, _ in input_shapes), h, w)
        super().__init__(out_shape, out_shape)       # Darknet: inputs = outputs
        self.input_shapes = [tuple(shape) for shape in input_shapes]
        self.layers, self.groups, self.group_id, self.flat = layers, groups, group_id, flat

    @classmethod
    def read_sources(cls, s, index):
        if "layers" not in s.options:
            raise s.error("[route] needs 'layers': the earlier layers to concatenate, "
                          "e.g. layers=-1,-4")
        return tuple(earlier_layer(s, "layers", written, index, f"'layers' entry {written}")
                     for written in s.get_ints("layers"))

    @classmethod
    def build(cls, s, inputs):
        first = inputs[0]
        for other in inputs[1:]:
            if other.shape[1:] != first.shape[1:]:
                raise s.error(
                    f"[route] inputs differ in width x height: layer {first.index} is "
                    f"{first.shape[2]} x {first.shape[1]}, layer {other.index} is "
                    f"{other.shape[2]} x {other.shape[1]} (Darknet would make a flat "
                    f"0 x 0 x 0 route, which darkbp does not support)", s.line_of("layers"))
        groups = s.get_int("groups", 1, minimum=1)
        group_id = s.get_int("group_id", 0, minimum=0)
        if group_id >= groups:
            raise s.error(f"group_id={group_id} is not one of the {groups} groups "
                          f"(0 to {groups - 1})", s.line_of("group_id"))
        for source in inputs:
            if source.shape[0] % groups:
                raise s.error(f"groups={groups} does not divide the {source.shape[0]} channels "
                              f"of layer {source.index}", s.line_of("groups"))
        # One vector among the inputs (all of them 1 x 1 then) makes the route a vector.
        return cls([source.shape for source in inputs], tuple(source.index for source in inputs),
                   groups, group_id, flat=any(source.flat for source in inputs))

    def darknet_line(self):
        return "route " + "".join(" %d" % index for index in self.layers) + "\n"

    def alexeyab_line(self):
        # make_route_layer prints the indexes, parse_route the rest (its tabs included).
        n = len(self.layers)
        gap = " \t    " if n > 3 else " \t            " if n > 1 else " \t\t            "
        group = "%d/%d" % (self.group_id, self.groups) if self.groups > 1 else "   "
        c, h, w = self.out_shape
        return ("route " + "".join(" %d" % index for index in self.layers) + gap
                + "           " + group + " -> %4d x%4d x%4d \n" % (w, h, c))

    def alexeyab_size(self, sizes):
        return sizes[self.layers[0]]     # parse_route copies l.w, l.h of its first input layer

    def describe(self):
        return {"layers": list(self.layers), "groups": self.groups, "group_id": self.group_id}

    def summary_cells(self):
        size = " ".join(map(str, self.layers))
        if self.groups > 1:
            size += f"  {self.group_id}/{self.groups}"
        return "route", "", size

    def _slices(self):
        """Per input: its channels that the route takes, and where they go in the output."""
        offset = 0
        for c, _, _ in self.input_shapes:
            part = c // self.groups
            yield slice(self.group_id * part, (self.group_id + 1) * part), slice(offset,
                                                                                 offset + part)
            offset += part

    @kernel_buffers
    def forward(self, xs, ctx):
        # Concatenated in the inputs' layout when they share CHWN (ops/layout.py): the channel
        # blocks are then contiguous runs; otherwise NCHW.
        layout = "CHWN" if all(layout_of(x) == "CHWN" for x in xs) else "NCHW"
        axis = 0 if layout == "CHWN" else 1
        parts = []
        for x, (taken, _) in zip(xs, self._slices()):
            index = [slice(None)] * 4
            index[axis] = taken
            parts.append(ordered(x, layout)[tuple(index)])
        return as_nchw(np.concatenate(parts, axis=axis), layout)

    @kernel_buffers
    def backward(self, dy, need_dx=True):
        # Views of dy's disjoint channel slices share no memory; with groups > 1 an input's
        # other channels get zero.
        dxs = []
        for shape, (taken, placed) in zip(self.input_shapes, self._slices()):
            if self.groups == 1:
                dxs.append(dy[:, placed])
                continue
            dx = np.zeros((dy.shape[0],) + shape, dy.dtype)
            dx[:, taken] = dy[:, placed]
            dxs.append(dx)
        return dxs

    def to_onnx(self, graph, inputs):
        parts = [x if self.groups == 1 else graph.slice(x, [1], [taken.start], [taken.stop])
                 for x, (taken, _) in zip(inputs, self._slices())]
        return parts[0] if len(parts) == 1 else graph.node("Concat", parts, axis=1)
