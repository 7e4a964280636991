"""The training state beside the checkpoints, `NAME_last.state.npz`: what `--resume` needs.

`.weights` files hold the parameters as Darknet does; they cannot hold the
momentum buffers, the EMA accumulators or the counters. One `.npz` holds all of
it, parameters included, so that it can never disagree with itself:

    version, batch_num, epoch, seed, elapsed, ema_decay      counters and options
    net.<layer>.<name>                                       parameters and state
    sgd.<layer>.<name>, ema.<layer>.<name>, ema.t            optimiser and EMA
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkbp.atomic import atomic_write
from darkbp.ema import EMA
from darkbp.errors import DarkbpError
from darkbp.network import Network
from darkbp.sgd import SGD

STATE_VERSION = 1


@dataclass
class Progress:
    """Where a run is, and the options that must not change when it resumes."""

    batch_num: int = 0
    epoch: int = 0
    seed: int = 0
    elapsed: float = 0.0     # training wall time over all runs
    ema_decay: float = 0.0


def _arrays(network: Network):
    for i, layer in enumerate(network.layers):
        for name in (*layer.param_names, *layer.state_names):
            yield f"net.{i}.{name}", i, name, getattr(layer, name)


def save_state(path: Path, network: Network, sgd: SGD, ema: EMA | None,
               progress: Progress) -> None:
    """Write the state atomically."""
    state = {"version": np.array(STATE_VERSION), "batch_num": np.array(progress.batch_num),
             "epoch": np.array(progress.epoch), "seed": np.array(progress.seed),
             "elapsed": np.array(progress.elapsed), "ema_decay": np.array(progress.ema_decay)}
    state.update({key: value for key, _, _, value in _arrays(network)})
    state.update(sgd.state_dict())
    if ema is not None:
        state.update(ema.state_dict())
    atomic_write(path, lambda f: np.savez(f, **state))


def load_state(path: Path, network: Network, sgd: SGD, ema: EMA | None,
               expected: Progress) -> Progress:
    """Restore a saved state into `network`, `sgd` and `ema`; its progress.

    `expected` gives the seed and EMA decay of this run: a state saved with
    others is an error, as is one of another network or version.
    """
    if not path.exists():
        raise DarkbpError(f"nothing to resume: {path} does not exist")
    try:
        with np.load(path) as npz:
            state = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as error:
        raise DarkbpError(f"cannot read the training state: {error}", file=str(path)) from None
    if int(state.get("version", -1)) != STATE_VERSION:
        raise DarkbpError("not a darkbp training state of this version", file=str(path))
    if int(state["seed"]) != expected.seed or float(state["ema_decay"]) != expected.ema_decay:
        raise DarkbpError(f"the run in {path.parent} used --seed {int(state['seed'])} and --ema "
                          f"{float(state['ema_decay']):g}; resume with the same options",
                          file=str(path))
    for key, i, name, target in _arrays(network):
        if key not in state or state[key].shape != target.shape:
            raise DarkbpError(f"the training state does not fit {network.file} "
                              f"(layer {i} {name})", file=str(path))
        target[...] = state[key]
    sgd.load_state_dict(state)
    if ema is not None:
        ema.load_state_dict(state)
    return Progress(batch_num=int(state["batch_num"]), epoch=int(state["epoch"]),
                    seed=expected.seed, elapsed=float(state["elapsed"]),
                    ema_decay=expected.ema_decay)
