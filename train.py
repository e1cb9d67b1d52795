"""Train CCNet (Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation", ICCV 2019)
on Cityscapes with upstream's command line, or on Pascal VOC, ADE20K or a folder of your own (--dataset;
without it, the dataset a resumed run or the --restore-from file tells, else Cityscapes).

Runs on one GPU or the CPU, on several GPUs of one process (``--gpu 0,1,2,3``: DataParallel with
synchronized BN), or under torchrun or SLURM's srun (DistributedDataParallel, one process per GPU or
CPU worker; utils.launcher). Every ``--save-pred-every`` iterations and at the end it writes
``CS_scenes_<iter>.pth`` (the model's weights), and with them and every ``--save-state-every``
iterations ``last.pth`` (the full training state, for ``--resume``; ``--resume auto`` continues from it
when it is there). ``--eval-every`` measures the validation mIoU during training and keeps the best
snapshot (utils.validation). SIGUSR1 and SIGTERM stop the run after a save, and SIGUSR1 requeues a
SLURM job (utils.preemption). The layout and the depth are those of the --restore-from weights' keys
(networks.norms; an official CCNet or mmsegmentation model fine-tunes as it is); ``--norm`` and
``--depth`` choose them for ImageNet weights or from scratch.
"""
import math
import os
import random
import sys

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

import networks
from dataset.datasets import IMG_MEAN
from dataset.registry import add_dataset_argument, fill_defaults, get_dataset
from dataset.seeded import SeededAugmentation
from sync_batchnorm import DataParallelWithCallback
from networks.from_checkpoint import (LAYOUT_DEFAULTS, add_align_corners_argument, dataset_told, decode_head_modules,
                                      depth_of, describe, mmseg_config_settings, require_known_head, weights_of)
from utils.checkpoint import (load_model, names_no_checkpoint, read_state, restore_state, resume_flags,
                              resume_source, rng_state, save_atomic, save_state)
from utils.cli import ArgumentParser, label_value, non_negative_int, size_pair, str2bool
from utils.errors import UserError, exit_on_user_error
from utils.inference import predict_whole
from utils.logger import TrainLogger
from utils.losses import CriterionDSN, CriterionOhemDSN
from utils.preemption import StopRequests, ignore_stop_signals
from utils.runtime import (add_launcher_arguments, add_speed_arguments, all_gather_objects, all_reduce_sum,
                           amp_dtype, autocast, barrier, memory_format, setup, teardown)
from utils.validation import Validation, add_validation_arguments


