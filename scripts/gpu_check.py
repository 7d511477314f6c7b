#!/usr/bin/env python3
"""One prepared GPU run (issue 17): the CUDA tests, EDSR x4 training, evaluation, the GPU benchmark
rows and a one-page summary, each step time-boxed, each writing into ``--out``.

    python scripts/gpu_check.py --dry-run                  # CPU, tiny budgets, ~30-45 s: catches typos
    python scripts/gpu_check.py --data DIR --out gpu_out   # on the GPU machine (see README "GPU check")
    python scripts/gpu_check.py --steps tests,train ...    # a subset; steps.json/summary.md are merged

Steps, in order (``--steps`` picks a subset; the summary is always rewritten at the end):

1. ``tests``: ``pytest -m "gpu or trt"`` over the test files that carry those markers, junit XML
   parsed into a pass/fail/skip list;
2. ``train``: ``sr-train --model edsr --scale 4`` (``python -m sr_train.cli``) on T91 + BSD200 with the
   GPU data pipeline (``data.device=cuda``), bf16 autocast and EMA, validated on Set5, for a wall-clock
   budget: a short calibration run measures steps/s, then the real run gets ``steps`` = rate x budget
   (so the cosine schedule ends with the budget) and ``time_budget`` to replan and stop on time;
3. ``eval``: ``sr-eval`` (``python -m sr_runtime.eval_cli``) Set5/Set14/BSD100 x4 of that checkpoint;
4. ``bench``: for the shipped EDSR x4 (FSRCNN x4 before EDSR ships), ``sr-bench`` (torch FP32, torch FP16 channels-last, ONNX Runtime FP16 where the CUDA
   provider exists; parity; video pipeline/inference/encode fps), ``scripts/gpu_bench_extra.py``
   (torch.compile FP16 and the runtime's default path) and ``sr-run`` on the sample video at x4;
5. ``summary``: ``summary.md`` from ``steps.json`` (written even when steps failed).

A failing or timed-out step is recorded (status, return code, duration, the tail of its output;
the whole output is in ``logs/``) and the next step runs. ``GPU_CHECK_FAIL=step[,step]`` replaces
those steps by a command that fails, to test exactly that. Only the standard library is imported
here; everything that needs torch runs in subprocesses (``python -m ...`` with ``PYTHONPATH`` set to
the checkout and ``--site``), so a missing optional package fails or skips one row, not the run.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = ("tests", "train", "eval", "bench", "summary")
EVAL_SETS = ("Set5", "Set14", "BSD100")
TAIL_CHARS = 2000

# The short-budget EDSR x4 recipe (the reasons are in README.md, "GPU check").
RECIPE = {
    "data.batch_size": 32,
    "data.patch_size": 48,
    "optim.lr": 3e-4,
    "optim.scheduler": "cosine",
    "optim.min_lr": 1e-6,
    "ema": 0.999,
    "loss.kind": "l1",
    "time_budget": "null",  # the recipe's 2h budget off: the calibration runs its steps; the run sets its own budget
}
# The dry run proves the script, not the model: a 2-block, 16-feature EDSR keeps it well under a minute.
DRY_RECIPE = {**RECIPE, "data.batch_size": 2, "data.patch_size": 12, "model.hparams.n_resblocks": 2,
              "model.hparams.n_feats": 16}


# --- small helpers ---------------------------------------------------------------------------------

def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def tail(text: str, n: int = TAIL_CHARS) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


class Runner:
    """Runs one step's commands: each time-boxed, logged to ``logs/<step>.log``, recorded in the step."""

    def __init__(self, out: Path, env: dict[str, str], deadline: float | None = None) -> None:
        self.out, self.env, self.deadline = out, env, deadline
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, step: dict, label: str, cmd: list[str], timeout: float, cwd: Path = REPO) -> dict:
        start = time.monotonic()
        cut = self.deadline is not None and self.deadline - start < timeout
        if cut:  # --deadline-s: no command may outlive the whole invocation's limit
            timeout = self.deadline - start
        log_path = self.out / "logs" / f"{step['name']}.log"
        with open(log_path, "a") as log:
            log.write(f"\n===== {label}: {shlex.join(cmd)} (timeout {timeout:.0f} s, {now()})\n")
        part = self.out / "logs" / f".{step['name']}.current"
        rc, timed_out, note = None, False, ""
        with open(part, "w") as sink:
            if cut and timeout < 5:
                timed_out, note = True, f"not started: only {timeout:.0f} s left before --deadline-s"
            else:
                try:  # its own session, so that a timeout kills the command's children too (compile workers)
                    proc = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
                except OSError as e:
                    note = f"cannot start: {e}"
                else:
                    try:
                        rc = proc.wait(timeout=timeout)
                    except subprocess.TimeoutExpired:
                        timed_out, note = True, f"timed out after {timeout:.0f} s, killed"
                        try:
                            os.killpg(proc.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        proc.wait()
                    except BaseException:  # interrupted: take the command's process group down with us
                        os.killpg(proc.pid, signal.SIGKILL)
                        raise
        text = part.read_text(errors="replace") + (f"\n[gpu_check: {note}]\n" if note else "")
        part.unlink()
        with open(log_path, "a") as log:
            log.write(text)
        entry = {"label": label, "cmd": shlex.join(cmd), "rc": rc, "timed_out": timed_out,
                 "seconds": round(time.monotonic() - start, 2), "stdout_tail": tail(text, 1200)}
        step.setdefault("commands", []).append(entry)
        if not step.get("_failed_tail"):  # the summary shows the first failed command's output
            step["stdout_tail"] = tail(text)
            step["_failed_tail"] = not ok(entry)
        entry["stdout"] = text  # dropped before steps.json is written
        return entry


def ok(entry: dict) -> bool:
    return entry["rc"] == 0 and not entry["timed_out"]


# --- configuration ---------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu_out"), help="output folder (default gpu_out)")
    p.add_argument("--data", type=Path, default=None,
                   help="folder holding T91, BSD200, Set5, Set14, BSD100, video/chaplin.mp4 "
                        "(default ../shared/data; with --dry-run: a tiny generated set)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny data and budgets: proves the script, not the GPU")
    p.add_argument("--train-seconds", type=float, default=None, help="training wall-clock budget (default 240)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--device", default=None, help="cuda (default) or cpu; --dry-run implies cpu")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint for eval/bench (default: OUT/train/best.safetensors from the train step)")
    p.add_argument("--wheels", type=Path, default=None,
                   help="folder of wheels to install first (pip --no-index --no-deps --target SITE)")
    p.add_argument("--site", type=Path, default=Path("/tmp/gpu_check_site"), help="install target for --wheels")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="wall-clock limit of this whole invocation: each command's timeout is cut to what is left")
    p.add_argument("--python", default=sys.executable, help="interpreter for the steps (default: this one)")
    args = p.parse_args(argv)
    unknown = [s for s in args.steps.split(",") if s and s not in STEPS]
    if unknown:
        p.error(f"unknown step(s) {', '.join(unknown)}; valid: {', '.join(STEPS)}")
    args.steps = [s for s in STEPS if s in args.steps.split(",")]
    if args.dry_run:
        args.device = args.device or "cpu"
    if args.train_seconds is None:
        args.train_seconds = 6.0 if args.dry_run else 240.0
    args.out = args.out.resolve()
    return args


