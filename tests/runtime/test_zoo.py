"""A name or a bare scale means the best checkpoint by recorded validation score, never the newest run."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
import torch

import sr_runtime.zoo as zoo
from sr_runtime.archs import build, resolve_hparams
from sr_runtime.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from sr_runtime.errors import InputError

SET = "sha256:aaaaaaaaaaaaaaaa"
OTHER = "sha256:bbbbbbbbbbbbbbbb"


def _save(path, arch, scale, score=None, val_set=SET):
    torch.manual_seed(len(str(path)))
    resolved = resolve_hparams(arch, scale=scale)
    metrics = {} if score is None else {"val_psnr": score, "val_set": val_set, "val_name": "Set5"}
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, build(arch, scale=scale, **resolved), arch=arch, scale=scale, hparams=resolved,
                           metrics=metrics)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A package with FSRCNN x4 (30.0 dB) and ESPCN x4 (29.0 dB) on the same validation set."""
    weights = tmp_path / "weights"
    _save(weights / "fsrcnn_x4.safetensors", "fsrcnn", 4, 30.0)
    _save(weights / "espcn_x4.safetensors", "espcn", 4, 29.0)
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", weights)
    return weights


def _run(runs, name, arch, scale, score, val_set=SET):
    path = _save(runs / name / "best.safetensors", arch, scale, score, val_set)
    os.utime(path, (time.time() + 100, time.time() + 100))  # the newest file by far
    return path


def test_a_bare_scale_means_the_best_recorded_score(shipped):
    assert zoo.default_model(4) == "fsrcnn"
    _save(shipped / "espcn_x4.safetensors", "espcn", 4, 31.0)
    assert zoo.default_model(4) == "espcn"  # by score, not by a fixed preference order


def test_a_worse_run_never_replaces_the_shipped_model_and_one_line_says_so(shipped, tmp_path, caplog):
    run = _run(tmp_path / "runs", "fsrcnn_x4_new", "fsrcnn", 4, 23.8)
    with caplog.at_level(logging.WARNING, logger="sr_runtime.zoo"):
        path, how = zoo.resolve_checkpoint("fsrcnn", 4, runs_dir=tmp_path / "runs")
    assert path == shipped / "fsrcnn_x4.safetensors" and "shipped" in how
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(run) in line and "23.80 dB" in line and "30.00 dB" in line and f"--model {run}" in line


def test_a_run_that_beats_the_shipped_model_on_the_same_set_is_used(shipped, tmp_path):
    run = _run(tmp_path / "runs", "fsrcnn_x4_good", "fsrcnn", 4, 30.5)
    path, how = zoo.resolve_checkpoint("fsrcnn", 4, runs_dir=tmp_path / "runs")
    assert path == run and "better than the shipped" in how
    # and for a bare scale too: the best of everything at x4
    assert zoo.default_model(4, runs_dir=tmp_path / "runs") == "fsrcnn"
    _run(tmp_path / "runs", "espcn_x4_great", "espcn", 4, 32.0)
    assert zoo.default_model(4, runs_dir=tmp_path / "runs") == "espcn"


@pytest.mark.parametrize("score, val_set, why", [(35.0, OTHER, "validated on another set"),
                                                  (None, SET, "no recorded score")])
def test_a_run_scored_elsewhere_or_not_at_all_is_not_comparable(shipped, tmp_path, caplog, score, val_set, why):
    _run(tmp_path / "runs", "fsrcnn_x4_odd", "fsrcnn", 4, score, val_set)
    with caplog.at_level(logging.WARNING, logger="sr_runtime.zoo"):
        path, _ = zoo.resolve_checkpoint("fsrcnn", 4, runs_dir=tmp_path / "runs")
    assert path == shipped / "fsrcnn_x4.safetensors"
    assert why in caplog.text


def test_a_path_is_used_as_given_and_a_name_with_nothing_shipped_takes_its_best_run(shipped, tmp_path):
    bad = _run(tmp_path / "runs", "fsrcnn_x4_bad", "fsrcnn", 4, 20.0)
    assert zoo.resolve_checkpoint(str(bad), None)[0] == bad
    runs = tmp_path / "runs"
    _run(runs, "vdsr_a", "vdsr", 4, 31.0)
    better = _run(runs, "vdsr_b", "vdsr", 4, 31.2)
    os.utime(better, (time.time() - 100, time.time() - 100))  # older, but better
    assert zoo.resolve_checkpoint("vdsr", 4, runs_dir=runs)[0] == better
    with pytest.raises(InputError, match="no checkpoint for srcnn x4"):
        zoo.resolve_checkpoint("srcnn", 4, runs_dir=runs)


# The acceptance, through sr-eval and the real shipped weights: a deliberately bad run (perturbed
# weights, a low recorded score on the same set) is passed over and the command says why; a run
# that records a higher score is used.

def _perturbed_run(runs, score):
    shipped_path = zoo.shipped_path("fsrcnn", 4)
    ckpt = load_checkpoint(shipped_path)
    with torch.no_grad():
        for p in ckpt.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    metrics = {**read_metadata(shipped_path)["metrics"], "val_psnr": score}
    path = runs / "fsrcnn_x4_20991231-000000" / "best.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, ckpt.model, arch="fsrcnn", scale=4, hparams=ckpt.hparams, metrics=metrics)


@pytest.mark.parametrize("score, uses_run", [(12.0, False), (99.0, True)])
def test_sr_eval_by_name_uses_the_better_of_shipped_and_run(tmp_path, photo_rgb_u8, score, uses_run):
    import subprocess
    import sys

    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(photo_rgb_u8[:96, :96].copy()).save(data / "a.png")
    run = _perturbed_run(tmp_path / "runs", score)
    done = subprocess.run([sys.executable, "-m", "sr_runtime.eval_cli", str(data), "--scale", "4", "--model", "fsrcnn",
                           "--backend", "torch", "--json", "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    if uses_run:
        assert result["checkpoint"] == str(run)
    else:
        assert result["checkpoint"] == str(zoo.shipped_path("fsrcnn", 4))
        line = [x for x in done.stderr.splitlines() if "found training run" in x]
        assert len(line) == 1 and "12.00 dB" in line[0] and f"--model {run}" in line[0]
