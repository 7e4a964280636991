"""`darkbp export`: onnxruntime running the exported model computes what network.forward does.

Every shipped cfg, every runnable layer contract cfg and the cfgs below (every layer type,
every activation, Darknet's max-pool paddings) with trained weights (SGD steps on random
data, the rolling statistics of batch norm bias-corrected as Darknet's bn_eval fixture is),
and every Darknet golden cfg with Darknet's own trained step5.weights: saved as a .weights
file, exported by the CLI with a fixed batch 1 and with a dynamic batch, run by onnxruntime
on batches of 1 and 5. The model's output equals network.forward (evaluation mode) to 1e-5,
absolute; so does every layer's output (each layer's tensor, which the model annotates with
darkbp's shape, is made a model output), to 1e-5 of its largest value.

The references are darkbp's NumPy forward and, for the golden cfgs, Darknet's own inference
(forward_step5.f32); the model is onnxruntime's reading of the ONNX operators, not ours.
"""

from __future__ import annotations

import re
import sys
import time

import numpy as np
import onnx
import onnxruntime
import pytest
from click.testing import CliRunner

import darkbp
from darkbp.cli import main
from darkbp.export import DEFAULT_OPSET, MIN_OPSET, Graph
from darkbp.network import Network, parse_network
from darkbp.ops.activations import ACTIVATIONS
from darkbp.passes import Noise, Pass
from darkbp.sgd import SGD
from darkbp.weights import save_weights
from tests.conftest import CFG_DIR, ROOT
from tests.golden import GOLDEN as GOLDEN_DIR, Golden

ATOL = 1e-5                       # on the model's output (probabilities for a [softmax])
STEPS, LEARNING_RATE = 3, 0.01    # training before the export: moves every parameter
LAYER_CFGS = ROOT / "tests" / "layer_cfgs"
# Every fixture of ../shared/darknet-golden/ (its README's table); darkbp runs them all.
GOLDEN = ("activations", "avgpool", "bn_leaky", "cost_sse", "cost_sse_nosoftmax", "crop",
          "dropout", "dropout_logistic", "grouped", "lenet", "local", "route")

# Each activation after a convolution and after a connected layer.
ACTIVATIONS_CFG = ("[net]\nwidth=5\nheight=4\nchannels=2\n"
                   + "".join(f"[convolutional]\nfilters=3\nsize=3\npad=1\nactivation={name}\n"
                             for name in ACTIVATIONS)
                   + "".join(f"[connected]\noutput=6\nactivation={name}\n"
                             for name in ACTIVATIONS)
                   + "[softmax]\n")

OWN_CFGS = {
    "activations": ACTIVATIONS_CFG,
    # Darknet's paddings: windows from -padding/2, the last one hanging over the input.
    "maxpool": """
        [net]
        width=9
        height=7
        channels=2

        # 9 x 7 -> 5 x 4: padding 2 (size - 1), windows from -1
        [maxpool]
        size=3
        stride=2

        [convolutional]
        filters=3
        size=1
        activation=linear

        # padding 1: the last window of each row and column hangs over the edge
        [maxpool]
        size=2
        stride=1

        # no padding: 5 x 4 -> 3 x 2
        [maxpool]
        size=3
        stride=1
        padding=0

        [convolutional]
        filters=4
        size=3
        pad=1
        activation=leaky

        # padding 2: windows from -1, 3 x 2 -> 2 x 2
        [maxpool]
        size=2
        stride=2
        padding=2

        [connected]
        output=5
        activation=linear

        [softmax]
        """,
    # Every other layer type on a non-square image, each reading the one before it.
    "layers": """
        [net]
        width=10
        height=6
        channels=3

        # 0: 6 x 4 x 12, explicit padding, even kernel, groups and batch norm
        [convolutional]
        filters=12
        size=2
        stride=2
        padding=1
        groups=3
        batch_normalize=1
        activation=leaky

        # 1
        [batchnorm]

        # 2: 12 x 8 x 12
        [upsample]
        stride=2
        scale=0.5

        # 3: 6 x 4 x 48
        [reorg]
        stride=2

        # 4: 6 x 4 x 16
        [convolutional]
        filters=16
        size=3
        pad=1
        groups=8
        activation=selu

        # 5: + layer 2 read every 2nd pixel, into channels 0-11 of 16
        [shortcut]
        from=-3
        alpha=0.7
        beta=0.4
        activation=tanh

        # 6: 6 x 4 x 3
        [local]
        filters=3
        size=3
        pad=1
        activation=elu

        # 7: 6 x 4 x 19
        [route]
        layers=-1,-2

        # 8: 4 x 3 x 19, from row 0 and column 1
        [crop]
        crop_height=3
        crop_width=4

        [dropout]
        probability=.2

        [avgpool]

        [connected]
        output=8
        batch_normalize=1
        activation=loggy

        [softmax]
        groups=2
        temperature=0.7
        """,
}


