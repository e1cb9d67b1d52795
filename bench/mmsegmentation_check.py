"""Check networks/mmseg_ccnet.py against mmsegmentation's own CCNet, config by config (not run by the tests).

Needs a virtual environment of its own, outside the repository, with mmsegmentation and its
dependencies (they are not this project's requirements):

    python -m venv ~/venvs/mmseg
    ~/venvs/mmseg/bin/pip install torch==2.13.0 mmcv-lite==2.1.0 mmengine==0.10.7 mmsegmentation==1.2.2 ftfy regex
    ~/venvs/mmseg/bin/python bench/mmsegmentation_check.py [--configs NAME ...] [--size 100,132]

mmcv-lite has no compiled ops; CCNet needs only mmcv.ops.CrissCrossAttention, which is pure PyTorch,
so a stand-in ``mmcv.ops`` module is installed that runs mmcv's own mmcv/ops/cc_attention.py (the
other ops mmsegmentation imports are placeholders that refuse to run). For each config of
mmsegmentation's configs/ccnet (the 16 of its model zoo; SyncBN built as BN, same keys), it builds
mmsegmentation's EncoderDecoder with random weights, random BN statistics and a non-zero gamma, saves it
as mmengine's Runner.save_checkpoint does (meta with cfg, dataset_meta, seed, ...; message_hub,
optimizer, param_schedulers) and as mmsegmentation 0.x released its zoo files (meta with config,
CLASSES, PALETTE; legacy pickle format, no optimizer), loads each file with
networks.from_checkpoint.build_from_checkpoint, and prints, for an image of --size as uint8 RGB, the
largest difference over the largest logit of mmsegmentation's logits: at 1/8 in float32 and float64,
after the resize to the image (its whole_inference against utils.inference.predict_whole in float32,
and against our 1/8 logits resized with the loaded network's align_corners in float64), and by
sliding window in float32 (2 x 2 tiles of 3/5 of the image at the 2/3 stride of utils.inference:
its slide_inference against utils.inference.predict_sliding).
It also checks that mmsegmentation's 769x769 windows at stride 513 on a 1025x2049 image (the
Cityscapes test size after its Resize to (2049, 1025)) are the tiles of utils.inference.
Exits 1 when a difference passes its tolerance.
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from utils.cli import size_pair  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}


def install_mmcv_ops_standin():
    """sys.modules['mmcv.ops']: mmcv's cc_attention.py run as it is, and placeholders for the rest."""
    import mmcv

    ops = types.ModuleType("mmcv.ops")
    ops.__path__ = []

    def placeholder(name):
        def refuse(*args, **kwargs):
            raise NotImplementedError(f"mmcv.ops.{name} is not in the stand-in (mmcv-lite has no compiled ops)")
        return type(name, (), {"__init__": refuse}) if name[:1].isupper() else refuse

    def module_getattr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return placeholder(name)

    ops.__getattr__ = module_getattr
    sys.modules["mmcv.ops"] = ops
    path = os.path.join(os.path.dirname(mmcv.__file__), "ops", "cc_attention.py")
    spec = importlib.util.spec_from_file_location("mmcv.ops.cc_attention", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mmcv.ops.cc_attention"] = module
    spec.loader.exec_module(module)
    ops.CrissCrossAttention = module.CrissCrossAttention


def config_dir():
    import mmseg
    return os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs", "ccnet")


def build_mmseg(name):
    """(mmsegmentation's EncoderDecoder for configs/ccnet/<name>.py in eval mode, its Config)."""
    from mmengine import Config
    from mmseg.registry import MODELS

    cfg = Config.fromfile(os.path.join(config_dir(), f"{name}.py"))
    cfg.model.pretrained = None
    for part in ("backbone", "decode_head", "auxiliary_head"):
        cfg.model[part].norm_cfg = dict(type="BN", requires_grad=True)
    model = MODELS.build(cfg.model)
    return model.eval(), cfg


def randomize(model, seed):
    """Weights of both signs, BN statistics away from (0, 1), gamma non-zero; scaled to keep the
    activations of a 101-layer network at random weights finite and informative."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) * 1.0 - 0.25)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(80000)
        model.decode_head.cca.gamma.scale.fill_(0.7)


def save_like_mmengine(model, cfg, path):
    """The checkpoint mmengine's Runner.save_checkpoint writes (mmengine 0.10.7's fields and types),
    with a message hub holding logged scalars and a step of SGD behind the optimizer state."""
    import mmengine
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper, PolyLR
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
    from mmseg.datasets import ADE20KDataset, CityscapesDataset, PascalVOCDataset

    datasets = {"CityscapesDataset": CityscapesDataset, "ADE20KDataset": ADE20KDataset,
                "PascalVOCDataset": PascalVOCDataset}
    hub = MessageHub.get_instance(f"check-{os.path.basename(path)}")
    for it in range(3):
        hub.update_scalar("train/loss", 1.0 / (it + 1))
        hub.update_scalar("train/lr", 0.01)
    hub.update_info("iter", 80000)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.decode_head.conv_seg.weight.sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    wrapper = OptimWrapper(optimizer)
    scheduler = PolyLR(optimizer, eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)
    meta = dict(epoch=0, iter=80000, cfg=cfg.pretty_text, seed=1234, experiment_name="ccnet_check",
                time=time.strftime("%Y%m%d_%H%M%S"), mmengine_version=mmengine.__version__,
                dataset_meta=dict(datasets[cfg.dataset_type].METAINFO))
    checkpoint = {"meta": meta, "state_dict": weights_to_cpu(model.state_dict()), "message_hub": hub.state_dict(),
                  "optimizer": wrapper.state_dict(), "param_schedulers": [scheduler.state_dict()]}
    save_checkpoint(checkpoint, path)


def save_like_zoo(model, cfg, path):
    """A file as mmsegmentation 0.x released its model zoo: {'meta', 'state_dict'} in torch's legacy
    format, meta as mmcv 1.x's runner and CheckpointHook filled it (mmcv_version, time, config text,
    CLASSES, PALETTE, env_info, seed, exp_name, epoch, iter)."""
    from mmengine.runner.checkpoint import weights_to_cpu
    from mmseg.datasets import ADE20KDataset, CityscapesDataset, PascalVOCDataset

    info = {"CityscapesDataset": CityscapesDataset, "ADE20KDataset": ADE20KDataset,
            "PascalVOCDataset": PascalVOCDataset}[cfg.dataset_type].METAINFO
    meta = dict(env_info="sys.platform: linux\nPython: 3.7.7", seed=0, exp_name=f"{cfg.filename}",
                mmseg_version="0.5.0+b72a6d0", config=cfg.pretty_text, CLASSES=tuple(info["classes"]),
                PALETTE=[list(c) for c in info["palette"]], mmcv_version="1.0rc0", time="Tue Jun 16 14:25:17 2020",
                epoch=1, iter=40000)
    torch.save({"meta": meta, "state_dict": weights_to_cpu(model.state_dict())}, path,
               _use_new_zipfile_serialization=False)


def relative(ours, theirs):
    return ((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max()).item()


def mmseg_input(model, bgr, dtype):
    """mmsegmentation's normalized input (1, 3, H, W) for a uint8 BGR image, in dtype (its preprocessor's
    arithmetic: RGB, minus mean, over std)."""
    pre = model.data_preprocessor
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))).unsqueeze(0).to(dtype)
    return (rgb - pre.mean.to(dtype)) / pre.std.to(dtype)


def our_input(bgr, dtype):
    """What this project's loaders feed for a uint8 BGR image: BGR minus IMG_MEAN (1, 3, H, W), float32
    through dataset.datasets.normalize, or the same in float64."""
    from dataset.datasets import IMG_MEAN, normalize
    if dtype == torch.float32:
        return torch.from_numpy(normalize(bgr, np.asarray(IMG_MEAN))).unsqueeze(0)
    return (torch.from_numpy(bgr.transpose(2, 0, 1).copy()).double()
            - torch.tensor(IMG_MEAN, dtype=torch.float64).view(3, 1, 1)).unsqueeze(0)


def compare(name, size, seed, workdir):
    """{measure: relative difference} for config ``name``."""
    from networks.from_checkpoint import build_from_checkpoint
    from utils.inference import predict_sliding, predict_whole, sliding_stride

    theirs, cfg = build_mmseg(name)
    randomize(theirs, seed)
    theirs.eval()
    results = {}
    rgb = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    for kind, save in (("mmengine", save_like_mmengine), ("zoo-0.x", save_like_zoo)):
        path = os.path.join(workdir, f"{name}.{kind}.pth")
        save(theirs, cfg, path)
        ours, settings = build_from_checkpoint(path)
        assert ours.align_corners == theirs.align_corners, (ours.align_corners, theirs.align_corners)
        assert settings["dataset"] == {"CityscapesDataset": "cityscapes", "ADE20KDataset": "ade20k",
                                       "PascalVOCDataset": "voc"}[cfg.dataset_type], settings
        if kind == "zoo-0.x":
            continue  # the same tensors: the logits are compared once, from the mmengine file
        for dtype in (torch.float32, torch.float64):
            theirs.to(dtype)
            ours.to(dtype)
            precision = str(dtype)[6:]
            with torch.no_grad():
                x = mmseg_input(theirs, bgr, dtype)
                reference = theirs.decode_head.forward(theirs.extract_feat(x))
                ours_x = our_input(bgr, dtype)
                logits = ours(ours_x)[0]
                results[f"1/8 {precision}"] = relative(logits, reference)
                metas = [dict(img_shape=size, ori_shape=size, pad_shape=size)]
                resized = theirs.whole_inference(x, metas)
                if dtype == torch.float64:  # utils.inference gives float32 logits: the resize itself, in float64
                    upsampled = F.interpolate(logits, size=size, mode="bilinear", align_corners=ours.align_corners)
                    results["resized float64"] = relative(upsampled, resized)
                    continue
                results["resized float32"] = relative(predict_whole(ours, ours_x), resized)
                tile = (-(-size[0] * 3 // 5), -(-size[1] * 3 // 5))  # 2 x 2 tiles
                theirs.test_cfg = types.SimpleNamespace(mode="slide", crop_size=tile, stride=sliding_stride(tile))
                slid = theirs.slide_inference(x, [dict(metas[0])])
                results["sliding float32"] = relative(predict_sliding(ours, ours_x, tile), slid)
        theirs.float()
    return results, theirs.align_corners


def check_window_positions():
    """mmsegmentation's slide_inference tile origins for 769x769 at stride 513 on a 1025x2049 image
    against utils.inference.tile_starts with sliding_stride; returns (theirs, ours) lists of (y, x)."""
    from mmseg.models.segmentors import EncoderDecoder
    from utils.inference import sliding_stride, tile_starts

    seen = []

    def record(crop, metas):
        """A stand-in for the network: notes the tile's origin, which its pixels hold."""
        seen.append((int(crop[0, 0, 0, 0]), int(crop[0, 1, 0, 0])))
        return crop.new_zeros(1, 2, *crop.shape[2:])

    fake = types.SimpleNamespace(test_cfg=types.SimpleNamespace(stride=(513, 513), crop_size=(769, 769)),
                                 out_channels=2, encode_decode=record)
    height, width = 1025, 2049
    grid = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")).float()
    EncoderDecoder.slide_inference(fake, grid.unsqueeze(0), [dict()])
    stride = sliding_stride((769, 769))
    ours = [(y, x) for y in tile_starts(height, 769, stride[0]) for x in tile_starts(width, 769, stride[1])]
    return seen, ours, stride


