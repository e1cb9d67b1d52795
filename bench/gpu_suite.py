"""Every GPU figure of docs/benchmarks.md, in parts that each fit a ten-minute command.

    python bench/gpu_suite.py --part op --out DIR      # check.py; bench_cca fp32 and bf16; bench_cca3d
    python bench/gpu_suite.py --part tests --out DIR   # the test suite, the CUDA-only tests included
    python bench/gpu_suite.py --part model --out DIR   # bench_train at 769x769, bench_eval at 1024x2048,
                                                       # flops (RCCA against non-local, every model)
    python bench/gpu_suite.py --part run --out DIR     # train.py in fp32 and with --amp, each killed and
                                                       # resumed; evaluate.py; torchrun with one process;
                                                       # fp32/bf16 prediction agreement of the trained model
    python bench/gpu_suite.py --part run --out DIR --device cpu --small   # a rehearsal on a CPU

Each part appends every command's output to DIR/<part>.log and writes DIR/<part>.json: the commands
with their exit status and seconds, and what the part found. The benchmarks write their own records
into DIR (--json), to be committed unedited under bench/results/. A command that fails, or would
outlive --deadline, is recorded and the part goes on, so a part always brings back what it measured.

The run part trains as demo.sh does (synthetic Cityscapes, 97x193 crops, batch 4, OHEM), 100 steps
with a snapshot at 50. Three runs per precision: one uninterrupted, the same again (how far two
identical runs part on this device: cuDNN autotuning and atomic adds are not deterministic), and
one killed with SIGKILL after its snapshot at 50 and resumed from last.pth. train.py needs
tensorboardX: where it is missing and nothing can be downloaded, install its wheel first.
"""
import datetime
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from utils.cli import ArgumentParser, positive_int  # noqa: E402

PYTHON = sys.executable
STEPS, SAVE_EVERY = 100, 50
DONE = (0, "killed as planned")  # the outcomes of a command that did its job


