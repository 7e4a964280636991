"""Memory layouts (darkbp/ops/layout.py): the same values, stored NCHW or CHWN."""

from __future__ import annotations

import numpy as np
import pytest

from darkbp.ops.layout import LAYOUTS, as_nchw, layout_of, layout_shape, ordered

# (3, 1, 16, 32) and (2, 3, 32, 32): images of a multiple of 4 KB (float64), which go to
# CHWN in blocks of 16 rows.
SHAPES = [(2, 3, 4, 5), (64, 16, 4, 4), (3, 1, 1, 1), (1, 4, 3, 3), (5, 2, 8, 2), (7, 10, 1, 1),
          (3, 1, 16, 32), (2, 3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("source", LAYOUTS)
@pytest.mark.parametrize("target", LAYOUTS)
def test_ordered_keeps_values_and_copies_only_when_needed(shape, source, target):
    x = np.random.default_rng(0).standard_normal(shape)
    stored = as_nchw(ordered(x, source), source)
    np.testing.assert_array_equal(stored, x)
    a = ordered(stored, target)
    assert a.flags.c_contiguous and a.shape == layout_shape(target, *shape)
    np.testing.assert_array_equal(as_nchw(a, target), x)
    if source == target:
        assert np.shares_memory(a, stored)


def test_layout_of():
    x = np.zeros((4, 3, 2, 2))
    assert layout_of(x) == "NCHW"
    assert layout_of(as_nchw(ordered(x, "CHWN"), "CHWN")) == "CHWN"
    assert layout_of(x[:, :, ::2]) == "NCHW"               # neither: treated as NCHW (copied)


def test_ordered_accepts_any_strides():
    x = np.random.default_rng(1).standard_normal((3, 5, 4, 6)).transpose(0, 3, 1, 2)[:, ::2]
    for layout in LAYOUTS:
        np.testing.assert_array_equal(as_nchw(ordered(x, layout), layout), x)


@pytest.mark.parametrize("shape", [(64, 3, 32, 32), (5, 1, 32, 32), (2, 1, 28, 28)])
def test_cifar_sized_float32_batches_go_to_chwn_exactly(shape):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    a = ordered(x, "CHWN")
    assert a.flags.c_contiguous and a.dtype == np.float32
    np.testing.assert_array_equal(a, x.transpose(1, 2, 3, 0))
