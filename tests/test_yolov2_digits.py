"""cfg/yolov2-digits.cfg, the [region] (YOLOv2) detector for mnist-det: its gradients pass
`darkbp gradcheck` at a reduced size (tests/test_detection_training.py trains it through
the CLI on a tiny mnist-det, beside yolo-digits).

At its own 128 x 128 the leaky kinks of a batch of 2 rule out any input draw (as for
yolo-digits.cfg, tests/test_gradcheck.py), so tests/test_gradcheck.py's loop over cfg/ leaves
it out and it is checked here at 32 x 32: the region at stride 16 has 2 x 2 cells and the
passthrough's [reorg] takes 4 x 4 x 32 to 2 x 2 x 128."""

from __future__ import annotations

from click.testing import CliRunner

from darkbp.cli import main
from darkbp.network import parse_network
from tests.conftest import CFG_DIR, cfg_with

CFG = CFG_DIR / "yolov2-digits.cfg"


def test_the_cfg_is_a_region_detector_at_stride_16():
    network = parse_network(CFG)
    (head,) = network.heads
    # 5 anchors x (4 coords + objectness + 10 classes) on 8 x 8 cells of 16 px
    assert head.out_shape == (75, 8, 8)
    assert (head.coords, head.classes, head.num) == (4, 10, 5)
    assert head.training_refusal() is None
    assert head.settings["softmax"] == 1 and head.settings["bias_match"] == 1


def test_gradcheck_passes_at_32x32(tmp_path):
    small = cfg_with(CFG, tmp_path, width=32, height=32)
    assert [layer.out_shape for layer in parse_network(small).heads] == [(75, 2, 2)]
    for seed in ("0", "1"):
        result = CliRunner().invoke(main, ["gradcheck", str(small), "--batch", "2", "--seed",
                                           seed, "--max-elements", "16"])
        assert result.exit_code == 0, result.output
