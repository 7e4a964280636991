"""AlexeyAB's CPU training, reproduced with darkbp's layers, to read the alexeyab-new fixtures.

    steps = cpu_replay(Golden("alexeyab-new/sam"))     # {1: arrays after step 1, 5: ..., }
    steps.losses, steps.forward_step5

The fixtures of ../shared/darknet-golden/alexeyab-new/ were written by AlexeyAB's CPU build,
whose training composes the layers' gradients unlike its GPU build (AlexeyAB/darknet at the
fixtures' commit):

1. forward_network (src/network.c) zeroes a layer's delta before its forward only when
   l.train is set, and only the make_*_layer functions that take a `train` argument set it
   ([convolutional], [maxpool] and [local_avgpool], [batchnorm], [shortcut], [crnn],
   [conv_lstm]). Every other layer's delta ([avgpool], [route], [sam], [scale_channels],
   [upsample], [reorg], ...) keeps what it held, and the gradients of the next step are added
   to it: from the second step on, such a layer passes back the sum of the gradients of
   every step so far. (forward_network_gpu zeroes every delta.)
2. A [convolutional]'s backward writes its input's delta with col2im_cpu_ext (src/col2im.c),
   which first sets it to zero: what a later reader of that input added before is lost.
   backward_sam_layer likewise assigns the delta of its `from` layer. (The GPU build adds:
   cudnnConvolutionBackwardData with beta = 1, and backward_sam_kernel's +=.)

darkbp computes the gradient of the loss, as AlexeyAB's GPU build does. `cpu_replay` runs the
fixture driver's five steps with darkbp's own layers (forward, backward kernels, SGD), their
gradients composed as AlexeyAB's CPU composes them; reproducing the fixtures' weights with it
shows that each piece is AlexeyAB's and that only the composition differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from darkbp.layers.base import INPUT
from darkbp.passes import Noise, Pass
from darkbp.sgd import SGD
from tests.golden import LEARNING_RATE, STEPS, Golden, arrays

# The layer types whose AlexeyAB make_*_layer sets l.train (their delta is zeroed each step).
ZEROED = frozenset({"convolutional", "maxpool", "local_avgpool", "batchnorm", "shortcut"})
# The layer types whose AlexeyAB CPU backward assigns (not adds) their inputs' deltas: the
# convolution all of them (col2im_cpu_ext), [sam] its `from` input (the second source).
ASSIGNS = {"convolutional": (0,), "sam": (1,)}


@dataclass
class CpuRun:
    """What AlexeyAB's CPU training computes, by cpu_replay."""

    losses: list[float] = field(default_factory=list)
    train_forward: np.ndarray | None = None          # step 1's output, (N, outputs)
    step_weights: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    forward_step5: np.ndarray | None = None


def cpu_replay(fixture: Golden, steps: int = STEPS,
               rate: Callable[[int], float] = lambda step: LEARNING_RATE,
               zeroed: frozenset = ZEROED) -> CpuRun:
    """The fixture driver's run (Golden.replay) with AlexeyAB's CPU deltas: each layer's
    delta persists between steps unless its type is ZEROED, and is assigned instead of added
    to where ASSIGNS says. The last layer must be the cost ([softmax]: its delta is set).
    Step k updates at rate(k): AlexeyAB's train_network counts the batch into *net.seen
    before update_network asks get_current_rate, so step k's is that of batch k.
    `zeroed`: the layer types whose delta is cleared each step (another set than ZEROED
    shows what a persisting delta changes)."""
    network = fixture.network()
    config = network.config
    x, truth = fixture.input, fixture.truth
    sgd = SGD(network.layers, config.momentum, config.decay, config.batch)
    cost = network.layers[-1]
    delta: dict[int, np.ndarray] = {}
    run = CpuRun()
    for step in range(1, steps + 1):
        for layer in network.layers[:-1]:
            if layer.type in zeroed or layer.index not in delta:
                delta[layer.index] = np.zeros((len(x),) + layer.out_shape, network.dtype)
        output = network.run(x, Pass.training(Noise(0, step - 1)))[-1]
        if step == 1:
            run.train_forward = output.reshape(len(x), -1)
        run.losses.append(float(network.cost(truth).sum()))
        delta[cost.sources[0]] += cost.input_grad(truth).reshape(delta[cost.sources[0]].shape)
        for layer in reversed(network.layers[:-1]):
            need_dx = any(source != INPUT for source in layer.sources)
            dxs = layer.backward(delta[layer.index].copy(), need_dx)   # backward may write dy
            if not need_dx:
                continue
            for k, (source, dx) in enumerate(zip(layer.sources,
                                                 [dxs] if layer.arity == 1 else dxs)):
                if source == INPUT:
                    continue
                if k in ASSIGNS.get(layer.type, ()):
                    delta[source] = np.array(dx, network.dtype)
                else:
                    delta[source] += dx
        sgd.step(rate(step))
        if step in (1, 5):
            run.step_weights[step] = arrays(network)
    run.forward_step5 = network.forward(x)
    return run