def _all(path, attribute: str) -> bool:
    return all(getattr(layer, attribute) for layer in parse_network(path).layers)


def _classifier(path) -> bool:
    return _all(path, "trainable") and not parse_network(path).heads


# `trained` trains these classifiers (one "output"); the detectors' cfgs, whose models have
# an output per head, are exported in tests/test_export_detection.py.
SHIPPED = sorted(path for path in CFG_DIR.glob("*.cfg") if _classifier(path))
CONTRACT = sorted(path for path in LAYER_CFGS.glob("*.cfg") if _classifier(path))
TABLE_ONLY = sorted(path for path in LAYER_CFGS.glob("*.cfg") if not _all(path, "runnable"))


# ---------------------------------------------------------------------- helpers
def trained(cfg, seed: int = 0) -> Network:
    """The cfg's network after STEPS SGD steps on random images and one-hot truths; the
    rolling statistics then divided by 1 − 0.99^STEPS (their bias from a zero start)."""
    network = parse_network(cfg).initialize(seed, np.float32)
    rng = np.random.default_rng(seed)
    images = 6
    x = rng.random((images,) + network.input_shape, dtype=np.float32)
    truth = np.eye(network.outputs, dtype=np.float32)[rng.integers(0, network.outputs, images)]
    config = network.config
    sgd = SGD(network.layers, config.momentum, config.decay, images)
    for step in range(STEPS):
        network.forward(x, Pass.training(Noise(seed, step)))
        network.backward(truth)
        sgd.step(LEARNING_RATE)
    for layer in network.layers:
        for name in layer.state_names:
            getattr(layer, name)[...] /= 1 - 0.99 ** STEPS
    return network


def export(tmp_path, cfg, weights, *options) -> onnx.ModelProto:
    """`darkbp export CFG WEIGHTS -o ... OPTIONS` through the CLI; the model it wrote."""
    path = tmp_path / f"net{len(list(tmp_path.glob('*.onnx')))}.onnx"
    result = CliRunner().invoke(main, ["export", str(cfg), str(weights), "-o", str(path),
                                       *options])
    assert result.exit_code == 0, result.output
    return onnx.load(path)


def session(model: onnx.ModelProto, layer_outputs: bool = True):
    """An onnxruntime session of the model, every layer's tensor an output too."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if layer_outputs:
        model.graph.output.extend(model.graph.value_info)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def compare(network: Network, model: onnx.ModelProto, x: np.ndarray) -> float:
    """Run the model on x with onnxruntime; assert its output and every layer's equal
    darkbp's; the largest |difference| of the output."""
    run = session(model)
    feed = x.reshape((len(x),) + tuple(run.get_inputs()[0].shape[1:]))
    results = dict(zip((o.name for o in run.get_outputs()), run.run(None, {"input": feed})))
    expected = network.forward(x)
    np.testing.assert_allclose(results["output"], expected, rtol=0, atol=ATOL)
    layers = network.run(x, keep=True)
    for name, value in results.items():
        if name == "output":
            continue
        layer = network.layers[int(name.split(".", 1)[0])]      # "3.maxpool/MaxPool"
        ours = np.asarray(layers[layer.index])
        finite = np.abs(ours[np.isfinite(ours)])
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
        np.testing.assert_allclose(value, ours, rtol=0, atol=ATOL * scale,
                                   err_msg=f"layer {layer.index} [{layer.header}]")
    finite = np.isfinite(expected)                  # −∞ where a max-pool window is outside
    return float(np.abs(results["output"][finite] - expected[finite]).max(initial=0))


