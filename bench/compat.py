"""darkbp against Darknet's own numbers: the README's "Compatibility with Darknet" table.

    python bench/compat.py                  # the Markdown table and the differences, on stdout
    python bench/compat.py --json compat.json

Darknet's numbers are ../shared/darknet-golden/ (its README.md says how they were made:
pjreddie/darknet f6afaab on the CPU, batch 8, lr 0.02, momentum 0.9, decay 5e-4). For each
of its 12 fixtures darkbp loads Darknet's init.weights and repeats Darknet's run, with
Darknet's recorded dropout draws (dropout, dropout_logistic) and crop windows (crop), and
every figure is max |darkbp − Darknet| / max |Darknet| over the tensor:

  inference            network_predict before training (forward.f32)
  training forward     the network output of the first training pass (train_forward.f32)
  loss                 |darkbp − Darknet| / |Darknet| of the summed cost, max over steps 1..5
  weights, step k      max over every array a .weights file holds (biases, weights, scales,
                       rolling statistics) after k SGD steps (step1/step5.weights)
  after step 5         inference after the 5 steps (forward_step5.f32)
  reads step1.weights  a fresh darkbp net loading Darknet's step1.weights, inference
                       (forward_step1.f32)
  writes .weights      darkbp loads init.weights and step5.weights and writes them back
                       (seen 0 and 40): identical bytes or not

This script shares the tests' harness (tests/golden.py: Golden, Golden.replay, relative,
arrays, DropoutDraws, CropDraws; the repository root is put on sys.path for that), so the
table measures exactly what tests/test_golden.py and tests/test_layer_*.py assert, with
their tolerances (tests/test_golden.py: 1e-6 forward and loss, 2e-6 weights): a figure in
bold is beyond them. For the fixtures where darkbp deliberately differs (bn_leaky,
dropout_logistic, cost_sse, cost_sse_nosoftmax) it then prints the measured difference, the
reason, and what the tests' transcriptions of Darknet's own rule give against Darknet's
numbers (the helpers of tests/test_ops_batchnorm.py, test_layer_dropout.py and
test_layer_cost.py, imported). "Darknet reading darkbp's files" cannot be re-run here (no
Darknet build): that line is stated from darknet-golden/README.md's measurement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))           # `tests` (the harness) next to `darkbp`

import pytest  # noqa: E402  (the harness's monkeypatching, as the tests use it)

from darkbp.layers.dropout import DropoutLayer  # noqa: E402
from darkbp.weights import save_weights  # noqa: E402
from tests.golden import GOLDEN, CropDraws, DropoutDraws, Golden, arrays, relative  # noqa: E402
from tests.test_golden import FORWARD_TOL, LOSS_TOL, WEIGHTS_TOL  # noqa: E402

# (fixture, noise factory for Golden.replay: Darknet's recorded draws, or None)
FIXTURES = [
    ("lenet", None),
    ("bn_leaky", None),
    ("grouped", None),
    ("activations", None),
    ("avgpool", None),
    ("route", None),
    ("dropout", DropoutDraws.recorded),
    ("dropout_logistic", DropoutDraws.recorded),
    ("cost_sse", None),
    ("cost_sse_nosoftmax", None),
    ("crop", CropDraws.recorded),
    ("local", None),
]
DIFFERS = {"bn_leaky": 1, "dropout_logistic": 2, "cost_sse": 3, "cost_sse_nosoftmax": 4}
SEEN = {"init.weights": 0, "step5.weights": 40}

# column key, header, tolerance of the tests
COLUMNS = [
    ("inference", "inference", FORWARD_TOL),
    ("training_forward", "training forward", FORWARD_TOL),
    ("loss", "loss, steps 1–5", LOSS_TOL),
    ("weights_step1", "weights, step 1", WEIGHTS_TOL),
    ("weights_step5", "weights, step 5", WEIGHTS_TOL),
    ("inference_step5", "inference after step 5", FORWARD_TOL),
    ("reads_step1", "reads step1.weights", FORWARD_TOL),
]


# --- measuring -------------------------------------------------------------------------------

def loss_difference(ours, theirs) -> float:
    """max over steps of |ours − theirs| / |theirs|, on the summed cost (net_cost)."""
    return max(abs(o - t) / abs(t) for (o, _), (t, _) in zip(ours, theirs, strict=True))


def weights_difference(ours: dict, theirs: dict) -> tuple[float, str]:
    """(max over tensors of relative(ours, theirs), the tensor where it is largest)."""
    assert ours.keys() == theirs.keys(), (ours.keys(), theirs.keys())
    key = max(theirs, key=lambda k: relative(ours[k], theirs[k]))
    return relative(ours[key], theirs[key]), key


def updates(after: dict, before: dict) -> dict:
    return {k: after[k].astype(np.float64) - before[k].astype(np.float64) for k in after}


def round_trip(fixture: Golden, name: str) -> bool:
    """darkbp loads Darknet's file `name` and writes it back: the same bytes?"""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        save_weights(path, fixture.network(name).layers, SEEN[name])
        return path.read_bytes() == (fixture.folder / name).read_bytes()


