"""Training under SLURM: srun's tasks training together, SIGUSR1 and SIGTERM stopping the run after a
save, the requeue, --resume auto; on the small stand-in network of tests/standin.py."""
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import standin
import train
from dataset.synthetic import make_synthetic_cityscapes
from test_train import REPO, cpu_env, load
from utils.errors import exit_on_user_error
from utils.launcher import slurm_port
from utils.preemption import StopRequests, ignore_stop_signals

NUM_STEPS = 20
LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                      "GROUP_RANK", "ROLE_RANK")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four 32x64 training scenes, two validation ones."""
    root = tmp_path_factory.mktemp("cityscapes")
    lists = make_synthetic_cityscapes(str(root), num_train=4, num_val=2, num_test=0, height=32, width=64)
    return root, lists


def flags(data, snapshot_dir, *extra):
    """Whole 32x64 images, one per process of two, validated every 5 iterations; snapshots and the state
    at the end only, so that a stop's save is the one state written before."""
    root, lists = data
    return ["--data-dir", str(root), "--data-list", lists["train"], "--eval-list", lists["val"],
            "--snapshot-dir", str(snapshot_dir), "--restore-from", "none", "--input-size", "32,64",
            "--batch-size", "2", "--num-steps", str(NUM_STEPS), "--save-pred-every", str(NUM_STEPS),
            "--save-state-every", "0", "--eval-every", "5", "--print-frequency", "1", "--num-workers", "0", *extra]


def free_job_id():
    """A SLURM job id whose rendezvous port (utils.launcher.slurm_port) nothing listens on."""
    while True:
        job_id = random.randrange(10 ** 6)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", slurm_port(job_id)))
            except OSError:
                continue
        return job_id


def srun_env(job_id, rank, fake_bin, **extra):
    """The environment srun gives task `rank` of a 2-task step on one node, no torchrun variable, with
    fake_bin (holding a fake scontrol) first on PATH."""
    env = {name: value for name, value in cpu_env().items()
           if not name.startswith(("SLURM_", "TORCHELASTIC_")) and name not in LAUNCHER_VARIABLES}
    env.update(SLURM_JOB_ID=str(job_id), SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_PROCID=str(rank),
               SLURM_LOCALID=str(rank), SLURM_NODEID="0", SLURM_JOB_NODELIST="127.0.0.1",
               SLURM_STEP_NODELIST="127.0.0.1", PATH=f"{fake_bin}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1",
               **extra)
    return env


