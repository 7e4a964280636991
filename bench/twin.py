"""The torch twin of a darkbp network: the same layers, weights, cost and SGD in PyTorch.

    network = parse_network("cfg/residual.cfg").initialize(0, np.float32)
    twin = Twin(network)                      # darkbp's weights copied in, in network.dtype
    optimizer = twin.sgd(network.config, batch)
    loss = twin.loss(twin(x), labels)         # −Σ log p[label] over the batch
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    p = twin.predict(x)                       # (N, classes) probabilities, evaluation mode

A detector ([yolo] heads, as cfg/yolo-digits.cfg) is twinned too. Its twin returns, per
head, the head's input z (training) or its output (evaluation), and its loss is darkbp's
[yolo] loss at the targets darkbp's head assigns (the box matching is darkbp's, done
outside the twin):

    found = [sparse_targets(head.assign(truth)) for head in network.heads]
    loss = twin.loss(twin(x), [[torch.from_numpy(a) for a in f] for f in found])

bench/bench.py times it against darkbp; tests/test_bench_twin.py checks in float64 that it
computes what darkbp computes (forward, loss, every gradient, weights after SGD steps).

Layer by layer, as darkbp and Darknet define them (SPEC 3, 5):

  [convolutional]  Conv2d (groups, Darknet's padding), then with batch_normalize=1
                   normalise with the batch's unbiased variance, scale, + bias (darkbp's
                   biases are the shift), else the bias in the convolution; activation
  [connected]      Flatten in (C, H, W) order, Linear, the same tail
  [maxpool]        windows from −(padding//2), cells outside the input count as −inf
  [avgpool]        each channel's mean over its pixels, (N, C, 1, 1)
  [route]          the listed layers' outputs concatenated along channels
  [shortcut]       activation(alpha·previous + beta·from) over the values Darknet's
                   shortcut_cpu pairs up, the previous layer's values elsewhere
  [dropout]        torch's Dropout: the same rule (drop with `probability`, scale the kept
                   values by 1/(1 − probability)), torch's own random draws
  [softmax]        last, plain (groups=1, temperature=1): the twin outputs its logits;
                   the cost is darkbp's cross-entropy −Σ truth·log p, summed over the batch
  [upsample]       stride s > 0: every value copied into an s×s block, times scale
  [yolo]           evaluation: the logistic on x, y, the objectness and the classes, w and
                   h raw; training: its input z, for the loss s·BCE-with-logits(t, z) on x,
                   y, objectness, classes and ½·s·(t − z)² on w, h (YoloLayer.loss), with
                   darkbp's scale s and target t. A network with heads needs no [softmax].

Activations: those torch has exactly (Darknet's leaky slope is 0.1). Anything else is
`unsupported(network)`, a reason, before any twin is built.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from darkbp.layers.base import INPUT

ACTIVATIONS = {"linear": nn.Identity, "relu": lambda: nn.ReLU(inplace=True),
               "leaky": lambda: nn.LeakyReLU(0.1, inplace=True),
               "logistic": nn.Sigmoid, "tanh": nn.Tanh, "elu": lambda: nn.ELU(inplace=True)}
BATCH_NORM_EPS = 1e-5            # SPEC 3: (x − mean)/sqrt(var + 0.00001)
ROLLING = 0.01                   # rolling = .99·rolling + .01·batch statistic


def unsupported(network) -> str | None:
    """Why `network` has no twin (a layer this module does not build), or None."""
    layers = network.layers if network.heads else network.layers[:-1]
    for layer in layers:
        if layer.type not in BLOCKS:
            return f"layer {layer.index}: [{layer.type}]"
        if getattr(layer, "activation", "linear") not in ACTIVATIONS:
            return f"layer {layer.index}: activation={layer.activation}"
        if layer.type == "route" and layer.groups != 1:
            return f"layer {layer.index}: [route] groups={layer.groups}"
        if layer.type == "upsample" and layer.stride < 0:
            return f"layer {layer.index}: [upsample] stride={layer.stride}"
    last = network.layers[-1]
    if not network.heads and (last.type != "softmax" or last.groups != 1
                              or last.temperature != 1):
        return "the last layer is not a plain [softmax]"
    return None


def sparse_targets(found) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A [yolo] head's Targets (scale, target: (N, A, E, H, W)) as the flat indexes and
    values of the entries that differ from the default (scale 1 on the objectness, 0
    elsewhere; target 0): (index (k,) int64, scale (k,), target (k,)). `_Yolo.loss` makes
    them dense again; a batch's are a few thousand numbers instead of two arrays its size."""
    scale, target = found.scale, found.target
    default = np.zeros(scale.shape[1:], scale.dtype)
    default[:, 4] = 1
    index = np.flatnonzero((scale != default) | (target != 0))
    return index, scale.reshape(-1)[index], target.reshape(-1)[index]


