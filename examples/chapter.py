"""`make demo`: the "File I/O" chapter through tensorfile, one framework after another.

Each framework's cells run in a fresh temporary folder; then the PyTorch
parameter file is listed as `tensorfile ls` shows it and opened with the
reference safetensors library.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTIONS = [("NumPy", "file_io_numpy.py"), ("PyTorch", "file_io_torch.py")]


def banner(title: str) -> None:
    print(f"\n{'=' * 20} {title} {'=' * (56 - len(title))}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tensorfile-demo-") as root:
        for title, script in SECTIONS:
            banner(f"File I/O in {title}")
            folder = Path(root) / title.lower()
            folder.mkdir()
            os.chdir(folder)
            runpy.run_path(str(HERE / script), run_name="__main__")
        torch_file = Path(root) / "pytorch" / "mlp.params"
        banner("tensorfile ls mlp.params (PyTorch)")
        exe = Path(sys.executable).with_name("tensorfile")
        subprocess.run([str(exe), "ls", str(torch_file)], check=True)
        banner("Any safetensors tool opens the same file")
        from safetensors import safe_open

        with safe_open(str(torch_file), "pt") as f:
            for name in sorted(f.keys()):
                t = f.get_tensor(name)
                print(f"safetensors sees {name}: {t.dtype} {tuple(t.shape)}")
        os.chdir(HERE)


if __name__ == "__main__":
    main()
