"""Build criss_cross.cu with nvcc into a shared library at run time and load it with ctypes.

The library is cached under build/cuda_reference/ in the repository root, its file name carrying the
target architecture and a hash of the source and flags, so an edited source is rebuilt. The CUDA
runtime is linked statically: loading the library needs no driver, which lets the host loops run
on machines without a GPU.
"""
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from utils.errors import UserError

SOURCE = Path(__file__).resolve().with_name("criss_cross.cu")
CACHE_DIR = SOURCE.parents[2] / "build" / "cuda_reference"
FLAGS = ["-O3", "-shared", "-Xcompiler", "-fPIC", "-cudart", "static"]
DEFAULT_ARCH = "sm_80"

_PTR, _INT = ctypes.c_void_p, ctypes.c_int
_SIGNATURES = {
    "cc_weight_forward": [_INT, _PTR] + [_PTR] * 3 + [_INT] * 4,
    "cc_weight_backward": [_INT, _PTR] + [_PTR] * 5 + [_INT] * 4,
    "cc_map_forward": [_INT, _PTR] + [_PTR] * 3 + [_INT] * 4,
    "cc_map_backward": [_INT, _PTR] + [_PTR] * 5 + [_INT] * 4,
}


def find_nvcc():
    """Path of nvcc on PATH or under $CUDA_HOME / $CUDA_PATH / /usr/local/cuda, else None."""
    found = shutil.which("nvcc")
    if found:
        return found
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for root in filter(None, roots):
        candidate = Path(root) / "bin" / "nvcc"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def target_arch():
    """'sm_XY' of the current GPU when CUDA is available, else sm_80."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"sm_{major}{minor}"
    return DEFAULT_ARCH


def first_error_line(text):
    """The first line of compiler output that names an error, else its first non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[0]


def compile_library(source, directory, arch, nvcc):
    """Compile source for arch into directory (skipped when already there); returns the library path.

    Raises UserError("build failed: <first error line>") when nvcc fails.
    """
    command = [nvcc, *FLAGS, f"-arch={arch}"]
    digest = hashlib.sha256(Path(source).read_bytes() + " ".join(command[1:]).encode()).hexdigest()[:16]
    library = Path(directory) / f"{Path(source).stem}-{arch}-{digest}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name, then rename: concurrent processes never load a partial file.
    handle, partial = tempfile.mkstemp(suffix=".so", dir=library.parent)
    os.close(handle)
    try:
        result = subprocess.run(command + [str(source), "-o", partial], capture_output=True, text=True)
        if result.returncode != 0:
            raise UserError(f"build failed: {first_error_line(result.stderr + result.stdout)}")
        os.replace(partial, library)
        for stale in library.parent.glob(f"{Path(source).stem}-{arch}-*.so"):
            if stale != library:
                stale.unlink(missing_ok=True)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return library


@functools.lru_cache(maxsize=None)
def _build_and_load(arch):
    """(library, '') once built and loaded for arch, else (None, one-line reason)."""
    nvcc = find_nvcc()
    if nvcc is None:
        return None, "nvcc not found"
    try:
        path = compile_library(SOURCE, CACHE_DIR, arch, nvcc)
    except UserError as e:
        return None, str(e)
    try:
        library = ctypes.CDLL(str(path))
    except OSError as e:
        return None, f"load failed: {e}"
    for name, argtypes in _SIGNATURES.items():
        entry = getattr(library, name)
        entry.argtypes, entry.restype = argtypes, ctypes.c_int
    library.cc_error_string.argtypes, library.cc_error_string.restype = [ctypes.c_int], ctypes.c_char_p
    library.cc_runtime_check.argtypes, library.cc_runtime_check.restype = [], ctypes.c_int
    return library, ""


def load_library():
    """The built criss_cross library (a ctypes.CDLL); raises UserError with the reason it cannot be built."""
    library, reason = _build_and_load(target_arch())
    if library is None:
        raise UserError(f"the CUDA reference cannot be built: {reason}")
    return library


def cuda_reference_status():
    """(available, reason): True only where torch.cuda is available and the library builds and loads."""
    if not torch.cuda.is_available():
        return False, "CUDA is not available"
    library, reason = _build_and_load(target_arch())
    if library is None:
        return False, reason
    code = library.cc_runtime_check()
    if code != 0:
        return False, f"the library's CUDA runtime cannot use the GPU: {library.cc_error_string(code).decode()}"
    return True, f"built for {target_arch()} with {find_nvcc()}"
