"""Synchronized BatchNorm and InPlace-ABN for nn.DataParallel and torch.distributed, written in pure PyTorch."""
from sync_batchnorm.batchnorm import SynchronizedBatchNorm1d, SynchronizedBatchNorm2d, SynchronizedBatchNorm3d
from sync_batchnorm.convert import convert_model
from sync_batchnorm.inplace_abn import InPlaceABN, InPlaceABNSync
from sync_batchnorm.replicate import DataParallelWithCallback, patch_replication_callback

__all__ = ["SynchronizedBatchNorm1d", "SynchronizedBatchNorm2d", "SynchronizedBatchNorm3d",
           "InPlaceABN", "InPlaceABNSync", "DataParallelWithCallback", "patch_replication_callback",
           "convert_model"]
