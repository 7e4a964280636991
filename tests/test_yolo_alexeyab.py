"""AlexeyAB's [yolo] (src/yolo_layer.c and src/box.c at 59596d78) in darkbp/layers/yolo.py
and darkbp/ops/iou_loss.py: its own numbers (../shared/darknet-golden/alexeyab-new/yolo_mse
and yolo_ciou), its IoU family and box step against a line-by-line transcription
(tests/naive_boxes.py) and finite differences, the loss whose gradient is the delta where
one exists, its DIoU NMS, ONNX, and which fork's [yolo] a cfg gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from darkbp.boxes import nms_sort
from darkbp.layers.yolo import YoloLayer
from darkbp.network import parse_network
from darkbp.ops.detection import Truth
from darkbp.ops.iou_loss import ab_iou, box_step, diou, diounms, giou, ciou, iou_kind64
from darkbp.parallel import Runner
from darkbp.passes import EVAL, Noise, Pass
from darkbp.sgd import SGD
from darkbp.weights import load_weights
from tests import naive_boxes
from tests.conftest import ROOT
from tests.golden import GOLDEN, arrays, relative

FOLDER = GOLDEN / "alexeyab-new"
LAYER_CFG = ROOT / "tests" / "layer_cfgs" / "yolo_alexeyab.cfg"
FORWARD_TOL = 1e-6          # as tests/test_golden.py
LOSS_TOL = 1e-6
WEIGHTS_TOL = 2e-6


# --- the fixtures -----------------------------------------------------------------------------
def fixture_cfg(name: str, folder: Path, alexeyab: bool = True) -> Path:
    """The fixture's cfg. yolo_mse's names none of AlexeyAB's [yolo] options (its iou_loss
    is AlexeyAB's default, mse); darkbp gives such a cfg pjreddie's [yolo], so the copy adds
    `iou_loss=mse`, which changes nothing in AlexeyAB's run of it (alexeyab=False: as is)."""
    path = FOLDER / name / f"{name}.cfg"
    if not path.is_file():
        pytest.fail(f"AlexeyAB's fixture {path} is missing")
    text = path.read_text()
    if alexeyab and "\niou_loss" not in text:
        text = text.rstrip("\n") + "\niou_loss=mse\n"     # the [yolo] is the last section
    out = folder / f"{name}.cfg"
    out.write_text(text)
    return out


def network_of(cfg: Path, weights: Path):
    network = parse_network(cfg).initialize(0, np.float32)
    load_weights(weights, network.layers)
    return network


def fixture_truth(name: str) -> np.ndarray:
    """truth.f32: 8 images x max=4 boxes x (x, y, w, h, class, track_id) -> (8, 4, 5)."""
    return np.fromfile(FOLDER / name / "truth.f32", "<f4").reshape(8, 4, 6)[:, :, :5].copy()


def f32(name: str, file: str) -> np.ndarray:
    return np.fromfile(FOLDER / name / file, "<f4").reshape(8, -1)