def measure(fixture: Golden, run) -> dict:
    row = {
        "inference": relative(run.forward, fixture.forward),
        "training_forward": relative(run.train_forward, fixture.f32("train_forward.f32")),
        "loss": loss_difference(run.losses, fixture.losses),
    }
    for step in (1, 5):
        row[f"weights_step{step}"], row[f"weights_step{step}_tensor"] = weights_difference(
            run.step_weights[step], fixture.weights_after(step))
    row["inference_step5"] = relative(run.forward_step5, fixture.f32("forward_step5.f32"))
    row["reads_step1"] = relative(fixture.network("step1.weights").forward(fixture.input),
                                  fixture.f32("forward_step1.f32"))
    row["writes"] = {name: round_trip(fixture, name) for name in SEEN}
    # Darknet's output all exact 0s and 1s (bn_leaky: rolling variance ~0, README "bn_eval"):
    # agreement there says little.
    row["saturated"] = [key for key, reference in (
        ("inference", "forward.f32"), ("training_forward", "train_forward.f32"),
        ("inference_step5", "forward_step5.f32"), ("reads_step1", "forward_step1.f32"))
        if set(np.unique(fixture.f32(reference))) <= {0.0, 1.0}]
    return row


def replay(fixture: Golden, noise, steps: int = 5):
    return fixture.replay(noise=noise(fixture) if noise else None, steps=steps)


# --- the deliberate differences, with Darknet's rule transcribed by the tests ----------------

def bn_leaky_details(fixture: Golden, run) -> dict:
    from tests.test_ops_batchnorm import DarknetBatchnorm

    init = arrays(fixture.network())
    darknet_update = updates(fixture.weights_after(1), init)
    ours_update = updates(run.step_weights[1], init)
    trained = [k for k in darknet_update if not k.endswith(("rolling_mean", "rolling_variance"))
               and np.abs(darknet_update[k]).max() > 0]
    off = {k: relative(ours_update[k], darknet_update[k]) for k in trained}
    rolling = max(relative(run.step_weights[1][k], fixture.weights_after(1)[k])
                  for k in init if k.startswith("0.rolling"))
    details = {
        "training_forward": relative(run.train_forward, fixture.f32("train_forward.f32")),
        "inference_bn_eval": relative(fixture.network("bn_eval.weights").forward(fixture.input),
                                      fixture.f32("forward_bn_eval.f32")),
        "update_step1_off": off,
        "layer0_rolling_statistics_step1": rolling,
    }
    with pytest.MonkeyPatch.context() as monkeypatch:           # Darknet's forward and backward
        DarknetBatchnorm(fixture.batch, "darknet", "M").install(monkeypatch)
        rule = fixture.replay(steps=1)
        details["darknet_rule"] = {
            "training_forward": relative(rule.train_forward, fixture.f32("train_forward.f32")),
            "loss_step1": loss_difference(rule.losses, fixture.losses[:1]),
            "weights_step1": weights_difference(rule.step_weights[1],
                                                fixture.weights_after(1))[0],
            "inference_bn_eval": relative(
                fixture.network("bn_eval.weights").forward(fixture.input),
                fixture.f32("forward_bn_eval.f32")),
            "reads_step1": relative(fixture.network("step1.weights").forward(fixture.input),
                                    fixture.f32("forward_step1.f32")),
        }
    with pytest.MonkeyPatch.context() as monkeypatch:           # darkbp's epsilon, Darknet's 1/M
        DarknetBatchnorm(fixture.batch, "darkbp", "M").install(monkeypatch)
        epsilon = updates(fixture.replay(steps=1).step_weights[1], init)
        details["epsilon_only_update_step1"] = max(
            relative(epsilon[k], darknet_update[k]) for k in trained)
    return details


