"""Stopping a training run cleanly on a cluster's signals, and requeueing it under SLURM.

SIGUSR1 is SLURM's warning before the time limit (``sbatch --signal=USR1@120``); SIGTERM comes
with preemption, ``scancel`` and the time limit itself. The handlers only record the signal.
train.py adds the records to the all_reduce it already does each iteration for the loss, so every
process learns in the same iteration that one of them was signalled: all finish that iteration,
take part in writing the training state, wait until rank 0 has written it, and stop. Then, on rank 0:
- after SIGUSR1 under SLURM (SLURM_JOB_ID set), ``scontrol requeue $SLURM_JOB_ID`` puts the job back
  in the queue; started again with ``--resume auto`` it continues from last.pth;
- after SIGTERM the state is only saved: the scheduler requeues a preempted job by its own policy.

Exit status: 0 after the requeue; otherwise 128 + the signal's number, as a shell reports a process
that a signal ended, so that a scheduler or a script sees that the run has not finished: 143 after
SIGTERM, 138 after SIGUSR1 outside SLURM or when the requeue failed.

DataLoader workers ignore both signals (ignore_stop_signals, their worker_init_fn): SLURM signals
every process of a step, and a worker that a signal ended would end the run without a save.
"""
import os
import signal
import subprocess

import torch

from utils.errors import warn

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


def ignore_stop_signals(worker_id=None):
    """Ignore SIGUSR1 and SIGTERM in this process (a DataLoader worker_init_fn)."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


class StopRequests:
    """SIGUSR1 and SIGTERM received while this context is entered (the previous handlers come back on exit).

    flags() holds this process's record as a tensor to add to a collective, agree() reads the sum of
    every process's, and finish() ends the run that agree() stopped.
    """

    def __init__(self):
        self.received = dict.fromkeys(STOP_SIGNALS, False)
        self.previous = {}
        self.stopped_by = None

    def __enter__(self):
        for number in STOP_SIGNALS:
            self.previous[number] = signal.signal(number, self._record)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _record(self, number, frame):
        self.received[number] = True

    def requested(self):
        """Whether this process has received SIGUSR1 or SIGTERM."""
        return any(self.received.values())

    def flags(self, device):
        """float32 (2,) on device: 1 where this process received SIGUSR1, SIGTERM."""
        return torch.tensor([float(self.received[number]) for number in STOP_SIGNALS], dtype=torch.float32,
                            device=device)

    def agree(self, totals):
        """Whether to stop, from `totals`, flags() summed over the processes: yes when any process was
        signalled, by SIGTERM if any process received it (then nothing is requeued), else by SIGUSR1."""
        usr1, term = totals.tolist()
        if term or usr1:
            self.stopped_by = signal.SIGTERM if term else signal.SIGUSR1
        return self.stopped_by is not None

    def finish(self, is_main):
        """After the state is saved: requeue the SLURM job after SIGUSR1 (rank 0); returns the exit status."""
        if self.stopped_by == signal.SIGUSR1 and "SLURM_JOB_ID" in os.environ:
            if not is_main or requeue(os.environ["SLURM_JOB_ID"]):
                return 0
        return 128 + self.stopped_by


def requeue(job_id):
    """Run ``scontrol requeue job_id``; True when it succeeded, else a warning and False."""
    try:
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        reason = str(e)
    else:
        if done.returncode == 0:
            print(f"requeued SLURM job {job_id}", flush=True)
            return True
        reason = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()[0]
    warn(f"scontrol requeue {job_id} failed ({reason}): the training state is saved, resubmit the job to continue")
    return False