def budgets(args) -> dict:
    """Every size and time limit of the run, in one place (recorded in steps.json)."""
    if args.dry_run:
        # The dry run proves the script on a CPU that may be busy with other work: its time limits are
        # guards far above what each step takes on an idle 2-core machine (10-40 s), never a verdict.
        return {
            "tests_timeout": 900, "calib_steps": 2, "fixed_steps": 3, "calib_timeout": 900, "train_timeout": 900,
            "log_every": 1, "eval_timeout": 900, "bench_sizes": "16x24", "bench_batch": "1,2",
            "bench_runs": 2, "bench_warmup": 0, "bench_row_s": 5, "bench_timeout": 1200,
            "video_frames": 3, "video_size": "16x24", "extra_batch": "1", "extra_timeout": 900, "srrun_timeout": 900,
            "backends": "torch,onnxruntime", "precisions": "fp32,fp16",
        }
    return {
        # pytest of the marked files: collection + a few CUDA/compile tests
        "tests_timeout": 180,
        # a 200-step calibration run (data load + cudnn autotune + warm steps), then the real run
        "calib_steps": 200, "fixed_steps": None, "calib_timeout": 150, "train_timeout": args.train_seconds + 150,
        "log_every": 50, "eval_timeout": 180,
        # the rows: EDSR x4 at 270x480 -> 1080x1920, batch 1 and a throughput batch of 8
        "bench_sizes": "270x480", "bench_batch": "1,8", "bench_runs": 30, "bench_warmup": 5,
        "bench_row_s": 15, "bench_timeout": 300, "video_frames": 100, "video_size": None,
        "extra_batch": "1,8", "extra_timeout": 240, "srrun_timeout": 180,
        "backends": "torch,onnxruntime", "precisions": "fp32,fp16",
    }


