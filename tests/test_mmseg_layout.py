"""mmsegmentation's CCNet layout (norm="mmseg"): its keys against mmsegmentation's, its forward against a
float64 reference written from the layout's description, its files as mmsegmentation and mmengine
write them, and the files of other models and broken files refused in one line."""
import io
import pathlib
import pickle
import re
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import evaluate
import networks
import predict
import train
from dataset.datasets import IMG_MEAN
from dataset.synthetic import make_synthetic_cityscapes
from networks.from_checkpoint import build_from_checkpoint, checkpoint_settings, depth_of
from networks.mmseg_ccnet import MMSEG_MEAN, MMSEG_STD
from references.einsum import einsum_criss_cross
from utils.checkpoint import read_checkpoint, read_state, read_state_dict, resume_flags
from utils.errors import UserError, exit_on_user_error
from utils.inference import predict as predict_probs, rescaled_size

DATA = pathlib.Path(__file__).resolve().parent / "data"
# Copies of shared/spec/mmseg/ccnet_r{50,101}-d8_4xb2-80k_cityscapes-769x769.tsv, and the decode heads of
# mmsegmentation's PSPNet and DeepLabv3 (written from its models the same way, in bench's venv).
SPECS = {50: DATA / "mmseg_ccnet_r50-d8_cityscapes-769x769.tsv",
         101: DATA / "mmseg_ccnet_r101-d8_cityscapes-769x769.tsv"}
OTHER_HEADS = {"pspnet": DATA / "mmseg_pspnet_r50-d8_decode_head.tsv",
               "deeplabv3": DATA / "mmseg_deeplabv3_r50-d8_decode_head.tsv"}
CONFIG_769 = """dataset_type = 'CityscapesDataset'
model = dict(
    auxiliary_head=dict(align_corners=True, channels=256, in_channels=1024, num_classes=19, type='FCNHead'),
    decode_head=dict(
        align_corners=True,
        loss_decode=dict(loss_weight=1.0, type='CrossEntropyLoss', use_sigmoid=False),
        num_classes=19, recurrence=2, type='CCHead'),
    test_cfg=dict(crop_size=(769, 769), mode='slide', stride=(513, 513)),
    type='EncoderDecoder')
"""


def spec(path):
    """[(key, shape, dtype)] of a key list, in file order."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    return [(key, tuple(int(n) for n in shape.split(",")) if shape else (), dtype) for key, shape, dtype in rows]


def keys_shapes_dtypes(state):
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]


def randomize(state, seed):
    """Weights of both signs, BN statistics away from (0, 1) and a non-zero gamma, scaled so that the
    activations of the network stay of order one (in place; returns state)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator, dtype=value.dtype) + 0.5)
            elif key.endswith(("running_mean", "bias")):
                value.copy_(torch.randn(value.shape, generator=generator, dtype=value.dtype) * 0.1)
            elif value.dim() == 1:  # norm weights
                value.copy_(torch.rand(value.shape, generator=generator, dtype=value.dtype) - 0.25)
            elif value.dim() == 4:
                fan_in = value[0].numel()
                value.copy_(torch.randn(value.shape, generator=generator, dtype=value.dtype) * (2 / fan_in) ** 0.5)
            elif key.endswith("gamma.scale"):
                value.fill_(0.7)
    return state


@pytest.fixture(scope="module")
def zoo_state():
    """A random ResNet-50 CCNet state_dict in mmsegmentation's keys, 19 classes."""
    torch.manual_seed(0)
    model = networks.build_model("ccnet", 19, recurrence=2, norm="mmseg", depth=50, norm_layer=torch.nn.BatchNorm2d)
    return randomize(model.state_dict(), seed=1)