def dropout_logistic_details(fixture: Golden, run) -> dict:
    from tests.test_layer_dropout import darknet_backward, darknet_in_place_forward

    init = arrays(fixture.network())
    theirs = fixture.weights_after(1)
    darknet_update = updates(theirs, init)
    ours_update = updates(run.step_weights[1], init)
    details = {
        "forward": relative(run.forward, fixture.forward),
        "training_forward": relative(run.train_forward, fixture.f32("train_forward.f32")),
        "loss_step1": loss_difference(run.losses[:1], fixture.losses[:1]),
        "weights_step1": {k: relative(run.step_weights[1][k], theirs[k]) for k in theirs},
        "update_step1": {k: relative(ours_update[k], darknet_update[k]) for k in theirs},
    }
    with pytest.MonkeyPatch.context() as monkeypatch:           # Darknet's in-place dropout
        monkeypatch.setattr(DropoutLayer, "forward", darknet_in_place_forward)
        monkeypatch.setattr(DropoutLayer, "backward", darknet_backward)
        rule = fixture.replay(noise=DropoutDraws.recorded(fixture))
        details["darknet_rule"] = {
            "loss": loss_difference(rule.losses, fixture.losses),
            "weights_step1": weights_difference(rule.step_weights[1], theirs)[0],
            "weights_step5": weights_difference(rule.step_weights[5],
                                                fixture.weights_after(5))[0],
            "inference_step5": relative(rule.forward_step5, fixture.f32("forward_step5.f32")),
        }
    return details


def cost_sse_details(fixture: Golden, run) -> dict:
    from tests.test_layer_cost import softmax_mse, transcribed_step1

    p = fixture.f32("train_forward.f32").astype(np.float64)      # Darknet's softmax output
    t = fixture.truth.astype(np.float64)
    sse, cross_entropy = ((t - p) ** 2).sum(), -(t * np.log(p)).sum()
    theirs = fixture.weights_after(1)
    darknet_rule = transcribed_step1(fixture, lambda p, t: 2 * (p - t))
    exact = transcribed_step1(fixture, softmax_mse)
    init = arrays(fixture.network())
    return {
        "forward": relative(run.forward, fixture.forward),
        "training_forward": relative(run.train_forward, fixture.f32("train_forward.f32")),
        "loss_step1": {"darkbp": run.losses[0][0], "darknet": fixture.losses[0][0],
                       "half_sse": 0.5 * sse, "cross_entropy_plus_sse_over_2":
                       (cross_entropy + sse) / 2},
        "darkbp_vs_half_sse": abs(run.losses[0][0] - 0.5 * sse) / (0.5 * sse),
        "darknet_vs_ce_plus_sse_over_2": abs(fixture.losses[0][0] - (cross_entropy + sse) / 2)
        / ((cross_entropy + sse) / 2),
        "weights_step1": weights_difference(run.step_weights[1], theirs),
        "update_step1": max(relative(a, b) for a, b in zip(
            updates(run.step_weights[1], init).values(), updates(theirs, init).values())),
        "darknet_rule_2x_cross_entropy_vs_darknet": max(
            relative(darknet_rule[k], theirs[k]) for k in darknet_rule),
        "softmax_mse_vs_darkbp": max(relative(run.step_weights[1][k], exact[k]) for k in exact),
    }


def cost_sse_nosoftmax_details(fixture: Golden, run) -> dict:
    doubled = [(2 * cost, 2 * per_image) for cost, per_image in run.losses]
    return {
        "loss": loss_difference(run.losses, fixture.losses),
        "ratio_darknet_over_darkbp": [t / o for (o, _), (t, _) in zip(run.losses, fixture.losses)],
        "twice_darkbp_vs_darknet": loss_difference(doubled, fixture.losses),
        "weights_step5": weights_difference(run.step_weights[5], fixture.weights_after(5))[0],
    }


DETAILS = {"bn_leaky": bn_leaky_details, "dropout_logistic": dropout_logistic_details,
           "cost_sse": cost_sse_details, "cost_sse_nosoftmax": cost_sse_nosoftmax_details}


