"""``sr-train``: train a model from a recipe. The only place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from sr_runtime.errors import SRError
from sr_runtime.failures import add_debug_argument, check_writable_dir, run_command

__all__ = ["main"]

EPILOG = """examples:
  sr-train --model fsrcnn --scale 4                         # recipe defaults, scikit-image photos
  sr-train --model fsrcnn --scale 4 --data ../shared/data/T91 ../shared/data/BSD200 --val ../shared/data/Set5
  sr-train --model edsr --scale 2 steps=300000 optim.lr=2e-4 device=cuda amp=bf16
  sr-train --resume runs/fsrcnn_x4_20261122-101500 steps=40000
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-train", description="Train a super-resolution network into a self-describing checkpoint.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="architecture name (sr_runtime.list_archs()); picks the shipped recipe")
    p.add_argument("--scale", type=int, help="upscaling factor")
    p.add_argument("--data", nargs="+", metavar="DIR", help="HR training image folder(s); default: scikit-image photos")
    p.add_argument("--val", metavar="DIR", help="HR validation folder (full images); default: scikit-image astronaut")
    p.add_argument("--out", metavar="DIR", help="parent of the run directory (default runs/)")
    p.add_argument("--config", metavar="FILE", help="YAML recipe; default sr_train/configs/<model>[_x<scale>].yaml")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where its last state left off")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4 steps=5000")
    add_debug_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)
    if args.data:  # `--data A B key=value`: nargs="+" also swallows overrides
        args.overrides = [d for d in args.data if "=" in d] + args.overrides
        args.data = [d for d in args.data if "=" not in d]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return run_command("sr-train", lambda: _main(args), debug=args.debug,
                           interrupted="interrupted; the last saved state is intact (resume with --resume RUN_DIR)")
    finally:
        import torch.distributed as tdist

        if tdist.is_available() and tdist.is_initialized():  # a failed DDP run: leave the group cleanly
            tdist.destroy_process_group()


def _main(args: argparse.Namespace) -> int:
    log = logging.getLogger("sr_train")
    from sr_train.config import load_config, recipe_path
    from sr_train.run import RunFiles, check_resume_scale

    cli = [f"data.train=[{','.join(repr(d) for d in args.data)}]"] if args.data else []
    cli += [f"data.val={args.val!r}"] if args.val else []
    cli += [f"out={args.out!r}"] if args.out else []
    resume = None
    if args.resume:
        resume = Path(args.resume)
        base = RunFiles.read_config(resume)
        check_resume_scale(resume, base, args.scale, args.model)
        from sr_train.config import apply_overrides, config_from_dict, config_to_dict

        cfg = config_from_dict(apply_overrides(config_to_dict(base), cli + args.overrides))
    else:
        if not args.model and not args.config:
            raise SRError("give --model NAME (and --scale), --config FILE, or --resume RUN_DIR")
        path = args.config
        if path is None:
            path = recipe_path(args.model, args.scale or 4)
            if path is not None:
                log.info("recipe %s", path)
        model = [f"model.name={args.model}"] if args.model else []
        model += [f"model.scale={args.scale}"] if args.scale else []
        cfg = load_config(path, model + cli + args.overrides)
    if os.environ.get("RANK", "0") == "0":  # before the data loads: only the main process writes the run
        check_writable_dir(resume if resume is not None else Path(cfg.out), what="run folder")
    if cfg.model.name == "srgan":
        from sr_train.train_gan import train_gan as run
    else:
        from sr_train.train import train as run
    print(run(cfg, resume=resume, progress=not args.quiet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
