"""Independent formulations of criss-cross attention that CC.py is checked and benchmarked against,
and the non-local block that CCNet's efficiency is compared with.

- ``einsum_criss_cross``: einsums under plain autograd, the formulation of mmcv >= 1.3.13;
- ``upstream_criss_cross``: upstream's permute/bmm formulation;
- ``upstream_criss_cross_3d``, ``upstream_criss_cross_3d1``, ``upstream_criss_cross_3d2``: upstream's three 3D
  formulations, for volumes (checked and benchmarked against CC3D.py);
- ``criss_cross_cuda``: the official CCNet's CUDA op (references/cuda/), built with nvcc at run time;
- ``NonLocalBlock``: the embedded Gaussian non-local block of Wang et al. 2018 (bench/flops.py).
"""
from references.cuda import criss_cross_cuda, cuda_reference_status
from references.einsum import einsum_criss_cross
from references.non_local import NonLocalBlock
from references.upstream import upstream_criss_cross
from references.upstream_3d import upstream_criss_cross_3d, upstream_criss_cross_3d1, upstream_criss_cross_3d2

__all__ = ["einsum_criss_cross", "upstream_criss_cross", "upstream_criss_cross_3d", "upstream_criss_cross_3d1",
           "upstream_criss_cross_3d2", "criss_cross_cuda", "cuda_reference_status", "NonLocalBlock"]