def _kill_group(proc):
    """SIGKILL the process group that proc leads (proc and its children), then reap proc."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class Part:
    """Runs a part's commands under one deadline; logs their output and keeps DIR/<part>.json current."""

    def __init__(self, name, out, deadline_s, device, env=None):
        self.env = env
        self.log_path = out / f"{name}.log"
        self.json_path = out / f"{name}.json"
        self.deadline = time.monotonic() + deadline_s
        self.record = {"part": name, "device": device, "torch": torch.__version__,
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "commands": [], "findings": {}}

    def save(self):
        self.json_path.write_text(json.dumps(self.record, indent=2))

    def find(self, key, value):
        """Record a finding of the part under ``key``."""
        self.record["findings"][key] = value
        self.save()

    def run(self, name, argv, stop_when=None):
        """Run argv from the repository root; True if it exited 0. stop_when: a path whose appearance
        makes the command be killed with SIGKILL (then it counts as done when that path exists)."""
        entry = {"name": name, "command": shlex.join(map(str, argv))}
        left = self.deadline - time.monotonic()
        if left < 1:
            entry["returncode"] = "not run: past the deadline"
            return self._done(entry)
        if stop_when is not None and stop_when.exists():
            entry["returncode"] = f"not run: {stop_when} exists before the start"
            return self._done(entry)
        start = time.monotonic()
        with open(self.log_path, "a") as log:
            log.write(f"\n$ {entry['command']}\n")
            log.flush()
            proc = subprocess.Popen([str(a) for a in argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env=self.env, start_new_session=True)
            try:
                entry["returncode"] = self._wait(proc, start + left, stop_when)
            finally:  # also on Ctrl-C or SIGTERM; and a loader worker left behind is stopped too
                _kill_group(proc)
        entry["seconds"] = round(time.monotonic() - start, 1)
        return self._done(entry)

    @staticmethod
    def _wait(proc, end, stop_when):
        """The exit status of proc, 'killed as planned' or 'timed out'."""
        while proc.poll() is None:
            planned = stop_when is not None and stop_when.exists()
            if planned or time.monotonic() > end:  # run() then kills the process group
                return "killed as planned" if planned else "timed out"
            time.sleep(0.02)
        return proc.returncode

    def _done(self, entry):
        self.record["commands"].append(entry)
        self.save()
        print(f"{entry['name']}: {entry['returncode']} ({entry.get('seconds', 0)} s)", flush=True)
        return entry["returncode"] in DONE


def op(part, args):
    """check.py, then bench_cca in fp32 (TF32 off) and under bf16 autocast, then bench_cca3d."""
    small = ["--batch", "1", "--size", "17,17", "--repeat", "2"] if args.small else []
    part.run("check", [PYTHON, "check.py", "--device", args.device])
    for name, extra in (("cca_fp32", []), ("cca_bf16", ["--amp"])):
        part.run(name, [PYTHON, "bench/bench_cca.py", "--device", args.device, *extra, *small,
                        "--json", args.out / f"{name}.json"])
    small_3d = ["--batch", "1", "--size", "6,7,8", "--repeat", "2", "--warmup", "0"] if args.small else []
    part.run("cca3d", [PYTHON, "bench/bench_cca3d.py", "--device", args.device, *small_3d,
                       "--json", args.out / "cca3d.json"])


def tests(part, args):
    """The test suite, with the reason of each skip."""
    part.run("pytest", [PYTHON, "-m", "pytest", "-q", "-rs", *shlex.split(args.tests)])


def model(part, args):
    """bench_train (every configuration), bench_eval (whole image and sliding window) and flops (the
    paper's efficiency table, every model by its parts)."""
    small = ["--repeat", "1", "--warmup", "0"] if args.small else []
    part.run("train", [PYTHON, "bench/bench_train.py", "--device", args.device, *small,
                       *(["--size", "49,49", "--batch", "1"] if args.small else []), "--json", args.out / "train.json"])
    part.run("eval", [PYTHON, "bench/bench_eval.py", "--device", args.device, *small,
                      *(["--image-size", "65,129", "--tile", "49,49"] if args.small else []),
                      "--json", args.out / "eval.json"])
    part.run("flops", [PYTHON, "bench/flops.py", "--device", args.device, *small,
                       *(["--input-size", "65,65"] if args.small else []), "--json", args.out / "flops.json"])


def compare_snapshots(path_a, path_b):
    """How two saved state dicts differ: bitwise equal or not, differing tensors, largest difference."""
    a, b = (torch.load(p, map_location="cpu", weights_only=True) for p in (path_a, path_b))
    if a.keys() != b.keys():
        return {"same_keys": False}
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    largest = max((float((a[k].double() - b[k].double()).abs().max()) for k in differing), default=0.0)
    return {"same_keys": True, "bitwise_equal": not differing, "differing_tensors": len(differing),
            "tensors": len(a), "max_abs_difference": largest}


def run(part, args):
    """train.py runs killed and resumed, evaluate.py, torchrun with one process, and the agreement."""
    if importlib.util.find_spec("tensorboardX") is None:
        part.find("error", "tensorboardX is not installed: train.py cannot run")
        return
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)  # snapshots of an earlier call must not be compared
    data = work / "data"
    size = ["--height", "64", "--width", "128"] if args.small else ["--height", "256", "--width", "512"]
    part.run("data", [PYTHON, "-m", "dataset.synthetic", "--out", data, "--num-train", "30", "--num-val", "10",
                      "--num-test", "0", *size])
    steps, every = (4, 2) if args.small else (STEPS, SAVE_EVERY)

    def train_args(snapshots, *extra, steps=steps, every=every):
        """train.py's arguments of demo.sh's training."""
        return ["--data-dir", data, "--data-list", data / "list/train.lst", "--restore-from", "none",
                "--recurrence", "2", "--ohem", "1", "--ohem-thres", "0.7", "--ohem-keep", "10000",
                "--input-size", "33,65" if args.small else "97,193", "--batch-size", "4", "--learning-rate", "0.01",
                "--weight-decay", "0.0001", "--num-steps", steps, "--save-pred-every", every,
                "--print-frequency", "10", "--random-mirror", "--random-scale", "--num-workers", "2",
                "--snapshot-dir", snapshots, *extra]

    final = f"CS_scenes_{steps}.pth"
    for precision, extra in (("fp32", []), ("amp", ["--amp"])):
        runs = {name: work / f"{precision}_{name}" for name in ("full", "again", "resumed")}
        part.run(f"train_{precision}", [PYTHON, "train.py", *train_args(runs["full"], *extra)])
        part.run(f"train_{precision}_again", [PYTHON, "train.py", *train_args(runs["again"], *extra)])
        part.run(f"train_{precision}_killed", [PYTHON, "train.py", *train_args(runs["resumed"], *extra)],
                 stop_when=runs["resumed"] / "last.pth")
        part.run(f"train_{precision}_resumed", [PYTHON, "train.py", *train_args(
            runs["resumed"], *extra, "--resume", runs["resumed"] / "last.pth")])
        outcome = {}
        for name in ("again", "resumed"):
            if (runs["full"] / final).exists() and (runs[name] / final).exists():
                outcome[f"{name}_vs_full"] = compare_snapshots(runs["full"] / final, runs[name] / final)
        part.find(f"resume_{precision}", outcome)

        if part.run(f"evaluate_{precision}", [PYTHON, "evaluate.py", "--data-dir", data, "--data-list",
                                              data / "list/val.lst", "--restore-from", runs["full"] / final,
                                              "--model", "ccnet", "--recurrence", "2", "--whole", "true",
                                              "--batch-size", "1", "--num-workers", "2",
                                              "--Output", f"{work / precision}_outputs/", *extra]):
            part.find(f"evaluate_{precision}", json.loads((runs["full"] / "result.txt").read_text()))

    part.run("torchrun_1_process", [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                                    "train.py", *train_args(work / "torchrun", steps=4, every=4)])
    part.run("agreement", [PYTHON, "bench/bench_eval.py", "--agreement", "--device", args.device.split(":")[0],
                           "--restore-from", work / "fp32_full" / final, "--data-dir", data,
                           "--json", args.out / "agreement.json"])