def make_dry_data(root: Path, python: str, env: dict) -> Path:
    """Tiny HR folders (crops of scikit-image photos) and a 3-frame clip, in the layout of ../shared/data."""
    code = r"""
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from skimage import data as sk
root = Path(sys.argv[1])
photos = [sk.astronaut(), sk.chelsea(), sk.coffee(), sk.rocket()]
def save(folder, n, side):
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = photos[i % len(photos)]
        y, x = 20 * i, 30 * i
        Image.fromarray(np.ascontiguousarray(img[y:y + side, x:x + side])).save(d / f"img{i}.png")
save("T91", 3, 72); save("BSD200", 2, 64); save("Set5", 2, 48); save("Set14", 2, 40); save("BSD100", 1, 40)
try:
    from benchmarks.bench_video import make_clip
    (root / "video").mkdir(exist_ok=True)
    clip, _ = make_clip(None, 3, root / "video", size=(16, 24))
    clip.rename(root / "video" / "chaplin.mp4")
except ImportError as e:
    print(f"no clip: {e}")
"""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-c", code, str(root)], env=env, check=True, cwd=REPO, timeout=60)
    return root


def setup(args) -> tuple[dict, dict]:
    """Child environment (PYTHONPATH = site + checkout) and the machine's description."""
    info: dict = {"started": now(), "python": args.python, "host": platform.node(), "dry_run": args.dry_run}
    env = dict(os.environ)
    paths = [str(REPO)]
    if args.wheels is not None:
        wheels = sorted(Path(args.wheels).glob("*.whl"))
        marker = args.site / ".gpu_check_wheels"
        if wheels and marker.is_file() and marker.read_text() == "\n".join(w.name for w in wheels):
            info["wheels"] = {"installed": [w.name for w in wheels], "note": f"already in {args.site}"}
        elif wheels:
            cmd = [args.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                   "--no-cache-dir", "--upgrade", "--target", str(args.site), *map(str, wheels)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            info["wheels"] = {"installed": [w.name for w in wheels], "rc": proc.returncode,
                              "output": tail(proc.stdout, 800)}
            if proc.returncode == 0:
                marker.write_text("\n".join(w.name for w in wheels))
        else:
            info["wheels"] = {"installed": [], "note": f"no *.whl in {args.wheels}"}
    if args.site.is_dir():
        paths.insert(0, str(args.site))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    probe = (
        "import json, importlib.util as u, torch\n"
        "d = {'torch': torch.__version__, 'cuda_available': torch.cuda.is_available(), "
        "'cuda': torch.version.cuda}\n"
        "if torch.cuda.is_available():\n"
        "    d['gpu'] = torch.cuda.get_device_name(0)\n"
        "    d['gpu_mem_gib'] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)\n"
        "def have(m):\n"
        "    try:\n"
        "        return u.find_spec(m) is not None\n"
        "    except (ImportError, ValueError):\n"
        "        return False\n"
        "d['packages'] = {m: have(m) for m in "
        "('av', 'onnx', 'onnxruntime', 'onnxslim', 'onnxconverter_common', 'tensorrt', 'pytest', 'skimage')}\n"
        "try:\n"
        "    import onnxruntime as ort; d['ort_providers'] = ort.get_available_providers()\n"
        "except Exception as e:\n"
        "    d['ort_providers'] = []\n"
        "print(json.dumps(d))\n"
    )
    try:
        proc = subprocess.run([args.python, "-c", probe], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=120)
        info.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    except Exception as e:  # noqa: BLE001 -- the machine description is best effort
        info["probe_error"] = f"{type(e).__name__}: {e}"
    if shutil.which("nvidia-smi"):
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
            info["nvidia_smi"] = smi.stdout.strip()
        except Exception as e:  # noqa: BLE001
            info["nvidia_smi"] = f"failed: {e}"
    return env, info


# --- step 1: the gpu/trt-marked tests --------------------------------------------------------------

def marked_test_files() -> list[str]:
    files = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        text = path.read_text(errors="replace")
        if "mark.gpu" in text or "mark.trt" in text:
            files.append(str(path.relative_to(REPO)))
    return files


def parse_junit(path: Path) -> list[dict]:
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or child.text or "").strip().splitlines()[0:1]
                message = message[0][:300] if message else ""
                break
        rows.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message})
    return rows


