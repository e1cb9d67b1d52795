"""train.py on the CPU: snapshots and logs, a falling loss, torchrun DDP, kill-and-resume, bad input."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import train
from dataset.synthetic import make_synthetic_cityscapes
from networks import from_checkpoint
from utils.checkpoint import changed_flags, read_checkpoint, read_state_dict
from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent
OFFICIAL_SPEC = REPO / "tests" / "data" / "official_ccnet_resnet101_state_dict.tsv"
ROAD_ID, EGO_VEHICLE_ID = 7, 1

# Runs train.main() (alone or as one torchrun rank) in float64 with the heads' Dropout2d at p=0; a
# rank other than 0, which writes no snapshot, then saves its weights as <prefix><rank>.pth. Dropout masks are drawn per process, so
# with dropout 2 processes cannot match 1 draw for draw; and the float32 gradients of a ResNet-101
# at random init are only good to a few percent (against float64), so splitting the batch moves
# them by that much, while in float64 both runs agree to rounding. The residual branches' last BN
# scales and the attention's gamma, zero at init, are drawn from a fixed generator instead, so that
# the synchronized BN inside every block and the attention shape the result.
RUNNER = """
import os, sys
import torch
import networks
import train
from networks.resnet import Bottleneck

torch.set_default_dtype(torch.float64)

build_model = networks.build_model

def build_nontrivial_without_dropout(*args, **kwargs):
    model = build_model(*args, **kwargs)
    scales = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout2d):
                module.p = 0.0
            if isinstance(module, Bottleneck):
                module.bn3.weight.uniform_(0.2, 0.6, generator=scales)
        model.head.cca.gamma.fill_(0.5)
    return model

networks.build_model = build_nontrivial_without_dropout
net = train.main(train.get_args_parser().parse_args(sys.argv[2:]))
if os.environ.get("RANK", "0") != "0":
    torch.save(net.state_dict(), sys.argv[1] + os.environ["RANK"] + ".pth")
"""


def write_data(root, num_train, height, width):
    """Synthetic training scenes whose labels hold no ignore pixels (ego-vehicle strip -> road)."""
    lists = make_synthetic_cityscapes(str(root), num_train=num_train, num_val=0, num_test=0,
                                      height=height, width=width)
    for label_file in (root / "gtFine").rglob("*.png"):
        label = cv2.imread(str(label_file), cv2.IMREAD_GRAYSCALE)
        label[label == EGO_VEHICLE_ID] = ROAD_ID
        cv2.imwrite(str(label_file), label)
    return root, lists["train"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Six 64x128 scenes."""
    return write_data(tmp_path_factory.mktemp("cityscapes"), num_train=6, height=64, width=128)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Four 32x64 scenes, trained on whole so that no random crop position plays a part."""
    return write_data(tmp_path_factory.mktemp("small"), num_train=4, height=32, width=64)


def train_flags(data, snapshot_dir, *extra):
    root, train_list = data
    return ["--data-dir", str(root), "--data-list", train_list, "--snapshot-dir", str(snapshot_dir),
            "--restore-from", "none", "--model", "ccnet", "--recurrence", "2", "--input-size", "33,33",
            "--batch-size", "2", "--num-workers", "0", "--print-frequency", "1", *extra]


def cpu_env():
    """This environment with the repository importable (before any PYTHONPATH already set, where
    packages may be installed) and CUDA hidden (gloo, CPU arithmetic)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, CUDA_VISIBLE_DEVICES="")


def run(args, **kwargs):
    """Run a command from the repository root on the CPU; stdout and stderr captured as text."""
    return subprocess.run(args, cwd=REPO, env=cpu_env(), capture_output=True, text=True, **kwargs)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def remove_weights(folder):
    """Snapshots are hundreds of MB each and pytest keeps the folders of recent runs."""
    for path in folder.rglob("*.pth"):
        path.unlink()


@pytest.fixture(autouse=True)
def weights_removed_after_test(tmp_path):
    yield
    remove_weights(tmp_path)


