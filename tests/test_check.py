"""check.py: the seed's precision check passes on the CPU and refuses a device it cannot use."""
import subprocess
import sys
from pathlib import Path

import torch
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_check(*args):
    return subprocess.run([sys.executable, "check.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_check_passes_on_cpu_with_exact_constant_output():
    result = run_check("--device", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "output 3.0000000000   value gradient 1.0000000000   exact" in result.stdout
    assert "PASSED" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_check_on_missing_cuda_is_one_line_error():
    result = run_check("--device", "cuda")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --device cuda: CUDA is not available on this machine"