def step_tests(step, args, ctx) -> None:
    b, run, d = ctx["budgets"], ctx["runner"], args.out / "tests"
    d.mkdir(parents=True, exist_ok=True)
    files = marked_test_files()
    step["files"] = files
    junit = d / "junit.xml"
    junit.unlink(missing_ok=True)
    cmd = [args.python, "-m", "pytest", "-m", "gpu or trt", "-rA", "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *files]
    entry = run.run(step, "pytest", cmd, b["tests_timeout"])
    results = parse_junit(junit) if junit.is_file() else []
    step["results"] = results
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    step["counts"] = counts
    # rc 5: nothing selected; skipped tests (no CUDA, no TensorRT) are reported, not failures
    step["status"] = "ok" if (entry["rc"] in (0, 5) and not entry["timed_out"] and junit.is_file()) else "failed"


# --- step 2: train EDSR x4 -------------------------------------------------------------------------

def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def steps_per_second(rows: list[dict]) -> float | None:
    """From log.csv's training rows (step, seconds since the loop started), skipping the first (warm-up)."""
    pts = [(int(r["step"]), float(r["seconds"])) for r in rows if r.get("loss") and r.get("seconds")]
    if len(pts) >= 3:
        pts = pts[1:]
    if len(pts) < 2 or pts[-1][1] <= pts[0][1]:
        return None
    return (pts[-1][0] - pts[0][0]) / (pts[-1][1] - pts[0][1])


def _train_cmd(args, ctx, runs: Path, name: str, overrides: dict) -> list[str]:
    data = ctx["data"]
    train_dirs = [str(data / s) for s in ("T91", "BSD200") if (data / s).is_dir()]
    cmd = [args.python, "-m", "sr_train.cli", "--model", "edsr", "--scale", "4", "--quiet", "--out", str(runs)]
    if train_dirs:
        cmd += ["--data", *train_dirs]
    if (data / "Set5").is_dir():
        cmd += ["--val", str(data / "Set5")]
    device = ctx["device"]
    base = {"device": device, "data.device": device, "amp": "bf16" if device.startswith("cuda") else "none",
            "run_name": name, **(DRY_RECIPE if args.dry_run else RECIPE)}
    base.update(overrides)
    return cmd + [f"{k}={v}" for k, v in base.items()]


def step_train(step, args, ctx) -> None:
    b, run = ctx["budgets"], ctx["runner"]
    d = args.out / "train"
    runs = d / "runs"
    if runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True)
    for name in ("best.safetensors", "log.csv", "config.yaml"):  # never report an earlier invocation's run
        (d / name).unlink(missing_ok=True)
    step["data"] = [s for s in ("T91", "BSD200") if (ctx["data"] / s).is_dir()]
    step["val"] = "Set5" if (ctx["data"] / "Set5").is_dir() else "scikit-image astronaut (no Set5)"
    step["recipe"] = dict(DRY_RECIPE if args.dry_run else RECIPE)
    calib = b["calib_steps"]
    entry = run.run(step, "calibrate", _train_cmd(args, ctx, runs, "calibrate", {
        "steps": calib, "log_every": b["log_every"], "val_every": calib, "ckpt_every": calib}), b["calib_timeout"])
    rate = None
    if ok(entry) and (runs / "calibrate" / "log.csv").is_file():
        rate = steps_per_second(read_log(runs / "calibrate" / "log.csv"))
    step["calibrated_steps_per_s"] = rate
    budget = args.train_seconds
    deadline = run.deadline
    if deadline is not None and not args.dry_run:
        # what --deadline-s leaves, less ~100 s for start-up, data load, validations and the last save
        left = deadline - time.monotonic() - 100
        if left < budget:
            budget = max(30.0, left)
            step["budget_note"] = f"cut from {args.train_seconds:.0f} s to {budget:.0f} s to end before --deadline-s"
    step["budget_s"] = round(budget, 1)
    if b["fixed_steps"]:
        steps = b["fixed_steps"]
    elif rate:
        steps = max(100, int(rate * budget * 0.97))  # ~3% for the periodic validations
    else:
        steps = 20000  # calibration failed: the time limit below still ends the run on time
    val_every = steps // 8 if steps >= 16 else max(1, steps // 2)
    step["planned_steps"] = steps
    entry = run.run(step, "train", _train_cmd(args, ctx, runs, "edsr_x4", {
        "steps": steps, "log_every": b["log_every"], "val_every": val_every, "ckpt_every": val_every,
        "time_budget": f"{max(1, round(budget))}s"}), b["train_timeout"])
    run_dir = runs / "edsr_x4"
    for name in ("best.safetensors", "log.csv", "config.yaml"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, d / name)
    if (d / "log.csv").is_file():
        rows = read_log(d / "log.csv")
        vals = [(int(r["step"]), float(r["val_psnr"]), float(r["val_ssim"])) for r in rows if r.get("val_psnr")]
        trained = [r for r in rows if r.get("loss")]
        step["steps_done"] = max((int(r["step"]) for r in rows), default=0)
        step["train_seconds"] = max((float(r["seconds"]) for r in rows if r.get("seconds")), default=None)
        step["steps_per_s"] = steps_per_second(rows)
        step["final_loss"] = float(trained[-1]["loss"]) if trained else None
        step["val_curve"] = [{"step": s, "psnr": p, "ssim": q} for s, p, q in vals]
        if vals:
            best = max(vals, key=lambda v: v[1])
            step["best_val"] = {"step": best[0], "psnr": best[1], "ssim": best[2]}
    if ok(entry) and (d / "best.safetensors").is_file():
        step["checkpoint"] = str(d / "best.safetensors")
        step["checkpoint_mib"] = round((d / "best.safetensors").stat().st_size / 2**20, 2)
        step["status"] = "ok"
    else:
        step["status"] = "failed"
        if (d / "best.safetensors").is_file():
            step["reason"] = "training did not finish; eval and bench use its best checkpoint so far"
    shutil.rmtree(runs, ignore_errors=True)  # last.pt etc.: the checkpoint and the log are copied above


