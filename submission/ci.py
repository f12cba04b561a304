"""`make docker-ci`: the container path end to end, as CI runs it.

1. Train a tiny model on the embedded synthetic demo data (1 epoch, 5 steps) into build/submission/ci/, with
   its own SQLite MLflow store (the repository's runs/ and mlflow.db are never touched).
2. `make docker-build` from that run's MLflow URI (runs:/<id>), which also exercises packaging from MLflow.
3. `make docker-test` on the real challenge inputs (../shared/data/challenge/input) and the generated cases.

Prints how long each step took. The base image, the image layers and pip's download cache stay on the
machine between runs; a fresh machine builds them (see `make docker-build`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from submission.inference import PROG

REPO_ROOT = Path(__file__).resolve().parents[1]
CI_DIR = Path("build/submission/ci")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submission.ci", description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="w2s-mdc24-ci:latest")
    parser.add_argument("--real-inputs", default="../shared/data/challenge/input")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)

    root = REPO_ROOT if (REPO_ROOT / "Dockerfile").is_file() else Path.cwd()
    work = root / CI_DIR
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    timings: list[tuple[str, float]] = []

    def step(name: str, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
        print(f"\n{PROG} ci: {name}: {' '.join(command)}", flush=True)
        started = time.perf_counter()
        result = subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        print(result.stdout, end="", flush=True)
        timings.append((name, time.perf_counter() - started))
        if result.returncode != 0:
            raise SystemExit(f"{PROG} ci: {name} failed (exit {result.returncode})")
        return result.stdout

    try:
        output = step("train a tiny demo model", [
            str(bin_dir / "w2s"), "train", "--config", str(root / "configs" / "demo.yaml"), "--epochs", "1",
            "--steps-per-epoch", str(args.steps), "--out-dir", str(work / "runs"), "--tracking-uri", tracking_uri,
            "--no-log-model", "--quiet", "--run-name", "docker-ci"], cwd=work)
        match = re.search(r"^MLflow run:\s+(\w+)", output, flags=re.MULTILINE)
        if not match:
            raise SystemExit(f"{PROG} ci: no MLflow run id in the training output")
        model = f"runs:/{match.group(1)}"
        step("docker-build", [sys.executable, "-m", "submission.build", "--model", model, "--image", args.image,
                              "--tracking-uri", tracking_uri], cwd=root)
        step("docker-test", [sys.executable, "-m", "submission.docker_test", "--image", args.image,
                             "--real-inputs", args.real_inputs], cwd=root)
    finally:
        print(f"\n{PROG} ci: timings: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings) +
              f"; total {sum(s for _, s in timings):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
