"""Activation checkpointing that leaves a training step's BatchNorm statistics exactly as they were.

torch.utils.checkpoint (non-reentrant) drops the tensors a segment saves for backward and runs the
segment again when backward needs them; the backward itself still runs through the graph of the
first forward, fed with the recomputed tensors. Run again in training mode, a BatchNorm would
update its running statistics a second time and a synchronized one would exchange its statistics
again, with replicas or processes that are no longer in that forward. ``checkpoint`` here gives each
segment a tape: in the forward, ``computed_once`` runs a norm layer's exchange and running-statistics
update and records its result; in the recomputation it replays the recorded result instead, and
``recomputing()`` tells layers without an exchange to leave their running statistics alone. The
gradient through the statistics, cross-replica and cross-process parts included, belongs to the
first forward's graph and so runs once.
"""
import threading

import torch
import torch.utils.checkpoint

_local = threading.local()


def _current_tape():
    return getattr(_local, "tape", None)


class _TapeMode:
    """Context manager making ``tape`` the current tape of this thread, recording or replaying it.

    Re-enterable, since backward with retain_graph=True recomputes a segment once per backward.
    """

    def __init__(self, tape, replay):
        self.tape, self.replay = tape, replay
        self.previous = []

    def __enter__(self):
        self.previous.append(_current_tape())
        _local.tape = self.tape
        self.tape.replaying, self.tape.cursor = self.replay, 0

    def __exit__(self, *exc):
        _local.tape = self.previous.pop()
        self.tape.replaying = False


class _Tape:
    """The results of computed_once in one checkpointed segment, in call order."""

    def __init__(self):
        self.results, self.replaying, self.cursor = [], False, 0

    def once(self, compute):
        if self.replaying:
            self.cursor += 1
            return self.results[self.cursor - 1]
        # Kept as saved: recomputing them would mean running compute() (the exchange) again.
        with torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
            result = compute()
        self.results.append(result)
        return result


def _identity(tensor):
    return tensor


def computed_once(compute):
    """compute(), except in a checkpointed segment's recomputation: there, what it returned in the forward.

    compute's own saved tensors are kept rather than recomputed, so it should save only small ones
    (per-channel statistics).
    """
    tape = _current_tape()
    return compute() if tape is None else tape.once(compute)


def recomputing():
    """Whether this thread is running a checkpointed segment again for backward."""
    tape = _current_tape()
    return tape is not None and tape.replaying


def checkpoint(function, *args):
    """function(*args) as a non-reentrant checkpointed segment, its norm layers' statistics counted once.

    The RNG state is restored for the recomputation, so dropout draws the forward's masks again.
    """
    tape = _Tape()
    return torch.utils.checkpoint.checkpoint(
        function, *args, use_reentrant=False, preserve_rng_state=True,
        context_fn=lambda: (_TapeMode(tape, replay=False), _TapeMode(tape, replay=True)))
