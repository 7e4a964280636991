"""Random and mutated cfg text either builds a network or raises DarkbpError, never anything else.

The seeds are the shipped cfgs and the layer contract cfgs (every registered layer type);
a grammar of sections with random options around each registered type must build often
enough to mean something.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkbp.cfg import read_cfg_text
from darkbp.errors import DarkbpError
from darkbp.layers import REGISTRY
from darkbp.network import build_network
from darkbp.summary import darknet_text, summary_data
from tests.conftest import CFG_DIR, ROOT

SEED_FILES = sorted(CFG_DIR.glob("*.cfg")) + sorted((ROOT / "tests" / "layer_cfgs").glob("*.cfg"))
SEEDS = [p.read_text() for p in SEED_FILES]
KEYS = ["filters", "size", "stride", "pad", "padding", "groups", "activation", "batch_normalize",
        "output", "temperature", "batch", "subdivisions", "width", "height", "channels", "inputs",
        "policy", "steps", "scales", "learning_rate", "ema", "from", "layers", "probability",
        "type", "scale", "alpha", "beta", "reverse", "crop_height", "crop_width", "noadjust",
        "flip", "group_id", "dilation", "antialiasing", "maxpool_depth", "out_channels"]
VALUES = ["0", "1", "2", "3", "-1", "-2", "-3", "", "x", "1e9", "99999999999999999999", ".5",
          "nan", "inf", "1,2", "-1,-3", "relu", "steps", "leaky", "sse", "L1", "0x10", "1_0"]
# AlexeyAB's sections pjreddie's Darknet has no table line for (or, [crnn], reads otherwise).
PJREDDIE_REFUSES = {"Gaussian_yolo", "crnn", "conv_lstm", "contrastive"}
HEADERS = ["[net]", "[yolo]", "[", "[]", "]", "[deconvolutional]"] + [f"[{name}]" for name in REGISTRY]


def _parse(text: str) -> bool:
    """Whether the text built a network (the table and summary of one must then work)."""
    try:
        network = build_network(read_cfg_text(text, "fuzz.cfg"), "fuzz.cfg")
    except DarkbpError:
        return False
    try:
        darknet_text(network)
    except DarkbpError as error:      # a section pjreddie's Darknet builds no table line for
        assert error.section in PJREDDIE_REFUSES, error
        assert "darkbp cannot print pjreddie's table of this cfg" in error.message
    summary_data(network)
    return True


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text(text):
    _parse(text)


line = st.one_of(
    st.sampled_from(HEADERS),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 80), line), max_size=6),
       st.lists(st.integers(0, 80), max_size=4))
def test_mutated_cfgs(seed, insertions, deletions):
    lines = seed.splitlines()
    for index in deletions:
        if lines:
            del lines[index % len(lines)]
    for index, new in insertions:
        lines.insert(index % (len(lines) + 1), new)
    _parse("\n".join(lines))


# A grammar: [net] with an image input, then sections of any registered type with options
# drawn from small valid-looking values.
OPTION_VALUES = st.sampled_from(["0", "1", "2", "3", "4", "-1", "-2", "-3", ".25", "leaky",
                                 "linear", "sse", "-1,-2", "0,1"])
# Every section ends with from=-1 and layers=-1, which [shortcut] and [route] require and
# the others warn about; a drawn value of either comes first, and the first one counts.
def section_of(header, extra=()):
    return st.builds(
        lambda options: "\n".join([f"[{header}]"] + [f"{k}={v}" for k, v in options]
                                  + ["from=-1", "layers=-1", *extra]),
        st.lists(st.tuples(st.sampled_from(KEYS[:11] + KEYS[21:]), OPTION_VALUES), max_size=3))


section = st.sampled_from(sorted(REGISTRY)).flatmap(section_of)


TYPES = sorted({cls.sections[0] for cls in REGISTRY.values()})
# The detection heads read an exact channel (or input) count: with their default options,
# 1·(20 + 5) = 25 channels for [yolo], 1·(20 + 4 + 1) for [region], 7²·((1 + 1)·1 + 1) =
# 147 inputs for [detection], 1·(20 + 9) = 29 channels for [Gaussian_yolo]. A layer giving
# that comes right before them. [contrastive] reads a [yolo] head (yolo_layer, its EXTRA);
# [crnn] must keep its input's size, which its default size=3 without pad=1 does not.
# [scale_channels] with from=-1 scales its previous layer by itself, so that layer must be
# 1 x 1 x C: an [avgpool] makes it so.
LEAD_IN = {"yolo": ["[convolutional]\nfilters=25"], "region": ["[convolutional]\nfilters=25"],
           "detection": ["[connected]\noutput=147"],
           "Gaussian_yolo": ["[convolutional]\nfilters=29"],
           "contrastive": ["[convolutional]\nfilters=25", "[yolo]"],
           "scale_channels": ["[avgpool]"]}
EXTRA = {"contrastive": ["yolo_layer=-1"], "crnn": ["pad=1"]}


@pytest.mark.parametrize("kind", TYPES)
def test_generated_networks_with_each_section_build_often(kind):
    """Networks of random sections around one [kind] with random options: many build, and
    every one that builds holds its [kind]."""
    built = []

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.lists(section, max_size=2), section_of(kind, EXTRA.get(kind, ())),
           st.lists(section, max_size=2),
           st.sampled_from([4, 8, 12]), st.sampled_from([1, 2, 4]))
    def check(before, middle, after, side, channels):
        text = "\n".join([f"[net]\nwidth={side}\nheight={side}\nchannels={channels}\nbatch=2",
                          *before, *LEAD_IN.get(kind, []), middle, *after])
        ok = _parse(text)
        built.append(ok)
        if ok:
            network = build_network(read_cfg_text(text, "fuzz.cfg"), "fuzz.cfg")
            assert kind in {layer.type for layer in network.layers}

    check()
    assert sum(built) >= len(built) // 20, f"only {sum(built)} of {len(built)} built"
