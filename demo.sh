#!/usr/bin/env bash
# The main job on a CPU: write a synthetic Cityscapes, train CCNet (R=2, OHEM) on it from scratch,
# evaluate it, segment three validation images with predict.py and draw the attention of two pixels,
# then print the mIoU and where the snapshot, logs, predictions and pictures are.
# Run after `pip install torch==2.13.0 -r requirements.txt`; OUT (default runs/demo) holds everything.
set -euo pipefail
cd "$(dirname "$0")"

OUT=${OUT:-runs/demo}
STEPS=${STEPS:-100}
DATA="$OUT/data"
SNAPSHOTS="$OUT/snapshots"
start=$SECONDS

python -m dataset.synthetic --out "$DATA" --num-train 30 --num-val 10 --num-test 0 --height 256 --width 512

python train.py --data-dir "$DATA" --data-list "$DATA/list/train.lst" --restore-from none \
    --model ccnet --recurrence 2 --ohem 1 --ohem-thres 0.7 --ohem-keep 10000 \
    --input-size 97,193 --batch-size 4 --learning-rate 0.01 --weight-decay 0.0001 \
    --num-steps "$STEPS" --save-pred-every "$STEPS" --print-frequency 10 \
    --random-mirror --random-scale --num-workers 1 --snapshot-dir "$SNAPSHOTS"

python evaluate.py --data-dir "$DATA" --data-list "$DATA/list/val.lst" --model ccnet --recurrence 2 \
    --restore-from "$SNAPSHOTS/CS_scenes_$STEPS.pth" --whole true --batch-size 1 --num-workers 1 \
    --Output "$OUT/"

mapfile -t images < <(find "$DATA/leftImg8bit/val" -name '*.png' | sort | head -n 3)
python predict.py --restore-from "$SNAPSHOTS/CS_scenes_$STEPS.pth" --output "$OUT/predictions" \
    --attention 200,256 --attention 60,100 "${images[@]}"
first=$(basename "${images[0]}" .png)

miou=$(python -c "import json, sys; print(f\"{json.load(open(sys.argv[1]))['meanIU']:.4f}\")" "$SNAPSHOTS/result.txt")
echo
echo "mIoU on the synthetic validation split: $miou"
echo "snapshot:              $SNAPSHOTS/CS_scenes_$STEPS.pth (training state: $SNAPSHOTS/last.pth)"
echo "tensorboard logs:      tensorboard --logdir $SNAPSHOTS"
echo "coloured predictions:  $OUT/outputs/"
echo "an overlay:            $OUT/predictions/${first}_overlay.jpg"
echo "an attention figure:   $OUT/predictions/${first}_attention.png"
echo "demo finished in $((SECONDS - start)) s"