@pytest.fixture(scope="module")
def zoo_file(zoo_state, tmp_path_factory):
    """zoo_state saved as mmsegmentation 0.x released its zoo files: {"meta", "state_dict"}, legacy format."""
    path = tmp_path_factory.mktemp("zoo") / "ccnet_r50-d8_769x769_40k_cityscapes.pth"
    meta = {"mmseg_version": "0.5.0+b72a6d0", "config": CONFIG_769, "CLASSES": ("road", "sidewalk"),
            "PALETTE": [[128, 64, 128], [244, 35, 232]], "mmcv_version": "1.0rc0", "time": "Tue Jun 16 2020",
            "env_info": "sys.platform: linux", "seed": 0, "exp_name": "ccnet", "epoch": 1, "iter": 40000}
    torch.save({"meta": meta, "state_dict": zoo_state}, path, _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize("depth", [50, 101])
def test_state_dict_is_exactly_mmsegmentations_keys_shapes_and_dtypes(depth):
    """In mmsegmentation's order too (its heads register the classifier first); a ResNet-101 is built, not run."""
    model = networks.build_model("ccnet", 19, recurrence=2, norm="mmseg", depth=depth)
    assert keys_shapes_dtypes(model.state_dict()) == spec(SPECS[depth])
    assert depth_of(model.state_dict()) == depth
    assert networks.layout_of(model.state_dict()) == "mmseg"


def batch_norm(x, state, prefix):
    """BatchNorm in eval mode, written out: (x - mean) / sqrt(var + 1e-5) * weight + bias."""
    view = lambda name: state[f"{prefix}.{name}"].view(1, -1, 1, 1)  # noqa: E731
    return (x - view("running_mean")) / (view("running_var") + 1e-5).sqrt() * view("weight") + view("bias")


def conv_bn_relu(x, state, prefix):
    """mmcv's ConvModule (3x3 conv without bias, BN, ReLU) at prefix.conv / prefix.bn."""
    return batch_norm(F.conv2d(x, state[f"{prefix}.conv.weight"], padding=1), state, f"{prefix}.bn").relu()


def reference_logits(state, rgb, depth, contract_dilation=True):
    """mmsegmentation's CCNet in eval mode, from its description: (decode, auxiliary) logits at 1/8 for
    a uint8 RGB image (H, W, 3), in float64 from a state_dict in mmsegmentation's keys."""
    state = {k: v.double() for k, v in state.items()}
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).double().unsqueeze(0)
    x = (x - torch.tensor(MMSEG_MEAN).double().view(1, 3, 1, 1)) / torch.tensor(MMSEG_STD).double().view(1, 3, 1, 1)
    for i, stride in ((0, 2), (3, 1), (6, 1)):  # 3 -> 32 -> 32 -> 64
        x = batch_norm(F.conv2d(x, state[f"backbone.stem.{i}.weight"], stride=stride, padding=1),
                       state, f"backbone.stem.{i + 1}").relu()
    x = F.max_pool2d(x, 3, stride=2, padding=1)  # rounds down
    features = []
    for stage, (blocks, stride, dilation) in enumerate(zip(networks.DEPTHS[depth], (1, 2, 1, 1), (1, 1, 2, 4)), 1):
        for block in range(blocks):
            p = f"backbone.layer{stage}.{block}"
            d = dilation // 2 if contract_dilation and block == 0 and dilation > 1 else dilation
            s = stride if block == 0 else 1
            out = batch_norm(F.conv2d(x, state[f"{p}.conv1.weight"]), state, f"{p}.bn1").relu()
            out = batch_norm(F.conv2d(out, state[f"{p}.conv2.weight"], stride=s, padding=d, dilation=d),
                             state, f"{p}.bn2").relu()
            out = batch_norm(F.conv2d(out, state[f"{p}.conv3.weight"]), state, f"{p}.bn3")
            identity = x
            if f"{p}.downsample.0.weight" in state:
                identity = batch_norm(F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=s), state,
                                      f"{p}.downsample.1")
            x = (out + identity).relu()
        features.append(x)
    c3, c4 = features[2], features[3]
    out = conv_bn_relu(c4, state, "decode_head.convs.0")
    for _ in range(2):
        conv = lambda name: F.conv2d(out, state[f"decode_head.cca.{name}.weight"],  # noqa: E731
                                     state[f"decode_head.cca.{name}.bias"])
        out = state["decode_head.cca.gamma.scale"] * einsum_criss_cross(conv("query_conv"), conv("key_conv"),
                                                                         conv("value_conv")) + out
    out = conv_bn_relu(out, state, "decode_head.convs.1")
    out = conv_bn_relu(torch.cat([c4, out], dim=1), state, "decode_head.conv_cat")
    decode = F.conv2d(out, state["decode_head.conv_seg.weight"], state["decode_head.conv_seg.bias"])
    aux = F.conv2d(conv_bn_relu(c3, state, "auxiliary_head.convs.0"), state["auxiliary_head.conv_seg.weight"],
                   state["auxiliary_head.conv_seg.bias"])
    return decode, aux