def check_batches(tmp_path, network: Network, cfg, weights, x: np.ndarray) -> float:
    """Fixed batch 1 and dynamic batch exports, run on x[:1] and on x (5 images)."""
    fixed = export(tmp_path, cfg, weights, "--batch", "1")
    dynamic = export(tmp_path, cfg, weights)                  # dynamic is the default
    return max(compare(network, fixed, x[:1]), compare(network, dynamic, x[:1]),
               compare(network, dynamic, x))


def images(network: Network, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((5,) + network.input_shape, dtype=np.float32)


def write(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.cfg"
    path.write_text("\n".join(line.strip() for line in text.strip().splitlines()) + "\n")
    return path


def trained_files(tmp_path, cfg) -> tuple[Network, str]:
    """A trained network of the cfg, and its .weights file."""
    network = trained(cfg)
    weights = tmp_path / "trained.weights"
    save_weights(weights, network.layers, seen=STEPS * 6)
    return network, str(weights)


# ---------------------------------------------------------------------- equality
@pytest.mark.parametrize("cfg", SHIPPED + CONTRACT, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_onnxruntime_equals_forward(tmp_path, cfg):
    network, weights = trained_files(tmp_path, cfg)
    check_batches(tmp_path, network, cfg, weights, images(network))


@pytest.mark.parametrize("name", sorted(OWN_CFGS))
def test_onnxruntime_equals_forward_on_every_layer_type(tmp_path, name):
    cfg = write(tmp_path, name, OWN_CFGS[name])
    network, weights = trained_files(tmp_path, cfg)
    check_batches(tmp_path, network, cfg, weights, images(network))


@pytest.mark.parametrize("name", GOLDEN)
def test_onnxruntime_equals_forward_with_darknets_trained_weights(tmp_path, name):
    fixture = Golden(name)
    files = ["step5.weights"] + (["bn_eval.weights"] if name == "bn_leaky" else [])
    for weights in files:          # bn_eval: step 5 with unbiased rolling statistics
        network = fixture.network(weights)
        check_batches(tmp_path, network, fixture.cfg, fixture.folder / weights,
                      fixture.input[:5])


@pytest.mark.parametrize("name", [n for n in GOLDEN if n != "bn_leaky"])
def test_onnxruntime_equals_darknets_own_inference(tmp_path, name):
    # Darknet's network_predict after 5 steps. (bn_leaky: Darknet's inference normalises
    # by sqrt(var) + 1e-6, darkbp's by sqrt(var + 1e-5), SPEC section 3.)
    fixture = Golden(name)
    model = export(tmp_path, fixture.cfg, fixture.folder / "step5.weights")
    run = session(model, layer_outputs=False)
    output = run.run(None, {"input": fixture.input})[0]
    np.testing.assert_allclose(output, fixture.f32("forward_step5.f32"), rtol=0, atol=ATOL)


def test_onnxruntime_equals_alexeyabs_weighted_shortcut_inference(tmp_path):
    # AlexeyAB's own inference after 5 steps of alexeyab-new/shortcut_weighted: three
    # weighted shortcuts (per_feature relu, per_channel softmax, two `from` layers), their
    # weights trained by AlexeyAB.
    fixture = Golden("alexeyab-new/shortcut_weighted")
    model = export(tmp_path, fixture.cfg, fixture.folder / "step5.weights")
    output = session(model, layer_outputs=False).run(None, {"input": fixture.input})[0]
    np.testing.assert_allclose(output, fixture.f32("forward_step5.f32"), rtol=0, atol=ATOL)
    check_batches(tmp_path, fixture.network("step5.weights"), fixture.cfg,
                  fixture.folder / "step5.weights", fixture.input[:5])


def test_weighted_shortcuts_of_spread_weights_export(tmp_path):
    # The contract cfg's shortcuts (each normalisation, per_feature and per_channel, `from`
    # layers of other sizes) with weights far apart, some below relu's floor, so that every
    # factor and its channel matter.
    cfg = LAYER_CFGS / "shortcut_weighted.cfg"
    network = trained(cfg)
    rng = np.random.default_rng(5)
    for layer in network.layers:
        if "weights" in layer.param_names and layer.type == "shortcut":
            layer.weights[...] = rng.uniform(-1.0, 2.0, layer.weights.shape)
    weights = tmp_path / "spread.weights"
    save_weights(weights, network.layers, seen=0)
    check_batches(tmp_path, network, cfg, weights, images(network))


# The detection heads' fixtures (DETECTION.md in ../shared/darknet-golden/): the three heads'
# nets, the yolo inference runs on photos, and the copies of their cfgs. The three nets' export
# is tested in tests/test_export_detection.py (and decoded there on yolo_detect's dog.jpg);
# they are named here so that a new folder is noticed.
DETECTION_FIXTURES = {"yolo", "region", "detection", "yolo_detect", "cfg_det"}


def test_every_golden_fixture_is_exported():
    Golden("lenet")                          # fails in CI (skips elsewhere) without ../shared/
    folders = {path.parent.name for path in GOLDEN_DIR.glob("*/*.cfg")}
    assert folders - {"cfg"} - DETECTION_FIXTURES == set(GOLDEN)
    assert DETECTION_FIXTURES <= folders


def test_the_outputs_compared_are_not_saturated(tmp_path):
    # Probabilities of 0 and 1 would agree whatever the model computed before the softmax.
    for cfg in SHIPPED + CONTRACT + [write(tmp_path, n, t) for n, t in OWN_CFGS.items()]:
        network = trained(cfg)
        p = network.forward(images(network))
        assert np.mean((p > 1e-4) & (p < 1 - 1e-4)) > 0.5, cfg


# The oldest opset, and 21 (onnx 1.16's newest); every other test runs the default, 17.
@pytest.mark.parametrize("opset", [MIN_OPSET, 21])
@pytest.mark.parametrize("name", ["activations", "layers"])
def test_other_opsets_compute_the_same(tmp_path, opset, name):
    cfg = write(tmp_path, name, OWN_CFGS[name])
    network, weights = trained_files(tmp_path, cfg)
    model = export(tmp_path, cfg, weights, "--opset", str(opset))
    assert [o.version for o in model.opset_import] == [opset]
    compare(network, model, images(network))


def activation_model(name: str, shape, opset: int = DEFAULT_OPSET):
    """A model of one activation's nodes of an input of `shape`, as export.Graph writes them."""
    graph = Graph("activation.cfg", opset)
    graph.node("Identity", [graph.activation(name, "input")], output="output")
    value = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, list(shape))
    out = onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, list(shape))
    model = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, name, [value], [out], graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model, full_check=True)
    return model


