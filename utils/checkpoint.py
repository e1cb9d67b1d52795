"""Checkpoints on disk: model weights in and out, and the full training state of train.py.

Weights load from our snapshots, upstream's CCNet snapshots, mmsegmentation's files or ImageNet
backbones: a path or an in-memory dict; a bare state_dict or one held under 'model' or 'state_dict';
keys with any number of 'module.' prefixes (DataParallel / DDP). The ImageNet classifier 'fc.*' is
ignored, and so are absent BatchNorm 'num_batches_tracked' counters.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers. A checkpoint
written by mmengine's Runner also holds its message hub, whose logged history is mmengine's
HistoryBuffer of numpy arrays and methods fetched by getattr; those globals are read as the inert
placeholder ``Unread`` (UNREAD_GLOBALS), so that no code of mmengine or numpy runs and the weights and
meta load; nothing here reads the message hub.

Every write goes to a temporary file in the target's directory, is flushed to disk and then
renamed over the target, so a kill at any moment leaves either the previous file or the new one.
The training state is stored as tensors and plain Python types, so ``torch.load(weights_only=True)``
reads it.
"""
import json
import os
import pickle
import random
import struct
import zipfile

import numpy as np
import torch

from utils.errors import UserError
from utils.runtime import all_gather_objects

_PREFIX = "module."
_SHOWN = 6
STATE_KEYS = ("model", "optimizer", "scaler", "iteration", "rng", "args")  # and "best", since validation
# Flags that decide the model (its tensors, its forward, how its logits are resized): --resume refuses a
# change of any of them.
MODEL_FLAGS = ["model", "num_classes", "recurrence", "norm", "depth", "align_corners"]
# Flags that never change a resumed run's arithmetic: where files go, what is logged and how often
# the state is saved, the validation (it leaves the training as it is), the launcher's local rank,
# how many processes load the data (each sample carries its augmentation seed), and the flags a
# resumed run does not read (--restore-from, --not-restore-last, --start-iters).
# A change of any other flag is allowed and reported.
UNTRACKED_FLAGS = ["resume", "snapshot_dir", "log_dir", "print_frequency", "save_pred_every", "save_num_images",
                   "save_state_every", "eval_every", "eval_list", "eval_whole", "eval_scales", "eval_flip",
                   "local_rank", "num_workers", "restore_from", "not_restore_last", "start_iters"]


