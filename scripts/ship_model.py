"""Ship a trained checkpoint as package weights, with the scores the default-model choice reads.

    python scripts/ship_model.py runs/edsr_x4/best.safetensors --val ../shared/data/Set5 \
        --eval ../shared/data/Set14 ../shared/data/BSD100 --min-psnr 31.4

Re-scores the checkpoint with the protocol (``sr-eval --backend torch --precision fp32``: Y channel,
``scale``-pixel crop, PyTorch FP32) on the validation set and every ``--eval`` set, refuses it below
``--min-psnr`` on the validation set, and writes ``sr_runtime/weights/<arch>_x<scale>.safetensors``
with the same weights, recipe and training metrics, plus ``metrics.val_psnr``/``val_ssim``/``val_set``
(the validation set's fingerprint) and ``metrics.eval`` (one entry per set). The code revision and torch
version of the training run are kept. Prints one Markdown row per set.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sr_runtime.checkpoint import load_checkpoint, save_checkpoint
from sr_runtime.deploy import DeployModel
from sr_runtime.evaluate import dataset_fingerprint, evaluate_folder
from sr_runtime.zoo import WEIGHTS_DIR


def ship(checkpoint: Path, val: Path, evals: list[Path], *, min_psnr: float | None, out_dir: Path,
         dry_run: bool = False) -> dict:
    ckpt = load_checkpoint(checkpoint)
    model = DeployModel(ckpt.model.eval(), ckpt.spec).eval()
    scores = {}
    for folder in [val, *evals]:
        result = evaluate_folder(folder, ckpt.scale, model=model)
        scores[folder.name] = {"psnr": round(result.psnr, 4), "ssim": round(result.ssim, 5), "images": result.images}
        print(f"| {ckpt.arch} x{ckpt.scale} | {folder.name} | {result.psnr:.2f} | {result.ssim:.4f} |", flush=True)
    val_score = scores[val.name]
    if min_psnr is not None and val_score["psnr"] < min_psnr:
        raise SystemExit(f"{checkpoint}: {val_score['psnr']:.2f} dB on {val.name} is below the floor of {min_psnr} dB")
    metrics = dict(ckpt.meta.get("metrics") or {})
    metrics.update(val_psnr=val_score["psnr"], val_ssim=val_score["ssim"], val_data=val.name, val_name=val.name,
                   val_set=dataset_fingerprint(val), eval=scores)
    target = out_dir / f"{ckpt.arch}_x{ckpt.scale}.safetensors"
    if not dry_run:
        keep = {k: ckpt.meta[k] for k in ("code_revision", "torch_version") if ckpt.meta.get(k)}
        save_checkpoint(target, ckpt.model, arch=ckpt.arch, scale=ckpt.scale, hparams=ckpt.hparams,
                        recipe=ckpt.meta.get("recipe"), metrics=metrics, extra=keep)
        print(f"wrote {target}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--val", type=Path, required=True, help="validation set (the one scores are compared on)")
    p.add_argument("--eval", type=Path, nargs="*", default=[], help="more test sets to record")
    p.add_argument("--min-psnr", type=float, help="refuse below this PSNR on --val")
    p.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--dry-run", action="store_true", help="score only, write nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ship(args.checkpoint, args.val, args.eval, min_psnr=args.min_psnr, out_dir=args.out_dir, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
