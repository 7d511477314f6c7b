"""PNG plots of a results dict (matplotlib, Agg backend: no display needed).

* ``latency_vs_psnr.png``: median latency at one input size against Set5 (or the first dataset's)
  PSNR, one marker per model and backend/precision. Without quality rows (random weights, no data)
  the y axis is the parity PSNR against PyTorch FP32 instead, and the title says so.
* ``latency_vs_resolution.png``: median latency against input megapixels, one line per model and
  backend/precision (batch 1), log-log.
* ``video_fps.png``: pipeline vs inference-only vs encode-only frames per second.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["write_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _form(row: dict[str, Any]) -> str:
    return f"{row['backend']} {row['precision']} {row['device']}"


def _label(row: dict[str, Any]) -> str:
    rnd = " (random w.)" if row.get("weights") == "random" else ""
    return f"{row['model']} x{row['scale']}{rnd}"


def _reference_size(latency: list[dict[str, Any]]) -> tuple[int, int] | None:
    """The input size measured for the most model/form pairs (the largest among ties)."""
    counts: dict[tuple[int, int], set] = defaultdict(set)
    for r in latency:
        if r["batch"] == 1:
            counts[(r["input_h"], r["input_w"])].add((r["model"], r["scale"], _form(r)))
    if not counts:
        return None
    return max(counts, key=lambda hw: (len(counts[hw]), hw[0] * hw[1]))


def plot_latency_vs_psnr(data: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    size = _reference_size(data["latency"])
    quality = [q for q in data["quality"] if q["weights"] not in ("random", "none") and q["model"] != "bicubic"]
    datasets = [d for d in ("Set5", "Set14", "BSD100") if any(q["dataset"] == d for q in quality)]
    markers = "osD^vP*Xh"
    forms = sorted({_form(r) for r in data["latency"]})
    points = 0
    if size is not None and datasets:
        dataset = datasets[0]
        ylabel = f"PSNR on {dataset} (dB, Y)"
        title = f"Latency at {size[0]}x{size[1]} input vs quality"
        psnr = {(q["model"], q["scale"], _form(q)): q["psnr"] for q in quality if q["dataset"] == dataset}
        scales = {q["scale"] for q in quality if q["dataset"] == dataset}
        for q in data["quality"]:
            if q["model"] == "bicubic" and q["dataset"] == dataset and q["scale"] in scales:
                ax.axhline(q["psnr"], color="gray", linestyle="--", linewidth=1)
                ax.annotate(f"bicubic x{q['scale']}", (0.01, q["psnr"]), xycoords=("axes fraction", "data"),
                            textcoords="offset points", xytext=(0, 3), fontsize=8, color="gray")
    else:
        ylabel = "parity PSNR against PyTorch FP32 (dB)"
        title = "Latency vs parity (no quality figures: random weights or no data)"
        psnr = {
            (r["model"], r["scale"], _form(r)): r["parity_psnr_db"]
            for r in data["latency"]
            if r["parity_psnr_db"] is not None
        }
    for r in data["latency"]:
        if size is None or r["batch"] != 1 or (r["input_h"], r["input_w"]) != size:
            continue
        y = psnr.get((r["model"], r["scale"], _form(r)))
        if y is None:
            continue
        marker = markers[forms.index(_form(r)) % len(markers)]
        ax.scatter(r["p50_ms"], y, marker=marker, s=60, label=f"{_label(r)}, {_form(r)}")
        ax.annotate(r["model"], (r["p50_ms"], y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        points += 1
    if points:
        ax.set_xscale("log")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "nothing to plot:\nno model with both latency and PSNR", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("median latency per image (ms, log)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_latency_vs_resolution(data: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in data["latency"]:
        if r["batch"] == 1:
            lines[f"{_label(r)}, {_form(r)}"].append((r["input_h"] * r["input_w"] / 1e6, r["p50_ms"]))
    for label, pts in sorted(lines.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if lines:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no latency rows", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("input megapixels (LR, log)")
    ax.set_ylabel("median latency (ms, log)")
    ax.set_title("Latency vs input resolution (batch 1)")
    ax.grid(True, which="both", alpha=0.3)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_video_fps(data: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    rows = data["video"]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    kinds = [("pipeline_fps", "sr-run pipeline"), ("inference_fps", "inference only"), ("encode_fps", "encode only")]
    width = 0.8 / len(kinds)
    labels = [f"{_label(r)}\n{_form(r)}\n{r['input_w']}x{r['input_h']}" for r in rows]
    for k, (key, name) in enumerate(kinds):
        xs = [i + k * width for i in range(len(rows))]
        ys = [r[key] or 0.0 for r in rows]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks([i + width for i in range(len(rows))], labels, fontsize=8)
    ax.set_ylabel("frames per second")
    ax.set_title("Video: end to end vs its parts")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def write_plots(data: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write the plots for ``data`` into ``out_dir``; returns their paths (video only when measured)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_latency_vs_psnr(data, out_dir / "latency_vs_psnr.png"),
        plot_latency_vs_resolution(data, out_dir / "latency_vs_resolution.png"),
    ]
    if data["video"]:
        paths.append(plot_video_fps(data, out_dir / "video_fps.png"))
    return paths
