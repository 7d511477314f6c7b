"""The README stays short, and its embedding example runs as written in an empty folder, warning-free."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_readme_is_read_in_five_minutes():
    assert len(README.splitlines()) <= 170


def test_the_embedding_example_runs_as_written_in_an_empty_folder(tmp_path):
    section = README.split("## Embed it", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:1]
    (tmp_path / "example.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-W", "default", "example.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr  # e.g. torch's "NumPy array is not writable"
    assert "(160, 240, 3) -> (640, 960, 3)" in done.stdout and "refused: no checkpoint for x5" in done.stdout
    assert (tmp_path / "photo_x4.png").is_file()


def test_every_link_in_the_readme_points_at_a_file():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
