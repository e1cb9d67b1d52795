"""Independent formulations of criss-cross attention that CC.py is checked and benchmarked against,
and the non-local block that CCNet's efficiency is compared with.

- ``einsum_criss_cross``: einsums under plain autograd, the formulation of mmcv >= 1.3.13;
- ``seed_criss_cross``: the seed's permute/bmm formulation;
- ``seed_criss_cross_3d``, ``seed_criss_cross_3d1``, ``seed_criss_cross_3d2``: the seed's three 3D
  formulations, for volumes (checked and benchmarked against CC3D.py);
- ``criss_cross_cuda``: the original CCNet CUDA op (references/cuda/), built with nvcc at run time;
- ``NonLocalBlock``: the embedded Gaussian non-local block of Wang et al. 2018 (bench/flops.py).
"""
from references.cuda import criss_cross_cuda, cuda_reference_status
from references.einsum import einsum_criss_cross
from references.non_local import NonLocalBlock
from references.seed import seed_criss_cross
from references.seed_3d import seed_criss_cross_3d, seed_criss_cross_3d1, seed_criss_cross_3d2

__all__ = ["einsum_criss_cross", "seed_criss_cross", "seed_criss_cross_3d", "seed_criss_cross_3d1",
           "seed_criss_cross_3d2", "criss_cross_cuda", "cuda_reference_status", "NonLocalBlock"]