class Twin(nn.Module):
    """`network`'s layers (all but a classifier's final [softmax]) as torch modules, in its
    dtype.

    forward(x (N, C, H, W)) -> logits (N, classes); for a detector, a list with each head's
    input z (training) or output (evaluation), (N, C, H, W). tensors[(layer index, name)] is
    the tensor holding darkbp's array `name` of that layer (parameters, rolling statistics).
    """

    def __init__(self, network):
        super().__init__()
        problem = unsupported(network)
        if problem:
            raise ValueError(f"{network.file}: no torch twin for {problem}")
        dtype = getattr(torch, np.dtype(network.dtype).name)
        layers = network.layers if network.heads else network.layers[:-1]
        self.heads = [head.index for head in network.heads]
        self.blocks = nn.ModuleList(BLOCKS[layer.type](layer, dtype) for layer in layers)
        self.sources = [layer.sources for layer in layers]
        # A layer's output is dropped once its last reader has run, as darkbp's pass does.
        self.last_reader = {source: layer.index for layer in layers for source in layer.sources}
        self.tensors = {(layer.index, name): tensor
                        for layer, block in zip(layers, self.blocks)
                        for name, tensor in block.tensors().items()}
        self.load(network)

    def load(self, network) -> None:
        """Copy `network`'s parameters and rolling statistics into the twin."""
        with torch.no_grad():
            for (index, name), tensor in self.tensors.items():
                tensor.copy_(torch.from_numpy(getattr(network.layers[index], name)))

    def forward(self, x):
        outputs = [None] * len(self.blocks)
        for i, block in enumerate(self.blocks):
            outputs[i] = block(*(x if s == INPUT else outputs[s] for s in self.sources[i]))
            for source in self.sources[i]:
                if self.last_reader.get(source) == i:
                    outputs[source] = None
        if self.heads:
            return [outputs[i] for i in self.heads]
        return outputs[-1].flatten(1)

    def loss(self, outputs, truth):
        """A classifier: darkbp's [softmax] cost with one-hot truth, −Σ_images log p[label],
        truth the labels (N,). A detector: the sum of its heads' losses, truth a
        (index, scale, target) of `sparse_targets` per head."""
        if not self.heads:
            return F.cross_entropy(outputs, truth, reduction="sum")
        return sum(self.blocks[i].loss(z, *found)
                   for i, z, found in zip(self.heads, outputs, truth))

    def predict(self, x):
        """Evaluation mode (rolling statistics, no dropout): softmax probabilities (N,
        classes); for a detector, the list of its heads' outputs."""
        self.eval()
        with torch.inference_mode():
            if self.heads:
                return self(x)
            return torch.softmax(self(x), dim=1)

    def sgd(self, config, batch: int) -> torch.optim.SGD:
        """Darknet's SGD (darkbp/sgd.py) for updates of `batch` images, at the cfg's rate.

        g summed over the batch. Darknet: v = m·v − g − decay·B·w (weights only); w += (lr/B)·v
                                 torch:   buf = m·buf + g + wd·w;              w −= lr'·buf
        so buf = −v with wd = decay·B on the weights, 0 elsewhere, and lr' = lr/B (set a
        group's "lr" to rate/B for a schedule's rate).
        """
        decayed = [t for (_, name), t in self.tensors.items() if name == "weights"]
        others = [t for (_, name), t in self.tensors.items() if name in ("biases", "scales")]
        return torch.optim.SGD([{"params": decayed, "weight_decay": config.decay * batch},
                                {"params": others, "weight_decay": 0.0}],
                               lr=config.schedule.learning_rate / batch,
                               momentum=config.momentum)