def get_args_parser():
    """The check's flags, under one heading."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    inputs = parser.add_argument_group("what to check")
    inputs.add_argument("--configs", nargs="*", default=None, help="config names (default: all of configs/ccnet)")
    inputs.add_argument("--size", type=size_pair, default=(100, 132), help="image HEIGHT,WIDTH (default: 100,132)")
    return parser


def main():
    args = get_args_parser().parse_args()
    size = args.size
    install_mmcv_ops_standin()
    from mmseg.utils import register_all_modules
    register_all_modules()
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    theirs, ours, stride = check_window_positions()
    print(f"769x769 windows at stride 513 on 1025x2049: mmsegmentation {theirs}; ours (stride {stride}) {ours}")
    failed = theirs != ours
    names = args.configs or sorted(f[:-3] for f in os.listdir(config_dir()) if f.endswith(".py"))
    with tempfile.TemporaryDirectory() as workdir:
        for seed, name in enumerate(names):
            start = time.perf_counter()
            results, align_corners = compare(name, size, seed, workdir)
            worst = {m: v for m, v in results.items() if v > TOLERANCE[torch.float64 if "64" in m else torch.float32]}
            failed |= bool(worst)
            shown = ", ".join(f"{m} {v:.1e}" for m, v in results.items())
            print(f"{name} (align_corners={align_corners}): {shown} [{time.perf_counter() - start:.0f} s]"
                  f"{'  FAILED' if worst else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
