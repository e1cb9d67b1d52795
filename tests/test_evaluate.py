"""Inference (whole, sliding window, scales, flip) and evaluate.py end to end on synthetic Cityscapes."""
import csv
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import evaluate
import networks
from bench.common import peak_mb
from bench.upstream_baseline import upstream_sliding_logits
from dataset.cityscapes_labels import CLASS_NAMES, ID_TO_TRAINID, PALETTE, TRAINID_TO_ID
from dataset.datasets import IMG_MEAN, CSDataValSet
from dataset.synthetic import make_synthetic_cityscapes
from utils.checkpoint import load_model
from utils.confusion_files import DPI, cell_inches
from utils.errors import exit_on_user_error
from utils.inference import predict, predict_sliding, predict_whole, sliding_stride, tile_starts
from utils.metrics import ConfusionMatrix


REPO = Path(__file__).resolve().parent.parent


class TinySegNet(nn.Module):
    """Stride-8 logits returned as [main, auxiliary], the way CCNet returns them."""

    def __init__(self, num_classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 5, stride=8, padding=2)

    def forward(self, x):
        out = self.conv(x)
        return [out, torch.zeros_like(out)]


def test_tile_starts_cover_the_image_and_end_flush_with_it():
    for length, tile in [(100, 30), (30, 30), (20, 30), (769, 256), (1024, 769)]:
        stride = sliding_stride((tile, tile))[0]
        starts = tile_starts(length, tile, stride)
        covered = set()
        for s in starts:
            covered.update(range(s, min(s + tile, length)))
        assert covered == set(range(length))
        assert starts[-1] == max(length - tile, 0)
        assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


def test_sliding_stride_is_two_thirds_of_the_tile_rounded_up():
    assert sliding_stride((769, 769)) == (513, 513)
    assert sliding_stride((768, 30)) == (512, 20)


@torch.no_grad()
@pytest.mark.parametrize("size,tile", [((40, 56), (16, 24)), ((20, 30), (32, 32)), ((33, 17), (16, 16))])
def test_sliding_window_matches_upstream_tile_rule(size, tile):
    """Against upstream's rule, accumulated per tile in float64 on the host (bench.upstream_baseline)."""
    model = TinySegNet().eval()
    image = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    expected = torch.from_numpy(upstream_sliding_logits(model, image.numpy(), tile, 4)).permute(0, 3, 1, 2)
    assert torch.allclose(predict_sliding(model, image, tile).double(), expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_whole_and_sliding_agree_exactly_when_the_tile_is_the_image():
    model = TinySegNet().eval()
    image = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(predict_sliding(model, image, (48, 64)), predict_whole(model, image))
    assert torch.equal(predict(model, image, (48, 64)), predict(model, image, None))


@torch.no_grad()
def test_flip_averages_the_mirrored_prediction_mirrored_back():
    model = TinySegNet().eval()
    image = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    plain = predict_whole(model, image).softmax(1)
    mirrored = predict_whole(model, image.flip(-1)).flip(-1).softmax(1)
    assert torch.allclose(predict(model, image, flip=True), (plain + mirrored) / 2, atol=1e-6, rtol=0)


@torch.no_grad()
def test_scales_average_probabilities_resized_to_the_image():
    model = TinySegNet().eval()
    image = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(4))
    half = F.interpolate(image, size=(16, 24), mode="bilinear", align_corners=True)
    half_logits = F.interpolate(predict_whole(model, half), size=(32, 48), mode="bilinear", align_corners=True)
    expected = (predict_whole(model, image).softmax(1) + half_logits.softmax(1)) / 2
    probs = predict(model, image, None, scales=[1.0, 0.5])
    assert probs.shape == (1, 4, 32, 48)
    assert torch.allclose(probs, expected, atol=1e-6, rtol=0)


