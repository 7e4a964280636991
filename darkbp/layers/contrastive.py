"""[contrastive]: AlexeyAB's contrastive (embedding) loss beside a [yolo] head, tabulated only.

AlexeyAB's fork trains the embeddings a [yolo] head's `embedding_layer` points to for
tracking, with a contrastive loss between the embeddings of the detected objects: this
layer, whose `yolo_layer` names that head. Its embedding per anchor and cell is its input
split over the head's anchors (mask) and cells. pjreddie's Darknet has no such layer.
darkbp parses it, checks it reads an earlier [yolo] and prints AlexeyAB's table line; it
does not run or train it.
"""

from __future__ import annotations

from darkbp.layers.base import Layer, earlier_layer, register


@register
class ContrastiveLayer(Layer):
    """x: (N, C, H, W) -> the same shape (AlexeyAB's l.outputs = l.inputs). Tabulated only.

    Reads its input (the previous layer) and, for its table line only, the [yolo] layer
    `yolo_layer` (negative: relative): that head's anchors n = len(mask) and classes (which
    replace the section's own `classes`), the embedding size C·H·W / (n·H·W).
    """

    sections = ("contrastive",)
    options = frozenset({"yolo_layer", "classes"})
    ignored = Layer.ignored | {"temperature", "cls_normalizer", "max_delta",
                               "contrastive_neg_max"}
    arity = None
    runnable = trainable = False       # darkbp only tabulates this layer
    fork_rule = "AlexeyAB's fork's only (pjreddie's Darknet has no such layer)"

    def __init__(self, in_shape, yolo: int, anchors: int, classes: int):
        super().__init__(in_shape, in_shape)
        self.yolo, self.anchors, self.classes = yolo, anchors, classes

    @classmethod
    def read_sources(cls, s, index):
        written = s.get_int("yolo_layer", 0)
        if written == 0:
            # parse_contrastive takes 0 for "none" and then reads the type of a null layer.
            raise s.error("[contrastive] needs yolo_layer= (the [yolo] head whose embeddings "
                          "it trains, e.g. yolo_layer=-2): AlexeyAB's Darknet crashes without "
                          "one", s.line_of("yolo_layer"))
        return index - 1, earlier_layer(s, "yolo_layer", written, index,
                                        f"yolo_layer={written}")

    @classmethod
    def build(cls, s, inputs):
        prev, yolo = inputs
        if yolo.header != "yolo":
            raise s.error(f"yolo_layer={s.get_str('yolo_layer', '')} is layer {yolo.index} "
                          f"([{yolo.header}]), not a [yolo] head (AlexeyAB's Darknet stops "
                          f"there too)", s.line_of("yolo_layer"))
        s.get_int("classes", 1000, minimum=0)      # read, then replaced by the head's
        return cls(prev.shape, yolo.index, len(yolo.layer.mask), yolo.layer.classes)

    def darknet_line(self):
        raise NotImplementedError("pjreddie's Darknet has no [contrastive] layer (AlexeyAB's "
                                  "fork only): use --format alexeyab")

    @property
    def embedding_size(self) -> int:
        _, h, w = self.in_shape
        return self.inputs // (self.anchors * h * w)

    def alexeyab_line(self):
        # make_contrastive_layer, for the one image AlexeyAB's summary parses: step is
        # batch·n·h·w, and "detection" follows as it reads a [yolo].
        _, h, w = self.in_shape
        return ("contrastive %4d x%4d x%4d x emb_size %4d x batch: %4d  classes = %4d, "
                "step = %4d \ndetection \n" % (w, h, self.anchors, self.embedding_size, 1,
                                               self.classes, self.anchors * h * w))

    def describe(self):
        return {"yolo_layer": self.yolo, "embedding_size": self.embedding_size,
                "classes": self.classes}

    def summary_cells(self):
        return "contrastive", "", f"yolo {self.yolo}"
