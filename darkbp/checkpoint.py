"""The training state beside the checkpoints, `NAME_last.state.npz`: what `--resume` needs.

`.weights` files hold the parameters as Darknet does; they cannot hold the
momentum buffers, the EMA accumulators or the counters. One `.npz` holds all of
it, parameters included, so that it can never disagree with itself:

    format, darkbp, network, batch, seed, ema_decay, data,   what the run is (RunIdentity)
    optimizer
    batch_num, epoch, elapsed, losses, lrs                   where it is (Progress)
    net.<layer>.<name>                                       parameters and state
    sgd.<layer>.<name>, adam.m.<layer>.<name>,               optimiser (darkbp.sgd,
    adam.v.<layer>.<name>, adam.t                            darkbp.adam) and EMA
    ema.<layer>.<name>, ema.t

A state is resumed only by the run it belongs to: the same darkbp version, the
same network (layer by layer, as Darknet's table prints it), batch, seed, EMA decay,
optimiser (SGD or Adam) and training data (its name and size); anything else is
refused with one line naming the difference. The zip members carry CRC-32s, so a
truncated or bit-flipped file is refused too.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from darkbp import __version__
from darkbp.atomic import atomic_write
from darkbp.ema import EMA
from darkbp.errors import DarkbpError
from darkbp.network import Network
from darkbp.sgd import SGD

STATE_FORMAT = 2
_KEYS = ("format", "network", "batch", "seed", "ema_decay", "batch_num", "epoch", "elapsed",
         "losses", "lrs")


@dataclass(frozen=True)
class RunIdentity:
    """What must not change when a run resumes."""

    network: tuple[str, ...]    # one line per layer: Darknet's table line and its activation
    batch: int                  # images per update, all subdivisions
    seed: int
    ema_decay: float
    data: str = ""              # the training data: its name and number of images
    optimizer: str = "sgd"      # "sgd", or "adam" ([net] adam=1)
    version: str = __version__

    @classmethod
    def of(cls, network: Network, batch: int, seed: int, ema_decay: float,
           data: str = "") -> "RunIdentity":
        return cls(describe(network), batch, seed, ema_decay, data,
                   "adam" if network.config.adam else "sgd")


@dataclass
class Progress:
    """Where a run is."""

    batch_num: int = 0
    epoch: int = 0              # epochs completed
    elapsed: float = 0.0        # training wall time over all runs
    # The loss and learning rate of each update of the epoch under way, so that a run
    # resumed mid-epoch reports and logs the whole epoch's losses.
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)


def describe(network: Network) -> tuple[str, ...]:
    """Each layer as one line: its Darknet table line (type, sizes, shapes) and activation."""
    lines = []
    for layer in network.layers:
        line = " ".join(layer.darknet_line().split())
        activation = getattr(layer, "activation", None)
        lines.append(line + (f", {activation}" if isinstance(activation, str) else ""))
    return tuple(lines)


def _arrays(network: Network):
    for i, layer in enumerate(network.layers):
        for name in (*layer.param_names, *layer.state_names):
            yield f"net.{i}.{name}", i, name, getattr(layer, name)


def save_state(path: Path, network: Network, sgd: SGD, ema: EMA | None,
               identity: RunIdentity, progress: Progress) -> None:
    """Write the state atomically."""
    state = {"format": np.array(STATE_FORMAT), "darkbp": np.array(identity.version),
             "network": np.array(identity.network), "batch": np.array(identity.batch),
             "seed": np.array(identity.seed), "ema_decay": np.array(identity.ema_decay),
             "data": np.array(identity.data), "optimizer": np.array(identity.optimizer),
             "batch_num": np.array(progress.batch_num), "epoch": np.array(progress.epoch),
             "elapsed": np.array(progress.elapsed),
             "losses": np.array(progress.losses, np.float64),
             "lrs": np.array(progress.lrs, np.float64)}
    state.update({key: value for key, _, _, value in _arrays(network)})
    state.update(sgd.state_dict())
    if ema is not None:
        state.update(ema.state_dict())
    atomic_write(path, lambda f: np.savez(f, **state))


def load_state(path: Path, network: Network, sgd: SGD, ema: EMA | None,
               identity: RunIdentity) -> Progress:
    """Restore a saved state into `network`, `sgd` and `ema`; its progress.

    A state of another run than `identity` says is a DarkbpError naming the first
    difference, as is a file that is missing, truncated or corrupt.
    """
    if not path.exists():
        raise DarkbpError(f"nothing to resume: {path} does not exist")
    state = _read(path)
    _check_identity(state, identity, network.file, path)
    for key, i, name, target in _arrays(network):
        if key not in state or state[key].shape != target.shape:
            raise DarkbpError(f"the training state does not fit {network.file} "
                              f"(layer {i} {name})", file=str(path))
        target[...] = state[key]
    sgd.load_state_dict(state)
    if ema is not None:
        ema.load_state_dict(state)
    return Progress(batch_num=int(state["batch_num"]), epoch=int(state["epoch"]),
                    elapsed=float(state["elapsed"]), losses=state["losses"].tolist(),
                    lrs=state["lrs"].tolist())


def _read(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file, each read whole, so that the zip's CRC-32s are checked."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except OSError as error:
        raise DarkbpError(f"cannot read the training state: {error.strerror or error}",
                          file=str(path)) from None
    # A damaged zip or .npy header surfaces as any of these, depending on the damaged byte.
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError, SyntaxError,
            UnicodeDecodeError, NotImplementedError) as error:
        raise DarkbpError(f"the training state is truncated or corrupt ({error}); nothing "
                          "was changed: resume from a copy, or start again with --weights "
                          "and one of the .weights files", file=str(path)) from None


def _check_identity(state: dict, expected: RunIdentity, cfg: str, path: Path) -> None:
    """A DarkbpError naming the first way the state's run differs from `expected`."""
    def refuse(message: str):
        return DarkbpError(message + "; resume with what the run used, or train in another "
                                     "--out", file=str(path))
    if "darkbp" not in state:       # format 1 kept its number in "version"
        raise refuse(f"written by an earlier darkbp (state format {int(state['version'])})"
                     if "version" in state else "not a darkbp training state")
    version = str(state["darkbp"])
    if version != expected.version:
        raise refuse(f"written by darkbp {version}, this is darkbp {expected.version}")
    missing = [key for key in _KEYS if key not in state]
    if missing or int(state["format"]) != STATE_FORMAT:
        raise refuse(f"not a darkbp {version} training state (no {', '.join(missing)})"
                     if missing else f"state format {int(state['format'])}, not {STATE_FORMAT}")
    network = tuple(str(line) for line in state["network"])
    batch, seed, decay = int(state["batch"]), int(state["seed"]), float(state["ema_decay"])
    if network != expected.network:
        raise refuse(_network_difference(network, expected.network, cfg))
    if batch != expected.batch:
        raise refuse(f"trained with batch={batch}, {cfg} has batch={expected.batch}")
    if seed != expected.seed:
        raise refuse(f"trained with --seed {seed}, not {expected.seed}")
    if decay != expected.ema_decay:
        raise refuse(f"trained with --ema {decay:g}, not {expected.ema_decay:g}")
    # (a state written before the data was recorded has none to compare)
    data = str(state["data"]) if "data" in state else expected.data
    if data != expected.data:
        raise refuse(f"trained on {data}, not on {expected.data}")
    # (a state written before the optimiser was recorded is an SGD run's)
    optimizer = str(state["optimizer"]) if "optimizer" in state else "sgd"
    if optimizer != expected.optimizer:
        raise refuse(f"trained with adam={int(optimizer == 'adam')}, {cfg} has "
                     f"adam={int(expected.optimizer == 'adam')}")


def _network_difference(saved: tuple[str, ...], now: tuple[str, ...], cfg: str) -> str:
    for i, (old, new) in enumerate(zip(saved, now)):
        if old != new:
            return f"written for another network: its layer {i} is '{old}', {cfg}'s is '{new}'"
    return f"written for another network: it has {len(saved)} layers, {cfg} has {len(now)}"