# ---------------------------------------------------------------------- one block per layer
class _Affine(nn.Module):
    """[convolutional] or [connected]: the linear map, batch norm or bias, activation."""

    def __init__(self, linear, layer, dims: int, dtype):
        """dims: 2 for a convolution's (N, F, H, W), 1 for a connected layer's (N, F)."""
        super().__init__()
        self.flatten = dims == 1             # a [connected] reads its input as a vector
        self.linear = linear
        self.norm = (_unbiased_batchnorm(dims, layer.out_shape[0], dtype)
                     if layer.batch_normalize else None)
        self.activation = ACTIVATIONS[layer.activation]()

    def forward(self, x):
        z = self.linear(x.flatten(1) if self.flatten else x)      # (C, H, W) order
        return self.activation(z if self.norm is None else self.norm(z))

    def tensors(self):
        found = {"weights": self.linear.weight}
        if self.norm is None:
            return {**found, "biases": self.linear.bias}
        return {**found, "scales": self.norm.weight, "biases": self.norm.bias,
                "rolling_mean": self.norm.running_mean,
                "rolling_variance": self.norm.running_var}


def _convolutional(layer, dtype):
    conv = nn.Conv2d(layer.in_shape[0], layer.filters, layer.size, layer.stride,
                     layer.padding, groups=layer.groups, bias=not layer.batch_normalize,
                     dtype=dtype)
    return _Affine(conv, layer, 2, dtype)


def _connected(layer, dtype):
    linear = nn.Linear(layer.inputs, layer.outputs, bias=not layer.batch_normalize,
                       dtype=dtype)
    return _Affine(linear, layer, 1, dtype)


def _unbiased_batchnorm(dims: int, channels: int, dtype):
    """torch's BatchNorm{dims}d normalising a training batch with the unbiased variance, as
    Darknet and darkbp do (see _Unbiased)."""
    cls = _UnbiasedBatchNorm2d if dims == 2 else _UnbiasedBatchNorm1d
    return cls(channels, eps=BATCH_NORM_EPS, momentum=ROLLING, dtype=dtype)


class _Unbiased:
    """With M values per channel and r² = (M − 1)/M, normalising with the unbiased variance
    v·M/(M − 1), v the biased one, is (x − μ)/sqrt(v/r² + eps) = r·(x − μ)/sqrt(v + eps·r²).
    So torch's own kernel does the work, with the weight scaled by r and eps by r²; its
    running variance is already the unbiased one. Evaluation is torch's as it is."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        m = x.numel() // x.shape[1]
        r2 = (m - 1) / m
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight * r2 ** 0.5,
                            self.bias, True, self.momentum, self.eps * r2)


class _UnbiasedBatchNorm2d(_Unbiased, nn.BatchNorm2d):
    pass


class _UnbiasedBatchNorm1d(_Unbiased, nn.BatchNorm1d):
    pass


class _Stateless(nn.Module):
    """A layer without parameters or state."""

    def __init__(self, layer, dtype):
        super().__init__()

    def tensors(self):
        return {}


class _Maxpool(_Stateless):
    """Darknet's window starts at −(padding//2); cells outside the input count as −inf."""

    def __init__(self, layer, dtype):
        super().__init__(layer, dtype)
        (_, h, w), (_, out_h, out_w) = layer.in_shape, layer.out_shape
        size, stride, top = layer.size, layer.stride, layer.padding // 2
        bottom = max(0, (out_h - 1) * stride + size - h - top)
        right = max(0, (out_w - 1) * stride + size - w - top)
        self.pad = (top, right, top, bottom) if top or bottom or right else None
        self.size, self.stride = size, stride

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad, value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)


