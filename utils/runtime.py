"""Where and how a script runs: processes, devices and the speed modes, shared by every script.

Three ways to run, chosen from the environment and ``--gpu``:
- torchrun, or srun in a SLURM job step of several tasks (utils.launcher): one process per GPU with
  NCCL, or per CPU worker with gloo;
- ``--gpu 0,1,...``: one process, those CUDA devices (DataParallel when there are several);
- neither: one process on cuda:0 when CUDA is present, else on the CPU.
The speed modes are --amp (autocast) and --channels-last.
"""
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from utils.cli import str2bool
from utils.errors import UserError
from utils.launcher import launch_environment


@dataclass
class Runtime:
    """Where this process runs: its device, the GPU ids it drives, its rank among world_size."""
    device: torch.device
    gpu_ids: list = field(default_factory=list)
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def parse_gpu_ids(text):
    """'0,1,2,3' -> [0, 1, 2, 3], checked against the CUDA devices present.

    None, '' and 'None' (upstream's default) mean no --gpu: [].
    """
    if text is None or text.strip().lower() in ("", "none"):
        return []
    try:
        ids = [int(p) for p in text.split(",")]
    except ValueError:
        raise UserError(f"--gpu expects comma-separated GPU ids such as 0,1,2,3, got {text!r}") from None
    if not torch.cuda.is_available():
        raise UserError(f"--gpu {text} was given but CUDA is not available on this machine "
                        "(leave out --gpu to run on the CPU)")
    count = torch.cuda.device_count()
    missing = [i for i in ids if not 0 <= i < count]
    if missing:
        raise UserError(f"--gpu {text}: no GPU with id {missing[0]} (this machine has {count})")
    if len(set(ids)) != len(ids):
        raise UserError(f"--gpu {text} names a GPU twice")
    return ids


def parse_device(text):
    """'cpu', 'cuda' or 'cuda:N' -> torch.device, checked against this machine (UserError otherwise)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"--device {text}: expected cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {text}: expected cpu or cuda[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {text}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {text}: no GPU with index {device.index} "
                            f"(this machine has {torch.cuda.device_count()})")
    return device


def device_name(device):
    """The GPU's name, or the CPU's model and thread count, for benchmark and check reports."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def is_distributed():
    """Whether a torch.distributed process group is running."""
    return dist.is_available() and dist.is_initialized()


def add_launcher_arguments(parser):
    """Accept the ``--local-rank N`` (or ``--local_rank N``) that torch.distributed.launch appends.

    The launcher also sets LOCAL_RANK in the environment, which setup() reads, so the value is not used.
    """
    parser.add_argument("--local-rank", "--local_rank", type=int, default=None,
                        help="appended by torch.distributed.launch; torchrun and srun need no flag: the rank, "
                             "world size and rendezvous come from their environment (default: from the environment)")


def setup(gpu):
    """Start the run described by the launcher's environment (utils.launcher) and --gpu; returns a Runtime.

    A process of a distributed run drives the GPU of its local rank among those --gpu names (all
    visible ones by default), or under SLURM the one GPU it sees when SLURM bound each task to one.
    The process's GPU becomes the current CUDA device, so that nothing starts a context on GPU 0
    and code that launches on the current device (cuDNN, custom kernels) uses the right GPU.
    """
    launch = launch_environment()
    if launch.world_size > 1:
        if torch.cuda.is_available():
            ids = parse_gpu_ids(gpu) or list(range(torch.cuda.device_count()))
            index = 0 if launch.launcher == "slurm" and len(ids) == 1 else launch.local_rank
            if index >= len(ids):
                raise UserError(f"{launch.launcher} started local rank {launch.local_rank} but only {len(ids)} "
                                "GPU(s) are usable")
            device = torch.device("cuda", ids[index])
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            parse_gpu_ids(gpu)
            device, backend = torch.device("cpu"), "gloo"
        dist.init_process_group(backend=backend, init_method=launch.init_method, rank=launch.rank,
                                world_size=launch.world_size)
        return Runtime(device, [device.index] if device.type == "cuda" else [], launch.rank, launch.world_size)
    ids = parse_gpu_ids(gpu)
    if not ids and torch.cuda.is_available():
        ids = [0]
    if not ids:
        return Runtime(torch.device("cpu"))
    device = torch.device("cuda", ids[0])
    torch.cuda.set_device(device)
    return Runtime(device, ids)


# Seconds a gloo run waits after ending its process group, before the interpreter shuts down (teardown).
GLOO_RELEASE_SECONDS = 0.2


def teardown():
    """End the process group, if one was started."""
    if is_distributed():
        gloo = dist.get_backend() == "gloo"
        dist.destroy_process_group()
        if gloo:
            # DistributedDataParallel keeps the group, and gloo's worker threads, alive to the end of the
            # process. A worker that still releases a finished collective's tensor then needs the GIL while
            # the interpreter shuts down, and the process aborts (SIGABRT, "terminate called without an
            # active exception"; pytorch/pytorch#179291); the pause lets the workers finish first.
            time.sleep(GLOO_RELEASE_SECONDS)


def all_reduce_sum(tensor):
    """Sum a tensor in place over all processes (a no-op outside torch.distributed)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(device):
    """Return once every process has called this (at once outside torch.distributed): an all_reduce on
    `device` whose result the host reads, so that it blocks under NCCL as under gloo."""
    all_reduce_sum(torch.zeros(1, device=device)).item()


def all_gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...] gathered from every process ([obj] outside torch.distributed)."""
    if not is_distributed():
        return [obj]
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def amp_dtype(device):
    """bfloat16 where the hardware computes in it (CPUs, CUDA GPUs of compute capability 8.0 and
    later, ROCm GPUs), else float16 (with a GradScaler in training).

    Not torch.cuda.is_bf16_supported(), which by default counts emulated bfloat16 as supported:
    a V100 or a 2080 Ti would then train slowly in emulated bfloat16.
    """
    if device.type == "cuda" and not (torch.version.hip or torch.cuda.get_device_capability(device) >= (8, 0)):
        return torch.float16
    return torch.bfloat16


def autocast(device, enabled):
    """torch.autocast on device in amp_dtype(device) when enabled, else a null context."""
    return torch.autocast(device.type, dtype=amp_dtype(device)) if enabled else nullcontext()


def add_speed_arguments(parser):
    """--amp and --channels-last, the speed modes that autocast() and memory_format() apply."""
    parser.add_argument("--amp", type=str2bool, nargs="?", const=True, default=False,
                        help="mixed precision: bf16 autocast where the hardware has it (CPUs, GPUs from Ampere on), "
                             "else fp16, with a GradScaler when training")
    parser.add_argument("--channels-last", type=str2bool, nargs="?", const=True, default=False,
                        help="NHWC memory format for the network and images")


def memory_format(channels_last):
    """torch.channels_last (NHWC) when asked for, else the contiguous NCHW format."""
    return torch.channels_last if channels_last else torch.contiguous_format