def get_args_parser():
    parser = ArgumentParser(description="Train CCNet on Cityscapes, Pascal VOC, ADE20K or a folder of images.")
    data = parser.add_argument_group("data")
    add_dataset_argument(data, "a resumed run's, else the --restore-from file's unless --not-restore-last (its "
                               "mmsegmentation meta, else --num-classes or its class count), else cityscapes")
    data.add_argument("--data-dir", default="cityscapes", help="dataset root directory")
    data.add_argument("--data-list", default=None,
                      help="list of training image/label pairs, relative to --data-dir (default: the dataset's "
                           "training split; for cityscapes ./dataset/list/cityscapes/train.lst)")
    data.add_argument("--ignore-label", type=label_value, default=255, help="label value left out of the loss")
    data.add_argument("--input-size", type=size_pair, default=None,
                      help="crop size HEIGHT,WIDTH (default: the dataset's, 769,769 for cityscapes)")
    data.add_argument("--random-mirror", action="store_true", help="randomly mirror the training crops")
    data.add_argument("--random-scale", action="store_true", help="randomly rescale the training images")
    data.add_argument("--random-seed", type=int, default=12345,
                      help="seed of every random stream (data order, augmentation, initialisation, dropout)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="ccnet", help="network name: ccnet, pspnet or deeplabv3")
    model.add_argument("--num-classes", type=int, default=None,
                       help="number of classes (default: the dataset's, 19 for cityscapes)")
    model.add_argument("--recurrence", type=int, default=None,
                       help="criss-cross attention passes (default: the --restore-from file's mmsegmentation "
                            "config, else 2 in mmsegmentation's layout (its CCHead's), else 0, upstream's)")
    model.add_argument("--norm", choices=networks.NORMS, default=None,
                       help="layout: syncbn (upstream's BatchNorm + ReLU), inplace-abn (the official CCNet's "
                            "InPlace-ABN) or mmseg (mmsegmentation's CCNet; ImageNet weights: resnet50_v1c or "
                            "resnet101_v1c); default: told by the --restore-from keys, else syncbn")
    model.add_argument("--depth", type=int, choices=tuple(networks.DEPTHS), default=None,
                       help="ResNet depth (ImageNet weights: resnet50-imagenet.pth or resnet101-imagenet.pth, or "
                            "the v1c files for mmseg); default: told by the --restore-from keys, else 101")
    add_align_corners_argument(model)
    model.add_argument("--is-training", action="store_true",
                       help="accepted for compatibility with upstream; BN statistics are always updated")

    optimization = parser.add_argument_group("optimization")
    optimization.add_argument("--batch-size", type=int, default=8,
                              help="images per iteration, in total over all GPUs and processes")
    optimization.add_argument("--num-steps", type=int, default=40000, help="number of training iterations")
    optimization.add_argument("--start-iters", type=int, default=0, help="iteration to start the schedule from")
    optimization.add_argument("--learning-rate", type=float, default=1e-2,
                              help="base learning rate of the poly schedule")
    optimization.add_argument("--power", type=float, default=0.9, help="exponent of the poly learning-rate decay")
    optimization.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optimization.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    optimization.add_argument("--ohem", type=str2bool, default=False,
                              help="online hard example mining loss (1/0)")
    optimization.add_argument("--ohem-thres", type=float, default=0.6,
                              help="OHEM keeps pixels whose true-class probability is below this")
    optimization.add_argument("--ohem-keep", type=int, default=200000, help="OHEM keeps at least this many pixels")

    checkpoints = parser.add_argument_group("checkpoints and resume")
    checkpoints.add_argument("--restore-from", default="./dataset/MS_DeepLab_resnet_pretrained_init.pth",
                             help="ImageNet or CCNet weights to start from ('none' or '' trains from scratch)")
    checkpoints.add_argument("--not-restore-last", action="store_true",
                             help="re-initialise the two classifier layers after --restore-from "
                                  "(for another class set)")
    checkpoints.add_argument("--snapshot-dir", default="./snapshots/", help="where snapshots are written")
    checkpoints.add_argument("--save-pred-every", type=int, default=30000,
                             help="iterations between snapshots and tensorboard images")
    checkpoints.add_argument("--save-state-every", type=non_negative_int, default=1000,
                             help="iterations between writes of the training state last.pth, besides those with "
                                  "the snapshots (0: only with them)")
    checkpoints.add_argument("--resume", default=None,
                             help="continue from a training state (<snapshot-dir>/last.pth), --restore-from then "
                                  "not read; 'auto': from <snapshot-dir>/last.pth if it exists, else start from "
                                  "--restore-from, so that a requeued job continues (default: start a new run)")

    add_validation_arguments(parser.add_argument_group("validation"))

    logging = parser.add_argument_group("logging")
    logging.add_argument("--log-dir", default=None, help="tensorboardX directory (default: --snapshot-dir)")
    logging.add_argument("--print-frequency", type=int, default=50,
                         help="iterations between log lines when stdout is not a terminal")
    logging.add_argument("--save-num-images", type=int, default=2, help="images shown in tensorboard")

    speed = parser.add_argument_group("speed and devices")
    speed.add_argument("--gpu", default=None,
                       help="GPU ids, e.g. 0,1,2,3 (default: cuda:0 if present, else the CPU)")
    speed.add_argument("--num-workers", type=int, default=8, help="data-loading worker processes")
    add_speed_arguments(speed)
    speed.add_argument("--memory-efficient", type=str2bool, nargs="?", const=True, default=False,
                       help="recompute activations in backward instead of keeping them: the same loss, gradients "
                            "and BN statistics in far less memory, for some extra time")

    add_launcher_arguments(parser.add_argument_group("launchers"))
    return parser


# --norm, --depth, --recurrence and --align-corners (None: the network's own) when neither they nor the
# --restore-from file say (and so for runs from before they were told by the file), under a layout's own
# LAYOUT_DEFAULTS.
MODEL_DEFAULTS = {"norm": "syncbn", "depth": 101, "recurrence": 0, "align_corners": None}
# Those the keys tell: a given value the keys contradict cannot load.
KEYED_FLAGS = ("norm", "depth")


def poly_lr(base_lr, iteration, num_steps, power):
    """Learning rate of the 0-based `iteration`: base_lr * (1 - iteration / num_steps) ** power."""
    return base_lr * (1 - iteration / num_steps) ** power


def seed_everything(seed):
    """Seed python's random (the data augmentation), numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_order(sampler, batches_per_epoch, batch_size, start, stop, seed):
    """(dataset index, augmentation seed) of this rank's samples for iterations start..stop-1,
    `batch_size` per iteration.

    Epoch e is the sampler's permutation for (seed, e) with its incomplete last batch dropped, and
    a sample's augmentation seed is drawn from (seed, e, rank, its place in the epoch), so the data
    and its augmentation depend only on the iteration: a resumed run reads what an uninterrupted one
    would, however many loader workers read it (dataset.seeded.SeededAugmentation).
    """
    iteration = start
    while iteration < stop:
        epoch, offset = divmod(iteration, batches_per_epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)
        count = min(batches_per_epoch - offset, stop - iteration)
        places = range(offset * batch_size, (offset + count) * batch_size)
        seeds = np.random.SeedSequence([seed, epoch, sampler.rank]).generate_state(len(order))
        yield from ((order[place], int(seeds[place])) for place in places)
        iteration += count


def reset_classifiers(net):
    """Re-initialise the classifier layers: the last convolution of the head and of the DSN head."""
    for convolution in net.classifiers():
        convolution.reset_parameters()


def non_finite_count(net):
    """How many parameters and floating-point buffers of `net` hold a NaN or an infinity (a 0-d tensor)."""
    tensors = [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
    return torch.stack([~torch.isfinite(t).all() for t in tensors]).sum()


def to_rgb(images):
    """(N, 3, H, W) float BGR minus IMG_MEAN -> (N, H, W, 3) uint8 RGB."""
    bgr = images.float().cpu().numpy().transpose(0, 2, 3, 1) + np.float32(IMG_MEAN)  # (N, H, W, 3)
    return np.clip(bgr[..., ::-1], 0, 255).astype(np.uint8)


@torch.no_grad()
def predict_train_ids(net, images):
    """Train ids (N, H, W) of `net` in eval mode for images (N, 3, H, W), for the tensorboard preview."""
    net.eval()
    train_ids = predict_whole(net, images).argmax(1)
    net.train()
    return train_ids


def restored_weights(args, state):
    """(loaded file, state_dict) of --restore-from (networks.from_checkpoint.weights_of), read once for the
    dataset it tells and the network; None when the run resumes the training state `state` or starts from
    scratch."""
    if state or names_no_checkpoint(args.restore_from):
        return None
    return weights_of(args.restore_from)


def check_inputs(args, runtime, state=None, restored=None):
    """Fail early, with one line, on flags that cannot work; returns the dataset's description, with
    the flags left unset filled from it (`state`: the training state the run resumes, if any; `restored`:
    restored_weights())."""
    if not os.path.isdir(args.data_dir):
        raise UserError(f"--data-dir {args.data_dir}: no such directory")
    if args.dataset is None:
        args.dataset = told_dataset(args, state, restored)
    info = get_dataset(args.dataset, args.data_dir)
    fill_defaults(args, info)
    for name in ("batch_size", "num_steps", "save_pred_every", "num_classes"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.batch_size % runtime.world_size:
        raise UserError(f"--batch-size {args.batch_size} cannot be split over {runtime.world_size} processes")
    if not 0 <= args.start_iters < args.num_steps:
        raise UserError(f"--start-iters {args.start_iters} must lie in [0, --num-steps {args.num_steps})")
    return info


def told_dataset(args, state, restored):
    """The dataset of a run without --dataset: the one its training state `state` stored when it resumes,
    else the one the --restore-from file `restored` tells with its classifier (networks.from_checkpoint.
    dataset_told: its mmsegmentation config, else --num-classes or its class count), else cityscapes, upstream's."""
    if state:
        told = state["args"].get("dataset")
    elif restored is None or args.not_restore_last:
        told = None
    else:
        told = dataset_told(*restored, args.num_classes)
    return told or "cityscapes"


def build_data(info, args, runtime):
    """The training set of dataset `info` and this rank's sampler; returns (dataset, sampler, batches per epoch)."""
    dataset = info.train_set(args.data_list, warn=runtime.is_main, crop_size=args.input_size, mean=IMG_MEAN,
                             scale=args.random_scale, mirror=args.random_mirror, ignore_label=args.ignore_label)
    sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank,
                                 shuffle=True, seed=args.random_seed)
    batches_per_epoch = len(sampler) // (args.batch_size // runtime.world_size)
    if batches_per_epoch == 0:
        raise UserError(f"{args.data_list or f'the {info.name} training split'} lists {len(dataset)} images, "
                        f"fewer than one batch of {args.batch_size}")
    return dataset, sampler, batches_per_epoch