class _Avgpool(_Stateless):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


class _Route(_Stateless):
    def forward(self, *xs):
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)


class _Shortcut(_Stateless):
    """Darknet's shortcut_cpu (src/blas.c): from (C1, H1, W1) onto previous (C2, H2, W2),
    src read every stride = W1/W2 pixels, added onto every sample = W2/W1-th (each at least
    1), over the first min(C1, C2) channels and min(H1, H2) x min(W1, W2) positions."""

    def __init__(self, layer, dtype):
        super().__init__(layer, dtype)
        (c2, h2, w2), (c1, h1, w1) = layer.in_shape, layer.from_shape
        stride, sample = max(w1 // w2, 1), max(w2 // w1, 1)
        channels, rows, cols = min(c1, c2), min(h1, h2), min(w1, w2)
        self.same = layer.in_shape == layer.from_shape
        self.prev_index = (slice(None), slice(0, channels), slice(0, rows * sample, sample),
                           slice(0, cols * sample, sample))
        self.src_index = (slice(None), slice(0, channels), slice(0, rows * stride, stride),
                          slice(0, cols * stride, stride))
        self.alpha, self.beta = layer.alpha, layer.beta
        self.activation = ACTIVATIONS[layer.activation]()

    def forward(self, prev, src):
        if self.same:
            z = prev + src if self.alpha == self.beta == 1 else self.alpha * prev + self.beta * src
        else:
            z = prev.clone()
            z[self.prev_index] = (self.alpha * prev[self.prev_index]
                                  + self.beta * src[self.src_index])
        return self.activation(z)


class _Dropout(_Stateless):
    def __init__(self, layer, dtype):
        super().__init__(layer, dtype)
        self.dropout = nn.Dropout(layer.probability)

    def forward(self, x):
        return self.dropout(x)


class _Upsample(_Stateless):
    """stride > 0: y[n, c, j, i] = scale·x[n, c, j div s, i div s]."""

    def __init__(self, layer, dtype):
        super().__init__(layer, dtype)
        self.stride, self.scale = layer.stride, layer.scale

    def forward(self, x):
        y = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return y if self.scale == 1 else y * self.scale


class _Yolo(_Stateless):
    """[yolo]: training passes its input z on, for `loss`; evaluation gives the head's output,
    the logistic on x, y, the objectness and the classes (entries 0, 1, 4, 5...)."""

    def __init__(self, layer, dtype):
        super().__init__(layer, dtype)
        _, h, w = layer.in_shape
        self.entries = (len(layer.mask), layer.classes + 5, h, w)      # (A, E, H, W)

    def forward(self, z):
        if self.training:
            return z
        y = z.view(len(z), *self.entries).clone()
        y[:, :, 0:2] = torch.sigmoid(y[:, :, 0:2])
        y[:, :, 4:] = torch.sigmoid(y[:, :, 4:])
        return y.view_as(z)

    def loss(self, z, index, scale, target):
        """YoloLayer.loss summed over the images: z (N, C, H, W) the head's input; index,
        scale, target those of `sparse_targets`, written into dense (N, A, E, H, W) arrays
        here (as darkbp's head fills its own in train_targets)."""
        n = len(z)
        s = z.new_zeros((n, *self.entries))
        s[:, :, 4] = 1
        s.view(-1)[index] = scale
        t = z.new_zeros((n, *self.entries))
        t.view(-1)[index] = target
        z = z.view(n, *self.entries)
        wh = s[:, :, 2:4].clone()
        s[:, :, 2:4] = 0                       # w and h: squared error, not BCE
        bce = F.binary_cross_entropy_with_logits(z, t, weight=s, reduction="sum")
        return bce + (wh * (t[:, :, 2:4] - z[:, :, 2:4]) ** 2).sum() / 2


BLOCKS = {"convolutional": _convolutional, "connected": _connected, "maxpool": _Maxpool,
          "avgpool": _Avgpool, "route": _Route, "shortcut": _Shortcut, "dropout": _Dropout,
          "upsample": _Upsample, "yolo": _Yolo}
