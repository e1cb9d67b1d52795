#!/usr/bin/env bash
# Upstream's Cityscapes recipe under SLURM, one task per GPU, 4 GPUs per node, for as long as it takes:
# 120 s before the time limit SLURM sends SIGUSR1 to every task, train.py saves last.pth after the
# iteration in progress and requeues the job, and the requeued job continues from it (--resume auto).
# Submit from the repository root (sbatch runs a copy of this file, in the folder it was submitted from):
#   sbatch scripts/slurm_train.sh
#   DATA=/path/to/Cityscapes SNAPSHOTS=./snapshots/run1 sbatch scripts/slurm_train.sh --eval-every 2000
# Arguments after the script's name are added to train.py's. More nodes: sbatch --nodes 2 with a
# --batch-size divisible by the 8 tasks (upstream's 4 is one image per GPU on one node).
#SBATCH --job-name=ccnet-cityscapes
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

DATA=${DATA:-/data/datasets/Cityscapes/}
SNAPSHOTS=${SNAPSHOTS:-./snapshots/}
# srun does not take --cpus-per-task from the allocation since Slurm 22.05: the loader workers need them.
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-8}

srun --kill-on-bad-exit=1 python train.py --data-dir "$DATA" --snapshot-dir "$SNAPSHOTS" --resume auto \
    --random-mirror --random-scale --restore-from ./dataset/resnet101-imagenet.pth --learning-rate 0.01 \
    --input-size 769,769 --weight-decay 0.0001 --batch-size 4 --num-steps 60000 --recurrence 2 \
    --ohem 1 --ohem-thres 0.7 --ohem-keep 100000 --model ccnet --num-workers 8 --eval-every 5000 "$@"
