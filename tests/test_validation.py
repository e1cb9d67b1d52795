"""train.py --eval-every: the mIoU during training is evaluate.py's for the snapshot of that iteration,
the training is bitwise the same without it, best.pth is the best snapshot and survives --resume."""
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboardX.proto.event_pb2 import Event

import evaluate
import standin
import train
import utils.validation
from dataset.cityscapes_labels import CLASS_NAMES
from dataset.synthetic import make_synthetic_cityscapes
from test_train import load, remove_weights
from utils.errors import exit_on_user_error
from utils.preemption import StopRequests
from utils.runtime import Runtime

NUM_STEPS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four 32x64 training scenes, three validation ones."""
    root = tmp_path_factory.mktemp("cityscapes")
    lists = make_synthetic_cityscapes(str(root), num_train=4, num_val=3, num_test=0, height=32, width=64)
    return root, lists


def flags(data, snapshot_dir, *extra):
    root, lists = data
    return ["--data-dir", str(root), "--data-list", lists["train"], "--eval-list", lists["val"],
            "--snapshot-dir", str(snapshot_dir), "--restore-from", "none", "--recurrence", "2", "--depth", "50",
            "--input-size", "32,64", "--batch-size", "2", "--num-steps", str(NUM_STEPS),
            "--save-pred-every", str(NUM_STEPS), "--save-state-every", "0", "--num-workers", "0",
            "--print-frequency", "1", *extra]


def logged_scalars(folder):
    """{tag: {step: value}} of the tensorboardX event files in folder (TFRecord frames: an 8-byte
    length, its 4-byte CRC, the Event, the Event's 4-byte CRC)."""
    scalars = {}
    for path in folder.glob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            length = int.from_bytes(data[offset:offset + 8], "little")
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def evaluate_snapshot(data, snapshot):
    """evaluate.py's confusion matrix for `snapshot` with the validation's default settings."""
    root, lists = data
    return evaluate.main(evaluate.get_args_parser().parse_args([
        "--data-dir", str(root), "--data-list", lists["val"], "--restore-from", str(snapshot), "--recurrence", "2",
        "--whole", "true", "--batch-size", "1", "--num-workers", "0", "--no-save-pred"]))


@pytest.fixture(scope="module")
def ccnet_runs(data, tmp_path_factory):
    """CCNet-50 R=2 trained 3 iterations with a validation after each; evaluate.py on its last snapshot
    and on best.pth."""
    folder = tmp_path_factory.mktemp("validated")
    train.main(train.get_args_parser().parse_args(flags(data, folder, "--eval-every", "1")))
    runs = {"validated": {"folder": folder, "state": load(folder / "last.pth")},
            "snapshot": evaluate_snapshot(data, folder / f"CS_scenes_{NUM_STEPS}.pth"),
            "best": evaluate_snapshot(data, folder / "best.pth")}
    yield runs
    remove_weights(folder)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(train.networks, "build_model", standin.build_tiny)


def test_validation_leaves_the_weights_and_random_streams_bitwise_the_same(data, tmp_path, tiny):
    """The stand-in's dropout draws from torch's stream each iteration: a validation that drew from it
    would change the masks, and so the weights."""
    runs = []
    for name, extra in (("plain", []), ("validated", ["--eval-every", "1"])):
        argv = flags(data, tmp_path / name, "--num-steps", "12", "--save-pred-every", "12", *extra)
        net = train.main(train.get_args_parser().parse_args(argv))
        runs.append((net.state_dict(), load(tmp_path / name / "last.pth")["rng"][0]))
    (plain, plain_rng), (validated, validated_rng) = runs
    assert all(torch.equal(plain[key], value) for key, value in validated.items())
    assert plain_rng["python"] == validated_rng["python"]
    assert torch.equal(plain_rng["numpy"][1], validated_rng["numpy"][1]) and torch.equal(plain_rng["torch"],
                                                                                         validated_rng["torch"])


def test_the_logged_miou_is_what_evaluate_py_measures_for_the_snapshot(ccnet_runs):
    """Training holds SynchronizedBatchNorm2d, evaluate.py rebuilds the snapshot with nn.BatchNorm2d."""
    scalars, confmat = logged_scalars(ccnet_runs["validated"]["folder"]), ccnet_runs["snapshot"]
    assert sorted(scalars["val/mIoU"]) == [1, 2, 3]
    assert scalars["val/mIoU"][NUM_STEPS] == pytest.approx(confmat.mean_iou(), abs=1e-6)
    assert scalars["val/pixel_accuracy"][NUM_STEPS] == pytest.approx(confmat.pixel_accuracy(), abs=1e-6)
    ious = {name.replace(" ", "_"): iou for name, iou in zip(CLASS_NAMES, confmat.iou()) if iou is not None}
    assert {tag[len("val/IoU/"):]: value[NUM_STEPS] for tag, value in scalars.items()
            if tag.startswith("val/IoU/") and NUM_STEPS in value} == pytest.approx(ious, abs=1e-6)


def test_best_pth_is_the_snapshot_of_the_highest_logged_miou(ccnet_runs):
    folder = ccnet_runs["validated"]["folder"]
    best = json.loads((folder / "best.json").read_text())
    logged = logged_scalars(folder)["val/mIoU"]
    assert best["mIoU"] == pytest.approx(max(logged.values()), abs=1e-6)
    assert logged[best["iteration"]] == pytest.approx(best["mIoU"], abs=1e-6)
    assert ccnet_runs["best"].iou() == best["IU_array"] and ccnet_runs["best"].mean_iou() == best["mIoU"]
    stored = ccnet_runs["validated"]["state"]["best"]
    assert {key: stored[key] for key in best} == best


def test_the_best_survives_resume(data, tmp_path, tiny, capsys):
    """A stored best no validation can beat (mIoU 2) keeps best.pth and best.json as they are."""
    train.main(train.get_args_parser().parse_args(flags(data, tmp_path, "--num-steps", "4", "--eval-every", "1")))
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    state["best"]["mIoU"] = 2.0
    torch.save(state, tmp_path / "last.pth")
    kept = {name: (tmp_path / name).read_bytes() for name in ("best.pth", "best.json")}
    capsys.readouterr()
    train.main(train.get_args_parser().parse_args(flags(data, tmp_path, "--num-steps", "6", "--eval-every", "1",
                                                        "--resume", "auto")))
    assert {name: (tmp_path / name).read_bytes() for name in kept} == kept
    assert load(tmp_path / "last.pth")["best"] == state["best"]
    best_lines = [line for line in capsys.readouterr().out.splitlines() if ": val mIoU " in line]
    assert len(best_lines) == 3  # 4 again (the stopped runs' rule: a resumed run validates its start), 5 and 6
    assert all(line.endswith(f"best mIoU 200.00 at iteration {state['best']['iteration']}") for line in best_lines)


def test_a_best_measured_with_other_settings_is_replaced(data, tmp_path, tiny, capsys):
    train.main(train.get_args_parser().parse_args(flags(data, tmp_path, "--num-steps", "2", "--eval-every", "1")))
    state = load(tmp_path / "last.pth")
    capsys.readouterr()
    train.main(train.get_args_parser().parse_args(flags(data, tmp_path, "--num-steps", "3", "--eval-every", "1",
                                                        "--eval-flip", "--resume", "auto")))
    assert (f"--resume: the best so far (mIoU {100 * state['best']['mIoU']:.2f} at iteration "
            f"{state['best']['iteration']}) was measured with other validation settings: the next validation "
            "replaces best.pth") in capsys.readouterr().out.splitlines()
    best = load(tmp_path / "last.pth")["best"]
    assert best["settings"]["flip"] is True
    assert json.loads((tmp_path / "best.json").read_text()) == {key: best[key] for key in ("iteration", "mIoU",
                                                                                            "IU_array")}


def test_a_validation_draws_nothing_from_python_numpy_or_torch(data, tmp_path, tiny, monkeypatch):
    run, draws = utils.validation.Validation.run, []

    def observed_run(validation, *args):
        before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
        interrupted = run(validation, *args)
        after = (random.getstate(), np.random.get_state()[1], torch.get_rng_state())
        draws.append(before[0] != after[0] or not np.array_equal(before[1], after[1])
                     or not torch.equal(before[2], after[2]))
        return interrupted

    monkeypatch.setattr(utils.validation.Validation, "run", observed_run)
    train.main(train.get_args_parser().parse_args(flags(data, tmp_path, "--eval-every", "1", "--num-workers", "1")))
    assert draws == [False] * NUM_STEPS


def test_one_process_with_several_gpus_validates_through_replicas(data, tiny, monkeypatch, tmp_path):
    """--gpu 0,1 on a CPU stand-in: the network goes through AutocastDataParallel over both, one image
    per GPU in each batch, as evaluate.py does; a batch of images of two sizes (a 32x96 one after
    the three 32x64 ones, as VOC's and ADE20K's differ) goes through one size at a time."""
    wrapped, batches = [], []

    class RecordedDataParallel(torch.nn.Module):
        def __init__(self, module, device_ids):
            super().__init__()
            self.module = module
            wrapped.append(device_ids)

        def forward(self, images):
            batches.append(len(images))
            return self.module(images)

    monkeypatch.setattr(utils.validation, "AutocastDataParallel", RecordedDataParallel)
    root, lists = data
    wider = make_synthetic_cityscapes(str(tmp_path / "wider"), num_train=0, num_val=1, num_test=0, height=32,
                                      width=96)
    wider_pair = [os.path.relpath(tmp_path / "wider" / path, root) for path in Path(wider["val"]).read_text().split()]
    mixed = tmp_path / "mixed.lst"
    mixed.write_text(Path(lists["val"]).read_text() + "\t".join(wider_pair) + "\n")
    args = train.get_args_parser().parse_args(flags(data, tmp_path, "--eval-every", "1", "--eval-list", str(mixed)))
    info = train.check_inputs(args, Runtime(torch.device("cpu")))
    validation = train.build_validation(info, args, Runtime(torch.device("cpu"), [0, 1]))
    net = standin.build_tiny("ccnet", 19).train()
    logger = train.TrainLogger(str(tmp_path), 0, 1, 1, info.palette, enabled=False)
    with StopRequests() as stop_requests:
        assert validation.run(net, 1, logger, stop_requests) is False
    assert wrapped == [[0, 1]] and batches == [2, 1, 1] and net.training


@pytest.mark.parametrize("extra,status,message", [
    (["--eval-every", "5", "--eval-list", "/no/such/val.lst"], 1, "error: list file not found: /no/such/val.lst"),
    (["--eval-every", "-5"], 2, "error: argument --eval-every: expected an integer of 0 or more, got '-5'"),
])
def test_bad_validation_flags_are_one_line_and_write_nothing(data, tmp_path, tiny, capsys, extra, status, message):
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(train.main)(train.get_args_parser().parse_args(flags(data, tmp_path / "run", *extra)))
    assert stop.value.code == status
    assert capsys.readouterr().err == f"{message}\n"
    assert not (tmp_path / "run").exists()
