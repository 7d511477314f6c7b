"""``sr-cache``: list or clear the cache of built fast forms (see :mod:`sr_runtime.fastpath.cache`)."""

from __future__ import annotations

import argparse
import sys

from sr_runtime.errors import InputError
from sr_runtime.failures import add_debug_argument, check_writable_dir, run_command
from sr_runtime.fastpath.cache import clear, list_entries
from sr_runtime.options import cache_root

PROG = "sr-cache"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0].strip("`"))
    parser.add_argument("action", choices=("list", "clear"), help="list the entries, or remove them all")
    parser.add_argument("--cache-dir", help="cache directory (default: $SR_RUNTIME_CACHE or ~/.cache/sr_runtime)")
    add_debug_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _main(args), debug=args.debug, interrupted="interrupted")


def _main(args: argparse.Namespace) -> int:
    root = cache_root(args.cache_dir)
    if args.cache_dir and not root.is_dir():  # the default folder may not exist yet; a named one must
        problem = "a file, not a folder" if root.exists() else "no such folder"
        raise InputError(f"--cache-dir {root}: {problem}; give the folder sr-run --cache-dir wrote to")
    if args.action == "clear":
        if root.is_dir():  # clear() skips what it cannot remove: a read-only cache fails here, not silently
            check_writable_dir(root, what="cache folder")
        print(f"{PROG}: removed {clear(args.cache_dir)} entries from {root}")
        return 0
    rows = list_entries(args.cache_dir)
    if not rows:
        print(f"{PROG}: no entries in {root}")
        return 0
    for row in rows:
        choice = (row.get("choice") or {}).get("name", "?")
        state = "ok" if row["ok"] else f"CORRUPT ({row['problem']}; rebuilt on next use)"
        print(f"{row['key']}  {row['bytes'] / 2**20:7.1f} MiB  {state:4}  {choice:28}  {row.get('model') or ''}")
    print(f"{len(rows)} entries in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
