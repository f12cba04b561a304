"""`make docker-save`: the image as `<name>_<date>.tar.gz` (docker save format, gzip) for upload.

Grand Challenge takes the output of `docker save NAME | gzip -c > NAME.tar.gz`; with podman the same
docker-archive format is written. The file is written under a temporary name and renamed; its size is printed
(the challenge's limit is 10 GB).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from submission.containers import detect_engine
from submission.inference import PROG
from training.errors import UserError
from training.io import atomic_path

DEFAULT_IMAGE = "w2s-mdc24:latest"
SIZE_LIMIT = 10e9


def archive_name(image: str, date: datetime.date | None = None) -> str:
    """`w2s-mdc24:latest` -> `w2s-mdc24_2024-07-01.tar.gz` (registry and tag dropped)."""
    name = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return f"{name}_{(date or datetime.date.today()).isoformat()}.tar.gz"


def save(image: str, out_dir: Path, engine_name: str = "") -> Path:
    engine = detect_engine(engine_name)
    info = engine.inspect(image)
    target = out_dir / archive_name(image)
    compressor = ["pigz", "-c"] if shutil.which("pigz") else ["gzip", "-c"]
    started = time.perf_counter()
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        gzip = subprocess.Popen(compressor, stdin=subprocess.PIPE, stdout=handle)
        assert gzip.stdin is not None
        try:
            engine.save(info.ref, gzip.stdin)
        finally:
            gzip.stdin.close()
            code = gzip.wait()
        if code != 0:
            raise UserError(f"{compressor[0]} failed (exit {code})")
    size = target.stat().st_size
    print(f"{PROG} save: {target} ({size / 1e6:.0f} MB compressed, image {info.size / 1e9:.2f} GB) "
          f"in {time.perf_counter() - started:.0f} s")
    if size > SIZE_LIMIT:
        print(f"{PROG} save: warning: larger than Grand Challenge's 10 GB limit", file=sys.stderr)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submission.save", description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--out-dir", type=Path, default=Path("dist"))
    parser.add_argument("--engine", default="")
    args = parser.parse_args(argv)
    try:
        save(args.image, args.out_dir, args.engine)
    except UserError as exc:
        print(f"{PROG} save: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
