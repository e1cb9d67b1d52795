"""`pip install .` installs the attention op alone: CC, CC3D and RCCA, importable outside the checkout."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OP_MODULES = {"CC.py", "CC3D.py", "RCCA.py"}
IMPORTS = """
import CC, CC3D, RCCA, torch
from CC import criss_cross_attention, CrissCrossAttention
from CC3D import criss_cross_attention_3d, CrissCrossAttention3d
from RCCA import RecurrentCrissCrossAttention
x = torch.randn(1, 64, 5, 6)
out = RecurrentCrissCrossAttention(64, recurrence=2).eval()(x)
print(out.shape[1], criss_cross_attention(x[:, :2], x[:, :2], x).shape == x.shape, CC.__file__)
"""


def test_the_wheel_holds_the_op_modules_only_and_imports_from_outside_the_checkout(tmp_path):
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if (REPO / name).is_file():  # a file deleted in the working tree is not built
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n for n in names if ".dist-info/" not in n} == OP_MODULES
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert [line for line in metadata.splitlines() if line.startswith("Requires-Dist")] == ["Requires-Dist: torch>=2.6"]

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                                str(site), str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    assert not any((site / folder).exists() for folder in ("utils", "dataset", "networks", "tests"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    ran = subprocess.run([sys.executable, "-c", IMPORTS], cwd=outside, env={"PYTHONPATH": str(site), "PATH": ""},
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    channels, same_shape, location = ran.stdout.split()
    assert channels == "16" and same_shape == "True" and Path(location).parent == site