@pytest.fixture
def started():
    """The processes a test starts, each leading a session: those still running at its end are killed
    with their loader workers (a stop handler keeps SIGTERM from ending a task stuck in a collective)."""
    processes = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_tasks(started, record, argv, job_id, fake_bin, **extra):
    """The two tasks of the step, each in a session of its own (its DataLoader workers with it)."""
    command = [sys.executable, str(REPO / "tests" / "standin.py"), str(record), *argv]
    tasks = [subprocess.Popen(command, cwd=REPO, env=srun_env(job_id, rank, fake_bin, **extra), start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    started.extend(tasks)
    return tasks


def finish(tasks):
    """[(exit status, stdout, stderr)] of the tasks."""
    outputs = [task.communicate(timeout=240) for task in tasks]
    return [(task.returncode, out, err) for task, (out, err) in zip(tasks, outputs)]


def lines(path):
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def fake_bin(tmp_path):
    """A folder holding an `scontrol` that appends its arguments to scontrol.log beside it."""
    folder = tmp_path / "bin"
    folder.mkdir()
    scontrol = folder / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> "{folder / "scontrol.log"}"\n')
    scontrol.chmod(0o755)
    return folder


def test_srun_tasks_stopped_by_sigusr1_save_requeue_and_resume_to_the_uninterrupted_weights(data, tmp_path,
                                                                                           fake_bin, started):
    """Two tasks started with SLURM's variables only. The stopped run reads with two loader workers.
    SIGUSR1 goes to both tasks' process groups (their workers too), as SLURM's --signal sends it: both
    stop after the same iteration, rank 1 only once rank 0, slowed down, has written last.pth, and the
    job is requeued once."""
    uninterrupted = start_tasks(started, tmp_path / "full", flags(data, tmp_path / "full"), free_job_id(), fake_bin)
    job_id = free_job_id()
    command = flags(data, tmp_path / "job", "--resume", "auto", "--num-workers", "2")
    tasks = start_tasks(started, tmp_path / "stopped", command, job_id, fake_bin, STANDIN_STEP_SECONDS="0.1",
                        STANDIN_STATE_SECONDS="1")
    steps = tmp_path / "stopped0.steps"
    while len(lines(steps)) < 3 and all(task.poll() is None for task in tasks):
        time.sleep(0.02)
    for task in tasks:
        os.killpg(task.pid, signal.SIGUSR1)
    rank1 = finish(tasks[1:])
    assert (tmp_path / "job" / "last.pth").exists(), "rank 1 exited before rank 0 had written last.pth"
    stopped = finish(tasks[:1]) + rank1
    assert [status for status, _, _ in stopped] == [0, 0], [err[-2000:] for _, _, err in stopped]

    last = [lines(tmp_path / f"stopped{rank}.steps")[-1] for rank in range(2)]
    assert last[0] == last[1] and 3 <= int(last[0]) < NUM_STEPS, last
    assert load(tmp_path / "job" / "last.pth")["iteration"] == int(last[0])
    assert lines(tmp_path / "stopped0.writes").count("last.pth") == 1 and not lines(tmp_path / "stopped1.writes")
    assert lines(fake_bin / "scontrol.log") == ["requeue", str(job_id)]
    out = stopped[0][1]
    assert f"iteration {last[0]}: stopped by SIGUSR1" in out and f"requeued SLURM job {job_id}" in out
    assert not list((tmp_path / "job").glob("*.tmp-*"))

    resumed = finish(start_tasks(started, tmp_path / "resumed", command, job_id, fake_bin))
    assert [status for status, _, _ in resumed] == [0, 0], [err[-2000:] for _, _, err in resumed]
    assert f"--resume auto: continuing from {tmp_path / 'job' / 'last.pth'}" in resumed[0][1]
    assert [status for status, _, _ in finish(uninterrupted)] == [0, 0]
    expected, got = (load(tmp_path / folder / f"CS_scenes_{NUM_STEPS}.pth") for folder in ("full", "job"))
    assert expected.keys() == got.keys() and all(torch.equal(expected[key], got[key]) for key in expected)
    assert (tmp_path / "job" / "best.json").read_text() == (tmp_path / "full" / "best.json").read_text()
    assert lines(fake_bin / "scontrol.log") == ["requeue", str(job_id)]


def signal_self_after(iteration, number, monkeypatch):
    """Send this process `number` once the logger reports `iteration` (the run stops after the next)."""
    step = train.TrainLogger.step

    def step_then_signal(logger, done, loss, lr):
        step(logger, done, loss, lr)
        if done == iteration:
            os.kill(os.getpid(), number)
    monkeypatch.setattr(train.TrainLogger, "step", step_then_signal)


@pytest.mark.parametrize("number,job_id,status,requeued", [
    (signal.SIGTERM, "4242", 143, False),
    (signal.SIGUSR1, None, 138, False),
    (signal.SIGUSR1, "4242", 0, True),
])
def test_a_signal_saves_the_state_after_the_next_iteration_and_sets_the_exit_status(
        data, tmp_path, fake_bin, monkeypatch, number, job_id, status, requeued):
    """One process: SIGTERM only saves (143), SIGUSR1 outside SLURM too (138), SIGUSR1 under SLURM
    requeues (0); the run's own handlers are gone afterwards."""
    monkeypatch.setattr(train.networks, "build_model", standin.build_tiny)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    if job_id:
        monkeypatch.setenv("SLURM_JOB_ID", job_id)
    signal_self_after(3, number, monkeypatch)
    before = signal.getsignal(number)
    with pytest.raises(SystemExit) as stop:
        train.main(train.get_args_parser().parse_args(flags(data, tmp_path / "run", "--batch-size", "1")))
    assert stop.value.code == status
    assert load(tmp_path / "run" / "last.pth")["iteration"] == 4
    assert sorted(path.name for path in (tmp_path / "run").glob("*.pth")) == ["last.pth"]
    assert lines(fake_bin / "scontrol.log") == (["requeue", job_id] if requeued else [])
    assert signal.getsignal(number) is before


def test_a_process_that_no_signal_reached_stops_with_the_one_that_was_signalled(data, tmp_path, monkeypatch):
    """Another process's SIGUSR1 reaches this one only through the iteration's all_reduce, simulated here:
    from iteration 4 on, the sum holds a SIGUSR1 record that this process never made. It stops after
    iteration 4, as the signalled process does, with its save and exit status."""
    monkeypatch.setattr(train.networks, "build_model", standin.build_tiny)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    iterations = iter(range(1, NUM_STEPS + 1))

    def all_reduce_with_a_signalled_peer(tensor):
        if tensor.dim() == 1 and next(iterations) >= 4:  # the iteration's (loss, SIGUSR1, SIGTERM)
            tensor[1] += 1
        return tensor
    monkeypatch.setattr(train, "all_reduce_sum", all_reduce_with_a_signalled_peer)
    with pytest.raises(SystemExit) as stop:
        train.main(train.get_args_parser().parse_args(flags(data, tmp_path, "--batch-size", "1")))
    assert stop.value.code == 138
    assert load(tmp_path / "last.pth")["iteration"] == 4


def test_a_failed_requeue_is_a_warning_and_exit_status_138(data, tmp_path, fake_bin, monkeypatch, capsys):
    (fake_bin / "scontrol").write_text('#!/bin/sh\necho "Requested operation is presently disabled" >&2\nexit 1\n')
    monkeypatch.setattr(train.networks, "build_model", standin.build_tiny)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    signal_self_after(1, signal.SIGUSR1, monkeypatch)
    with pytest.raises(SystemExit) as stop:
        train.main(train.get_args_parser().parse_args(flags(data, tmp_path / "run", "--batch-size", "1")))
    assert stop.value.code == 138
    assert capsys.readouterr().err == ("warning: scontrol requeue 4242 failed (Requested operation is presently "
                                       "disabled): the training state is saved, resubmit the job to continue\n")
    assert load(tmp_path / "run" / "last.pth")["iteration"] == 2


def test_a_signal_in_the_last_iteration_finishes_the_run_and_resume_auto_has_nothing_to_do(
        data, tmp_path, fake_bin, monkeypatch, capsys):
    """SIGUSR1 during the last iteration: the run ends as if it had not come, its last validation in
    full (no resumed run would make up for it) and no requeue; run again, --resume auto has nothing to do."""
    monkeypatch.setattr(train.networks, "build_model", standin.build_tiny)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    signal_self_after(2, signal.SIGUSR1, monkeypatch)
    argv = flags(data, tmp_path, "--batch-size", "1", "--num-steps", "2", "--eval-every", "2", "--resume", "auto")
    train.main(train.get_args_parser().parse_args(argv))
    assert "iteration 2: val mIoU " in capsys.readouterr().out
    assert load(tmp_path / "last.pth")["best"]["iteration"] == 2
    assert not lines(fake_bin / "scontrol.log")
    before = {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    train.main(train.get_args_parser().parse_args(argv))
    assert capsys.readouterr().out.splitlines()[-1] == (f"--resume auto: {tmp_path / 'last.pth'} already ran all 2 "
                                                        "iterations: nothing to do")
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()} == before


def test_resume_auto_with_an_unreadable_state_is_one_line_and_writes_nothing(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train.networks, "build_model", standin.build_tiny)
    (tmp_path / "last.pth").write_bytes(b"cut short by a full disk")
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(train.main)(train.get_args_parser().parse_args(flags(data, tmp_path, "--resume", "auto")))
    assert stop.value.code == 1
    out, err = capsys.readouterr()
    assert out == f"--resume auto: continuing from {tmp_path / 'last.pth'}\n"
    assert err.startswith(f"error: cannot read checkpoint {tmp_path / 'last.pth'}: ") and err.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.pth"]


class SignalsItself(torch.utils.data.Dataset):
    """Each sample sends SIGUSR1 and SIGTERM to the process that reads it."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        for number in (signal.SIGUSR1, signal.SIGTERM):
            os.kill(os.getpid(), number)
        return index


def test_loader_workers_ignore_the_stop_signals():
    """A spawned worker does not inherit the run's handlers: without ignore_stop_signals the first
    signal would end it, and the loader with it."""
    loader = torch.utils.data.DataLoader(SignalsItself(), num_workers=1, multiprocessing_context="spawn",
                                         worker_init_fn=ignore_stop_signals)
    assert [int(batch) for batch in loader] == [0, 1]


def test_stop_requests_agree_on_the_summed_flags():
    """SIGTERM wins over SIGUSR1 wherever it was received: then nothing is requeued."""
    cases = [([0, 0], None), ([1, 0], signal.SIGUSR1), ([2, 0], signal.SIGUSR1), ([1, 1], signal.SIGTERM),
             ([0, 1], signal.SIGTERM)]
    for totals, expected in cases:
        requests = StopRequests()
        assert requests.agree(torch.tensor(totals, dtype=torch.float32)) == (expected is not None)
        assert requests.stopped_by == expected
