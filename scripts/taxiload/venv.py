"""Bootstrap of the Python scripts, as scripts/run and scripts/test do it in shell: create .venv if it is missing,
install the pinned requirements when their hash differs from the stamp file in .venv, then re-execute the script
with .venv/bin/python.

Standard library only: it runs under whatever python3 started the script (``PYTHON`` chooses the one that creates
the venv, as for scripts/run).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
REEXEC = "TAXI_SCRIPTS_REEXEC"  # set before the re-exec, so that a venv that does not take cannot loop


def use_venv(script: str, requirements: str) -> None:
    """Make sure .venv exists with requirements.txt and ``requirements`` (e.g. requirements-test.txt) installed,
    then continue in the venv's interpreter: re-execute the running script with it unless it already is."""
    if not VENV_PYTHON.exists():
        python = os.environ.get("PYTHON", "python3")
        if subprocess.run([python, "-m", "venv", str(VENV)]).returncode:
            sys.exit(f"{script}: `{python} -m venv {VENV}` failed")
    install(script, requirements)
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if os.environ.get(REEXEC):
        sys.exit(f"{script}: {VENV_PYTHON} did not start in the venv ({sys.prefix})")
    os.environ[REEXEC] = "1"
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), os.path.abspath(sys.argv[0]), *sys.argv[1:]])


def install(script: str, requirements: str) -> None:
    """pip install the files when their hash changed. The stamp is the one scripts/run (requirements.txt alone:
    .venv/.requirements.sha256) or scripts/test (.venv/.requirements-test.sha256) keeps: the sha256 of the files
    one after the other, as `cat requirements.txt requirements-test.txt | sha256sum` prints it."""
    files = ["requirements.txt"] + ([requirements] if requirements != "requirements.txt" else [])
    wanted = hashlib.sha256(b"".join((REPO / name).read_bytes() for name in files)).hexdigest()
    stamp = VENV / f".{Path(requirements).stem}.sha256"
    try:
        if stamp.read_text().strip() == wanted:
            return
    except OSError:
        pass
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if subprocess.run([*pip, *(arg for name in files for arg in ("-r", name))], cwd=REPO).returncode:
        sys.exit(f"{script}: pip could not install {' and '.join(files)} into {VENV}")
    stamp.write_text(wanted + "\n")
