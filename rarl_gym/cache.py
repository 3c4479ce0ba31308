"""List and prune the feature cache: ``python -m rarl_gym.cache list|prune``.

Every change of a dataset on disk (an image replaced, a split file edited) gives a new cache entry
(the key holds every image's size and modification time) and leaves the previous one in place.
``list`` shows every entry (finished or not, its size, when, whether a process is extracting it);
``prune`` removes the entries that an entry of the same dataset split, backbone and input size
extracted later supersedes (:func:`rarl_gym.features.store.stale_entries`), keeping the ``--keep``
newest; ``--dry-run`` only says what it would remove. An entry being extracted is never removed.

Examples:
    python -m rarl_gym.cache list
    python -m rarl_gym.cache prune --dry-run
    python -m rarl_gym.cache prune --cache-dir /data/rarl-cache --keep 2
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from rarl_gym.cli import positive_int, run_cli
from rarl_gym.io import human_bytes
from rarl_gym.paths import default_cache_dir

if TYPE_CHECKING:
    from rarl_gym.features.store import CacheEntry


def _line(entry: CacheEntry) -> str:
    state = "in use" if entry.in_use else ("finished" if entry.finished else "unfinished")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.modified)) if entry.modified else "?"
    return f"{human_bytes(entry.nbytes):>10}  {when}  {state:<10}  {entry.path.name}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rarl_gym.cache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("command", choices=["list", "prune"])
    p.add_argument("--cache-dir", default=None, help="the feature cache (default $RARL_CACHE or ~/.cache/rarl_gym)")
    p.add_argument("--keep", type=positive_int, default=1, help="prune: finished entries kept per family (default 1)")
    p.add_argument("--dry-run", action="store_true", help="prune: only list what would be removed")
    args = p.parse_args(argv)

    def body() -> None:
        from rarl_gym.features.store import cache_entries, prune_cache

        root = args.cache_dir or default_cache_dir()
        if args.command == "list":
            entries = cache_entries(root)
            for entry in entries:
                print(_line(entry))
            total = sum(e.nbytes for e in entries)
            print(f"{len(entries)} entries, {human_bytes(total)} in {root}")
            return
        removed = prune_cache(root, keep=args.keep, dry_run=args.dry_run)
        for entry in removed:
            print(("would remove " if args.dry_run else "removed ") + _line(entry))
        freed = human_bytes(sum(e.nbytes for e in removed))
        print(f"{'would free' if args.dry_run else 'freed'} {freed} ({len(removed)} entries) in {root}")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
