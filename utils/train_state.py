"""The full training state on disk: written atomically, read back, random streams restored.

A write goes to a temporary file in the target's directory, is flushed to disk and then renamed
over the target, so a kill at any moment leaves either the previous file or the new one.
Everything is stored as tensors and plain Python types, so ``torch.load(weights_only=True)`` reads it.
"""
import os
import random

import numpy as np
import torch

from utils.checkpoint import read_checkpoint
from utils.errors import UserError

STATE_KEYS = ("model", "optimizer", "scaler", "iteration", "rng", "args")
MODEL_FLAGS = ("model", "num_classes")  # the flags that decide the model's tensors


def save_atomic(obj, path):
    """torch.save(obj, path) through a temporary file and a rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state():
    """This process's random states: python, numpy, torch CPU and every visible CUDA device."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    """Inverse of rng_state(); CUDA states are restored only when the same devices are visible."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path, model, optimizer, scaler, iteration, rng_states, args):
    """Write the training state after `iteration` finished steps; rng_states has one entry per rank."""
    save_atomic({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "iteration": iteration,
        "rng": rng_states,
        "args": vars(args),
    }, path)


def load_state(path, args):
    """Read a state written by save_state() for the model that `args` (--model, --num-classes) builds.

    A missing, unreadable or foreign file, or one of another model, is a UserError.
    """
    state = read_checkpoint(path)
    if (not isinstance(state, dict) or any(key not in state for key in STATE_KEYS)
            or not isinstance(state["args"], dict)):
        raise UserError(f"--resume {path}: not a training state written by train.py "
                        "(use --restore-from for model weights)")
    differ = [f"--{name.replace('_', '-')} {state['args'].get(name)} (now {getattr(args, name)})"
              for name in MODEL_FLAGS if state["args"].get(name) != getattr(args, name)]
    if differ:
        raise UserError(f"--resume {path}: written for another model, with {', '.join(differ)}")
    return state


def restore_state(state, model, optimizer, scaler, rank):
    """Load model, optimizer and scaler from `state` and this rank's random streams; returns the iteration."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    rng_states = state["rng"]
    set_rng_state(rng_states[rank % len(rng_states)])
    return state["iteration"]
