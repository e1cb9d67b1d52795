"""Which process this is, among how many, and where they meet: read from the launcher's environment.

- torchrun (or torch.distributed.launch) sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and
  MASTER_PORT. Where WORLD_SIZE is set it decides, so torchrun inside a SLURM allocation works as
  it does anywhere.
- Otherwise a task that srun started (srun sets SLURM_STEP_NUM_TASKS, the batch script has no such
  variable) in a step of several tasks: rank SLURM_PROCID, world size SLURM_STEP_NUM_TASKS, local
  rank SLURM_LOCALID, meeting on the first host of SLURM_JOB_NODELIST at slurm_port(SLURM_JOB_ID),
  or at MASTER_ADDR / MASTER_PORT where those are set. The compressed node list ("node[01-04,07]")
  is expanded by submitit (facebookincubator/submitit), imported only here, only under SLURM.
- Otherwise one process. A script run straight from an sbatch script of several tasks (SLURM_NTASKS
  above 1, no srun) gets a warning: it trains alone, while the other tasks were meant to join it.
"""
import os
from dataclasses import dataclass

from utils.errors import UserError, warn

SLURM_PORTS = (10000, 20000)  # (first port, how many): below Linux's ephemeral ports, 32768 and up


@dataclass(frozen=True)
class Launch:
    """This process's place in the run: launcher "torchrun", "slurm" or "none"; rank among world_size;
    local_rank among the processes of its node; init_method for torch.distributed.init_process_group."""
    launcher: str = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    init_method: str = "env://"


def _integer(name, default=None):
    """int(os.environ[name]) (default when unset); a value that is not an integer is a UserError."""
    text = os.environ.get(name)
    if text is None:
        if default is None:
            raise UserError(f"the launcher set no {name}")
        return default
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name}={text!r} is not an integer") from None


def slurm_port(job_id):
    """The rendezvous port of SLURM job `job_id`: 10000 + job_id mod 20000, the same on every task of
    the job and different for any two jobs whose ids are less than 20000 apart."""
    first, count = SLURM_PORTS
    return first + int(job_id) % count


def first_slurm_host():
    """The first host of SLURM_JOB_NODELIST, its compressed form ("gpu[03-04,07]") expanded by submitit."""
    try:
        from submitit.slurm.slurm import SlurmJobEnvironment, SlurmParseException
    except ImportError:
        raise UserError("started by srun: reading SLURM's node list needs submitit (pip install submitit)") from None
    try:
        return SlurmJobEnvironment().hostnames[0]
    except SlurmParseException:
        raise UserError(f"cannot read SLURM_JOB_NODELIST={os.environ['SLURM_JOB_NODELIST']!r}") from None


def launch_environment():
    """The Launch described by torchrun's variables, else by srun's, else a single process."""
    if "WORLD_SIZE" in os.environ:
        world_size = _integer("WORLD_SIZE")
        if world_size == 1:
            return Launch("torchrun")
        return Launch("torchrun", _integer("RANK"), world_size, _integer("LOCAL_RANK", 0))
    if "SLURM_STEP_NUM_TASKS" not in os.environ:
        if _integer("SLURM_NTASKS", 1) > 1:
            warn(f"SLURM allocated {os.environ['SLURM_NTASKS']} tasks but this process was not started by srun: "
                 "it runs alone (start it with `srun python ...` to run one process per task)")
        return Launch()
    world_size = _integer("SLURM_STEP_NUM_TASKS")
    if world_size == 1:
        return Launch("slurm")
    address = os.environ.get("MASTER_ADDR") or first_slurm_host()
    port = _integer("MASTER_PORT", 0) or slurm_port(_integer("SLURM_JOB_ID"))
    host = f"[{address}]" if ":" in address else address  # an IPv6 address in a URL
    return Launch("slurm", _integer("SLURM_PROCID"), world_size, _integer("SLURM_LOCALID", 0), f"tcp://{host}:{port}")