@pytest.fixture(scope="module")
def short_run(data, tmp_path_factory):
    """8 iterations with OHEM on three fixed batches (no augmentation); a snapshot at the end."""
    out = tmp_path_factory.mktemp("short")
    result = run([sys.executable, "train.py", *train_flags(
        data, out, "--num-steps", "8", "--save-pred-every", "8", "--ohem", "1", "--ohem-keep", "100",
        "--learning-rate", "0.01")])
    assert result.returncode == 0, result.stderr
    yield out, result.stdout
    remove_weights(out)


def test_short_run_writes_snapshot_with_official_keys_and_state(short_run):
    out, _ = short_run
    weights = load(out / "CS_scenes_8.pth")
    for key in ("conv1.weight", "bn3.running_var", "layer4.2.conv3.weight", "head.conva.0.weight",
                "head.cca.query_conv.weight", "head.bottleneck.4.weight", "dsn.4.bias"):
        assert key in weights
    assert not any(key.startswith("module.") for key in weights)
    state = load(out / "last.pth")
    assert state["iteration"] == 8
    assert set(state["model"]) == set(weights)
    assert all(torch.equal(state["model"][k], weights[k]) for k in weights)
    assert state["args"]["num_steps"] == 8
    assert not list(out.glob("*.tmp-*"))


def test_short_run_writes_tensorboard_scalars_and_images(short_run):
    out, _ = short_run
    events = b"".join(path.read_bytes() for path in out.glob("events.out.tfevents.*"))
    for tag in (b"loss", b"learning_rate", b"images/0", b"labels/1", b"preds/0"):
        assert tag in events