@torch.no_grad()
def test_a_batch_predicts_each_image_as_alone():
    model = TinySegNet().eval()
    images = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    batched = predict(model, images, (24, 24), scales=[0.75, 1.0], flip=True)
    single = torch.cat([predict(model, images[i:i + 1], (24, 24), scales=[0.75, 1.0], flip=True)
                        for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-6, rtol=0)


class LayerFourStandIn(nn.Module):
    """19-class stride-8 logits through one (N, 2048, H/8, W/8) float32 map, as large as CCNet's
    layer4 output: CCNet's forward holds that map and much more at every scale, so its forward
    needs at least this stand-in's memory while the accumulation around it is the same."""

    def forward(self, x):
        pooled = F.avg_pool2d(x, 8, ceil_mode=True)  # (N, 3, h, w)
        features = pooled.repeat(1, 683, 1, 1)[:, :2048]  # (N, 2048, h, w), a copy
        return [features[:, :19] * 2]


@torch.no_grad()
@pytest.mark.parametrize("flip", [False, True])
def test_multi_scale_needs_no_more_memory_than_the_largest_scale_alone(flip):
    """Scales 0.75..1.75: the peak of the whole evaluation equals that of predicting the 1.75 view
    alone. Every term (forward, views, probability maps) grows with the pixel count, so 256x512
    stands for 1024x2048 (docs/evaluation.md: the figures at 1024x2048)."""
    image = torch.randn(1, 3, 256, 512, generator=torch.Generator().manual_seed(6))
    model, cpu = LayerFourStandIn(), torch.device("cpu")
    multi = peak_mb(lambda: predict(model, image, None, [0.75, 1.0, 1.25, 1.5, 1.75], flip), cpu)
    largest = peak_mb(lambda: predict(model, image, None, [1.75], flip), cpu)
    print(f"peak MiB at 256x512, flip {flip}: scales 0.75-1.75 {multi:.1f}, scale 1.75 alone {largest:.1f}")
    assert multi <= largest


UPSTREAM_README_COMMAND = ("--data-dir {data} --recurrence 2 --model ccnet --restore-from {ckpt} --whole Ture "
                       "--gpu 0 --recurrence 2 --batch-size 1")


def train_ids_of(path):
    """uint8 (H, W) pixel values of a PNG."""
    return np.array(Image.open(path))


def run_evaluate(argv):
    """evaluate.py's main on argv, as the script runs it (UserError -> exit 1)."""
    args = evaluate.get_args_parser().parse_args(argv)
    return exit_on_user_error(evaluate.main)(args)


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    """A synthetic Cityscapes (3 val, 2 test images of 64x128) and a CCNet checkpoint for it."""
    root = tmp_path_factory.mktemp("cityscapes")
    lists = make_synthetic_cityscapes(str(root), num_train=0, num_val=3, num_test=2, height=64, width=128)
    torch.manual_seed(0)
    model = networks.build_model("ccnet", 19, recurrence=2, norm_layer=nn.BatchNorm2d)
    ckpt_dir = root / "snapshots"
    ckpt_dir.mkdir()
    ckpt = ckpt_dir / "CS_scenes_1.pth"
    torch.save(model.state_dict(), ckpt)
    return {"root": str(root), "val": lists["val"], "test": lists["test"], "ckpt": str(ckpt)}


def val_label_files(cityscapes):
    """The synthetic val split's label-id PNGs, sorted."""
    return sorted(Path(cityscapes["root"], "gtFine", "val").glob("*/*.png"))


def common_flags(cityscapes, out_dir):
    """evaluate.py flags for the synthetic val split and checkpoint, predictions under out_dir."""
    return ["--data-dir", cityscapes["root"], "--data-list", cityscapes["val"], "--restore-from", cityscapes["ckpt"],
            "--Output", f"{out_dir}/", "--num-workers", "0", "--model", "ccnet", "--recurrence", "2"]


@pytest.fixture(scope="module")
def whole_run(cityscapes, tmp_path_factory):
    """The command of upstream's README (paths replaced, --gpu left out on the CPU) on the val split."""
    out_dir = tmp_path_factory.mktemp("whole")
    argv = UPSTREAM_README_COMMAND.format(data=cityscapes["root"], ckpt=cityscapes["ckpt"]).split()
    gpu = argv.index("--gpu")
    argv = argv[:gpu] + argv[gpu + 2:] + ["--data-list", cityscapes["val"], "--Output", f"{out_dir}/",
                                          "--num-workers", "0"]
    run_evaluate(argv)
    folder = os.path.dirname(cityscapes["ckpt"])
    with open(os.path.join(folder, "result.txt")) as f:
        return {"result": json.load(f), "outputs": out_dir / "outputs",
                "confusion": read_csv(os.path.join(folder, "confusion_matrix.csv"))}


def read_csv(path):
    """The rows of a CSV file as lists of strings."""
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_upstream_readme_command_parses_as_whole_with_two_recurrences(cityscapes):
    argv = UPSTREAM_README_COMMAND.format(data=cityscapes["root"], ckpt=cityscapes["ckpt"]).split()
    args = evaluate.get_args_parser().parse_args(argv)
    assert (args.whole, args.recurrence, args.batch_size, args.model, args.gpu) == (True, 2, 1, "ccnet", "0")


def test_miou_equals_a_direct_count_over_the_saved_pngs(cityscapes, whole_run):
    ious = []
    label_files = val_label_files(cityscapes)
    assert sorted(os.listdir(whole_run["outputs"])) == [path.name for path in label_files]
    predictions = [train_ids_of(whole_run["outputs"] / path.name) for path in label_files]
    labels = [ID_TO_TRAINID[train_ids_of(path)] for path in label_files]
    for c in range(19):
        inter = sum(int(((p == c) & (t == c)).sum()) for p, t in zip(predictions, labels))
        union = sum(int((((p == c) | (t == c)) & (t != 255)).sum()) for p, t in zip(predictions, labels))
        ious.append(inter / union if union else None)
    present = [v for v in ious if v is not None]
    assert whole_run["result"]["IU_array"] == ious
    assert whole_run["result"]["meanIU"] == sum(present) / len(present)


def test_confusion_csv_equals_a_brute_force_recount_of_the_saved_pngs(cityscapes, whole_run):
    """Counted one pixel at a time from the predictions evaluate.py wrote and the label-id PNGs."""
    counts = [[0] * 19 for _ in range(19)]
    for path in val_label_files(cityscapes):
        prediction = train_ids_of(whole_run["outputs"] / path.name).ravel().tolist()
        label = ID_TO_TRAINID[train_ids_of(path)].ravel().tolist()
        for p, t in zip(prediction, label):
            if t != 255:
                counts[t][p] += 1
    header, *rows = whole_run["confusion"]
    assert header == ["true \\ predicted", *CLASS_NAMES]
    assert [row[0] for row in rows] == list(CLASS_NAMES)
    assert [[int(v) for v in row[1:]] for row in rows] == counts
    labelled = [sum(row) for row in counts]
    accuracy = [counts[c][c] / n if n else None for c, n in enumerate(labelled)]
    assert whole_run["result"]["Acc_array"] == accuracy
    defined = [a for a in accuracy if a is not None]
    assert whole_run["result"]["meanAcc"] == sum(defined) / len(defined)


def test_table_prints_each_class_iou_and_accuracy_then_the_means(capsys):
    confmat = ConfusionMatrix(3)
    confmat.update(torch.tensor([0, 1, 1, 1, 2]), torch.tensor([0, 0, 1, 1, 1]))
    evaluate.report(confmat, ["road", "sidewalk", "building"])
    assert capsys.readouterr().out.splitlines() == [
        "class                  IoU     Acc",
        "road                 50.00   50.00",
        "sidewalk             50.00   66.67",
        "building              0.00    null",
        "mean (mIoU, mAcc)    33.33   58.33",
        "pixel accuracy               60.00",
    ]


def test_confusion_figure_is_drawn_beside_result_txt(cityscapes, whole_run, tmp_path):
    flags = common_flags(cityscapes, tmp_path)
    flags[flags.index("--restore-from") + 1] = shutil.copy(cityscapes["ckpt"], tmp_path)
    run_evaluate(flags + ["--whole", "true", "--no-save-pred", "--confusion-figure"])
    assert read_csv(tmp_path / "confusion_matrix.csv") == whole_run["confusion"]
    with Image.open(tmp_path / "confusion_matrix.png") as figure:
        assert figure.format == "PNG" and min(figure.size) > 19 * cell_inches(19) * DPI


def test_confusion_figure_with_test_is_one_line(cityscapes, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_evaluate(common_flags(cityscapes, tmp_path) + ["--test", "--confusion-figure", "1"])
    err = capsys.readouterr().err
    assert err == "error: --test has no labels, so no confusion matrix: leave out --confusion-figure\n"


def test_confusion_figure_without_matplotlib_is_one_line_before_evaluating(cityscapes, tmp_path, capsys,
                                                                           monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "matplotlib" else find_spec(name))
    with pytest.raises(SystemExit):
        run_evaluate(common_flags(cityscapes, tmp_path) + ["--confusion-figure"])
    assert capsys.readouterr().err == "error: --confusion-figure needs matplotlib: pip install matplotlib\n"


def test_saved_predictions_use_the_cityscapes_palette(whole_run):
    image = Image.open(next(whole_run["outputs"].iterdir()))
    assert image.mode == "P"
    assert np.array_equal(np.array(image.getpalette()[:57]).reshape(19, 3), PALETTE)


def test_sliding_with_the_image_as_tile_equals_whole_on_ccnet(cityscapes, whole_run, tmp_path):
    run_evaluate(common_flags(cityscapes, tmp_path) + ["--input-size", "64,128", "--batch-size", "2"])
    with open(os.path.join(os.path.dirname(cityscapes["ckpt"]), "result.txt")) as f:
        assert json.load(f) == whole_run["result"]
    for path in whole_run["outputs"].iterdir():
        assert np.array_equal(train_ids_of(path), train_ids_of(tmp_path / "outputs" / path.name))


def val_batch(cityscapes):
    """The checkpoint's CCNet in eval mode, the val images (3, 3, H, W) as one batch, their labels (3, H, W)."""
    model = networks.build_model("ccnet", 19, recurrence=2, norm_layer=nn.BatchNorm2d)
    load_model(model, cityscapes["ckpt"], strict=True)
    dataset = CSDataValSet(cityscapes["root"], cityscapes["val"], mean=IMG_MEAN)
    images, labels = zip(*[(torch.from_numpy(dataset[i][0]), dataset[i][1]) for i in range(len(dataset))])
    return model.eval(), torch.stack(images), np.stack(labels).astype(np.int64)


def counted_confusion(predictions, labels):
    """(19, 19) int64 pixel counts of (label, prediction), counted one labelled pixel at a time."""
    matrix = np.zeros((19, 19), dtype=np.int64)
    valid = labels != 255
    np.add.at(matrix, (labels[valid], predictions[valid]), 1)
    return matrix


def test_flip_and_multiscale_count_the_flipped_multiscale_predictions(cityscapes, tmp_path):
    confmat = run_evaluate(common_flags(cityscapes, tmp_path) + [
        "--whole", "true", "--batch-size", "3", "--scales", "0.75,1.25", "--flip", "true", "--no-save-pred"])
    model, images, labels = val_batch(cityscapes)
    with torch.no_grad():
        predictions = predict(model, images, None, scales=[0.75, 1.25], flip=True).argmax(1)  # (3, H, W)
    assert np.array_equal(confmat.matrix.numpy(), counted_confusion(predictions.numpy(), labels))
    assert not (tmp_path / "outputs").exists()


def test_test_split_label_ids_map_back_to_the_train_ids(cityscapes, tmp_path):
    flags = common_flags(cityscapes, tmp_path)
    flags[flags.index("--data-list") + 1] = cityscapes["test"]
    assert run_evaluate(flags + ["--test", "--whole", "1"]) is None
    names = sorted(p.name for p in (tmp_path / "outputs").glob("*.png"))
    assert len(names) == 2
    for name in names:
        label_ids = train_ids_of(tmp_path / "outputs" / "label_ids" / name)
        assert np.isin(label_ids, TRAINID_TO_ID).all()
        assert np.array_equal(ID_TO_TRAINID[label_ids], train_ids_of(tmp_path / "outputs" / name))


def test_upstream_launcher_over_two_processes_equals_one_process(cityscapes, whole_run, tmp_path, free_port):
    """Upstream's run_local.sh line, `python -m torch.distributed.launch --nproc_per_node=4 evaluate.py
    ... --gpu 0`, with 2 processes and no --gpu on the CPU. The launcher is torchrun that also
    passes --local-rank to the script, so this covers torchrun too."""
    argv = common_flags(cityscapes, tmp_path) + ["--whole", "true", "--batch-size", "1"]
    argv[argv.index("--restore-from") + 1] = shutil.copy(cityscapes["ckpt"], tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2",
                           f"--master_port={free_port}", "evaluate.py"] + argv,
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "result.txt") as f:
        assert json.load(f) == whole_run["result"]
    assert read_csv(tmp_path / "confusion_matrix.csv") == whole_run["confusion"]
    assert sorted(os.listdir(tmp_path / "outputs")) == sorted(os.listdir(whole_run["outputs"]))


@pytest.mark.parametrize("change,message", [
    ({"--restore-from": "missing.pth"}, "checkpoint not found"),
    ({"--restore-from": "corrupt.pth"}, "cannot read checkpoint"),
    ({"--num-classes": "5"}, "does not fit the model"),
    ({"--data-list": "missing.lst"}, "missing.lst"),
    ({"--gpu": "99"}, "--gpu 99"),
])
def test_bad_inputs_exit_with_one_line(cityscapes, tmp_path, capsys, change, message):
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    argv = common_flags(cityscapes, tmp_path)
    for flag, value in change.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = str(tmp_path / value) if value.endswith(("pth", "lst")) else value
        else:
            argv += [flag, value]
    with pytest.raises(SystemExit) as stop:
        run_evaluate(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_missing_data_dir_is_one_line_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "evaluate.py", "--data-dir", str(tmp_path / "nowhere")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr == f"error: data directory not found: {tmp_path / 'nowhere'}\n"


def test_per_class_iou_matches_the_official_cityscapes_evaluation(cityscapes, whole_run, tmp_path):
    official = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
                                   reason="cityscapesscripts is not installed")
    predictions, ground_truth = [], val_label_files(cityscapes)
    for path in ground_truth:
        label_id_file = str(tmp_path / path.name)
        Image.fromarray(TRAINID_TO_ID[train_ids_of(whole_run["outputs"] / path.name)]).save(label_id_file)
        predictions.append(label_id_file)
    official.args.evalInstLevelScore = False
    official.args.JSONOutput = False
    official.args.quiet = True
    scores = official.evaluateImgLists(predictions, [str(p) for p in ground_truth], official.args)["classScores"]
    theirs = [None if math.isnan(scores[name]) else scores[name] for name in CLASS_NAMES]
    assert theirs == pytest.approx(whole_run["result"]["IU_array"], rel=1e-12)


def test_amp_and_channels_last_count_the_bf16_channels_last_predictions(cityscapes, tmp_path):
    """The bf16 predictions differ from the fp32 ones in a few pixels, so the counts tell them apart."""
    confmat = run_evaluate(common_flags(cityscapes, tmp_path) + [
        "--whole", "true", "--amp", "--channels-last", "1", "--no-save-pred"])
    model, images, labels = val_batch(cityscapes)
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        predictions = predict(model, images.to(memory_format=torch.channels_last)).argmax(1)  # (3, H, W)
    assert np.array_equal(confmat.matrix.numpy(), counted_confusion(predictions.numpy(), labels))


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    """A CCNet snapshot in the official InPlace-ABN layout (head.bottleneck.3.*, dsn.3.*)."""
    torch.manual_seed(0)
    model = networks.build_model("ccnet", 19, recurrence=2, norm="inplace-abn")
    path = tmp_path_factory.mktemp("official") / "CS_scenes_60000.pth"
    torch.save(model.state_dict(), path)
    return str(path)


def test_an_official_snapshot_is_evaluated_in_its_own_layout(cityscapes, official_checkpoint, tmp_path, capsys):
    flags = common_flags(cityscapes, tmp_path)
    flags[flags.index("--restore-from") + 1] = official_checkpoint
    confmat = run_evaluate(flags + ["--whole", "true", "--no-save-pred"])
    assert f"{official_checkpoint}: ccnet in the official CCNet layout (InPlace-ABN" in capsys.readouterr().out
    labelled = sum(int((ID_TO_TRAINID[train_ids_of(path)] != 255).sum()) for path in val_label_files(cityscapes))
    assert int(confmat.matrix.sum()) == labelled


def test_a_snapshot_of_the_other_layout_is_one_line_naming_the_keys(cityscapes, official_checkpoint, tmp_path,
                                                                   capsys):
    flags = common_flags(cityscapes, tmp_path)
    flags[flags.index("--restore-from") + 1] = official_checkpoint
    with pytest.raises(SystemExit):
        run_evaluate(flags + ["--norm", "syncbn"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit the model" in err and "head.bottleneck.4.weight" in err