# --- printing --------------------------------------------------------------------------------

def fmt(x: float) -> str:
    """1.4e-7, 0.055, 1: two significant digits."""
    if x == 0:
        return "0"
    if x >= 0.01:
        return f"{x:.2g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def tol(x: float) -> str:
    """1e-6."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def cell(x: float, tolerance: float, saturated: bool = False) -> str:
    text = fmt(x) if x < tolerance else f"**{fmt(x)}**"
    return text + " (saturated)" if saturated else text


def table(rows: dict) -> list[str]:
    header = ["cfg"] + [title for _, title, _ in COLUMNS] + ["writes .weights"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        mark = f" ({DIFFERS[name]})" if name in DIFFERS else ""
        cells = [f"{name}{mark}"] + [cell(row[key], tol, key in row["saturated"])
                                     for key, _, tol in COLUMNS]
        cells.append("identical" if all(row["writes"].values()) else
                     "**" + ", ".join(n for n, same in row["writes"].items() if not same)
                     + " differ**")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Each figure is max |darkbp − Darknet| / max |Darknet| over the tensor (loss: "
              "over steps 1–5; weights: the worst of every array a .weights file holds). Bold: "
              f"beyond the tests' tolerances ({tol(FORWARD_TOL)} forward and loss, "
              f"{tol(WEIGHTS_TOL)} weights). (n): a deliberate difference, below. "
              "(saturated): Darknet's output is exact 0s and 1s (bn_leaky's rolling variances "
              "are ~0 until trained longer), so agreement there says little; bn_leaky's "
              "meaningful inference is from bn_eval.weights, in (1)."]
    return lines


def differences(details: dict) -> list[str]:
    """The Markdown list of the deliberate differences, measured."""
    b, d, c, n = (details[k] for k in ("bn_leaky", "dropout_logistic", "cost_sse",
                                        "cost_sse_nosoftmax"))
    bn_off = b["update_step1_off"]
    # The convs' every tensor and the BN connected's weights: their gradient passes through a
    # batch norm's backward (tests/test_ops_batchnorm.py); the others' only in later steps.
    through = [k for k in bn_off if k.startswith(("0.", "1.", "3.")) or k == "5.weights"]
    big = [bn_off[k] for k in through]
    rest = [v for k, v in bn_off.items() if k not in through]
    br, dr = b["darknet_rule"], d["darknet_rule"]
    logistic = [k for k in d["update_step1"] if k.startswith(("0.", "2."))]
    return [
        "Where darkbp deliberately differs (measured on the fixtures marked (n) above):",
        "",
        "1. **bn_leaky, batch norm.** Darknet's forward divides by sqrt(var) + 1e-6 (darkbp: "
        "sqrt(var + 1e-5), finite as var → 0), and its backward uses 1/M and sqrt(var + 1e-5) "
        "where its forward has 1/(M − 1) and sqrt(var) + 1e-6: it is not the derivative of "
        "its own forward; darkbp's is.",
        f"   - Measured: training forward {fmt(b['training_forward'])} and inference from "
        f"bn_eval.weights {fmt(b['inference_bn_eval'])} (the epsilon); the step-1 update "
        f"(step 1 − init) of the three convs and of the batch-normalised connected layer's "
        f"weights is {100 * min(big):.1f}–{pct(max(big))} of its largest value off Darknet's "
        f"(the 1/M), the other tensors' at most {fmt(max(rest))}; layer 0's rolling mean and "
        f"variance after step 1 agree to {fmt(b['layer0_rolling_statistics_step1'])} (the same "
        "unbiased variance).",
        f"   - Darknet's rule transcribed (tests/test_ops_batchnorm.py, DarknetBatchnorm) "
        f"against Darknet: training forward {fmt(br['training_forward'])}, loss "
        f"{fmt(br['loss_step1'])}, weights after step 1 {fmt(br['weights_step1'])}, inference "
        f"from bn_eval.weights {fmt(br['inference_bn_eval'])}. With darkbp's epsilon and "
        f"Darknet's 1/M the step-1 update is {fmt(b['epsilon_only_update_step1'])} off "
        "Darknet's: the epsilon is that much of the update's difference, the 1/M the rest.",
        "2. **dropout_logistic, dropout in place.** Darknet drops and rescales in the previous "
        "layer's output, so the logistic layer before the [dropout] gets its derivative "
        "y(1 − y) at the dropped, rescaled output; darkbp at its own output.",
        f"   - Measured: inference {fmt(d['forward'])}, training forward "
        f"{fmt(d['training_forward'])}, loss of step 1 {fmt(d['loss_step1'])}; weights after "
        "step 1 " + ", ".join(f"{k} {fmt(d['weights_step1'][k])}" for k in logistic)
        + " (their update: " + ", ".join(f"{k} {fmt(d['update_step1'][k])}" for k in logistic)
        + f"); the layer after the dropout agrees (4.weights {fmt(d['weights_step1']['4.weights'])}).",
        f"   - Darknet's in-place rule transcribed (tests/test_layer_dropout.py) against "
        f"Darknet: loss {fmt(dr['loss'])}, weights after step 1 {fmt(dr['weights_step1'])} and "
        f"step 5 {fmt(dr['weights_step5'])}, inference after step 5 "
        f"{fmt(dr['inference_step5'])}.",
        "3. **cost_sse, [softmax] then [cost] sse.** Darknet's softmax adds its own "
        "cross-entropy delta and passes the sum back without its Jacobian (its update is 2× "
        "the cross-entropy update) and it reports (cross-entropy + SSE)/2; darkbp trains "
        "softmax + MSE through the Jacobian and reports ½SSE.",
        f"   - Measured: inference {fmt(c['forward'])}, training forward "
        f"{fmt(c['training_forward'])}; step-1 loss darkbp {c['loss_step1']['darkbp']:.6g} = "
        f"½SSE (to {fmt(c['darkbp_vs_half_sse'])}), Darknet {c['loss_step1']['darknet']:.6g} "
        f"= (CE + SSE)/2 of its own softmax output (to "
        f"{fmt(c['darknet_vs_ce_plus_sse_over_2'])}); weights after step 1 "
        f"{fmt(c['weights_step1'][0])} ({c['weights_step1'][1]}).",
        f"   - Step 1 transcribed (tests/test_layer_cost.py): Darknet's 2(p − t) against "
        f"Darknet {fmt(c['darknet_rule_2x_cross_entropy_vs_darknet'])}; softmax + MSE against "
        f"darkbp {fmt(c['softmax_mse_vs_darkbp'])}.",
        "4. **cost_sse_nosoftmax, the reported SSE.** Darknet applies p − t, the gradient of "
        "½Σ(t − p)², but reports Σ(t − p)²; darkbp reports the cost whose gradient it applies.",
        f"   - Measured: loss {fmt(n['loss'])} (Darknet/darkbp = "
        + ", ".join(f"{r:.7f}" for r in n["ratio_darknet_over_darkbp"])
        + f" in steps 1–5; 2 × darkbp's against Darknet's {fmt(n['twice_darkbp_vs_darknet'])}); "
        f"the updates agree (weights after step 5 {fmt(n['weights_step5'])}).",
        "",
        "Darknet reading darkbp's files is not re-run here (no Darknet build): "
        "darknet-golden/README.md measured that Darknet loading the .weights files darkbp "
        "writes reproduces darkbp's inference.",
    ]


def darkbp_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    missing = [name for name, _ in FIXTURES if not (GOLDEN / name).is_dir()]
    if missing:
        print(f"error: Darknet's golden fixtures missing in {GOLDEN}: {', '.join(missing)}",
              file=sys.stderr)
        return 1
    start = time.perf_counter()
    rows, details = {}, {}
    for name, noise in FIXTURES:
        fixture = Golden(name)
        run = replay(fixture, noise)
        rows[name] = measure(fixture, run)
        if name in DETAILS:
            details[name] = DETAILS[name](fixture, run)
    seconds = time.perf_counter() - start
    print("\n".join(table(rows)))
    print()
    print("\n".join(differences(details)))
    print(f"compat.py: {seconds:.1f} s", file=sys.stderr)
    if args.json:
        result = {"darknet": "pjreddie/darknet f6afaabcdf85f77e7aff2ec55c020c0e297c77f9",
                  "darkbp_commit": darkbp_commit(), "golden": str(GOLDEN),
                  "tolerances": {"forward": FORWARD_TOL, "loss": LOSS_TOL,
                                 "weights": WEIGHTS_TOL},
                  "fixtures": rows, "differences": details, "seconds": seconds}
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