def build_loader(dataset, sampler, batches_per_epoch, start, args, runtime):
    """A DataLoader over this rank's samples of iterations start..--num-steps, in epoch order."""
    batch_per_rank = args.batch_size // runtime.world_size
    order = epoch_order(sampler, batches_per_epoch, batch_per_rank, start, args.num_steps, args.random_seed)
    # A private generator for the workers' base seed keeps the global torch stream untouched.
    loader_seed = int(np.random.SeedSequence([args.random_seed, runtime.rank, start]).generate_state(1)[0])
    return DataLoader(SeededAugmentation(dataset), batch_size=batch_per_rank, sampler=order,
                      num_workers=args.num_workers, pin_memory=runtime.device.type == "cuda", drop_last=True,
                      generator=torch.Generator().manual_seed(loader_seed), worker_init_fn=ignore_stop_signals)


def build_validation(info, args, runtime):
    """The validation of --eval-every on the dataset's validation split or --eval-list, whose files are
    checked here, before anything is written."""
    dataset = None
    if args.eval_every:
        dataset = info.val_set(args.eval_list, mean=IMG_MEAN, ignore_label=args.ignore_label, warn=runtime.is_main)
        if not len(dataset):
            raise UserError(f"--eval-every {args.eval_every}: the {info.name} validation split holds no images "
                            "(give --eval-list)")
    return Validation(dataset, info.class_names, args, runtime)


