"""bench/tta_detect.py, the detector's time to mAP beside its torch twin: the twin's training
step (its own targets, from its own outputs) is darkbp's step, and the twin's outputs go
through darkbp's decoding to darkbp's detections and mAP. In float64, where the two
frameworks agree to rounding (tests/test_bench_twin.py checks the twin layer by layer)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from bench.tta_detect import twin_detect, twin_step
from bench.twin import Twin
from darkbp.detection_train import MAP_THRESH
from darkbp.detector import NMS, detect_files
from darkbp.mapeval import Scorer, as_arrays
from darkbp.network import parse_network
from darkbp.ops.detection import Truth
from darkbp.parallel import Runner
from darkbp.passes import Noise
from darkbp.sgd import SGD
from tests.conftest import ROOT

CFG = ROOT / "cfg" / "yolo-digits.cfg"
BATCH = 4


def _params(network):
    return {f"{layer.index}.{name}": value.copy() for layer in network.layers
            for name, value, _ in layer.parameters()}


def _twin_params(model):
    return {f"{index}.{name}": t.detach().numpy() for (index, name), t in model.tensors.items()
            if name not in ("rolling_mean", "rolling_variance")}


def test_two_steps_with_targets_from_each_sides_own_outputs_give_the_same_weights():
    rng = np.random.default_rng(5)
    network = parse_network(CFG).initialize(0, np.float64)
    model = Twin(network)                                 # darkbp's initial weights
    heads = parse_network(CFG)                            # the twin's target assignment
    config = network.config
    sgd = SGD(network.layers, config.momentum, config.decay, BATCH)
    optimizer = model.sgd(config, BATCH)
    runner = Runner(network, 1)
    start = _params(network)
    lr = 0.01                  # a large step, so that the second step's outputs have moved
    for step in range(2):
        x = rng.random((BATCH, *network.input_shape))
        truth = Truth.random(rng, BATCH, 10, 128, 128)
        ours = runner.train_step(x, truth, Noise(0, step, 0))
        sgd.step(lr)
        theirs = twin_step(model, optimizer, heads, x, truth, lr, BATCH)
        np.testing.assert_allclose(theirs, ours, rtol=1e-10)
    runner.close()
    ours, theirs = _params(network), _twin_params(model)
    moved = 0
    for key, value in ours.items():
        scale = max(float(np.abs(value).max()), 1e-300)
        np.testing.assert_allclose(theirs[key], value, rtol=1e-8, atol=1e-10 * scale,
                                   err_msg=key)
        moved += not np.allclose(value, start[key], rtol=1e-6, atol=1e-9)
    assert moved == len(ours)                 # every parameter took the steps


def test_the_twins_outputs_decode_to_darkbps_detections_and_map(tmp_path):
    rng = np.random.default_rng(8)
    network = parse_network(CFG).initialize(3, np.float64)
    model = Twin(network)
    # With the initial rolling statistics (0, 1) the heads' inputs reach 1e20 (boxes of
    # infinite size); one training pass with torch's momentum 1 leaves a batch's own.
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(rng.random((8, *network.input_shape))))
    for (index, name), tensor in model.tensors.items():
        getattr(network.layers[index], name)[...] = tensor.detach().numpy()
    paths = []
    for i, size in enumerate([(128, 128), (160, 120), (100, 140)]):  # letterboxed or not
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path)
        paths.append(str(path))
    ours = [image["detections"] for image in
            detect_files(network, paths, thresh=MAP_THRESH, hier=0, nms=NMS)]
    theirs = twin_detect(model, network, paths, MAP_THRESH, NMS)
    # Truths where darkbp found something, shifted a little (IoU > .5 with some detections,
    # so that the score is not 0), plus one of a random class anywhere.
    truths = []
    for found in ours:
        picked = [found[i] for i in rng.choice(len(found), 3, replace=False)]
        boxes = [np.add(d["box"], rng.uniform(-0.01, 0.01, 4)) for d in picked]
        truths.append((np.array(boxes + [rng.uniform(0.2, 0.6, 4)], np.float32),
                       np.array([d["class"] for d in picked] + [int(rng.integers(10))])))
    assert [len(d) for d in theirs] == [len(d) for d in ours]
    assert sum(len(d) for d in ours) > 100
    for a, b in zip(ours, theirs):
        assert [d["class"] for d in a] == [d["class"] for d in b]
        np.testing.assert_allclose([d["box"] + [d["confidence"]] for d in b],
                                   [d["box"] + [d["confidence"]] for d in a], rtol=1e-6)
    scores = []
    for found in (ours, theirs):
        scorer = Scorer(10)
        for image, (boxes, classes) in zip(found, truths):
            scorer.add(*as_arrays(image, MAP_THRESH), boxes, classes)
        scores.append(scorer.result().map50)
    assert scores[0] > 0, scores
    assert scores[1] == scores[0]
