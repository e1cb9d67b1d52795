"""train.py's speed and bookkeeping options: --amp, --channels-last, --start-iters, --log-dir.

One in-process run of two iterations with all four options, observed from inside: a forward hook
on the stem convolution sees the dtype and memory format of the training step, the logger sees
each iteration's learning rate, build_optimizer's GradScaler is kept.
"""
import pytest
import torch

import train
from dataset.synthetic import make_synthetic_cityscapes

LEARNING_RATE, POWER, START, NUM_STEPS = 0.01, 0.9, 3, 5


class StepRecorder(train.TrainLogger):
    """The TrainLogger, also keeping (iteration, learning rate) of every step it reports."""

    steps = []

    def step(self, iteration, loss, lr):
        StepRecorder.steps.append((iteration, lr))
        super().step(iteration, loss, lr)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train from --start-iters 3 to --num-steps 5 with --amp, --channels-last and --log-dir."""
    root = tmp_path_factory.mktemp("cityscapes")
    train_list = make_synthetic_cityscapes(str(root), num_train=2, num_val=0, num_test=0, height=32, width=64)["train"]
    snapshots, logs = root / "snapshots", root / "logs"
    args = train.get_args_parser().parse_args([
        "--data-dir", str(root), "--data-list", train_list, "--snapshot-dir", str(snapshots),
        "--log-dir", str(logs), "--restore-from", "none", "--model", "ccnet", "--recurrence", "2",
        "--input-size", "33,33", "--batch-size", "2", "--num-workers", "0", "--learning-rate", str(LEARNING_RATE),
        "--power", str(POWER), "--start-iters", str(START), "--num-steps", str(NUM_STEPS),
        "--amp", "--channels-last"])
    stem_calls, scalers = [], []  # what net.conv1 saw in each forward; build_optimizer's scalers
    build_model, build_optimizer = train.networks.build_model, train.build_optimizer

    def build_observed_model(*args, **kwargs):
        net = build_model(*args, **kwargs)
        net.conv1.register_forward_hook(lambda conv, inputs, output: stem_calls.append({
            "training": conv.training, "input_dtype": inputs[0].dtype, "output_dtype": output.dtype,
            "nhwc_input": inputs[0].is_contiguous(memory_format=torch.channels_last),
            "nchw_input": inputs[0].is_contiguous(),
            "nhwc_weight": conv.weight.is_contiguous(memory_format=torch.channels_last)}))
        return net

    def build_observed_optimizer(*args, **kwargs):
        optimizer, scaler = build_optimizer(*args, **kwargs)
        scalers.append(scaler)
        return optimizer, scaler

    StepRecorder.steps = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train.networks, "build_model", build_observed_model)
        patch.setattr(train, "build_optimizer", build_observed_optimizer)
        patch.setattr(train, "TrainLogger", StepRecorder)
        train.main(args)
    yield {"snapshots": snapshots, "logs": logs, "steps": StepRecorder.steps, "scalers": scalers,
           "training_calls": [call for call in stem_calls if call["training"]]}
    for path in snapshots.glob("*.pth"):
        path.unlink()


def test_amp_runs_the_training_step_under_bf16_autocast_without_a_grad_scaler(run):
    assert [scaler.is_enabled() for scaler in run["scalers"]] == [False]
    calls = run["training_calls"]
    assert len(calls) == NUM_STEPS - START
    assert [(call["input_dtype"], call["output_dtype"]) for call in calls] == [(torch.float32, torch.bfloat16)] * 2


def test_channels_last_trains_nhwc_weights_on_nhwc_images(run):
    calls = run["training_calls"]
    assert len(calls) == NUM_STEPS - START
    assert all(call["nhwc_input"] and call["nhwc_weight"] and not call["nchw_input"] for call in calls)


def test_start_iters_starts_the_poly_schedule_there_and_ends_at_num_steps(run):
    assert [step for step, _ in run["steps"]] == list(range(START + 1, NUM_STEPS + 1))
    expected = [LEARNING_RATE * (1 - k / NUM_STEPS) ** POWER for k in range(START, NUM_STEPS)]
    assert [lr for _, lr in run["steps"]] == pytest.approx(expected, rel=1e-12)
    assert sorted(path.name for path in run["snapshots"].glob("*.pth")) == [f"CS_scenes_{NUM_STEPS}.pth", "last.pth"]
    state = torch.load(run["snapshots"] / "last.pth", map_location="cpu", weights_only=True)
    assert state["iteration"] == NUM_STEPS


def test_log_dir_receives_the_tensorboard_events_and_the_snapshot_dir_none(run):
    events = list(run["logs"].glob("events.out.tfevents.*"))
    assert len(events) == 1
    assert b"learning_rate" in events[0].read_bytes()
    assert not list(run["snapshots"].glob("events.out.tfevents.*"))