PARTS = {"op": op, "tests": tests, "model": model, "run": run}


def get_args_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    run = parser.add_argument_group("what to run")
    run.add_argument("--part", choices=PARTS, required=True, help="which measurements to take")
    run.add_argument("--device", default="cuda",
                     help="cuda[:N], or cpu with --small for a rehearsal (the run part hides the other GPUs)")
    run.add_argument("--small", action="store_true", help="tiny sizes and few repeats: checks the suite itself")
    run.add_argument("--tests", default="tests", help="pytest arguments of the tests part")
    output = parser.add_argument_group("output and time")
    output.add_argument("--out", type=Path, required=True, help="folder for the logs and JSON records")
    output.add_argument("--deadline", type=positive_int, default=570, help="seconds after which no command runs on")
    return parser


def visible_devices_env(device):
    """The environment in which train.py, evaluate.py and torchrun see only --device's GPU (none for cpu)."""
    kind, _, index = device.partition(":")
    if kind == "cuda" and not index:
        return None
    return dict(os.environ, CUDA_VISIBLE_DEVICES=index if kind == "cuda" else "")


def main(args):
    args.out.mkdir(parents=True, exist_ok=True)
    env = visible_devices_env(args.device) if args.part == "run" else None
    part = Part(args.part, args.out, args.deadline, args.device, env)
    part.save()
    PARTS[args.part](part, args)
    failed = [c["name"] for c in part.record["commands"] if c["returncode"] not in DONE]
    print(f"{args.part}: {len(part.record['commands'])} commands, failed: {', '.join(failed) or 'none'}; "
          f"{part.json_path}")
    return 1 if failed or "error" in part.record["findings"] else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
