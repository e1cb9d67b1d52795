"""Load model weights from our snapshots, the official CCNet snapshots or ImageNet backbones.

Accepted: a path or an in-memory dict; a bare state_dict or one held under 'model' or
'state_dict'; keys with any number of 'module.' prefixes (DataParallel / DDP). The ImageNet
classifier 'fc.*' is ignored, and so are absent BatchNorm 'num_batches_tracked' counters.
"""
import pickle
import zipfile

import torch

from utils.errors import UserError

_PREFIX = "module."
_SHOWN = 6


def read_checkpoint(path):
    """torch.load a checkpoint file on the CPU, tensors and plain containers only; a missing or
    unreadable file is a UserError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}") from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read checkpoint {path}: {reason}") from None


def _state_dict(obj, source):
    """The state_dict inside a loaded checkpoint, 'module.' prefixes stripped."""
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


def _summary(keys):
    """'a, b, c ... (+N more)' for a one-line report."""
    shown = ", ".join(keys[:_SHOWN])
    return shown if len(keys) <= _SHOWN else f"{shown} ... (+{len(keys) - _SHOWN} more)"


def load_model(model, path_or_state_dict, strict=False):
    """Copy the matching tensors of a checkpoint into ``model``; returns (missing, unexpected).

    missing: model keys the checkpoint lacks (num_batches_tracked excepted); unexpected:
    checkpoint keys the model lacks, then keys whose shape does not fit (those are skipped).
    Each non-empty list is printed on one line. strict=True raises UserError instead when a
    model key is missing or its shape does not fit.
    """
    if isinstance(path_or_state_dict, dict):
        source, loaded = "the given state_dict", path_or_state_dict
    else:
        source, loaded = str(path_or_state_dict), read_checkpoint(path_or_state_dict)
    state = {k: v for k, v in _state_dict(loaded, source).items() if not k.startswith("fc.")}
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
