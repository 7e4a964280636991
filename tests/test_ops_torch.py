"""darkbp's kernels against PyTorch in float64: forward and backward to 1e-10 relative."""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.ops import conv, im2col
from darkbp.ops.batchnorm import batchnorm_backward, batchnorm_forward
from darkbp.ops.maxpool import maxpool_backward, maxpool_forward
from darkbp.ops.softmax import cross_entropy, softmax_cross_entropy_backward, softmax_forward

torch = pytest.importorskip("torch")
F = torch.nn.functional


def close(ours, theirs):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def autograd(fn, inputs, grad_output):
    """(output, gradients of Σ grad_output·fn(inputs) w.r.t. each input) with torch."""
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    out = fn(*ts)
    grads = torch.autograd.grad(out, ts, torch.tensor(grad_output, dtype=torch.float64))
    return out, grads


@pytest.mark.parametrize("layout", im2col.LAYOUTS)
@pytest.mark.parametrize("n,c,h,w,f,size,stride,padding,groups,dilation", [
    (2, 4, 9, 7, 6, 3, 1, 1, 1, 1),
    (3, 6, 10, 11, 4, 3, 2, 1, 2, 1),
    (2, 4, 8, 8, 8, 3, 1, 1, 4, 1),    # depthwise-style, 2 filters per channel
    (2, 5, 9, 9, 5, 5, 3, 2, 5, 1),    # depthwise, stride 3
    (4, 3, 12, 9, 6, 1, 1, 0, 3, 1),   # 1x1
    (1, 2, 7, 13, 3, 2, 2, 0, 1, 1),
    (2, 3, 10, 9, 4, 3, 1, 2, 1, 2),   # dilated, AlexeyAB's pad=1 (padding·dilation)
    (2, 4, 11, 12, 4, 3, 2, 3, 2, 3),  # dilated, stride 2, groups
    (2, 4, 9, 9, 4, 3, 1, 1, 4, 2),    # dilated depthwise, padding below 'same'
])
def test_conv_matches_torch(monkeypatch, layout, n, c, h, w, f, size, stride, padding, groups,
                            dilation):
    monkeypatch.setattr(conv, "choose_layout", lambda *shape: layout)
    rng = np.random.default_rng(n * 100 + c)
    x = rng.standard_normal((n, c, h, w))
    weights = rng.standard_normal((f, c // groups, size, size))
    y, cache = conv.conv_forward(x, weights, stride, padding, groups, dilation=dilation)
    dy = rng.standard_normal(y.shape)
    ty, (tdx, tdw) = autograd(lambda a, b: F.conv2d(a, b, stride=stride, padding=padding,
                                                    groups=groups, dilation=dilation),
                              [x, weights], dy)
    dx, dw = conv.conv_backward(dy, cache, weights)
    close(y, ty)
    close(dx, tdx)
    close(dw, tdw)


@pytest.mark.parametrize("n,c,h,w,size,stride,padding,ceil_mode", [
    (2, 3, 8, 8, 2, 2, 0, False),
    (2, 3, 9, 7, 2, 2, 0, False),
    (2, 2, 9, 10, 3, 2, 0, False),     # overlapping
    (1, 2, 7, 7, 3, 1, 0, False),
    (2, 2, 6, 6, 2, 3, 0, False),      # stride > size
    (2, 3, 7, 9, 2, 2, 1, True),       # Darknet's default padding = size − 1: torch's ceil mode
])
def test_maxpool_matches_torch(n, c, h, w, size, stride, padding, ceil_mode):
    rng = np.random.default_rng(h * w)
    x = rng.standard_normal((n, c, h, w))  # continuous: no ties, where torch's rule may differ
    y, cache = maxpool_forward(x, size, stride, padding)
    dy = rng.standard_normal(y.shape)
    ty, (tdx,) = autograd(lambda a: F.max_pool2d(a, size, stride, ceil_mode=ceil_mode), [x], dy)
    close(y, ty)
    close(maxpool_backward(dy, cache), tdx)


BATCHNORM_SHAPES = [(4, 3, 10), (8, 5, 1), (2, 2, 36), (3, 4, 1)]


def _batchnorm_case(n, c, p):
    rng = np.random.default_rng(n + c + p)
    x = rng.standard_normal((n, c, p)) * 2 + rng.standard_normal((1, c, 1))
    scales = rng.uniform(0.5, 1.5, c)
    rolling_mean, rolling_var = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    return rng, x, scales, rolling_mean, rolling_var


@pytest.mark.parametrize("n,c,p", BATCHNORM_SHAPES)
def test_batchnorm_training_matches_torch_batch_norm(n, c, p):
    """torch's own batch norm, its kernel and its backward. torch normalises with the biased
    variance S/M (S = Σ(x − mean)²), darkbp and Darknet with the unbiased S/(M − 1); exactly,
        scale·(x − mean)/sqrt(S/(M − 1) + eps) = (scale·r)·(x − mean)/sqrt(S/M + eps·r²),
    r = sqrt((M − 1)/M): torch with weight scale·r and eps·r² computes darkbp's function (and,
    by autograd through scale·r, its gradients). torch's running variance is already the
    unbiased one: with momentum 0.01 it is Darknet's rolling update."""
    rng, x, scales, rolling_mean, rolling_var = _batchnorm_case(n, c, p)
    t_mean = torch.tensor(rolling_mean.copy())
    t_var = torch.tensor(rolling_var.copy())
    y, cache = batchnorm_forward(x, scales, rolling_mean, rolling_var, train=True)
    dy = rng.standard_normal(y.shape)
    r2 = (n * p - 1) / (n * p)
    ty, (tdx, tds) = autograd(lambda a, s: F.batch_norm(a, t_mean, t_var, s * r2 ** 0.5, None,
                                                        training=True, momentum=0.01,
                                                        eps=1e-5 * r2), [x, scales], dy)
    dx, dscales = batchnorm_backward(dy, cache)
    close(y, ty)
    close(dx, tdx)
    close(dscales, tds)
    close(rolling_mean, t_mean)
    close(rolling_var, t_var)


@pytest.mark.parametrize("n,c,p", BATCHNORM_SHAPES)
def test_batchnorm_training_matches_torch_autograd_of_the_unbiased_formula(n, c, p):
    """The definition written with torch ops in float64, differentiated by torch's autograd."""
    rng, x, scales, rolling_mean, rolling_var = _batchnorm_case(n, c, p)
    y, cache = batchnorm_forward(x, scales, rolling_mean, rolling_var, train=True)
    dy = rng.standard_normal(y.shape)

    def unbiased(a, s):
        mean = a.mean(dim=(0, 2), keepdim=True)
        var = ((a - mean) ** 2).sum(dim=(0, 2), keepdim=True) / (n * p - 1)
        return s[None, :, None] * (a - mean) / torch.sqrt(var + 1e-5)

    ty, (tdx, tds) = autograd(unbiased, [x, scales], dy)
    dx, dscales = batchnorm_backward(dy, cache)
    close(y, ty)
    close(dx, tdx)
    close(dscales, tds)


@pytest.mark.parametrize("n,c,p", BATCHNORM_SHAPES)
def test_batchnorm_evaluation_matches_torch_batch_norm(n, c, p):
    rng, x, scales, rolling_mean, rolling_var = _batchnorm_case(n, c, p)
    t_mean, t_var = torch.tensor(rolling_mean), torch.tensor(rolling_var)
    y, cache = batchnorm_forward(x, scales, rolling_mean, rolling_var, train=False)
    dy = rng.standard_normal(y.shape)
    ty, (tdx, tds) = autograd(lambda a, s: F.batch_norm(a, t_mean, t_var, s, None,
                                                        training=False, eps=1e-5), [x, scales], dy)
    dx, dscales = batchnorm_backward(dy, cache)
    close(y, ty)
    close(dx, tdx)
    close(dscales, tds)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_softmax_cross_entropy_matches_torch(temperature):
    rng = np.random.default_rng(int(temperature * 10))
    x = rng.standard_normal((6, 10)) * 3
    labels = rng.integers(0, 10, 6)
    truth = np.eye(10)[labels]
    p = softmax_forward(x, 1, temperature)
    tx = torch.tensor(x, requires_grad=True)
    tloss = F.cross_entropy(tx / temperature, torch.tensor(labels), reduction="sum")
    (tdx,) = torch.autograd.grad(tloss, [tx])
    close(p, torch.softmax(tx / temperature, dim=1))
    close(cross_entropy(p, truth).sum(), tloss)
    close(softmax_cross_entropy_backward(p, truth, 1, temperature), tdx)


@pytest.mark.parametrize("groups,temperature", [(2, 1.0), (3, 0.7), (4, 2.0)])
def test_grouped_softmax_with_soft_truth_matches_torch(groups, temperature):
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((5, 12))
    truth = rng.uniform(0, 1, (5, 12))  # group sums ≠ 1: exercises the exact gradient

    def loss(a):
        logp = F.log_softmax(a.reshape(5, groups, -1) / temperature, dim=2).reshape(5, 12)
        return -(torch.tensor(truth) * logp).sum(dim=1)

    tx = torch.tensor(x, requires_grad=True)
    tloss = loss(tx)
    (tdx,) = torch.autograd.grad(tloss.sum(), [tx])
    p = softmax_forward(x, groups, temperature)
    close(cross_entropy(p, truth), tloss)
    close(softmax_cross_entropy_backward(p, truth, groups, temperature), tdx)
