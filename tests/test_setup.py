"""`make setup`'s torch step, with a stand-in Python that records its pip calls: the local or
default index first, PyTorch's wheel page only when the wheel is not there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELS = "https://download.pytorch.org/whl/torch/"

# `python -m venv DIR` makes DIR/bin/python, which logs its arguments; its torch install
# fails unless it names a find-links location or FAKE_LOCAL_TORCH=1 (the wheel is local).
FAKE_PYTHON = r"""#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  cp "$0" "$3/bin/python"
  exit 0
fi
echo "$*" >> "$(dirname "$0")/../pip.log"
case "$*" in
  *torch==*--find-links*) exit 0 ;;
  *torch==*) [ "$FAKE_LOCAL_TORCH" = 1 ] && exit 0; echo "No matching distribution" >&2; exit 1 ;;
esac
exit 0
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("local", [True, False], ids=["wheel-local", "wheel-not-local"])
def test_torch_from_the_wheel_page_only_when_not_local(local, tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    env = {**os.environ, "FAKE_LOCAL_TORCH": "1" if local else "0"}
    proc = subprocess.run(
        ["make", "-C", str(ROOT), "setup", f"VENV={venv}", f"PYTHON={fake}"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (venv / "pip.log").read_text().splitlines()
    torch_calls = [c for c in calls if "torch==2.13.0+cpu" in c]
    assert WHEELS not in torch_calls[0]  # never waits on the page when the wheel is local
    if local:
        assert len(torch_calls) == 1
    else:  # the same wheel as before, from the page
        assert len(torch_calls) == 2 and f"--find-links {WHEELS}" in torch_calls[1]
        assert "trying " + WHEELS in proc.stdout
    assert calls[-1].endswith("-e .[dev]")
    assert (venv / ".seqnorm-installed").is_file()