# Every kink and step (integers for stair), both sides of each, and a wide range.
ACTIVATION_INPUTS = np.concatenate([
    np.arange(-6, 6.01, 0.125), [-4, 4, -2, -1, 1, 0, -0.0, 1e-7, -1e-7],
    np.random.default_rng(0).normal(0, 8, 2000), [-60, 60]]).astype(np.float32)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_nodes_equal_darkbps_activation(name):
    # normalize_channels*: per pixel across axis 1, 34 channels of 2 x 31 pixels
    x = ACTIVATION_INPUTS.reshape(2, 34, 31) if ACTIVATIONS[name].channels else ACTIVATION_INPUTS
    y = session(activation_model(name, x.shape), layer_outputs=False).run(None, {"input": x})[0]
    # onnxruntime's exp, sigmoid and tanh round differently from NumPy's: a few float32 ulps
    np.testing.assert_allclose(y, ACTIVATIONS[name].forward(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("opset", [17, 18])
def test_mish_is_opset_18s_mish_node_and_composed_before(opset):
    x = ACTIVATION_INPUTS
    model = activation_model("mish", x.shape, opset)
    ops = [node.op_type for node in model.graph.node]
    assert ops == (["Mish", "Identity"] if opset >= 18 else ["Softplus", "Tanh", "Mul", "Identity"])
    y = session(model, layer_outputs=False).run(None, {"input": x})[0]
    np.testing.assert_allclose(y, ACTIVATIONS["mish"].forward(x), rtol=1e-6, atol=1e-6)


def test_a_maxpool_window_outside_the_input_gives_minus_infinity(tmp_path):
    # padding 2 with size 1: the first and last rows and columns of windows lie outside.
    cfg = write(tmp_path, "outside", """
        [net]
        width=4
        height=3
        channels=2

        [maxpool]
        size=1
        stride=1
        padding=2

        [cost]
        """)
    network = parse_network(cfg).initialize(0, np.float32)
    weights = tmp_path / "empty.weights"
    save_weights(weights, network.layers, seen=0)
    x = images(network)
    model = export(tmp_path, cfg, weights)
    compare(network, model, x)
    output = session(model, layer_outputs=False).run(None, {"input": x})[0].reshape(5, 2, 5, 6)
    assert np.all(output[:, :, 0] == -np.inf) and np.all(output[:, :, :, -1] == -np.inf)
    np.testing.assert_array_equal(output[:, :, 1:4, 1:5], x)


# ---------------------------------------------------------------------- the model's description
def test_names_shapes_metadata_and_checker(tmp_path):
    cfg = CFG_DIR / "mnist.cfg"
    network = parse_network(cfg).initialize(0, np.float32)
    weights = tmp_path / "mnist.weights"
    save_weights(weights, network.layers, seen=0)
    for options, batch in (([], "N"), (["--batch", "3"], 3)):
        path = tmp_path / "mnist.onnx"
        result = CliRunner().invoke(main, ["export", str(cfg), str(weights), "-o", str(path),
                                           *options])
        assert result.exit_code == 0, result.output
        assert re.fullmatch(rf"{re.escape(str(path))}: .*mnist\.cfg with .*mnist\.weights, "
                            rf"ONNX opset {DEFAULT_OPSET}, .*\n", result.output)
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(path)
        assert [o.version for o in model.opset_import] == [DEFAULT_OPSET]
        assert {p.key: p.value for p in model.metadata_props} == {
            "cfg": "mnist.cfg", "darkbp_version": darkbp.__version__, "weights": "mnist.weights"}
        assert model.producer_name == "darkbp"

        def dims(value):
            return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

        assert [(v.name, dims(v)) for v in model.graph.input] == [("input", [batch, 1, 28, 28])]
        assert [(v.name, dims(v)) for v in model.graph.output] == [("output", [batch, 10])]
        # Every layer's output, annotated with darkbp's shape (LeNet: no layer shares a tensor)
        shapes = [dims(v) for v in model.graph.value_info]
        assert shapes == [[batch, *layer.out_shape] for layer in network.layers]


def test_a_network_of_vectors_takes_vectors(tmp_path):
    cfg = LAYER_CFGS / "cost_L1.cfg"                        # [net] inputs=7
    network, weights = trained_files(tmp_path, cfg)
    model = export(tmp_path, cfg, weights)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 7]
    compare(network, model, images(network).reshape(5, 7))


# ---------------------------------------------------------------------- refusals
def _refused(tmp_path, cfg, weights, *options):
    path = tmp_path / "out.onnx"
    path.write_bytes(b"an older model")
    result = CliRunner().invoke(main, ["export", str(cfg), str(weights), "-o", str(path),
                                       *options])
    assert result.exit_code == 2, result.output
    *warnings, error = result.output.splitlines()            # the cfg's warnings, then the error
    assert "Traceback" not in result.output and all(": warning: " in w for w in warnings)
    assert path.read_bytes() == b"an older model"          # untouched
    return error + "\n"


@pytest.mark.parametrize("cfg", TABLE_ONLY, ids=lambda p: p.name)
def test_table_only_sections_are_refused_naming_section_and_line(tmp_path, cfg):
    header = f"[{cfg.stem}]"                     # rnn.cfg's first table-only section: [rnn]
    line = cfg.read_text().splitlines().index(header) + 1
    weights = tmp_path / "wrong.weights"
    weights.write_bytes(b"not read")               # refused before the weights are read
    output = _refused(tmp_path, cfg, weights)
    assert output == (f"darkbp: error: {cfg}:{line}: {header} can not be exported to ONNX: "
                      "darkbp only tabulates this section, it does not run it\n")


def test_a_tree_softmax_is_refused(tmp_path):
    cfg = write(tmp_path, "tree", "[net]\ninputs=4\n[connected]\noutput=3\n[softmax]\n"
                                  "tree=data/9k.tree\n")
    weights = tmp_path / "wrong.weights"
    weights.write_bytes(b"not read")
    output = _refused(tmp_path, cfg, weights)
    assert output.startswith(f"darkbp: error: {cfg}:5: [softmax] can not be exported")


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, onnx.defs.onnx_opset_version() + 1])
def test_unsupported_opsets_are_refused(tmp_path, opset):
    network = parse_network(CFG_DIR / "mnist.cfg").initialize(0, np.float32)
    save_weights(tmp_path / "w.weights", network.layers, seen=0)
    output = _refused(tmp_path, CFG_DIR / "mnist.cfg", tmp_path / "w.weights",
                      "--opset", str(opset))
    assert output == (f"darkbp: error: opset {opset} is not supported: darkbp exports opsets "
                      f"{MIN_OPSET} to {onnx.defs.onnx_opset_version()} (the newest your onnx "
                      "package knows)\n")


