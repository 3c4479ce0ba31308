#!/usr/bin/env python
"""What noticing changed images costs in the feature cache key, on a COCO-sized split.

The key hashes each image's size and modification time (one ``stat`` per file, as the size alone
already did). The alternative, hashing the content, reads every byte of the split. This script
creates ``--files`` small files (COCO train2014 has 82,783) in a temporary folder, times
:func:`rarl_gym.data.files.file_stats` over them, and times SHA-1 over ``--hash-mb`` MB in memory
to extrapolate content hashing to ``--split-gb`` GB (COCO train2014's JPEGs: 13.5 GB).

    python benchmarks/cache_key_cost.py               # 82,783 files, about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.data.files import file_stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=82_783)
    p.add_argument("--hash-mb", type=int, default=512)
    p.add_argument("--split-gb", type=float, default=13.5)
    p.add_argument("--dir", default=None, help="where to create the files (default: a temporary folder)")
    args = p.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="rarl-keycost-", dir=args.dir))
    try:
        start = time.perf_counter()
        paths = []
        for i in range(args.files):
            path = root / f"{i:012d}.jpg"
            with open(path, "wb") as f:
                f.write(b"\xff" * (100 + i % 900))
            paths.append(path)
        made = time.perf_counter() - start
        times = []
        for _ in range(3):
            start = time.perf_counter()
            stats = file_stats(paths)
            times.append(time.perf_counter() - start)
        assert stats.shape == (args.files, 2)
        data = os.urandom(args.hash_mb << 20)
        start = time.perf_counter()
        hashlib.sha1(data).hexdigest()
        sha1_s = time.perf_counter() - start
        rate = args.hash_mb / 1024 / sha1_s
        print(f"created {args.files} files in {made:.1f} s under {root}")
        print(f"size + mtime key (one stat per file): best {min(times):.3f} s, runs {', '.join(f'{t:.3f}' for t in times)}")
        print(
            f"SHA-1 in memory: {rate:.2f} GB/s -> {args.split_gb / rate:.1f} s for {args.split_gb} GB of JPEGs, "
            f"plus reading them (at 200 MB/s from disk: {args.split_gb * 1024 / 200:.0f} s)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