def bgr_minus_mean(rgb):
    """What the loaders feed, in float64: BGR minus IMG_MEAN, (1, 3, H, W)."""
    bgr = torch.from_numpy(rgb[..., ::-1].transpose(2, 0, 1).copy()).double()
    return (bgr - torch.tensor(IMG_MEAN, dtype=torch.float64).view(3, 1, 1)).unsqueeze(0)


def test_a_zoo_file_gives_the_logits_of_the_layout_written_out(zoo_file, zoo_state):
    """36 x 44: the stride-2 stem conv gives 18 x 22, where the max-pool rounding down (9 x 11) and up
    (10 x 12) differ. Both heads in float64, and the reference is sensitive to contract_dilation."""
    network, settings = build_from_checkpoint(str(zoo_file))
    assert (settings["norm"], settings["depth"], settings["num_classes"]) == ("mmseg", 50, 19)
    rgb = np.random.default_rng(2).integers(0, 256, size=(36, 44, 3), dtype=np.uint8)
    with torch.no_grad():
        ours = network.double()(bgr_minus_mean(rgb))
        reference = reference_logits(zoo_state, rgb, depth=50)
        uncontracted = reference_logits(zoo_state, rgb, depth=50, contract_dilation=False)
    for got, expected in zip(ours, reference):
        assert got.shape == expected.shape == (1, 19, 5, 6)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9 * expected.abs().max().item())
    assert (uncontracted[0] - reference[0]).abs().max() > 1e-3 * reference[0].abs().max()


def test_the_zoo_files_meta_tells_dataset_and_align_corners_and_the_class_count_otherwise(zoo_file, zoo_state):
    """A bare state_dict (a fine-tuned zoo model's snapshot) runs the attention twice, mmsegmentation's
    default, where upstream's layout keeps the caller's (evaluate.py's 1)."""
    loaded = read_checkpoint(zoo_file)
    settings = checkpoint_settings(loaded, loaded["state_dict"], defaults={"recurrence": 1})  # evaluate.py's
    assert (settings["dataset"], settings["align_corners"], settings["recurrence"]) == ("cityscapes", True, 2)
    bare = checkpoint_settings(loaded["state_dict"], loaded["state_dict"], defaults={"recurrence": 1})
    assert (bare["dataset"], bare["align_corners"], bare["recurrence"]) == ("cityscapes", None, 2)
    upstream = {"dsn.4.weight": torch.zeros(19, 512, 1, 1)}
    assert checkpoint_settings(upstream, upstream, defaults={"recurrence": 1})["recurrence"] == 1
    network, _ = build_from_checkpoint(str(zoo_file), align_corners=False)
    assert network.align_corners is False
    for classes, dataset in ((21, "voc"), (150, "ade20k"), (7, None)):
        state = {"decode_head.conv_seg.weight": torch.zeros(classes, 512, 1, 1)}
        assert checkpoint_settings(state, state)["dataset"] == dataset


class HistoryBuffer:
    """Stands in for mmengine.logging.history_buffer.HistoryBuffer while a test file is written: numpy
    arrays and methods, pickled as mmengine's are (a global of mmengine, getattr, numpy)."""

    ran = False

    def __init__(self):
        self._log_history = np.array([0.5, 0.25])
        self._statistics_methods = {"mean": HistoryBuffer.mean}

    def mean(self):
        return self._log_history.mean()

    def __setstate__(self, state):
        HistoryBuffer.ran = True
        self.__dict__.update(state)