def test_loss_falls_over_a_short_run(short_run):
    _, stdout = short_run
    losses = [float(x) for x in re.findall(r"^iter \d+/8 +loss ([0-9.]+)", stdout, flags=re.M)]
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_two_nodes_on_loopback_match_one_process_with_the_whole_batch(small_data, tmp_path, free_port):
    """torchrun --nnodes 2 with a c10d rendezvous on 127.0.0.1: two node processes of one gloo worker
    each, the batch of 2 split over them, train 2 steps to the weights of one process with the whole
    batch (RUNNER: float64, non-zero residual BN scales and gamma)."""
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    def flags(out):
        return train_flags(small_data, out, "--num-steps", "2", "--save-pred-every", "2", "--ohem", "0",
                           "--learning-rate", "0.01", "--input-size", "32,64", "--depth", "50")

    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port}", "--rdzv_id", "loopback",
            str(runner), str(tmp_path / "node"), *flags(tmp_path / "nodes")]
    env = dict(cpu_env(), OMP_NUM_THREADS="1")
    nodes = [subprocess.Popen(node, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errors = [proc.communicate(timeout=300)[1] for proc in nodes]
    assert [proc.returncode for proc in nodes] == [0, 0], errors
    single = run([sys.executable, str(runner), str(tmp_path / "single"), *flags(tmp_path / "one")])
    assert single.returncode == 0, single.stderr
    rank0, rank1 = load(tmp_path / "nodes" / "CS_scenes_2.pth"), load(tmp_path / "node1.pth")
    reference = load(tmp_path / "one" / "CS_scenes_2.pth")
    assert reference["layer4.2.bn3.weight"].abs().min() > 0.1 and reference["head.cca.gamma"].abs().min() > 0.1
    for key, value in reference.items():
        assert torch.equal(rank0[key], rank1[key]), key
        if value.is_floating_point():
            torch.testing.assert_close(rank0[key], value, rtol=0, atol=1e-5, msg=key)
        else:
            assert torch.equal(rank0[key], value), key


def test_upstream_launcher_trains_recurrence_0_over_two_processes(small_data, tmp_path, free_port):
    """Upstream's run_local.sh line, `python -m torch.distributed.launch --nproc_per_node=4 train.py ...
    --gpu 0,1,2,3`, with 2 processes and no --gpu on the CPU (the launcher passes --local-rank), at
    upstream's default recurrence 0, whose attention DistributedDataParallel must not wait for."""
    flags = train_flags(small_data, tmp_path, "--num-steps", "2", "--save-pred-every", "2", "--recurrence", "0",
                        "--input-size", "32,64", "--depth", "50")
    result = run([sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2",
                  f"--master_port={free_port}", "train.py", *flags], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load(tmp_path / "last.pth")["iteration"] == 2
    assert load(tmp_path / "CS_scenes_2.pth")["head.cca.gamma"].eq(0).all()


def test_killed_run_resumed_matches_uninterrupted_run(data, tmp_path):
    """6 images, batch 2: the state saved after iteration 2 lies inside epoch 0 (3 batches). Two loader
    workers, and none in the resumed run: each sample must still be augmented as before."""
    def flags(out):
        return train_flags(data, out, "--num-steps", "3", "--save-pred-every", "2", "--ohem", "1",
                           "--ohem-keep", "100", "--random-mirror", "--random-scale", "--num-workers", "2",
                           "--depth", "50")

    full = run([sys.executable, "train.py", *flags(tmp_path / "full")])
    assert full.returncode == 0, full.stderr

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "train.py", *flags(killed_dir)], cwd=REPO, env=cpu_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (killed_dir / "last.pth").exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "CS_scenes_3.pth").exists(), "the run ended before it could be killed"

    resumed = run([sys.executable, "train.py", *flags(killed_dir), "--resume", str(killed_dir / "last.pth"),
                   "--num-workers", "0"])
    assert resumed.returncode == 0, resumed.stderr
    expected, got = load(tmp_path / "full" / "CS_scenes_3.pth"), load(killed_dir / "CS_scenes_3.pth")
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_non_finite_loss_stops_training_and_keeps_last_snapshot(data, tmp_path):
    result = run([sys.executable, "train.py", *train_flags(
        data, tmp_path, "--num-steps", "6", "--save-pred-every", "1", "--learning-rate", "1e30",
        "--depth", "50")])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "loss is" in message and "training stopped" in message
    last = int(re.search(r"at iteration (\d+)", message).group(1))
    state = load(tmp_path / "last.pth")
    assert state["iteration"] == last - 1
    snapshot = load(tmp_path / f"CS_scenes_{last - 1}.pth")
    for key, value in [*snapshot.items(), *state["model"].items()]:
        assert torch.isfinite(value).all(), key


def test_non_finite_weights_stop_training_before_any_snapshot(data, tmp_path, monkeypatch):
    """A NaN running mean leaves the training loss finite but must not reach a snapshot."""
    build_model = train.networks.build_model

    def build_with_nan_buffer(*args, **kwargs):
        net = build_model(*args, **kwargs)
        net.bn1.running_mean.fill_(float("nan"))
        return net

    monkeypatch.setattr(train.networks, "build_model", build_with_nan_buffer)
    args = train.get_args_parser().parse_args(train_flags(data, tmp_path, "--num-steps", "2",
                                                          "--save-pred-every", "1"))
    with pytest.raises(UserError, match="non-finite weights after iteration 1: training stopped"):
        train.main(args)
    assert not list(tmp_path.glob("*.pth"))


def test_resume_does_not_read_restore_from_and_names_each_changed_flag(short_run, data, tmp_path, capsys):
    """--num-steps and --learning-rate change the schedule: each is named on a line of its own; where
    files go (--snapshot-dir, --print-frequency), how many workers load the data (--num-workers) and
    what a resumed run does not read (--restore-from) are not."""
    out, _ = short_run
    state = out / "last.pth"
    args = train.get_args_parser().parse_args(train_flags(
        data, tmp_path, "--num-steps", "9", "--save-pred-every", "9", "--resume", str(state),
        "--restore-from", "/no/such/weights.pth", "--learning-rate", "0.02", "--print-frequency", "5",
        "--ohem", "1", "--ohem-keep", "100", "--num-workers", "1"))
    train.main(args)
    assert load(tmp_path / "last.pth")["iteration"] == 9
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--resume")]
    assert notes == [f"--resume {state}: {change}: the continuation is no longer the uninterrupted run"
                     for change in ("--learning-rate 0.01 (now 0.02)", "--num-steps 8 (now 9)")]


def test_restore_from_is_read_once_for_the_dataset_it_tells_and_the_weights(short_run, data, tmp_path,
                                                                           monkeypatch):
    """Without --dataset, the --restore-from file tells the dataset (its 19 classes: cityscapes) and gives
    the weights, from one read."""
    out, _ = short_run
    reads = []

    def counted(path):
        reads.append(path)
        return read_checkpoint(path)

    monkeypatch.setattr(from_checkpoint, "read_checkpoint", counted)
    args = train.get_args_parser().parse_args(train_flags(data, tmp_path, "--num-steps", "1")
                                              + ["--restore-from", str(out / "CS_scenes_8.pth")])
    train.main(args)
    assert (args.dataset, reads) == ("cityscapes", [str(out / "CS_scenes_8.pth")])


def test_resume_from_a_truncated_state_is_a_user_error_naming_it(short_run, data, tmp_path):
    out, _ = short_run
    truncated = tmp_path / "truncated" / "last.pth"
    truncated.parent.mkdir()
    truncated.write_bytes((out / "last.pth").read_bytes()[:100000])
    args = train.get_args_parser().parse_args(train_flags(
        data, tmp_path, "--num-steps", "9", "--resume", str(truncated)))
    with pytest.raises(UserError, match=f"cannot read checkpoint {re.escape(str(truncated))}: "):
        train.main(args)


@pytest.mark.parametrize("flags,expected", [
    (["--num-classes", "5"], "--num-classes 19 (now 5)"),
    (["--model", "pspnet"], "--model ccnet (now pspnet)"),
    (["--recurrence", "0", "--model", "pspnet"], "--model ccnet (now pspnet), --recurrence 2 (now 0)"),
])
def test_resume_from_another_model_is_a_user_error_naming_it(short_run, data, tmp_path, flags, expected):
    out, _ = short_run
    args = train.get_args_parser().parse_args(train_flags(
        data, tmp_path, "--num-steps", "9", "--resume", str(out / "last.pth"), *flags))
    with pytest.raises(UserError, match=re.escape(f"--resume {out / 'last.pth'}: written for another model, "
                                                  f"with {expected}")):
        train.main(args)
    assert not list(tmp_path.glob("*.pth"))


def test_a_flag_the_stored_run_lacks_is_compared_with_its_default(data, tmp_path):
    """A state written before --norm, --amp and --memory-efficient existed: its run had their defaults."""
    args = train.get_args_parser().parse_args(train_flags(data, tmp_path, "--norm", "inplace-abn", "--amp"))
    stored = {k: v for k, v in vars(args).items() if k not in ("norm", "amp", "memory_efficient")}
    defaults = {**vars(train.get_args_parser().parse_args([])), **train.MODEL_DEFAULTS}
    model, other = changed_flags(stored, args, defaults)
    assert model == ["--norm syncbn (now inplace-abn)"]
    assert other == ["--amp False (now True)"]


def test_resume_of_a_state_from_before_norm_with_inplace_abn_is_a_user_error(short_run, data, tmp_path):
    out, _ = short_run
    state = torch.load(out / "last.pth", weights_only=False)
    del state["args"]["norm"]
    old = tmp_path / "old" / "last.pth"
    old.parent.mkdir()
    torch.save(state, old)
    args = train.get_args_parser().parse_args(train_flags(
        data, tmp_path, "--num-steps", "9", "--resume", str(old), "--norm", "inplace-abn"))
    with pytest.raises(UserError, match=re.escape(f"--resume {old}: written for another model, "
                                                  "with --norm syncbn (now inplace-abn)")):
        train.main(args)
    assert not list(tmp_path.glob("*.pth"))


def test_not_restore_last_resets_only_the_two_classifier_convolutions():
    """With 512 classes the DSN's first convolution also has 512 outputs and must be kept."""
    torch.manual_seed(0)
    net = train.networks.build_model("ccnet", 512, norm_layer=torch.nn.BatchNorm2d)
    before = {key: value.clone() for key, value in net.state_dict().items()}
    train.reset_classifiers(net)
    changed = {key for key, value in net.state_dict().items() if not torch.equal(value, before[key])}
    assert changed == {"head.bottleneck.4.weight", "head.bottleneck.4.bias", "dsn.4.weight", "dsn.4.bias"}


def test_norm_inplace_abn_writes_official_snapshots_whose_keys_tell_their_layout(data, tmp_path):
    """One step with --norm inplace-abn: the snapshot has the official keys; fine-tuning it with another
    --norm, or resuming its state with another --norm, is one line naming the flag."""
    args = train.get_args_parser().parse_args(train_flags(data, tmp_path, "--num-steps", "1",
                                                          "--norm", "inplace-abn"))
    train.main(args)
    snapshot = read_state_dict(tmp_path / "CS_scenes_1.pth")
    official = [line.split("\t")[0] for line in OFFICIAL_SPEC.read_text().splitlines() if not line.startswith("#")]
    assert [k for k in snapshot if not k.endswith("num_batches_tracked")] == official
    assert train.networks.layout_of(snapshot) == "inplace-abn"
    restore = train.get_args_parser().parse_args(train_flags(data, tmp_path / "again", "--num-steps", "1")
                                                 + ["--restore-from", str(tmp_path / "CS_scenes_1.pth"),
                                                    "--norm", "syncbn"])
    with pytest.raises(UserError, match="train it with --norm inplace-abn"):
        train.main(restore)
    resume = train.get_args_parser().parse_args(train_flags(data, tmp_path, "--num-steps", "2")
                                                + ["--resume", str(tmp_path / "last.pth"), "--norm", "syncbn"])
    with pytest.raises(UserError, match=re.escape("--norm inplace-abn (now syncbn)")):
        train.main(resume)


BAD_INPUTS = {
    "missing_data_dir": (["--data-dir", "/no/such/dir"], "/no/such/dir"),
    "missing_list": (["--data-list", "/no/such/list.lst"], "/no/such/list.lst"),
    "list_with_missing_files": (["--data-list", "{broken_list}"], "file not found"),
    "gpu_without_cuda": (["--gpu", "0"], "CUDA is not available"),
    "unknown_model": (["--model", "nosuchnet"], "nosuchnet"),
    "missing_restore_from": (["--restore-from", "/no/such/weights.pth"], "/no/such/weights.pth"),
}


WITHOUT_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.mark.parametrize("case", [pytest.param(case, marks=WITHOUT_CUDA if case == "gpu_without_cuda" else ())
                                  for case in sorted(BAD_INPUTS)])
def test_bad_input_raises_user_error_naming_the_problem(case, data, tmp_path):
    flags, expected = BAD_INPUTS[case]
    broken_list = tmp_path / "broken.lst"
    broken_list.write_text("leftImg8bit/none.png\tgtFine/none.png\n")
    flags = [flag.format(broken_list=broken_list) for flag in flags]
    args = train.get_args_parser().parse_args(train_flags(data, tmp_path, "--num-steps", "1") + flags)
    with pytest.raises(UserError, match=re.escape(expected)):
        train.main(args)
    assert not list(tmp_path.glob("CS_scenes_*.pth"))


def test_malformed_input_size_is_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.get_args_parser().parse_args(["--input-size", "769x769"])
    assert exit_info.value.code != 0
    assert capsys.readouterr().err == ("error: argument --input-size: expected HEIGHT,WIDTH with positive "
                                       "integers, got '769x769'\n")


@pytest.mark.parametrize("argv,amp,channels_last", [
    (["--amp", "--channels-last"], True, True),
    (["--amp", "1", "--channels-last", "0"], True, False),
    ([], False, False),
])
def test_amp_and_channels_last_accept_a_bare_flag_or_a_boolean(argv, amp, channels_last):
    args = train.get_args_parser().parse_args(argv)
    assert (args.amp, args.channels_last) == (amp, channels_last)


@pytest.mark.parametrize("value", ["256", "-1", "ignore"])
def test_ignore_label_outside_0_to_255_is_one_line_error(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.get_args_parser().parse_args(["--ignore-label", value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"error: argument --ignore-label: expected an integer label value "
                                       f"in 0..255, got '{value}'\n")


def test_user_error_exits_1_with_one_line_and_no_traceback(data, tmp_path):
    result = run([sys.executable, "train.py", *train_flags(data, tmp_path, "--data-dir", "/no/such/dir")])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: --data-dir /no/such/dir: no such directory"]
