"""bench/gpu_suite.py: a part records each command's outcome, kills a command when planned or at the
deadline (its child processes too), and tells how two snapshots differ."""
import json
import sys
import time

import pytest
import torch

from bench import gpu_suite
from bench.gpu_suite import Part, compare_snapshots, visible_devices_env


def python(code):
    return [sys.executable, "-c", code]


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_part_records_each_exit_status_and_keeps_its_json_current(tmp_path):
    part = Part("demo", tmp_path, deadline_s=60, device="cpu")
    assert part.run("ok", python("print('hello')"))
    assert not part.run("fails", python("raise SystemExit(3)"))
    part.find("answer", 42)
    record = json.loads((tmp_path / "demo.json").read_text())
    assert [(c["name"], c["returncode"]) for c in record["commands"]] == [("ok", 0), ("fails", 3)]
    assert record["findings"] == {"answer": 42}
    assert "$ " in (tmp_path / "demo.log").read_text() and "hello" in (tmp_path / "demo.log").read_text()


def test_a_command_is_killed_once_the_awaited_file_appears(tmp_path):
    flag = tmp_path / "saved"
    part = Part("kill", tmp_path, deadline_s=60, device="cpu")
    start = time.monotonic()
    assert part.run("killed", python(f"import pathlib, time; pathlib.Path({str(flag)!r}).touch(); time.sleep(60)"),
                    stop_when=flag)
    assert time.monotonic() - start < 30
    assert part.record["commands"][0]["returncode"] == "killed as planned"
    assert not part.run("stale", python("pass"), stop_when=flag)  # left by an earlier command: not awaited
    assert part.record["commands"][1]["returncode"].startswith("not run")


@pytest.mark.parametrize("device, visible", [("cuda", None), ("cuda:1", "1"), ("cpu", "")])
def test_the_run_part_shows_its_commands_only_the_device_asked_for(device, visible):
    env = visible_devices_env(device)
    assert (env if env is None else env["CUDA_VISIBLE_DEVICES"]) == visible


def test_the_deadline_kills_a_command_with_its_children_and_skips_the_next(tmp_path):
    child = tmp_path / "child.pid"
    part = Part("late", tmp_path, deadline_s=3, device="cpu")
    spawn = ("import pathlib, subprocess, sys, time; "
             "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
             f"pathlib.Path({str(child)!r}).write_text(str(p.pid)); time.sleep(60)")
    assert not part.run("sleeper", python(spawn))
    assert not part.run("after", python("pass"))
    assert [c["returncode"] for c in part.record["commands"]] == ["timed out", "not run: past the deadline"]
    deadline = time.monotonic() + 10
    while pid_alive(int(child.read_text())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(int(child.read_text()))


def test_compare_snapshots_counts_the_differing_tensors_and_the_largest_difference(tmp_path):
    a = {"w": torch.arange(6.0), "b": torch.zeros(2), "n": torch.tensor(3)}
    b = {"w": torch.arange(6.0) + torch.tensor([0, 0, 0.25, 0, 0, 0]), "b": torch.zeros(2), "n": torch.tensor(3)}
    for name, state in (("a", a), ("b", b), ("c", {"w": a["w"]})):
        torch.save(state, tmp_path / f"{name}.pth")
    assert compare_snapshots(tmp_path / "a.pth", tmp_path / "a.pth") == {
        "same_keys": True, "bitwise_equal": True, "differing_tensors": 0, "tensors": 3, "max_abs_difference": 0.0}
    assert compare_snapshots(tmp_path / "a.pth", tmp_path / "b.pth") == {
        "same_keys": True, "bitwise_equal": False, "differing_tensors": 1, "tensors": 3, "max_abs_difference": 0.25}
    assert compare_snapshots(tmp_path / "a.pth", tmp_path / "c.pth") == {"same_keys": False}


@pytest.mark.parametrize("tests, failed", [("tests/test_seeded_augmentation.py -k stream", 0),
                                           ("tests/missing_file.py", 1)], ids=["passing", "failing"])
def test_the_tests_part_exits_with_the_outcome_of_pytest(tests, failed, tmp_path):
    args = gpu_suite.get_args_parser().parse_args(["--part", "tests", "--out", str(tmp_path), "--tests", tests])
    assert gpu_suite.main(args) == failed
    assert json.loads((tmp_path / "tests.json").read_text())["commands"][0]["name"] == "pytest"