def test_a_file_as_mmengines_runner_saves_it_loads_without_running_its_message_hub(zoo_state, tmp_path):
    """Runner.save_checkpoint's fields (mmengine 0.10.7): meta with cfg, dataset_meta and seed, the
    message hub, optimizer and schedulers. No code of the hub's classes runs on loading."""
    names = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
    sys.modules.update({name: types.ModuleType(name) for name in names})
    sys.modules[names[-1]].HistoryBuffer = HistoryBuffer
    HistoryBuffer.__module__ = HistoryBuffer.mean.__module__ = names[-1]
    try:
        checkpoint = {"meta": {"epoch": 0, "iter": 80000, "cfg": CONFIG_769.replace("Cityscapes", "ADE20K"),
                               "seed": 1234, "experiment_name": "ccnet", "time": "20260101_000000",
                               "mmengine_version": "0.10.7", "dataset_meta": {"classes": ("wall",),
                                                                              "palette": [[120, 120, 120]]}},
                      "state_dict": zoo_state,
                      "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"iter": 8}},
                      "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0]}]},
                      "param_schedulers": [{"last_step": 80000}]}
        torch.save(checkpoint, tmp_path / "iter_80000.pth")
        with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
            torch.load(tmp_path / "iter_80000.pth", weights_only=True)
    finally:
        for name in names:
            del sys.modules[name]
    network, settings = build_from_checkpoint(str(tmp_path / "iter_80000.pth"))
    assert not HistoryBuffer.ran
    assert (settings["dataset"], settings["align_corners"], settings["depth"]) == ("ade20k", True, 50)
    torch.testing.assert_close(network.state_dict()["decode_head.cca.gamma.scale"], torch.tensor(0.7))


def test_gamma_is_mmcvs_0d_scale_in_the_state_dict_and_ccs_parameter_inside(zoo_state):
    model = networks.build_model("ccnet", 19, recurrence=2, norm="mmseg", depth=50, norm_layer=torch.nn.BatchNorm2d)
    model.load_state_dict(zoo_state)
    assert model.decode_head.cca.gamma.shape == (1,) and model.decode_head.cca.gamma.item() == pytest.approx(0.7)
    assert model.state_dict()["decode_head.cca.gamma.scale"].shape == ()
    assert "decode_head.cca.gamma" in dict(model.named_parameters()).keys() - model.state_dict().keys()


def one_line_error(capsys, main, args):
    """Run main(args) as a script does; returns its one-line stderr after exit status 1."""
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(main)(args)
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def small_tensors(rows):
    """A state_dict of the spec's keys with one-element tensors: the keys are what is judged."""
    return {key: torch.zeros(1) for key, _, _ in rows}


def other_model(name):
    """The keys of mmsegmentation's ResNet-50 PSPNet or DeepLabv3: our CCNet's backbone and auxiliary
    head (the same in its configs) and that model's decode head."""
    rows = [row for row in spec(SPECS[50]) if not row[0].startswith("decode_head.")] + spec(OTHER_HEADS[name])
    return small_tensors(rows)


