"""The official CCNet's criss-cross CUDA op, built at run time with nvcc, as a reference for CC.py."""
from references.cuda.build import cuda_reference_status
from references.cuda.criss_cross import CAMap, CAWeight, criss_cross_cuda

__all__ = ["criss_cross_cuda", "cuda_reference_status", "CAWeight", "CAMap"]
