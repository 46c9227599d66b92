"""rembg's own command line (``rembg s``, ``rembg p``), installed the way its users install it.

``pip install "rembg[cli,cpu]"`` pins fastapi, uvicorn and python-multipart to versions older than
clearbg's, so it cannot share clearbg's environment. The benches therefore run it from its own
virtual environment, created on first use under clearbg's cache (about 850 MB with gradio) and
reused afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REMBG = "rembg[cli,cpu]==2.0.86"


def rembg_executable() -> Path:
    """The ``rembg`` command of a private virtual environment with ``REMBG`` installed."""
    from clearbg.models.download import cache_dir

    home = cache_dir() / "bench" / REMBG.replace("[cli,cpu]==", "-")
    exe = home / "bin" / "rembg"
    if not exe.exists():
        print(f"installing {REMBG} into {home} (first run only)", file=sys.stderr, flush=True)
        venv.create(home, with_pip=True)
        subprocess.run([str(home / "bin" / "pip"), "install", "--quiet", REMBG], check=True)
    return exe