class Unread:
    """What a global of UNREAD_GLOBALS unpickles to: nothing of the object it stood for, no code of its own."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _unread(*args, **kwargs):
    """The call of a global of UNREAD_GLOBALS (numpy's array and dtype reconstruction, getattr): an Unread."""
    return Unread()


# The globals of mmengine's message hub (torch's weights_only unpickler refuses them), by their pickled names
# (pairs of object and name: torch >= 2.6).
UNREAD_GLOBALS = [(Unread, "mmengine.logging.history_buffer.HistoryBuffer"), (_unread, "builtins.getattr"),
                  (Unread, "numpy.ndarray"), (_unread, "numpy.dtype"),
                  (_unread, "numpy._core.multiarray._reconstruct"), (_unread, "numpy.core.multiarray._reconstruct"),
                  (_unread, "numpy._core.multiarray.scalar"), (_unread, "numpy.core.multiarray.scalar")]


def read_checkpoint(path):
    """torch.load a checkpoint file on the CPU, tensors and plain containers only (the globals of
    UNREAD_GLOBALS as placeholders); a missing, unreadable or truncated file is a UserError naming it."""
    try:
        with torch.serialization.safe_globals(UNREAD_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}") from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    # What the reader of torch's legacy (non-zip) format raises on a file cut short in its header or a string.
    except (IndexError, ValueError, struct.error) as e:
        raise UserError(f"cannot read checkpoint {path}: truncated or corrupt ({_first_line(e)})") from None


def _first_line(error):
    """The first line of an exception's message, else its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def state_dict_of(obj, source):
    """The state_dict inside a loaded checkpoint (bare, or under 'state_dict' or 'model'), 'module.'
    prefixes stripped; ``source`` names the checkpoint in the UserError raised when there is none."""
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f"{source} does not hold a state_dict of tensors")
    state = {}
    for key, value in obj.items():
        while key.startswith(_PREFIX):
            key = key[len(_PREFIX):]
        state[key] = value
    return state


def read_state_dict(path):
    """The model state_dict of a checkpoint file (see the module docstring), 'module.' prefixes stripped."""
    return state_dict_of(read_checkpoint(path), str(path))


def _summary(keys):
    """'a, b, c ... (+N more)' for a one-line report."""
    shown = ", ".join(keys[:_SHOWN])
    return shown if len(keys) <= _SHOWN else f"{shown} ... (+{len(keys) - _SHOWN} more)"


def load_model(model, path_or_state_dict, strict=False, source=None):
    """Copy the matching tensors of a checkpoint into ``model``; returns (missing, unexpected).

    missing: model keys the checkpoint lacks (num_batches_tracked excepted); unexpected:
    checkpoint keys the model lacks, then keys whose shape does not fit (those are skipped).
    Each non-empty list is printed on one line. strict=True raises UserError instead when a
    model key is missing or its shape does not fit. ``source`` names the checkpoint in the messages
    (default: its path, or "the given state_dict").
    """
    if isinstance(path_or_state_dict, dict):
        source, loaded = source or "the given state_dict", path_or_state_dict
    else:
        source, loaded = source or str(path_or_state_dict), read_checkpoint(path_or_state_dict)
    state = {k: v for k, v in state_dict_of(loaded, source).items() if not k.startswith("fc.")}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
    if strict and (missing or mismatched):
        problems = [f"{len(missing)} model keys missing ({_summary(missing)})" if missing else "",
                    f"{len(mismatched)} keys of another shape ({_summary(shapes)})" if mismatched else ""]
        raise UserError(f"{source} does not fit the model: " + "; ".join(p for p in problems if p))
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in mismatched}, strict=False)
    if missing:
        print(f"{source}: {len(missing)} model keys not in the checkpoint, left as they were: {_summary(missing)}")
    if extra or mismatched:
        print(f"{source}: {len(extra) + len(mismatched)} checkpoint keys not loaded "
              f"(not in the model, or of another shape): {_summary(extra + shapes)}")
    return missing, extra + mismatched


def _write_atomic(path, write):
    """write(binary file) into a temporary file beside `path`, flushed to disk, then renamed over `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj, path):
    """torch.save(obj, path) through a temporary file and a rename."""
    _write_atomic(path, lambda f: torch.save(obj, f))


def save_json_atomic(obj, path):
    """json.dumps(obj) into `path` through a temporary file and a rename."""
    _write_atomic(path, lambda f: f.write(json.dumps(obj).encode()))


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


def save_state(path, model, optimizer, scaler, iteration, rng_states, args, best=None):
    """Write the training state after `iteration` finished steps; rng_states has one entry per rank;
    best: the validation's best so far (utils.validation), None before any."""
    save_atomic({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "iteration": iteration,
        "rng": rng_states,
        "args": vars(args),
        "best": best,
    }, path)


def changed_flags(stored, args, defaults):
    """The flags of `args` that differ from `stored` (the vars() of the run that wrote a training
    state) as (model flags, other flags), each a list of '--name STORED (now NOW)' in alphabetical
    order.

    UNTRACKED_FLAGS are left out. A flag the stored run did not have (added since) is compared with
    its value in `defaults` (a dict of the parser's defaults): runs from before a flag behaved as its
    default does.
    """
    model, other = [], []
    for name, value in sorted(vars(args).items()):
        before = stored.get(name, defaults.get(name))
        if name in UNTRACKED_FLAGS or before == value:
            continue
        (model if name in MODEL_FLAGS else other).append(f"--{name.replace('_', '-')} {before} (now {value})")
    return model, other


def read_state(path):
    """The training state save_state() wrote at `path`; a missing, unreadable or foreign file is a UserError."""
    state = read_checkpoint(path)
    if (not isinstance(state, dict) or any(key not in state for key in STATE_KEYS)
            or not isinstance(state["args"], dict)):
        raise UserError(f"--resume {path}: not a training state written by train.py "
                        "(use --restore-from for model weights)")
    return state


def resume_flags(state, path, args, defaults, report=True):
    """Check the flags `args` of a run that resumes the training state `state` read from `path`
    (`defaults`: the parser's defaults, see changed_flags).

    A model flag left unset (None: to be told by the weights) takes the stored run's value. A state
    written for another model (MODEL_FLAGS) is a UserError naming each differing flag; every other
    changed flag is printed on a line of its own when `report` is set, since the continuation is then
    no longer the uninterrupted run.
    """
    for name in MODEL_FLAGS:
        if getattr(args, name, False) is None:
            setattr(args, name, state["args"].get(name, defaults.get(name)))
    model, other = changed_flags(state["args"], args, defaults)
    if model:
        raise UserError(f"--resume {path}: written for another model, with {', '.join(model)}")
    for change in other if report else ():
        print(f"--resume {path}: {change}: the continuation is no longer the uninterrupted run")


def names_no_checkpoint(path):
    """Whether --restore-from `path` means training from scratch: '' or 'none' (any case)."""
    return path.strip().lower() in ("", "none")


def resume_source(resume, snapshot_dir, restore_from, report=True):
    """The training state a run continues from, None for a new run: --resume's path, or for
    ``--resume auto`` <snapshot_dir>/last.pth where it exists (else None, the run starts from
    --restore-from), which `report` tells in one line.

    Every process must see the same: a last.pth that some processes find and others do not (a
    snapshot folder on a disk of one node) is a UserError.
    """
    if resume != "auto":
        return resume
    path = os.path.join(snapshot_dir, "last.pth")
    found = set(all_gather_objects(os.path.exists(path)))
    if len(found) > 1:
        raise UserError(f"--resume auto: some processes find {path} and others do not: "
                        "--snapshot-dir must be a folder that every node shares")
    if report:
        start = "scratch" if names_no_checkpoint(restore_from) else restore_from
        print(f"--resume auto: continuing from {path}" if True in found
              else f"--resume auto: no {path} yet, starting from {start}")
    return path if True in found else None


def restore_state(state, model, optimizer, scaler, rank):
    """Load model, optimizer and scaler from `state` and this rank's random streams; returns the iteration."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    rng_states = state["rng"]
    set_rng_state(rng_states[rank % len(rng_states)])
    return state["iteration"]
