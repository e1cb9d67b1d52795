"""What the benchmarks share: timing, the peak-memory probe, TF32, the device, tables and JSON records.

Times are wall-clock medians with the device synchronized around each call. Peak memory is the CUDA
allocator's peak on a GPU; on the CPU, which has no allocator counter, it is the peak of the tensor
storages allocated inside the call, tracked at the dispatcher (PeakTensorMemory; tensor_peak_mb
measures it on any device).
"""
import contextlib
import datetime
import json
import statistics
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from utils.cli import positive_int  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.runtime import device_name, parse_device  # noqa: E402

NUM_CLASSES = 19
IGNORE_LABEL = 255


def synchronize(device):
    """Wait for the work queued on a CUDA device (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device, repeat, warmup=2):
    """Median milliseconds of fn() over `repeat` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def interleaved_median_ms(fns, device, repeat, warmup):
    """Median ms of each fn over ``repeat`` rounds that call every fn once, after ``warmup`` rounds;
    a load change on a shared machine then hits every fn alike."""
    samples = [[] for _ in fns]
    for _ in range(warmup + repeat):
        for fn, times in zip(fns, samples):
            times.append(median_ms(fn, device, repeat=1, warmup=0))
    return [statistics.median(times[warmup:]) for times in samples]


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storages allocated inside the context (the CPU has no allocator counter).

    An op's output on the storage of one of its inputs (a view, an in-place or out= op) allocates
    nothing: counting it would count the weights that SGD updates in place, or that activation
    checkpointing detaches, as new memory.
    """

    def __init__(self):
        super().__init__()
        self.live, self.current, self.peak = {}, 0, 0

    def _free(self, key):
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live and key not in inputs:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)
        return out


def tensor_peak_mb(fn):
    """Peak MiB of the tensor storages one call of fn allocates (PeakTensorMemory), on any device."""
    tracker = PeakTensorMemory()
    with tracker:
        fn()
    return tracker.peak / 2**20


def cuda_peak_mb(fn, device):
    """The CUDA allocator's peak during one call of fn above what was allocated before it, in MiB."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def peak_mb(fn, device):
    """Peak memory of one call above what was allocated before it, in MiB: the allocator's on CUDA,
    the tensor storages' on the CPU."""
    return cuda_peak_mb(fn, device) if device.type == "cuda" else tensor_peak_mb(fn)


def rel_err(result, truth):
    """Relative error ||result - truth|| / ||truth|| of a result against its float64 truth (a float)."""
    return ((result.double() - truth).norm() / truth.norm()).item()


# print_table columns of an attention op's errors vs float64: the output and the q, k, v gradients.
ERROR_COLUMNS = [("rel_err_out", "err out", ".1e"), ("rel_err_grad_q", "err dq", ".1e"),
                 ("rel_err_grad_k", "err dk", ".1e"), ("rel_err_grad_v", "err dv", ".1e")]


def float64_truth(op, inputs64, grad64):
    """[output, d/dquery, d/dkey, d/dvalue] of op(query, key, value) on float64 inputs, on their device."""
    inputs = [x.clone().requires_grad_() for x in inputs64]
    out = op(*inputs)
    return [out.detach()] + list(torch.autograd.grad(out, inputs, grad64))