def test_without_onnx_one_line_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)         # `import onnx` raises ImportError
    weights = tmp_path / "w.weights"
    weights.write_bytes(b"not read")
    output = _refused(tmp_path, CFG_DIR / "mnist.cfg", weights)
    assert output == ('darkbp: error: ONNX export needs the onnx package: '
                      'pip install "darkbp[onnx]"\n')


@pytest.mark.parametrize("batch", ["0", "-2", "some"])
def test_a_bad_batch_is_a_usage_error(tmp_path, batch):
    result = CliRunner().invoke(main, ["export", str(CFG_DIR / "mnist.cfg"), __file__, "-o",
                                       str(tmp_path / "x.onnx"), "--batch", batch])
    assert result.exit_code == 2
    assert "neither a batch size of at least 1 nor 'dynamic'" in result.output


def test_export_time_and_size_of_the_largest_shipped_cfg(tmp_path):
    # Measured (pytest -s prints it), not asserted beyond the size: the README quotes it.
    largest = max(SHIPPED, key=lambda path: sum(layer.parameter_count()
                                                for layer in parse_network(path).layers))
    network = parse_network(largest).initialize(0, np.float32)
    weights = tmp_path / "w.weights"
    save_weights(weights, network.layers, seen=0)
    start = time.perf_counter()
    model = export(tmp_path, largest, weights)
    seconds = time.perf_counter() - start
    size = model.ByteSize()
    floats = sum(a.size for layer in network.layers for a in
                 (getattr(layer, n) for n in layer.weights_order()))
    assert 4 * floats <= size < 4 * floats + 100_000      # the parameters and a little graph
    print(f"{largest.name}: {floats:,} floats, export {seconds:.2f} s, {size:,} bytes")


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    # The README's commands and its five lines, as written there.
    network = parse_network(CFG_DIR / "mnist.cfg").initialize(0, np.float32)
    save_weights(tmp_path / "mnist.weights", network.layers, seen=0)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", str(CFG_DIR / "mnist.cfg"), "mnist.weights",
                                       "-o", "mnist.onnx"])
    assert result.exit_code == 0, result.output
    section = re.search(r"^## Export to ONNX\n(.*?)(?=^## )", (ROOT / "README.md").read_text(),
                        re.S | re.M)
    readme = re.findall(r"^```python\n(.*?)^```$", section[1], re.S | re.M)[0]   # a classifier
    assert len(readme.strip().splitlines()) == 5
    assert "darkbp export cfg/mnist.cfg backup/mnist_final.weights -o mnist.onnx" in section[1]
    exec(readme, {})
    images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    assert capsys.readouterr().out == f"{network.forward(images).argmax(axis=1)}\n"
