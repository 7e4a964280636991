"""The cfg dialect as Darknet reads it (SPEC section 2), and shapes and defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from darkbp.cfg import read_cfg_text
from darkbp.errors import DarkbpError
from darkbp.layers import REGISTRY
from darkbp.network import parse_network
from tests.conftest import CFG_DIR, SHARED


def test_whitespace_is_removed_anywhere_and_comments_are_skipped(write_cfg):
    net = parse_network(write_cfg("""
        # a comment
        ; another
          [ net ]
        wid th = 2 8
        height =28
        channels\t=\t1

        [conv]
        fil ters = 1 6
        size = 3
    """))
    assert net.input_shape == (1, 28, 28)
    assert net.layers[0].filters == 16
    assert net.layers[0].out_shape == (16, 26, 26)


def test_a_number_ends_at_a_hash_as_atoi_ends_it(write_cfg):
    # Both Darknets read numbers with C's atoi/atof, which stop at the first character that
    # is not part of one: AlexeyAB's efficientnet-lite3.cfg has filters=40#32 (40), its
    # cspx-p7-mish.cfg layers = -1, 271 ###S4 (-1, 271). Each is read so, with a warning.
    path = write_cfg("""
        [net]
        width=8
        height=8
        channels=3
        momentum=0.8#.9
        [conv]
        filters=4#32
        size=3#5
        [route]
        layers=-1,0#first
    """)
    net = parse_network(path)
    assert net.config.momentum == pytest.approx(0.8)
    assert (net.layers[0].filters, net.layers[0].size) == (4, 3)
    assert net.layers[1].sources == (0, 0)
    warned = [(w.line, w.message) for w in net.warnings if "#" in w.message]
    assert warned == [
        (5, "[net] 'momentum=0.8#.9': Darknet reads the number before '#' (C's atoi/atof "
            "stop there) and ignores '#.9'; so does darkbp"),
        (7, "[conv] 'filters=4#32': Darknet reads the number before '#' (C's atoi/atof "
            "stop there) and ignores '#32'; so does darkbp"),
        (8, "[conv] 'size=3#5': Darknet reads the number before '#' (C's atoi/atof "
            "stop there) and ignores '#5'; so does darkbp"),
        (10, "[route] 'layers=-1,0#first': Darknet reads the number before '#' (C's "
             "atoi/atof stop there) and ignores '#first'; so does darkbp")]


@pytest.mark.parametrize("value, words", [
    ("#4", "'filters' must be a whole number, got '#4'"),
    ("4x", "'filters' must be a whole number, got '4x'"),
])
def test_a_hash_does_not_hide_other_junk(write_cfg, value, words):
    path = write_cfg(f"[net]\nwidth=8\nheight=8\nchannels=3\n[conv]\nfilters={value}\n")
    with pytest.raises(DarkbpError, match=re.escape(words)) as caught:
        parse_network(path)
    assert caught.value.line == 6


def test_a_comma_after_a_hash_in_a_list_is_an_error(write_cfg):
    # parse_route counts the entries by the commas of the whole value, then reads each with
    # atoi: "-1#a,0" would be two layers, the second read from "0".
    words = "Darknet would count the ',' after the '#' as one more value"
    path = write_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n[conv]\n[route]\nlayers=-1#a,0\n")
    with pytest.raises(DarkbpError, match=re.escape(words)) as caught:
        parse_network(path)
    assert caught.value.line == 7


def test_first_key_wins():
    sections = read_cfg_text("[net]\nbatch=4\nbatch=8\n", "x.cfg")
    assert sections[0].options["batch"] == ("4", 2)


@pytest.mark.parametrize("header, kind", [("conv", "convolutional"), ("max", "maxpool"),
                                          ("conn", "connected"), ("soft", "softmax"),
                                          ("convolutional", "convolutional")])
def test_section_aliases(write_cfg, header, kind):
    net = parse_network(write_cfg(f"[network]\nwidth=4\nheight=4\nchannels=2\n[{header}]\n"))
    assert net.layers[0].type == kind


def test_darknet_defaults(write_cfg):
    net = parse_network(write_cfg("""
        [net]
        width=10
        height=10
        channels=3
        [convolutional]
        [maxpool]
        [connected]
        [softmax]
    """))
    config = net.config
    assert (config.batch, config.subdivisions, config.momentum, config.decay) == (1, 1, 0.9,
                                                                                  0.0001)
    schedule = config.schedule
    assert (schedule.learning_rate, schedule.policy, schedule.max_batches, schedule.burn_in,
            schedule.power, schedule.step, schedule.scale, schedule.gamma) == (
                0.001, "constant", 0, 0, 4.0, 1, 1.0, 1.0)
    conv, pool, conn, soft = net.layers
    # filters 1, size 1, stride 1, pad 0, groups 1, activation logistic (not linear)
    assert (conv.filters, conv.size, conv.stride, conv.padding, conv.groups) == (1, 1, 1, 0, 1)
    assert conv.activation == "logistic" and not conv.batch_normalize
    # maxpool: stride 1, size = stride, padding = size - 1
    assert (pool.size, pool.stride, pool.padding) == (1, 1, 0)
    assert pool.out_shape == (1, 10, 10)
    assert conn.outputs == 1 and conn.activation == "logistic"
    assert (soft.groups, soft.temperature) == (1, 1.0)


def test_pad_overrides_padding(write_cfg):
    net = parse_network(write_cfg("""
        [net]
        width=9
        height=7
        channels=1
        [convolutional]
        size=5
        pad=1
        padding=7
        stride=2
        [convolutional]
        size=3
        padding=2
    """))
    first, second = net.layers
    assert first.padding == 2                      # size/2, padding ignored
    assert first.out_shape == (1, 4, 5)            # (7+4-5)/2+1, (9+4-5)/2+1
    assert second.padding == 2
    assert second.out_shape == (1, 6, 7)           # (4+4-3)/1+1, (5+4-3)/1+1


def test_maxpool_size_defaults_to_stride(write_cfg):
    net = parse_network(write_cfg("[net]\nwidth=9\nheight=9\nchannels=1\n[maxpool]\nstride=3\n"))
    pool = net.layers[0]
    assert (pool.size, pool.stride, pool.padding) == (3, 3, 2)
    assert pool.out_shape == (1, 3, 3)             # (9 + 2 - 3)/3 + 1


def test_connected_flattens_and_softmax_keeps_size(write_cfg):
    net = parse_network(CFG_DIR / "mnist.cfg")
    assert net.layers[4].inputs == 800
    assert net.layers[6].inputs == net.layers[6].outputs == 10


def test_flat_input_with_inputs(write_cfg):
    net = parse_network(write_cfg("[net]\ninputs=784\n[connected]\noutput=10\n[softmax]\n"))
    assert net.layers[0].inputs == 784


def test_known_but_unused_and_unknown_options_warn(write_cfg):
    path = write_cfg("""
        [net]
        width=28
        height=28
        channels=1
        clip=.1
        learnin_rate=0.1
        [convolutional]
        filter=4
        binary=1
    """)
    net = parse_network(path)
    messages = [(w.line, w.message) for w in net.warnings]
    assert (5, "[net] option 'clip' is known to Darknet but not used by darkbp") in messages
    assert (6, "[net] unknown option 'learnin_rate' (Darknet: Unused field); "
               "did you mean 'learning_rate'?") in messages
    assert (8, "[convolutional] unknown option 'filter' (Darknet: Unused field); "
               "did you mean 'filters'?") in messages
    assert (9, "[convolutional] option 'binary' is known to Darknet but not used by darkbp") \
        in messages
    assert len(messages) == 4
    assert all(w.file == str(path) for w in net.warnings)


def test_shipped_cfgs_parse_without_warnings():
    for path in sorted(CFG_DIR.glob("*.cfg")):
        messages = [warning.message for warning in parse_network(path).warnings]
        if path.name == "notes_mse.cfg":        # softmax + [cost]: how Darknet differs
            assert len(messages) == 1 and "[cost] reads a [softmax]" in messages[0]
        else:
            assert messages == [], path


DARKNET_CFGS = sorted((SHARED / "darknet-cfg").glob("*.cfg"))


@pytest.mark.parametrize("path", DARKNET_CFGS, ids=[p.name for p in DARKNET_CFGS])
def test_darknet_cfgs_parse_or_fail_clearly(path: Path):
    supported = {f"[{name}]" for name in (*REGISTRY, "net")}
    headers = {"".join(line.split()) for line in path.read_text().splitlines()
               if line.strip().startswith("[")}
    if headers <= supported:
        net = parse_network(path)
        assert net.layers
    else:
        with pytest.raises(DarkbpError, match="is a Darknet section that darkbp does not support"):
            parse_network(path)


def test_the_darknet_cfgs_are_beside_the_project():
    assert len(DARKNET_CFGS) == 45