def bench_model() -> str:
    """The shipped model the GPU rows are for: EDSR x4 once it ships, FSRCNN x4 before (the training
    step's own checkpoint is scored by ``eval``; the rows describe what users run)."""
    return "edsr" if (REPO / "sr_runtime" / "weights" / "edsr_x4.safetensors").is_file() else "fsrcnn"


def checkpoint(args) -> Path | None:
    path = args.checkpoint or args.out / "train" / "best.safetensors"
    return path if path.is_file() else None


# --- step 3: sr-eval -------------------------------------------------------------------------------

EVAL_CODE = r"""
import contextlib, io, json, sys, traceback
from sr_runtime.eval_cli import main
ckpt, dev, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
for d in dirs:  # one process for every set: CUDA and the model load are paid once
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            rc = main([d, "--scale", "4", "--model", ckpt, "--device", dev, "--json"])
    except BaseException as e:
        traceback.print_exc()
        rc = f"{type(e).__name__}: {e}"
    print("@@sr-eval " + json.dumps({"dir": d, "rc": rc, "stdout": buf.getvalue()}), flush=True)
"""


def step_eval(step, args, ctx) -> None:
    """``sr-eval DIR --scale 4 --model CKPT --device D --json`` per set (its ``main``, in one process)."""
    ckpt = checkpoint(args)
    if ckpt is None:
        step.update(status="skipped", reason="no checkpoint (the train step failed or did not run; or pass --checkpoint)")
        return
    step["checkpoint"] = str(ckpt)
    dev = "cuda" if ctx["device"].startswith("cuda") else "cpu"
    rows, present = {}, []
    for ds in EVAL_SETS:
        folder = ctx["data"] / ds
        if folder.is_dir():
            present.append(ds)
            rows[ds] = {"dataset": ds, "status": "failed", "reason": "sr-eval gave no result"}
        else:
            rows[ds] = {"dataset": ds, "status": "skipped", "reason": f"{folder} not found"}
    if present:
        cmd = [args.python, "-c", EVAL_CODE, str(ckpt), dev, *(str(ctx["data"] / ds) for ds in present)]
        entry = ctx["runner"].run(step, "sr-eval " + ",".join(present), cmd, ctx["budgets"]["eval_timeout"])
        for line in entry["stdout"].splitlines():
            if not line.startswith("@@sr-eval "):
                continue
            res = json.loads(line[len("@@sr-eval "):])
            ds = Path(res["dir"]).name
            if res["rc"] != 0:
                rows[ds].update(reason=f"sr-eval exit {res['rc']}")
                continue
            try:
                out = json.loads(res["stdout"].strip().splitlines()[-1])
                rows[ds] = {"dataset": ds, "status": "ok", "psnr": out.get("psnr"), "ssim": out.get("ssim"),
                            "images": out.get("images")}
            except (ValueError, IndexError) as e:
                rows[ds].update(reason=f"unreadable sr-eval JSON: {e}")
    step["rows"] = [rows[ds] for ds in EVAL_SETS]
    write_json(args.out / "eval.json", step["rows"])
    step["status"] = "failed" if any(r["status"] == "failed" for r in step["rows"]) else "ok"


# --- step 4: benchmarks ----------------------------------------------------------------------------