def build_network(args, device, restored=None):
    """The model with its loss inside (model(images, labels) -> loss), on device in train mode, with the
    weights of --restore-from as `restored` holds them (restored_weights(); None: random, or a resumed run
    that takes them from its state)."""
    if args.ohem:
        criterion = CriterionOhemDSN(ignore_index=args.ignore_label, thresh=args.ohem_thres,
                                     min_kept=args.ohem_keep)
    else:
        criterion = CriterionDSN(ignore_index=args.ignore_label)
    loaded, state = restored or (None, None)
    settle_model_flags(args, loaded, state)
    net = networks.build_model(args.model, args.num_classes, criterion=criterion, recurrence=args.recurrence,
                               norm=args.norm, memory_efficient=args.memory_efficient, depth=args.depth)
    if args.align_corners is not None:
        net.align_corners = args.align_corners
    if state:
        load_model(net, state, source=args.restore_from)
        if args.not_restore_last:
            reset_classifiers(net)
    return net.to(device=device, memory_format=memory_format(args.channels_last)).train()


def settle_model_flags(args, loaded, state):
    """Set --norm, --depth, --recurrence and --align-corners left unset to what the --restore-from file tells
    (its keys, an mmsegmentation config's recurrence and align_corners), else the layout's LAYOUT_DEFAULTS
    or MODEL_DEFAULTS; a --norm or --depth the keys contradict, or another mmsegmentation model, is a
    UserError."""
    source = f"--restore-from {args.restore_from}"
    told = {}
    if state:
        config = mmseg_config_settings(loaded)
        told = {"norm": networks.layout_of(state, source), "depth": depth_of(state, source),
                "recurrence": config.get("recurrence"), "align_corners": config.get("align_corners")}
    for name, default in MODEL_DEFAULTS.items():
        default = LAYOUT_DEFAULTS.get(args.norm, {}).get(name, default)  # --norm is settled first
        given, value = getattr(args, name), told.get(name)
        if given is None:
            setattr(args, name, default if value is None else value)
        elif name in KEYED_FLAGS and value not in (None, given):
            what = networks.DESCRIPTIONS[value] if name == "norm" else f"a ResNet-{value}"
            raise UserError(f"{source} holds {what}: train it with --{name} {value}")
    if state:
        require_known_head(state, {"norm": args.norm}, source)
        backbone_only = args.norm == "mmseg" and not decode_head_modules(state)
        print(f"{source}: {describe(vars(args))}" + ("; a backbone alone: the decode and auxiliary heads start "
                                                     "from random weights" if backbone_only else ""))


