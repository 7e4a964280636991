"""Random and mutated cfg text either builds a network or raises DarkbpError, never anything else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from darkbp.cfg import read_cfg_text
from darkbp.errors import DarkbpError
from darkbp.network import build_network
from darkbp.summary import darknet_text, summary_data
from tests.conftest import CFG_DIR

SEEDS = [p.read_text() for p in sorted(CFG_DIR.glob("*.cfg"))]
KEYS = ["filters", "size", "stride", "pad", "padding", "groups", "activation", "batch_normalize",
        "output", "temperature", "batch", "subdivisions", "width", "height", "channels", "inputs",
        "policy", "steps", "scales", "learning_rate", "ema"]
VALUES = ["0", "1", "2", "3", "-1", "", "x", "1e9", "99999999999999999999", ".5", "nan", "inf",
          "1,2", "relu", "steps", "leaky", "0x10", "1_0"]
HEADERS = ["[net]", "[conv]", "[maxpool]", "[connected]", "[softmax]", "[yolo]", "[", "[]", "]"]


def _parse(text: str) -> None:
    try:
        network = build_network(read_cfg_text(text, "fuzz.cfg"), "fuzz.cfg")
    except DarkbpError:
        return
    darknet_text(network)
    summary_data(network)


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