BAD_FILES = {
    "pspnet": (lambda: {"meta": {}, "state_dict": other_model("pspnet")},
               r"not an mmsegmentation CCNet: its decode head holds decode_head\.bottleneck\.\*, "
               r"decode_head\.conv_seg\.\*, decode_head\.psp_modules\.\*, without"),
    "deeplabv3": (lambda: {"meta": {}, "state_dict": other_model("deeplabv3")},
                  r"not an mmsegmentation CCNet: its decode head holds decode_head\.aspp_modules\.\*, "
                  r"decode_head\.bottleneck\.\*, decode_head\.conv_seg\.\*, decode_head\.image_pool\.\*, without"),
    "two_layouts": (lambda: {**small_tensors(spec(SPECS[50])), "dsn.4.weight": torch.zeros(1)},
                    r"holds the keys of 2 layouts: dsn\.4\.weight \(syncbn\); decode_head\.conv_seg\.weight, "
                    r"backbone\.stem\.0\.weight \(mmseg\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_another_models_file_or_two_layouts_is_one_line_and_nothing_written(case, tmp_path, capsys):
    make, message = BAD_FILES[case]
    torch.save(make(), tmp_path / "bad.pth")
    (tmp_path / "image.png").write_bytes(b"")
    args = predict.get_args_parser().parse_args(["--restore-from", str(tmp_path / "bad.pth"),
                                                 str(tmp_path / "image.png"), "--output", str(tmp_path / "out")])
    assert re.search(message, one_line_error(capsys, predict.main, args))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_truncated_file_is_one_line_naming_it(zoo_state, zip_format, tmp_path, capsys):
    buffer = io.BytesIO()
    torch.save({"meta": {}, "state_dict": {k: v for k, v in list(zoo_state.items())[:40]}}, buffer,
               _use_new_zipfile_serialization=zip_format)
    (tmp_path / "cut.pth").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    (tmp_path / "image.png").write_bytes(b"")
    args = predict.get_args_parser().parse_args(["--restore-from", str(tmp_path / "cut.pth"),
                                                 str(tmp_path / "image.png"), "--output", str(tmp_path / "out")])
    assert f"cannot read checkpoint {tmp_path / 'cut.pth'}: " in one_line_error(capsys, predict.main, args)
    assert not (tmp_path / "out").exists()


def test_a_legacy_format_file_cut_at_any_byte_is_a_user_error_naming_it(tmp_path):
    """torch's legacy reader fails with IndexError or struct.error where the cut falls in its header, and
    with UnicodeDecodeError inside a string of the meta: every cut of a small zoo-like file is a UserError."""
    buffer = io.BytesIO()
    torch.save({"meta": {"env_info": "GCC: gcc (Ubuntu 9.3.0) – 9.3.0"},
                "state_dict": {"decode_head.conv_seg.weight": torch.zeros(2, 4, 1, 1)}}, buffer,
               _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    path = tmp_path / "cut.pth"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match=f"cannot read checkpoint {re.escape(str(path))}: "):
            read_checkpoint(path)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two 32x64 synthetic Cityscapes training scenes and two validation scenes."""
    root = tmp_path_factory.mktemp("cityscapes")
    lists = make_synthetic_cityscapes(str(root), num_train=2, num_val=2, num_test=0, height=32, width=64)
    return root, lists


def test_a_zoo_file_fine_tunes_in_its_layout_which_resume_remembers(zoo_file, scenes, tmp_path, capsys):
    """No layout, depth or recurrence flag: the file tells them; the snapshot holds mmsegmentation's keys
    and --resume takes the stored ones, while --norm syncbn with the zoo file is refused in one line."""
    root, lists = scenes
    flags = ["--data-dir", str(root), "--data-list", lists["train"], "--snapshot-dir", str(tmp_path),
             "--restore-from", str(zoo_file), "--input-size", "33,33", "--batch-size", "1",
             "--num-workers", "0", "--print-frequency", "1", "--num-steps", "1"]
    net = train.main(train.get_args_parser().parse_args(flags))
    assert f"--restore-from {zoo_file}: ccnet in mmsegmentation's layout" in capsys.readouterr().out
    assert type(net).__name__ == "EncoderDecoder" and len(net.backbone.layer3) == 6 and net.decode_head.recurrence == 2
    assert net.align_corners is True  # the config's, for the validation during training
    snapshot = read_state_dict(tmp_path / "CS_scenes_1.pth")
    assert [k for k, _, _ in keys_shapes_dtypes(snapshot)] == [k for k, _, _ in spec(SPECS[50])]
    resume = train.get_args_parser().parse_args(flags + ["--num-steps", "2", "--resume", str(tmp_path / "last.pth")])
    resume_flags(read_state(resume.resume), resume.resume, resume,
                 {**vars(train.get_args_parser().parse_args([])), **train.MODEL_DEFAULTS})
    assert (resume.norm, resume.depth, resume.recurrence, resume.align_corners) == ("mmseg", 50, 2, True)
    refused = train.get_args_parser().parse_args(flags + ["--norm", "syncbn", "--snapshot-dir", str(tmp_path / "no")])
    with pytest.raises(UserError, match="holds mmsegmentation's layout .*: train it with --norm mmseg"):
        train.main(refused)
    assert not (tmp_path / "no").exists()


def test_an_imagenet_resnetv1c_file_loads_into_the_backbone_and_the_heads_start_random(tmp_path, capsys):
    """mmcv's open-mmlab://resnet50_v1c: {"state_dict"} of ``stem.*``, ``layer*`` and the ImageNet ``fc``,
    without the ``backbone.`` prefix (and here without the BN counters)."""
    torch.manual_seed(0)
    model = networks.build_model("ccnet", 19, norm="mmseg", depth=50, norm_layer=torch.nn.BatchNorm2d)
    imagenet = {k: v for k, v in randomize(model.backbone.state_dict(), seed=3).items()
                if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": {**imagenet, "fc.weight": torch.ones(1000, 2048), "fc.bias": torch.ones(1000)}},
               tmp_path / "resnet50_v1c.pth")
    args = train.get_args_parser().parse_args(["--restore-from", str(tmp_path / "resnet50_v1c.pth"), "--norm", "mmseg",
                                               "--num-classes", "19"])
    net = train.build_network(args, torch.device("cpu"), train.restored_weights(args, None))
    told = capsys.readouterr().out.splitlines()[0]
    assert "mmsegmentation's layout" in told and "ResNet-50, 19 classes" in told
    assert told.endswith("a backbone alone: the decode and auxiliary heads start from random weights")
    backbone = net.backbone.state_dict()
    for key, value in imagenet.items():
        torch.testing.assert_close(backbone[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("norm,recurrence", [(None, 0), ("syncbn", 0), ("mmseg", 2)])
def test_without_recurrence_train_runs_mmsegmentations_attention_twice_and_upstreams_not_at_all(norm, recurrence):
    args = train.get_args_parser().parse_args(["--restore-from", "none"] + (["--norm", norm] if norm else []))
    train.settle_model_flags(args, None, None)
    assert args.recurrence == recurrence


def classifier_of(classes):
    """A state_dict of mmsegmentation's decode-head classifier alone, for ``classes`` classes."""
    return {"decode_head.conv_seg.weight": torch.zeros(classes, 512, 1, 1)}


TOLD_DATASETS = {
    "ade20k_config": ({"meta": {"config": CONFIG_769.replace("Cityscapes", "ADE20K")},
                       "state_dict": classifier_of(150)}, [], "ade20k"),
    "voc_class_count": (classifier_of(21), [], "voc"),
    "upstream_snapshot": ({"dsn.4.weight": torch.zeros(19, 512, 1, 1)}, [], "cityscapes"),
    "dataset_given": (classifier_of(150), ["--dataset", "voc"], "voc"),
    "resumed_state": ({"args": {"dataset": "ade20k"}}, ["--resume", "{file}", "--restore-from", "/no/such.pth"],
                      "ade20k"),
    "classes_given": (classifier_of(150), ["--num-classes", "19"], "cityscapes"),
    "classifier_not_restored": (classifier_of(21), ["--not-restore-last"], "cityscapes"),
}


@pytest.mark.parametrize("case", sorted(TOLD_DATASETS))
def test_train_without_dataset_takes_the_resumed_or_restored_files(case, tmp_path):
    """As evaluate.py: the file's config, else --num-classes or its class count; --dataset wins; a resumed run
    keeps its own (and reads no --restore-from); a classifier not restored tells nothing. The classes follow
    the dataset."""
    content, flags, dataset = TOLD_DATASETS[case]
    torch.save(content, tmp_path / "file.pth")
    flags = [flag.format(file=tmp_path / "file.pth") for flag in flags]
    args = train.get_args_parser().parse_args(["--data-dir", str(tmp_path),
                                               "--restore-from", str(tmp_path / "file.pth"), *flags])
    state = content if args.resume else None
    train.check_inputs(args, types.SimpleNamespace(world_size=1), state, train.restored_weights(args, state))
    assert (args.dataset, args.num_classes) == (dataset, {"cityscapes": 19, "voc": 21, "ade20k": 150}[dataset])


def test_evaluate_takes_a_zoo_file_as_it_is_and_names_what_it_loaded(zoo_file, scenes, capsys):
    root, lists = scenes
    args = evaluate.get_args_parser().parse_args([
        "--data-dir", str(root), "--data-list", lists["val"], "--restore-from", str(zoo_file),
        "--whole", "true", "--rescale", "80,40", "--batch-size", "1", "--num-workers", "0", "--no-save-pred"])
    confmat = evaluate.main(args)
    out = capsys.readouterr().out
    assert f"{zoo_file}: ccnet in mmsegmentation's layout" in out and "ResNet-50, 19 classes, recurrence 2" in out
    assert confmat.num_classes == 19 and int(confmat.matrix.sum()) > 0


@pytest.mark.parametrize("norm", ["syncbn", "inplace-abn"])
def test_depth_50_builds_the_mit_resnet50_layout(norm):
    """The MIT resnet50-imagenet.pth keys: the 64-64-128 deep stem and 3, 4, 6, 3 bottlenecks."""
    model = networks.build_model("ccnet", 19, recurrence=2, norm=norm, depth=50)
    state = model.state_dict()
    assert state["conv1.weight"].shape == (64, 3, 3, 3) and state["layer1.0.conv1.weight"].shape == (64, 128, 1, 1)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert depth_of(state) == 50 and networks.layout_of(state) == norm


class HalfResolution(torch.nn.Module):
    """A stand-in network: (N, 3, H, W) -> [(N, 4, ceil(H/2), ceil(W/2)) logits], resized to the image
    with ``align_corners``."""

    def __init__(self, align_corners):
        super().__init__()
        self.align_corners = align_corners
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)

    def forward(self, x):
        return [self.conv(x)]


@pytest.mark.parametrize("align_corners", [False, True])
def test_rescale_resizes_as_mmcv_does_and_the_logits_back_with_the_networks_align_corners(align_corners):
    assert rescaled_size(1024, 2048, (2049, 1025)) == (1025, 2049)  # mmsegmentation's Cityscapes 769x769 test
    assert rescaled_size(512, 683, (2048, 512)) == (512, 683)
    assert rescaled_size(300, 401, (2048, 512)) == (512, 684)  # 401 * 512 / 300 = 684.4
    torch.manual_seed(0)
    model = HalfResolution(align_corners)
    images = torch.randn(1, 3, 30, 41)
    with torch.no_grad():
        probs = predict_probs(model, images, rescale=(80, 40))
        view = F.interpolate(images, size=(40, 55), mode="bilinear", align_corners=False)  # factor 4/3
        logits = F.interpolate(model(view)[0], size=(40, 55), mode="bilinear", align_corners=align_corners)
        back = F.interpolate(logits, size=(30, 41), mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(probs, back.softmax(1), rtol=0, atol=0)


def test_an_attention_point_maps_to_the_feature_its_logits_are_resized_from():
    """Corners aligned: pixel 0 and H - 1 are features 0 and h - 1; half-pixel centres: pixel p sits at
    feature (p + 0.5) h / H - 0.5 (an mmsegmentation model's), clamped to the grid."""
    assert [predict.feature_index(p, 97, 13, True) for p in (0, 48, 96)] == [0, 6, 12]
    assert [predict.feature_index(p, 96, 12, False) for p in (0, 3, 4, 48, 95)] == [0, 0, 0, 6, 11]
    assert predict.feature_index(12, 96, 12, False) == 1  # 12.5 / 8 - 0.5 = 1.06
