"""Independent formulations of criss-cross attention that CC.py is checked and benchmarked against.

- ``einsum_criss_cross``: einsums under plain autograd, the formulation of mmcv >= 1.3.13;
- ``seed_criss_cross``: the seed's permute/bmm formulation;
- ``criss_cross_cuda``: the original CCNet CUDA op (references/cuda/), built with nvcc at run time.
"""
from references.cuda import criss_cross_cuda, cuda_reference_status
from references.einsum import einsum_criss_cross
from references.seed import seed_criss_cross

__all__ = ["einsum_criss_cross", "seed_criss_cross", "criss_cross_cuda", "cuda_reference_status"]