def attention_rows(formulations, truth_op, inputs64, grad64, device, repeat, warmup, dtype=torch.float32,
                   autocast=contextlib.nullcontext, unmeasured=()):
    """One row per formulation (name -> fn(query, key, value)) of an attention op: the ERROR_COLUMNS
    against truth_op in float64, the peak memory of a no-grad forward and of a forward + backward,
    and the median times of both over interleaved rounds.

    The formulations run on inputs64 and grad64 (host float64) cast to dtype, each call inside
    autocast(); the peaks of the names in unmeasured are None (compiled code, which the CPU probe
    does not see).
    """
    truth = float64_truth(truth_op, [x.to(device) for x in inputs64], grad64.to(device))
    inputs = [x.to(device, dtype).requires_grad_() for x in inputs64]
    grad_out = grad64.to(device, dtype)

    def forward(fn):
        def run():
            with torch.no_grad(), autocast():
                return fn(*inputs)
        return run

    def forward_backward(fn):
        def run():
            with autocast():
                out = fn(*inputs)
            return [out] + list(torch.autograd.grad(out, inputs, grad_out.to(out.dtype)))
        return run

    rows = []
    for name, fn in formulations.items():
        row = {"formulation": name}
        row.update((key, rel_err(r, t)) for (key, _, _), r, t in zip(ERROR_COLUMNS, forward_backward(fn)(), truth))
        measurable = name not in unmeasured
        row["forward_peak_mb"] = peak_mb(forward(fn), device) if measurable else None
        row["peak_mb"] = peak_mb(forward_backward(fn), device) if measurable else None
        rows.append(row)
    for key, make in (("forward_ms", forward), ("forward_backward_ms", forward_backward)):
        times = interleaved_median_ms([make(fn) for fn in formulations.values()], device, repeat, warmup)
        for row, ms in zip(rows, times):
            row[key] = ms
    return rows


def set_tf32(device, enabled):
    """TF32 for fp32 matmuls and convolutions on CUDA ('ieee' is strict fp32); a no-op on the CPU."""
    if device.type == "cuda":
        precision = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision


def with_tf32(fn, device, enabled):
    """fn wrapped to run with TF32 on or off (see set_tf32)."""
    def run():
        set_tf32(device, enabled)
        return fn()
    return run


def add_measurement_arguments(parser, repeat_help, warmup_help=None):
    """The "measurement" flags every benchmark takes, --device and --repeat, and --warmup when
    warmup_help is given; returns the group, for a benchmark's own measurement flags."""
    group = parser.add_argument_group("measurement")
    group.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    group.add_argument("--repeat", type=positive_int, default=None, help=repeat_help)
    if warmup_help:
        group.add_argument("--warmup", type=int, default=None, help=warmup_help)
    return group


def add_json_argument(parser):
    """--json FILE, where save_record() writes the benchmark's record."""
    parser.add_argument_group("output").add_argument(
        "--json", default=None, help="also write every figure to this JSON file (default: print only)")


def benchmark_device(args):
    """The checked --device, seeded, with cuDNN autotuning on CUDA; UserError for unusable flags."""
    device = parse_device(args.device)
    if args.warmup < 0:
        raise UserError(f"--warmup must be at least 0, got {args.warmup}")
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def fill_defaults(args, cpu, gpu):
    """Give every option of args still None its default for the device: gpu's on CUDA, else cpu's."""
    defaults = gpu if args.device.startswith("cuda") else cpu
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def print_table(header, rows, columns):
    """Print header, then one line per row dict; columns: [(key, title, format)]; None prints a dash."""
    print(header)
    widths = [max(len(title), 10) for _, title, _ in columns]
    widths[0] = max([widths[0]] + [len(str(r[columns[0][0]])) for r in rows])
    print("  ".join(f"{title:<{w}}" if i == 0 else f"{title:>{w}}"
                    for i, ((_, title, _), w) in enumerate(zip(columns, widths))))
    for r in rows:
        cells = []
        for i, ((key, _, fmt), w) in enumerate(zip(columns, widths)):
            value = r.get(key)
            text = "-" if value is None else format(value, fmt)
            cells.append(f"{text:<{w}}" if i == 0 else f"{text:>{w}}")
        print("  ".join(cells))


def save_record(path, device, settings, rows):
    """Write {device, torch, date, settings, rows} as JSON to path."""
    record = {"device": device_name(device), "torch": torch.__version__,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "settings": settings, "rows": rows}
    Path(path).write_text(json.dumps(record, indent=2))