def losses(name: str) -> list[tuple[float, float]]:
    rows = [line.split() for line in (FOLDER / name / "losses.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return [(float(cost), float(per_image)) for _, cost, per_image in rows]


def replay(name: str, cfg: Path):
    """The driver's run: predict, then 5 SGD steps (the cfg's rate, 0.001) on the batch, with
    AlexeyAB's cost; (forward, train forward, costs, statistics lines, weights after 1 and 5,
    forward after 5)."""
    network = network_of(cfg, FOLDER / name / "init.weights")
    x = f32(name, "input.f32").reshape(8, *network.input_shape)
    config = network.config
    assert config.schedule.learning_rate == 0.001
    forward = network.forward(x)
    sgd = SGD(network.layers, config.momentum, config.decay, config.batch)
    head = network.heads[0]
    costs, lines, weights, train_forward = [], [], {}, None
    for step in range(1, 6):
        truth = Truth(fixture_truth(name), 16, 16, seen=8 * step)
        output = network.forward(x, Pass.training(Noise(0, step - 1)))
        train_forward = output if step == 1 else train_forward
        costs.append(head.darknet_cost(truth))
        lines.append(head.stats_line(head.statistics(truth)))
        network.backward(truth)
        sgd.step(config.schedule.learning_rate)
        if step in (1, 5):
            weights[step] = arrays(network)
    return forward, train_forward, costs, lines, weights, network.forward(x)


@pytest.mark.parametrize("name", ["yolo_mse", "yolo_ciou"])
def test_every_layer_and_the_forward_equal_alexeyabs(name, tmp_path):
    network = network_of(fixture_cfg(name, tmp_path), FOLDER / name / "init.weights")
    x = f32(name, "input.f32").reshape(8, *network.input_shape)
    outputs = network.run(x, EVAL, keep=True)
    for index, output in enumerate(outputs):
        assert relative(output.reshape(8, -1), f32(name, f"layers/forward_{index:02d}.f32")
                        ) < FORWARD_TOL, index
    assert relative(outputs[-1].reshape(8, -1), f32(name, "forward.f32")) < FORWARD_TOL


@pytest.mark.parametrize("name", ["yolo_mse", "yolo_ciou"])
def test_a_split_pass_has_the_whole_passs_darknet_cost(name, tmp_path):
    """AlexeyAB's cost with an IoU loss holds a mean over the pass's truths: the cost of a
    batch split between workers is made from their summed statistics, not the sum of
    their own means (which would count 1 − IoU twice over two shards)."""
    cfg = fixture_cfg(name, tmp_path)
    truth = Truth(fixture_truth(name), 16, 16, seen=8)
    noise = Noise(0, 0)
    costs = []
    for threads in (1, 2):
        network = network_of(cfg, FOLDER / name / "init.weights")
        x = f32(name, "input.f32").reshape(8, *network.input_shape)
        with Runner(network, threads) as runner:
            assert runner.split == (threads == 2)
            runner.train_step(x, truth, noise)
            costs.append([cost for cost, _ in runner.head_numbers])
    assert costs[1] == pytest.approx(costs[0], rel=1e-6)
    assert costs[0] == pytest.approx([losses(name)[0][0]], rel=LOSS_TOL)


@pytest.mark.parametrize("name", ["yolo_mse", "yolo_ciou"])
def test_one_and_five_steps_equal_alexeyabs(name, tmp_path):
    cfg = fixture_cfg(name, tmp_path)
    forward, train_forward, costs, _, weights, after = replay(name, cfg)
    assert relative(train_forward.reshape(8, -1), f32(name, "train_forward.f32")) < FORWARD_TOL
    theirs = losses(name)
    assert costs == pytest.approx([cost for cost, _ in theirs], rel=LOSS_TOL)
    loss1 = float((FOLDER / name / "loss1.txt").read_text())
    assert costs[0] / 8 == pytest.approx(loss1, rel=LOSS_TOL)
    for step in (1, 5):
        reference = arrays(network_of(cfg, FOLDER / name / f"step{step}.weights"))
        assert reference.keys() == weights[step].keys()
        for key, value in reference.items():
            assert relative(weights[step][key], value) < WEIGHTS_TOL, (step, key)
    assert relative(after.reshape(8, -1), f32(name, "forward_step5.f32")) < FORWARD_TOL


def test_pjreddies_yolo_does_not_make_alexeyabs_steps(tmp_path):
    # The same cfg with default options: pjreddie's head (its ignore rule, its box delta
    # without iou_normalizer 0.75, written not added) is 1e-2 off AlexeyAB's first step.
    cfg = fixture_cfg("yolo_mse", tmp_path, alexeyab=False)
    assert parse_network(cfg).heads[0].fork == "pjreddie"
    *_, weights, _ = replay("yolo_mse", cfg)
    reference = arrays(network_of(cfg, FOLDER / "yolo_mse" / "step1.weights"))
    assert max(relative(weights[1][key], value) for key, value in reference.items()) > 1e-3


@pytest.mark.parametrize("name", ["yolo_mse", "yolo_ciou"])
def test_the_statistics_line_holds_alexeyabs_cost(name, tmp_path):
    # AlexeyAB's line after its first step: its total_loss is |delta|² per image; its cost
    # (loss1.txt, per image) is that with mse, and class_loss + iou_normalizer·(1 − IOU)
    # with ciou (show_details=1, its default). count: the truths' assignments (15 truths;
    # with iou_thresh 0.213 ciou's also take other anchors of the mask).
    _, _, _, lines, _, _ = replay(name, fixture_cfg(name, tmp_path))
    line = lines[0]
    kind = "mse" if name == "yolo_mse" else "iou"
    norm = "0.75" if name == "yolo_mse" else "0.07"
    assert line.startswith(f"v3 ({kind} loss, Normalizer: (iou: {norm}, obj: 1.00, cls: 1.00) "
                           "Region 4 Avg (IOU: ")
    fields = dict(part.split(" = ") for part in line.split(", ")[-3:])
    count = int(line.split("count: ")[1].split(",")[0])
    iou = float(line.split("(IOU: ")[1].split(")")[0])
    class_loss, iou_loss, total = (float(fields[key]) for key in
                                   ("class_loss", "iou_loss", "total_loss"))
    loss1 = float((FOLDER / name / "loss1.txt").read_text())
    assert class_loss + iou_loss == pytest.approx(total, abs=2e-6)
    if name == "yolo_mse":
        assert count == 15 and total == pytest.approx(loss1, rel=1e-6)
    else:
        assert count > 15
        assert class_loss + 0.07 * (1 - iou) / 8 == pytest.approx(loss1, rel=1e-6)


# --- which fork's [yolo] ----------------------------------------------------------------------
YOLO = """[net]
width=8
height=8
channels=14

[yolo]
mask=0,1
anchors=1,1, 2,3
classes=2
num=2
"""


def test_a_yolo_naming_an_alexeyab_option_is_alexeyabs(write_cfg):
    plain = parse_network(write_cfg(YOLO)).heads[0]
    assert (plain.fork, plain.settings["max"]) == ("pjreddie", 90)
    for option in ("iou_loss=mse", "scale_x_y=1.0", "nms_kind=greedynms", "resize=1.5"):
        head = parse_network(write_cfg(YOLO + option + "\n")).heads[0]
        assert (head.fork, head.settings["max"]) == ("alexeyab", 200), option
    # a name AlexeyAB does not know: its IOU, said in an advice with the line
    head = parse_network(write_cfg(YOLO + "iou_loss=l1\n")).heads[0]
    assert head.alexeyab["iou_loss_used"] == "iou"
    assert head.advice == ("line 11: iou_loss=l1 is not one of mse, iou, giou, diou, ciou; "
                           "AlexeyAB's Darknet and darkbp take iou",)
    refused = parse_network(write_cfg(YOLO + "focal_loss=1\n")).heads[0]
    assert refused.training_refusal() == "focal_loss=1 is not trained by darkbp: remove it"
    smooth = parse_network(write_cfg(YOLO + "objectness_smooth=1\n")).heads[0]
    assert smooth.fork == "alexeyab" and smooth.alexeyab["objectness_smooth"]
    assert smooth.training_refusal() is None


# --- the IoU family and the box step ----------------------------------------------------------
def random_pairs(seed: int, count: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Box pairs overlapping, apart, one inside the other (centres in [0.2, 0.8], sizes in
    [0.02, 0.5]), float32."""
    rng = np.random.default_rng(seed)
    a = np.concatenate([rng.uniform(0.2, 0.8, (count, 2)), rng.uniform(0.02, 0.5, (count, 2))], 1)
    b = np.concatenate([rng.uniform(0.2, 0.8, (count, 2)), rng.uniform(0.02, 0.5, (count, 2))], 1)
    return a.astype(np.float32), b.astype(np.float32)


def test_the_iou_family_equals_a_transcription_of_box_c():
    a, b = random_pairs(0)
    assert (ab_iou(a, b) == 0).sum() > 30 and (ab_iou(a, b) > 0.3).sum() > 10   # both cases
    for fast, slow in ((ab_iou, naive_boxes.ab_iou), (giou, naive_boxes.ab_giou),
                       (diou, naive_boxes.ab_diou), (ciou, naive_boxes.ab_ciou),
                       (lambda p, q: diounms(p, q, 0.8),
                        lambda p, q: naive_boxes.ab_diou(p, q, 0.8))):
        expected = np.array([slow(p, q) for p, q in zip(a, b)])
        np.testing.assert_allclose(fast(a, b), expected, rtol=0, atol=2e-7)


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
def test_the_box_step_equals_a_transcription_of_dx_box_iou(kind):
    a, b = random_pairs(1)
    expected = np.array([naive_boxes.dx_box_iou(p, q, kind) for p, q in zip(a, b)])
    found = box_step(a, b, kind)
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def gradient(kind: str, a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """(k, 4) central differences of iou_kind64 in the prediction's x, y, w, h."""
    a = a.astype(np.float64)
    grad = np.zeros_like(a)
    for k in range(4):
        e = np.zeros(4)
        e[k] = eps
        grad[:, k] = (iou_kind64(kind, a + e, b) - iou_kind64(kind, a - e, b)) / (2 * eps)
    return grad


def overlapping(seed: int, count: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Pairs that overlap, no edge of one within 1e-3 of the other's (off the kinks)."""
    a, b = random_pairs(seed, 4 * count)
    a[:, :2] = b[:, :2] + (a[:, :2] - b[:, :2]) * 0.3
    edges = lambda box: np.concatenate([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], 1)
    ea, eb = edges(a), edges(b)
    far = (np.abs(ea[:, [0, 2]][:, :, None] - eb[:, [0, 2]][:, None]).min(axis=(1, 2)) > 1e-3) & (
        np.abs(ea[:, [1, 3]][:, :, None] - eb[:, [1, 3]][:, None]).min(axis=(1, 2)) > 1e-3)
    keep = far & (ab_iou(a, b) > 0)
    return a[keep][:count], b[keep][:count]


@pytest.mark.parametrize("kind", ["iou", "giou"])
def test_the_box_step_of_iou_and_giou_is_their_gradient_with_twice_the_size_part(kind):
    a, b = overlapping(2)
    grad = gradient(kind, a, b) * np.array([1, 1, 2, 2])   # "we do not divide by 2"
    np.testing.assert_allclose(box_step(a, b, kind), grad, rtol=0, atol=2e-4 * np.abs(grad).max())


def test_the_box_step_of_diou_and_ciou_is_not_their_gradient():
    # What AlexeyAB's step is, term by term (ops/iou_loss.py): with r = d/c (not DIoU's
    # (d/c)^0.6), the x, y part takes −∂r/∂x − 2·d·(∂c/∂x)/c²: the enclosing box's part with
    # the sign turned; the w, h part is −∂r/∂w next to twice the IoU's; ciou adds
    # α·(w² + h²)·(−∂v/∂w), α = v/(1 − IoU + v + 1e-6) held.
    a, b = overlapping(3)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)

    def differences(function, eps=1e-7):
        out = np.zeros_like(a64)
        for k in range(4):
            e = np.zeros(4)
            e[k] = eps
            out[:, k] = (function(a64 + e) - function(a64 - e)) / (2 * eps)
        return out

    def outer(p):
        return (np.maximum(p[:, :2] + p[:, 2:] / 2, b64[:, :2] + b64[:, 2:] / 2)
                - np.minimum(p[:, :2] - p[:, 2:] / 2, b64[:, :2] - b64[:, 2:] / 2))

    c = lambda p: (outer(p) ** 2).sum(axis=1)
    d = lambda p: ((p[:, :2] - b64[:, :2]) ** 2).sum(axis=1)
    v = lambda p: 4 / np.pi ** 2 * (np.arctan(b64[:, 2] / b64[:, 3]) - np.arctan(p[:, 2] / p[:, 3])) ** 2
    d_iou = differences(lambda p: iou_kind64("iou", p, b64)) * np.array([1, 1, 2, 2])
    d_r = differences(lambda p: d(p) / c(p))
    d_c = differences(c)
    expected = d_iou - d_r
    expected[:, :2] -= 2 * (d(a64) / c(a64) ** 2)[:, None] * d_c[:, :2]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(box_step(a, b, "diou"), expected, rtol=0, atol=2e-4 * scale)
    # ... which is not the gradient of DIoU (nor of 1 − IoU + d/c)
    assert np.abs(box_step(a, b, "diou") - gradient("diou", a, b)).max() > 0.1 * scale
    assert np.abs(box_step(a, b, "diou") - (d_iou - d_r)).max() > 0.1 * scale

    iou = iou_kind64("iou", a64, b64)
    alpha = v(a64) / (1 - iou + v(a64) + 1e-6)
    aspect = -(alpha * (a64[:, 2] ** 2 + a64[:, 3] ** 2))[:, None] * differences(v)
    expected[:, 2:] += aspect[:, 2:]
    np.testing.assert_allclose(box_step(a, b, "ciou"), expected, rtol=0, atol=2e-4 * scale)


def test_no_loss_has_alexeyabs_iou_delta_as_gradient():
    # The delta of x and w at one cell as functions of the head's inputs z_x and z_w: a
    # gradient field would have ∂δx/∂z_w = ∂δw/∂z_x; AlexeyAB's differ (no σ' on x, a
    # factor 2 and no anchor/netw on w). Hence darkbp passes the delta back as AlexeyAB does
    # and its loss holds iou_normalizer·(1 − IoU) beside (see YoloLayer.loss).
    truth = np.array([[0.52, 0.47, 0.3, 0.2]], np.float32)
    anchor, netw, grid = np.float32(3.0), 16, 8

    def delta(z):
        sx = 1 / (1 + np.exp(-z[0]))
        pred = np.array([[(3 + sx) / grid, (3 + 0.6) / grid, np.exp(z[1]) * anchor / netw, 0.25]],
                        np.float32)
        step = box_step(pred, truth, "ciou")[0].astype(np.float64)
        return np.array([step[0], step[2] * np.exp(z[1])])

    z = np.array([0.3, 0.2])
    eps = 1e-3
    dx_dzw = (delta(z + [0, eps])[0] - delta(z - [0, eps])[0]) / (2 * eps)
    dw_dzx = (delta(z + [eps, 0])[1] - delta(z - [eps, 0])[1]) / (2 * eps)
    assert abs(dx_dzw - dw_dzx) > 0.3 * max(abs(dx_dzw), abs(dw_dzx))


# --- darkbp's loss: its gradient is the delta (mse), gradchecked ------------------------------
def head_case(index: int, seed: int, **options):
    """Head `index` of tests/layer_cfgs/yolo_alexeyab.cfg in float64 (its options replaced by
    `options`), a random input and truth, and the targets made for them."""
    network = parse_network(LAYER_CFG)
    head = network.layers[index]
    for key, value in options.items():
        head.alexeyab[key] = value
        head.alexeyab[key + "_used"] = value
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.5, (3, *head.in_shape))
    truth = Truth.random(rng, 3, head.classes, 8, 8)
    head.forward(x, Pass.training())
    return head, x, truth, head.assign(truth)


def check_gradient(head, x, found, entries) -> None:
    grad = head.input_grad(found.truth).reshape(-1)
    eps = 1e-6
    for flat in entries:
        e = np.zeros(x.size)
        e[flat] = eps
        e = e.reshape(x.shape)
        numeric = (head.loss(x + e, found).sum() - head.loss(x - e, found).sum()) / (2 * eps)
        assert abs(numeric - grad[flat]) <= 1e-6 * max(1, abs(numeric)), flat


@pytest.mark.parametrize("index", [2, 6])        # scale_x_y 1.05; new_coords with scale_x_y 2
@pytest.mark.parametrize("seed", range(3))
def test_input_grad_is_the_gradient_of_the_mse_loss(index, seed):
    head, x, truth, found = head_case(index, seed)
    assert head.fork == "alexeyab" and head.alexeyab["iou_loss_used"] == "mse"
    live = np.flatnonzero(found.scale.reshape(-1) > 0)
    rng = np.random.default_rng(seed)
    check_gradient(head, x, found, list(rng.choice(x.size, 40, replace=False)) + list(live[:80]))


def test_two_truths_in_one_cell_add_their_box_deltas_and_share_them():
    # Two truths of classes 0 and 1 in cell (1, 2) of the 4 x 4 head, both best on anchor 3
    # (6 x 6 px): AlexeyAB adds both box deltas and, iou_thresh < 1, divides by the cell's 2
    # classes whose delta is positive (pjreddie's would keep the last truth's alone).
    head, x, _, _ = head_case(2, 0)
    boxes = np.zeros((3, 90, 5), np.float32)
    boxes[0, :2] = [[0.60, 0.30, 0.70, 0.72, 0], [0.70, 0.40, 0.75, 0.70, 1]]
    truth = Truth(boxes, 8, 8)
    found = head.train_targets(head._y, truth)
    y = head._entries(head._y)
    out = y[0, 1, :4, 1, 2]
    expected = np.zeros(4)
    for bx, by, bw, bh, _ in boxes[0, :2].astype(np.float64):
        target = [bx * 4 - 2, by * 4 - 1, np.log(bw * 8 / 6), np.log(bh * 8 / 6)]
        expected += 0.07 * (2 - bw * bh) * (np.array(target) - out)
    classes = int(((found.target[0, 1, 5:, 1, 2] - y[0, 1, 5:, 1, 2]) > 0).sum())
    # count 4: iou_thresh 0.213 also puts each truth on anchor 2 (4 x 2 px, IoU .25 and .24)
    assert classes == 2 and found.stats["count"] == 4
    np.testing.assert_allclose(found.delta[0, 1, :4, 1, 2], expected / 2, rtol=1e-5)
    # the class targets smoothed: 1·(1 − 0.1) + 0.05 for both truths' classes
    np.testing.assert_allclose(found.target[0, 1, 5:, 1, 2], [0.95, 0.95])
    check_gradient(head, head._x, found, list(np.flatnonzero(found.scale.reshape(-1) > 0)))


def near_predictions(head, seed: int, count: int = 6) -> Truth:
    """Truths of 3 images close to `count` random predictions of each (their boxes moved a
    little), so that the ignore and truth_thresh branches meet them; random classes."""
    rng = np.random.default_rng(seed)
    y = head._entries(head._y)
    pred = head._pred_boxes(y, 8, 8)
    boxes = np.zeros((3, 90, 5), np.float32)
    for b in range(3):
        n, j, i = (rng.integers(0, k, count) for k in pred.shape[1:4])
        box = pred[b, n, j, i] * rng.uniform(0.9, 1.1, (count, 4))
        box[:, :2] = np.clip(box[:, :2], 0.02, 0.98)
        box[:, 2:] = np.clip(box[:, 2:], 0.05, 0.9)
        boxes[b, :count] = np.concatenate([box, rng.integers(0, head.classes, (count, 1))], 1)
    return Truth(boxes, 8, 8)


def not_plain(targets: np.ndarray) -> np.ndarray:
    """Which targets are none of the plain ones (0, 1, and 0.05, 0.95 of label_smooth_eps)."""
    return ~np.isclose(np.asarray(targets, np.float64)[..., None], [0, 0.05, 0.95, 1],
                       rtol=0, atol=1e-6).any(axis=-1)


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_objectness_and_class_deltas_equal_a_transcription_of_process_batch(smooth, seed):
    # head 2 (obj_normalizer 1.5, label_smooth_eps, iou_thresh 0.213) with truth_thresh 0.85,
    # so that both of forward_yolo_layer's loops meet objectness_smooth
    network = parse_network(LAYER_CFG)
    head = network.layers[2]
    head.alexeyab["objectness_smooth"] = smooth
    head.settings["truth_thresh"] = 0.85
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.5, (3, *head.in_shape)).astype(np.float32)
    head.forward(x, Pass.training())
    truth = near_predictions(head, seed)
    found = head.assign(truth)
    y = head._entries(head._y)
    fractional = 0
    for b in range(3):
        expected = naive_boxes.ab_yolo_obj_class_delta(
            y[b], truth.boxes[b], head.mask, head.anchors, 8, 8, ignore_thresh=0.7,
            truth_thresh=0.85, obj_normalizer=1.5, label_smooth_eps=0.1, iou_thresh=0.213,
            objectness_smooth=smooth)
        np.testing.assert_allclose(found.delta[b, :, 4:], expected, rtol=1e-6, atol=1e-7)
        targets = found.target[b, :, 4:][found.scale[b, :, 4:] > 0]
        fractional += int(not_plain(targets).sum())
    # objectness_smooth's targets are IoUs (ignored) and IoU² (truth_thresh): met here
    assert (fractional > 0) == smooth


@pytest.mark.parametrize("seed", range(3))
def test_with_objectness_smooth_positive_cells_keep_their_ignore_target(seed):
    # AlexeyAB sets every prediction's objectness delta before the truths' loop, which with
    # objectness_smooth writes 1 only where that delta is 0: a truth's cell keeps 0 or its
    # best IoU as target
    network = parse_network(LAYER_CFG)
    head = network.layers[2]
    head.alexeyab["objectness_smooth"] = True
    rng = np.random.default_rng(seed)
    head.forward(rng.normal(0, 1.5, (3, *head.in_shape)).astype(np.float32), Pass.training())
    found = head.assign(near_predictions(head, seed))
    positive = found.scale[:, :, 5] > 0
    assert positive.any() and not (found.target[:, :, 4][positive] == 1).any()
    head.alexeyab["objectness_smooth"] = False
    plain = head.assign(near_predictions(head, seed))
    assert (plain.target[:, :, 4][positive] == 1).all()


@pytest.mark.parametrize("index", [2, 6])
@pytest.mark.parametrize("seed", range(2))
def test_input_grad_is_the_gradient_of_the_loss_with_objectness_smooth(index, seed):
    # the ignore and truth_thresh targets (IoU, IoU²) are held fixed as the assignment is
    head, x, _, _ = head_case(index, seed, objectness_smooth=True)
    head.settings["truth_thresh"] = 0.85
    found = head.assign(near_predictions(head, seed, count=20))
    target = found.target[:, :, 4:].reshape(-1)
    live = np.flatnonzero(found.scale[:, :, 4:].reshape(-1) > 0)
    fractional = live[not_plain(target[live])]
    assert len(fractional) > 0
    offset = np.zeros(found.scale.shape, bool)
    offset[:, :, 4:] = True
    entries = np.flatnonzero(offset.reshape(-1))[fractional]
    rng = np.random.default_rng(seed)
    check_gradient(head, x, found, list(entries[:60]) + list(rng.choice(x.size, 30, replace=False)))


def test_delta_normalizer_scales_the_gradient_only():
    # AlexeyAB's GPU backward multiplies the delta by delta_normalizer (0.9 on layer 2);
    # its delta, cost and statistics do not have it
    head, x, truth, found = head_case(2, 0)
    np.testing.assert_allclose(head.input_grad(truth), -0.9 * found.delta.reshape(x.shape))


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
def test_with_an_iou_loss_the_objectness_and_classes_gradients_are_exact(kind):
    head, x, truth, found = head_case(2, 0, iou_loss=kind, iou_thresh=1.0)
    assert found.terms is not None
    entries = np.zeros((3, 2, 7, 4, 4), bool)
    entries[:, :, 4:] = True
    live = np.flatnonzero(entries.reshape(-1) & (found.scale.reshape(-1) > 0))
    check_gradient(head, x, found, list(live[:60]))
    # the box entries: AlexeyAB's step, iou_normalizer·step·(1, 1, e^z, e^z) at a cell with
    # one assignment, not the loss's gradient
    bb, bn, bj, bi = found.terms["cells"]
    one = [k for k in range(len(bb)) if ((bb == bb[k]) & (bn == bn[k]) & (bj == bj[k])
                                          & (bi == bi[k])).sum() == 1][0]
    y = head._entries(head._y)
    z = head._entries(x)
    _, h, w = head.in_shape
    anchor = found.terms["anchors"][one]
    pred = np.array([(bi[one] + y[bb[one], bn[one], 0, bj[one], bi[one]]) / w,
                     (bj[one] + y[bb[one], bn[one], 1, bj[one], bi[one]]) / h,
                     np.exp(z[bb[one], bn[one], 2, bj[one], bi[one]]) * anchor[0] / 8,
                     np.exp(z[bb[one], bn[one], 3, bj[one], bi[one]]) * anchor[1] / 8],
                    np.float32)[None]
    step = box_step(pred, found.terms["truths"][one][None], kind)[0].astype(np.float64)
    step[2:] *= np.exp(z[bb[one], bn[one], 2:4, bj[one], bi[one]])
    np.testing.assert_allclose(found.delta[bb[one], bn[one], :4, bj[one], bi[one]], 0.07 * step,
                               rtol=1e-5, atol=1e-7)


def test_gradcheck_names_an_iou_loss_as_what_it_cannot_check(tmp_path):
    from darkbp.errors import DarkbpError
    from darkbp.gradcheck import gradcheck
    cfg = tmp_path / "ciou.cfg"
    cfg.write_text(LAYER_CFG.read_text().replace("iou_loss=mse", "iou_loss=ciou"))
    with pytest.raises(DarkbpError, match="iou_loss=ciou: AlexeyAB's box delta") as error:
        gradcheck(parse_network(cfg), batch=2)
    assert (error.value.file, error.value.line) == (str(cfg), 24)      # its [yolo]


def test_max_delta_clips_each_step():
    head, x, truth, found = head_case(2, 1, iou_loss="ciou", iou_thresh=1.0, max_delta=1e-3)
    assert 0 < np.abs(found.delta[:, :, :4]).max() <= 1e-3 * len(found.terms["cells"][0])
    _, _, _, free = head_case(2, 1, iou_loss="ciou", iou_thresh=1.0)
    assert np.abs(free.delta[:, :, :4]).max() > 1e-3


def test_label_smooth_eps_targets_y_times_1_minus_eps_plus_half_eps():
    head, x, truth, found = head_case(2, 0)
    assigned = found.scale[:, :, 5] > 0
    y = head._entries(head._y)
    targets = found.target[:, :, 5:][np.broadcast_to(assigned[:, :, None], found.target[:, :, 5:].shape)]
    assert set(np.round(targets, 6)) <= {0.05, 0.95}
    np.testing.assert_allclose(found.delta[:, :, 5:], (found.target[:, :, 5:] - y[:, :, 5:])
                               * (found.scale[:, :, 5:] > 0), atol=1e-12)


def test_torch_twin_of_the_mse_loss_gives_the_same_gradient():
    torch = pytest.importorskip("torch")
    for index in (2, 6):
        head, x, truth, found = head_case(index, 4)
        z = torch.tensor(x, requires_grad=True)
        s, t = (torch.tensor(np.asarray(v, np.float64)) for v in (found.scale, found.target))
        zz = z.reshape(s.shape)
        if head.alexeyab["new_coords"]:
            terms = s * (t - zz) ** 2 / 2
        else:
            terms = s * torch.nn.functional.binary_cross_entropy_with_logits(zz, t, reduction="none")
            terms[:, :, 2:4] = s[:, :, 2:4] * (t[:, :, 2:4] - zz[:, :, 2:4]) ** 2 / 2
        loss = head.alexeyab["delta_normalizer"] * terms.sum()
        loss.backward()
        np.testing.assert_allclose(z.grad.numpy(), head.input_grad(truth), rtol=1e-9, atol=1e-12)


# --- inference: new_coords, scale_x_y, NMS, ONNX ----------------------------------------------
def test_new_coords_decodes_w_as_4_x2_anchor():
    network = parse_network(LAYER_CFG)
    head = network.layers[6]                          # 8 x 8, mask 0,1: anchors (1,1), (2,3)
    x = np.full((1, *head.in_shape), 0.6)
    y = head.forward(x, EVAL)
    out = head._entries(y)
    # no logistic; x, y scaled by 2 about 0.5: 0.6·2 − 0.5
    assert out[0, 0, 0, 0, 0] == pytest.approx(0.7) and out[0, 0, 4, 0, 0] == pytest.approx(0.6)
    boxes, objectness, _ = head.boxes(y, 0.5, 0.5, 8, 8)[0]
    assert len(boxes) == 2 * 64
    # cell (row 0, col 1), anchor 1 (2 x 3 px): x = (1 + 0.7)/8, w = 4·0.6²·2/8
    np.testing.assert_allclose(boxes[2 + 1], [(1 + 0.7) / 8, 0.7 / 8, 4 * 0.36 * 2 / 8,
                                              4 * 0.36 * 3 / 8], rtol=1e-6)


@pytest.mark.parametrize("kind, beta", [("greedynms", 0.6), ("diounms", 0.6), ("diounms", 1.0)])
def test_diou_nms_equals_a_transcription_of_diounms_sort(kind, beta):
    rng = np.random.default_rng(5)
    boxes = np.concatenate([rng.uniform(0.3, 0.7, (40, 2)), rng.uniform(0.1, 0.4, (40, 2))],
                           1).astype(np.float32)
    objectness = rng.uniform(0, 1, 40).astype(np.float32)
    objectness[::7] = 0
    probs = (rng.uniform(0, 1, (40, 3)) * (rng.uniform(0, 1, (40, 3)) > 0.3)).astype(np.float32)
    overlap = diou if kind == "greedynms" else (lambda a, b: diounms(a, b, beta))
    order, found = nms_sort(boxes, objectness, probs, 0.45, overlap)
    expected_order, expected = naive_boxes.diounms_sort(boxes, objectness, probs, 0.45, kind, beta)
    assert list(order) == expected_order
    np.testing.assert_array_equal(found[order], expected)
    # and it is not do_nms_sort's
    _, plain = nms_sort(boxes, objectness, probs, 0.45)
    assert not np.array_equal(plain, found)


def test_detection_uses_the_last_yolos_nms_kind():
    network = parse_network(LAYER_CFG)
    first, last = network.heads
    assert first.nms_overlap() is diou                 # greedynms
    a, b = random_pairs(6, 20)
    np.testing.assert_array_equal(last.nms_overlap()(a, b), diounms(a, b, 0.6))
    assert parse_network(ROOT / "tests" / "layer_cfgs" / "yolo.cfg").heads[-1].nms_overlap() is None


def test_onnxruntime_equals_the_heads_with_scale_x_y_and_new_coords(tmp_path):
    pytest.importorskip("onnxruntime")
    from tests.test_export_detection import check_exports, images, randomized, weights_file
    network = randomized(LAYER_CFG)
    error = check_exports(tmp_path, network, LAYER_CFG, weights_file(tmp_path, network),
                          images(network))
    assert error < 1e-5


def test_rounds_add_each_cells_deltas_one_by_one_in_order():
    # The box deltas of assignments that share a cell add up in float32, in their order, as
    # AlexeyAB's loop does: a plain loop is the reference, with magnitudes far apart so that
    # another order or a float64 sum would round differently.
    from darkbp.layers.yolo import _rounds
    rng = np.random.default_rng(0)
    shape = (3, 2, 4, 5)
    for k in [0, 1, 2, 40]:
        cells = tuple(rng.integers(0, d, k) for d in shape)
        cells = tuple(np.concatenate([c, c[:k // 2]]) for c in cells)   # repeats
        step = (rng.standard_normal((len(cells[0]), 4))
                * 10.0 ** rng.integers(-6, 6, (len(cells[0]), 1))).astype(np.float32)
        expected = np.zeros(shape[:2] + (4,) + shape[2:], np.float32)
        for i, (b, a, j, c) in enumerate(zip(*cells)):
            expected[b, a, :, j, c] += step[i]
        got = np.zeros_like(expected)
        for rows in _rounds(np.ravel_multi_index(cells, shape)):
            got[cells[0][rows], cells[1][rows], :, cells[2][rows], cells[3][rows]] += step[rows]
        np.testing.assert_array_equal(got, expected)
