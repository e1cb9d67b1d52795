"""check.py: upstream's precision check passes on the CPU, fails a slightly wrong op, refuses a device it cannot use."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import check
from CC import criss_cross_attention

ROOT = Path(__file__).resolve().parent.parent


def run_check(*args):
    return subprocess.run([sys.executable, "check.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_check_passes_on_cpu_with_exact_constant_output_in_2d_and_3d():
    result = run_check("--device", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CC (pure PyTorch)  output 3.0000000000   value gradient 1.0000000000   exact" in result.stdout
    assert "CC3D               output 3.0000000000   value gradient 1.0000000000   exact" in result.stdout
    assert "PASSED" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_check_on_missing_cuda_is_one_line_error():
    result = run_check("--device", "cuda")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --device cuda: CUDA is not available on this machine"


def test_check_exits_1_naming_both_failures_for_an_op_off_by_1e5(monkeypatch, capsys):
    """An op whose output and gradients are 1 + 1e-5 times the true ones: not exact on the
    constants, and above the 1e-6 relative tolerance on random inputs. The timing is left out."""
    def slightly_wrong(query, key, value):
        return criss_cross_attention(query, key, value) * (1 + 1e-5)

    monkeypatch.setattr(check, "criss_cross_attention", slightly_wrong)
    monkeypatch.setattr(check, "fwd_bwd_ms", lambda fn, device: 0.0)
    with pytest.raises(SystemExit) as stop:
        check.main(check.get_args_parser().parse_args(["--device", "cpu"]))
    assert stop.value.code == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "FAILED: constant inputs are not exact; random inputs exceed the relative tolerance 1e-06")
