"""The input every network of this project takes: BGR images minus IMG_MEAN.

The datasets subtract it and the networks that need another normalization (mmsegmentation's RGB
mean and std) undo it, so both sides read it from here, below either of them.
"""

# The Caffe ImageNet mean in BGR order, which CCNet's training and evaluation subtract.
IMG_MEAN = (104.00698793, 116.66876762, 122.67891434)