def build_optimizer(args, net, device):
    """SGD with momentum and weight decay, and the GradScaler that float16 autocast needs."""
    optimizer = torch.optim.SGD(net.parameters(), lr=args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype(device) == torch.float16)
    return optimizer, scaler


def parallelize(net, runtime):
    """net wrapped for the run: DistributedDataParallel, DataParallel with synchronized BN, or as it is."""
    if runtime.distributed:
        return DistributedDataParallel(net, device_ids=runtime.gpu_ids or None)
    if len(runtime.gpu_ids) > 1:
        return DataParallelWithCallback(net, device_ids=runtime.gpu_ids)
    return net


def save_checkpoints(net, optimizer, scaler, done, snapshot, images, labels, validation, args, runtime, logger):
    """After `done` iterations, with every process taking part: refuse non-finite weights, then (rank 0)
    with `snapshot` the tensorboard preview and CS_scenes_<done>.pth, and the training state last.pth."""
    if all_reduce_sum(non_finite_count(net)).item():
        raise UserError(f"non-finite weights after iteration {done}: training stopped, "
                        f"the snapshots already written in {args.snapshot_dir} are kept")
    rng_states = all_gather_objects(rng_state())
    if not runtime.is_main:
        return
    saved = ""
    if snapshot:
        shown = images[:args.save_num_images]
        logger.images(done, to_rgb(shown), labels[:args.save_num_images].cpu().numpy(),
                      predict_train_ids(net, shown).cpu().numpy())
        saved = os.path.join(args.snapshot_dir, f"CS_scenes_{done}.pth")
        save_atomic(net.state_dict(), saved)
        saved += " and "
    save_state(os.path.join(args.snapshot_dir, "last.pth"), net, optimizer, scaler, done, rng_states, args,
               validation.best)
    logger.message(f"iteration {done}: saved {saved}the training state last.pth")