def step_bench(step, args, ctx) -> None:
    b, run, info = ctx["budgets"], ctx["runner"], ctx["info"]
    d = args.out / "bench"
    d.mkdir(parents=True, exist_ok=True)
    name = bench_model()
    model_args = ["--models", name, "--runs-dir", str(args.out / "no-runs")]
    step["weights"] = f"{name} x4, shipped weights"
    have_av = info.get("packages", {}).get("av", False)
    skipped = step.setdefault("skipped", [])
    dev = ctx["device"]
    data = ctx["data"]
    clip = data / "video" / "chaplin.mp4"

    # (a) sr-bench: torch fp32/fp16 (channels-last is the CUDA default), ONNX Runtime, parity, video
    cmd = [args.python, "-m", "benchmarks.cli", *model_args, "--scales", "4", "--sizes", b["bench_sizes"],
           "--batch", b["bench_batch"], "--backends", b["backends"], "--precisions", b["precisions"],
           "--device", dev, "--runs", str(b["bench_runs"]), "--warmup", str(b["bench_warmup"]),
           "--max-row-seconds", str(b["bench_row_s"]), "--parity-images", "1" if args.dry_run else "3", "--no-quality", "--no-plots",
           "--out", str(d / "srbench")]
    if not have_av:
        # sr-bench's video stage catches SRError/OSError only: without PyAV its ImportError would end
        # the whole run and lose every latency row, so the video figure is switched off instead.
        cmd.append("--no-video")
        skipped.append({"row": "video (sr-bench)", "reason": "PyAV (av) is not installed: carry its wheel"})
    else:
        cmd += ["--video", str(clip) if clip.is_file() else "synthetic", "--video-frames", str(b["video_frames"]),
                "--video-forms", "first"]  # torch FP32: the default path's form
        if b["video_size"]:
            cmd += ["--video-size", b["video_size"]]
    entry = run.run(step, "sr-bench", cmd, b["bench_timeout"])
    results_path = d / "srbench" / "results.json"
    step["srbench"] = "ok" if ok(entry) and results_path.is_file() else "failed"
    if results_path.is_file():
        res = json.loads(results_path.read_text())
        step["latency"] = [{k: r.get(k) for k in ("backend", "precision", "device", "input_h", "input_w", "output_h",
                                                   "output_w", "batch", "runs", "p50_ms", "p95_ms", "fps",
                                                   "peak_mem_mib", "parity_psnr_db", "parity_max_abs_u8")}
                           for r in res.get("latency", [])]
        step["video"] = [{k: r.get(k) for k in ("backend", "precision", "clip", "frames", "input_w", "input_h",
                                                 "output_w", "output_h", "pipeline_fps", "inference_fps",
                                                 "encode_fps", "decode_fps")} for r in res.get("video", [])]
        skipped += [{"row": f"sr-bench {s.get('stage')} {s.get('backend') or ''} {s.get('precision') or ''}".strip(),
                     "reason": s.get("reason")} for s in res.get("skipped", [])]

    # (b) torch.compile FP16 and the runtime's default path
    extra_json = d / "extra.json"
    extra_json.unlink(missing_ok=True)
    cmd = [args.python, str(REPO / "scripts" / "gpu_bench_extra.py"), "--model", name,
           "--scale", "4", "--sizes", b["bench_sizes"], "--batch", b["extra_batch"], "--device", dev,
           "--runs", str(b["bench_runs"]), "--warmup", str(b["bench_warmup"]), "--out", str(extra_json)]
    if args.dry_run:
        # inductor's C++ build takes minutes on 2 CPU cores: the dry run traces with dynamo and runs eagerly
        cmd += ["--compile-backend", "eager", "--parity-size", "16x24", "--parity-images", "1"]
    entry = run.run(step, "extra rows", cmd, b["extra_timeout"])
    step["extra"] = "ok" if ok(entry) and extra_json.is_file() else "failed"
    if extra_json.is_file():
        extra = json.loads(extra_json.read_text())
        step["latency"] = step.get("latency", []) + extra.get("latency", [])
        step["default_path"] = extra.get("default_path")
        if extra.get("error"):
            step["extra_error"] = extra["error"]
        skipped += extra.get("skipped", [])

    # (c) sr-run on the sample video at x4 (the command-line path end to end, audio kept)
    if not have_av:
        step["srrun"] = "skipped"
        skipped.append({"row": "sr-run video", "reason": "PyAV (av) is not installed: carry its wheel"})
    elif not clip.is_file():
        step["srrun"] = "skipped"
        skipped.append({"row": "sr-run video", "reason": f"{clip} not found"})
    else:
        dst = d / "srrun_x4.mp4"
        cmd = [args.python, "-m", "sr_runtime.cli", str(clip), "--scale", "4", "--model", name,
               "--device", dev, "-o", str(dst), "--quiet"]
        entry = run.run(step, "sr-run video", cmd, b["srrun_timeout"])
        step["srrun"] = "ok" if ok(entry) and dst.is_file() else "failed"
        if dst.is_file():
            step["srrun_video"] = {"model": f"{name} x4 (shipped)",
                                   "wall_s": entry["seconds"], "output_mib": round(dst.stat().st_size / 2**20, 2)}
            dst.unlink()  # 1440p output: too large to send back, and not needed
    parts = [step["srbench"], step["extra"], step["srrun"]]
    step["status"] = "failed" if "failed" in parts else "ok"


# --- step 5: summary -------------------------------------------------------------------------------