def train_steps(model, net, optimizer, scaler, loader, start, resumed, validation, stop_requests, args, runtime,
                logger):
    """The training loop: one SGD step per batch of the loader, iterations start+1..--num-steps, each
    followed by the validation and the saves due; returns the iteration after which a stop request
    (SIGUSR1, SIGTERM) ended it, or None."""
    if resumed and validation.due(start) and validation.run(net, start, logger, stop_requests):
        return start  # the validation a stop had left out was cut short again; the state is on disk
    device = runtime.device
    dtype = next(net.parameters()).dtype  # the images follow the weights (float64 under a float64 default)
    layout = memory_format(args.channels_last)
    mixed_precision = autocast(device, args.amp)
    for iteration, (images, labels, _, _) in enumerate(loader, start=start):
        images = images.to(device, dtype, non_blocking=True, memory_format=layout)  # (B, 3, H, W)
        labels = labels.to(device, non_blocking=True).long()  # (B, H, W)
        lr = poly_lr(args.learning_rate, iteration, args.num_steps, args.power)
        for group in optimizer.param_groups:
            group["lr"] = lr
        done = iteration + 1

        with mixed_precision:
            loss = model(images, labels).mean()  # per-GPU losses under DataParallel
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        # The one collective of every iteration: the losses and the stop requests, summed over the processes.
        # Taken after the step, it sees a signal that arrived during this iteration's forward, backward or step.
        totals = all_reduce_sum(torch.cat([loss.detach().float().reshape(1), stop_requests.flags(device)]))  # (3,)
        loss_value = totals[0].item() / runtime.world_size
        if not math.isfinite(loss_value):
            raise UserError(f"the loss is {loss_value} at iteration {done}: training stopped, "
                            f"the last good snapshot in {args.snapshot_dir} is kept")
        final = done == args.num_steps
        stopping = not final and stop_requests.agree(totals[1:])

        logger.step(done, loss_value, lr)
        if validation.due(done) and not stopping:
            # A stop request cannot cut the last validation short: no resumed run would make up for it.
            stopping = validation.run(net, done, logger, None if final else stop_requests)
        snapshot = done % args.save_pred_every == 0 or final
        if snapshot or stopping or (args.save_state_every and done % args.save_state_every == 0):
            save_checkpoints(net, optimizer, scaler, done, snapshot, images, labels, validation, args, runtime,
                             logger)
        if stopping:
            logger.message(f"iteration {done}: stopped by {stop_requests.stopped_by.name}")
            return done
    return None


def train(args, runtime, stop_requests):
    """Build the data, model and optimizer (or resume them), then train to --num-steps; returns the
    network and whether a stop request ended the run before."""
    resume = resume_source(args.resume, args.snapshot_dir, args.restore_from, report=runtime.is_main)
    state = read_state(resume) if resume else None
    restored = restored_weights(args, state)
    info = check_inputs(args, runtime, state, restored)
    if state:
        resume_flags(state, resume, args, {**vars(get_args_parser().parse_args([])), **MODEL_DEFAULTS},
                     report=runtime.is_main)
    seed_everything(args.random_seed + runtime.rank)
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dataset, sampler, batches_per_epoch = build_data(info, args, runtime)
    validation = build_validation(info, args, runtime)
    net = build_network(args, runtime.device, restored)
    del restored  # the network holds copies of its tensors: the file's need not live through the training
    optimizer, scaler = build_optimizer(args, net, runtime.device)
    start = args.start_iters
    if state:
        start = restore_state(state, net, optimizer, scaler, runtime.rank)
        validation.restore(state.get("best"))
        if start >= args.num_steps and args.resume == "auto":
            if runtime.is_main:
                print(f"--resume auto: {resume} already ran all {start} iterations: nothing to do")
            return net, False
        if start >= args.num_steps:
            raise UserError(f"--resume {resume} already ran {start} of --num-steps {args.num_steps} iterations")
    model = parallelize(net, runtime)
    loader = build_loader(dataset, sampler, batches_per_epoch, start, args, runtime)

    if runtime.is_main:
        os.makedirs(args.snapshot_dir, exist_ok=True)
    logger = TrainLogger(args.log_dir or args.snapshot_dir, start, args.num_steps, args.print_frequency, info.palette,
                         enabled=runtime.is_main)
    try:
        stopped = train_steps(model, net, optimizer, scaler, loader, start, resume is not None, validation,
                              stop_requests, args, runtime, logger)
    finally:
        logger.close()
    return net, stopped is not None


def main(args):
    """Train as described by `args`; returns the trained network (unwrapped). A run that SIGUSR1 or
    SIGTERM stopped exits after its save, with the status utils.preemption describes."""
    with StopRequests() as stop_requests:
        runtime = setup(args.gpu)
        try:
            net, stopped = train(args, runtime, stop_requests)
            if stopped:
                # No process exits before rank 0 has written last.pth: the first one to exit with 143 or 138
                # gets the others killed (srun --kill-on-bad-exit=1, torchrun).
                barrier(runtime.device)
        finally:
            teardown()
        if stopped:
            sys.exit(stop_requests.finish(runtime.is_main))
    return net


if __name__ == "__main__":
    exit_on_user_error(main)(get_args_parser().parse_args())