def _f(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _parity(row: dict) -> str:
    psnr = row.get("parity_psnr_db")
    if psnr is None and row.get("parity_max_abs_u8") == 0:
        return "identical"  # sr-bench writes a bit-identical output's infinite PSNR as null
    if psnr is not None and psnr == float("inf"):
        return "identical"
    return _f(psnr)


def render_summary(record: dict) -> str:
    info, steps = record.get("machine", {}), {s["name"]: s for s in record.get("steps", [])}
    mode = "DRY RUN on CPU: tiny data, model and budgets; these figures prove the script, not the GPU" \
        if info.get("dry_run") else "GPU run"
    lines = [f"# GPU check summary -- {mode}", "",
             f"Written {now()} by `scripts/gpu_check.py`; machine: {info.get('gpu') or 'no CUDA GPU'}"
             f" ({info.get('nvidia_smi', 'no nvidia-smi')}), torch {info.get('torch')}, CUDA {info.get('cuda')}, "
             f"host {info.get('host')}.", "",
             "| step | status | seconds | note |", "|---|---|---|---|"]
    for name in STEPS:
        s = steps.get(name)
        if s is None:
            lines.append(f"| {name} | not run | – | |")
            continue
        note = s.get("reason") or s.get("error") or ""
        lines.append(f"| {name} | {s.get('status')} | {_f(s.get('seconds'), '{:.1f}')} | {note} |")
    t = steps.get("tests")
    if t:
        lines += ["", "## 1. tests (`pytest -m \"gpu or trt\"`)", "",
                  "counts: " + (", ".join(f"{k} {v}" for k, v in sorted(t.get("counts", {}).items())) or "none")]
        bad = [r for r in t.get("results", []) if r["outcome"] in ("failed", "error")]
        lines += [f"- FAILED `{r['test']}`: {r['message']}" for r in bad]
        lines += [f"- passed `{r['test']}`" for r in t.get("results", []) if r["outcome"] == "passed"]
    tr = steps.get("train")
    if tr:
        bv = tr.get("best_val") or {}
        lines += ["", "## 2. train EDSR x4", "",
                  f"data {' + '.join(tr.get('data', [])) or 'scikit-image photos'}, validation {tr.get('val')}; "
                  f"budget {tr.get('budget_s')} s {('(' + tr['budget_note'] + ')') if tr.get('budget_note') else ''}; recipe "
                  + ", ".join(f"{k}={v}" for k, v in tr.get("recipe", {}).items()),
                  f"calibrated {_f(tr.get('calibrated_steps_per_s'))} steps/s -> planned {tr.get('planned_steps')} "
                  f"steps; done {tr.get('steps_done')} steps in {_f(tr.get('train_seconds'), '{:.0f}')} s "
                  f"({_f(tr.get('steps_per_s'))} steps/s); final L1 loss {_f(tr.get('final_loss'), '{:.5f}')}",
                  f"best validation: {_f(bv.get('psnr'), '{:.3f}')} dB / SSIM {_f(bv.get('ssim'), '{:.4f}')} "
                  f"at step {bv.get('step')} (shipping threshold: 31.5 dB on Set5 x4; paper EDSR-baseline 32.09)"]
    ev = steps.get("eval")
    if ev:
        lines += ["", "## 3. sr-eval x4 (Y channel, 4-pixel crop)", ""]
        if ev.get("rows"):
            lines += ["| set | images | PSNR | SSIM | status |", "|---|---|---|---|---|"]
            lines += [f"| {r['dataset']} | {r.get('images', '–')} | {_f(r.get('psnr'), '{:.3f}')} | "
                      f"{_f(r.get('ssim'), '{:.4f}')} | {r['status']} {r.get('reason', '')} |" for r in ev["rows"]]
        else:
            lines.append(ev.get("reason", ""))
    bn = steps.get("bench")
    if bn:
        lines += ["", "## 4. benchmarks (EDSR x4)", "", f"weights: {bn.get('weights')}", ""]
        if bn.get("default_path"):
            dp = bn["default_path"]
            lines += [f"runtime default path (`Upscaler(checkpoint, scale=4)`): {dp.get('describe')}, batch "
                      f"{dp.get('batch')}, tile {dp.get('tile') or 'auto'}", ""]
        if bn.get("latency"):
            lines += ["| form | input | batch | runs | p50 ms | p95 ms | fps | peak MiB | parity PSNR dB | max abs u8 |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for r in bn["latency"]:
                lines.append(f"| {r.get('backend')} {r.get('precision')} {r.get('device')} | {r.get('input_h')}x"
                             f"{r.get('input_w')} -> {r.get('output_h')}x{r.get('output_w')} | {r.get('batch')} | "
                             f"{r.get('runs')} | {_f(r.get('p50_ms'))} | {_f(r.get('p95_ms'))} | {_f(r.get('fps'))} | "
                             f"{_f(r.get('peak_mem_mib'), '{:.0f}')} | {_parity(r)} | "
                             f"{_f(r.get('parity_max_abs_u8'), '{:.0f}')} |")
        if bn.get("video"):
            lines += ["", "| video form | clip | frames | in -> out | pipeline fps | inference fps | encode fps | "
                      "decode fps |", "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {r['backend']} {r['precision']} | {r['clip']} | {r['frames']} | {r['input_w']}x{r['input_h']}"
                      f" -> {r['output_w']}x{r['output_h']} | {_f(r['pipeline_fps'])} | {_f(r['inference_fps'])} | "
                      f"{_f(r['encode_fps'])} | {_f(r['decode_fps'])} |" for r in bn["video"]]
        if bn.get("srrun_video"):
            v = bn["srrun_video"]
            lines += ["", f"`sr-run` on the sample video at x4 ({v['model']}): {v['wall_s']:.1f} s wall (process start "
                      f"and model load included), output {v['output_mib']} MiB"]
        if bn.get("skipped"):
            lines += ["", "skipped rows:"] + [f"- {s['row']}: {s['reason']}" for s in bn["skipped"]]
    failed = [s for s in STEPS if steps.get(s, {}).get("status") == "failed"]
    if failed:
        lines += ["", "## failures", ""]
        for name in failed:
            lines += [f"### {name}", "", "```", steps[name].get("stdout_tail", "").strip()[-1500:], "```"]
    return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / "steps.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    env, info = setup(args)
    if not args.dry_run and args.device is None:
        if not info.get("cuda_available"):
            print("gpu_check: no CUDA device here; use --dry-run (CPU, tiny budgets) or --device cpu", file=sys.stderr)
            return 2
        args.device = "cuda"
    inject = {s.strip() for s in os.environ.get("GPU_CHECK_FAIL", "").split(",") if s.strip()}
    if args.data is None:
        args.data = (args.out / "dry_data") if args.dry_run else REPO.parent / "shared" / "data"
        if args.dry_run:
            make_dry_data(args.data, args.python, env)
    args.data = args.data.resolve()
    deadline = time.monotonic() + args.deadline_s - 10 if args.deadline_s else None  # 10 s for the summary
    ctx = {"budgets": budgets(args), "runner": Runner(args.out, env, deadline), "info": info, "data": args.data,
           "device": args.device}
    info.update(device=args.device, data=str(args.data), budgets=ctx["budgets"], injected_failures=sorted(inject))
    record["machine"] = info
    by_name = {s["name"]: s for s in record.get("steps", [])}
    funcs = {"tests": step_tests, "train": step_train, "eval": step_eval, "bench": step_bench}

    def save() -> None:
        record["steps"] = [by_name[n] for n in STEPS if n in by_name]
        for s in record["steps"]:
            s.pop("_failed_tail", None)
            for c in s.get("commands", []):
                c.pop("stdout", None)
        write_json(record_path, record)

    for name in args.steps:
        if name == "summary":
            continue
        step = {"name": name, "started": now()}
        by_name[name] = step
        start = time.monotonic()
        print(f"gpu_check: step {name} ...", flush=True)
        try:
            if name in inject:
                entry = ctx["runner"].run(step, "injected failure", [args.python, "-c",
                                          "import sys; sys.exit('injected failure (GPU_CHECK_FAIL)')"], 30)
                step["status"] = "ok" if ok(entry) else "failed"
                step["reason"] = "GPU_CHECK_FAIL asked this step to fail"
            else:
                funcs[name](step, args, ctx)
        except Exception as e:  # a bug in this script's step: record it, go on with the next step
            step["status"] = "failed"
            step["error"] = f"{type(e).__name__}: {e}"
        step["seconds"] = round(time.monotonic() - start, 2)
        print(f"gpu_check: step {name}: {step.get('status')} in {step['seconds']:.1f} s", flush=True)
        save()

    # step 5 always runs: the summary of whatever steps.json holds (this and earlier invocations)
    start = time.monotonic()
    step = by_name["summary"] = {"name": "summary", "started": now(), "status": "ok"}
    try:
        step["seconds"] = round(time.monotonic() - start, 2)
        (args.out / "summary.md").write_text(render_summary({**record, "steps": [by_name[n] for n in STEPS
                                                                                 if n in by_name]}))
    except Exception as e:  # noqa: BLE001 -- still write something
        step.update(status="failed", error=f"{type(e).__name__}: {e}")
        (args.out / "summary.md").write_text(f"# GPU check summary\n\nsummary rendering failed: {e}\n\n"
                                             + "\n".join(f"- {n}: {by_name[n].get('status')}" for n in STEPS
                                                         if n in by_name) + "\n")
    step["seconds"] = round(time.monotonic() - start, 2)
    save()
    statuses = {n: by_name[n].get("status") for n in STEPS if n in by_name}
    print("gpu_check: " + ", ".join(f"{n} {s}" for n, s in statuses.items()) + f" -> {args.out}")
    return 0 if all(statuses[n] in ("ok", "skipped") for n in args.steps if n in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
