"""`make docker-build MODEL=...`: prepare the build context and build the challenge image.

1. Package MODEL (checkpoint, run folder, runs/latest or MLflow URI) into build/submission/context/model/.
2. Choose the base image: BASE_IMAGE if given; else the Dockerfile's default (a PyTorch CUDA runtime) when it
   is present locally or its registry answers; else, with no registry access, a local Debian base made with
   debootstrap + python3 and imported into the engine (built once, then reused from the engine's storage).
3. Fill the wheelhouse build/submission/context/wheels/ with the runtime requirements for the base's Python
   (submission/requirements.txt), adding a CPU torch (the one installed here, e.g. from $PIP_FIND_LINKS)
   when the base has none; build the project wheel into build/submission/context/dist/.
4. Build the Dockerfile with docker, or podman when no daemon answers (shared/docs/challenge.md).

Caches between runs on one machine: the local base image and the image layers stay in the engine's storage,
and pip's download cache keeps the wheels; a fresh machine rebuilds all of it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from submission.containers import Engine, detect_engine
from submission.inference import CHECKPOINT_NAME, PROG, sha256_file
from training.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTEXT_SUBDIR = Path("build/submission/context")  # the Dockerfile's COPY sources live here
DEFAULT_IMAGE = "w2s-mdc24:latest"
DEFAULT_PYTHON = "3.11"  # Python of the default base image and of Debian bookworm (the local base)
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
LOCAL_BASE_SUITE = "bookworm"
LOCAL_BASE_PACKAGES = ("python3", "python3-venv", "libgomp1")
LOCAL_BASE_NAME = "localhost/w2s-base"
# Left out of the temporary source tree from which the project wheel is built: top-level folders of outputs
# and data (only at the top: training/data is a package), and caches anywhere.
SOURCE_IGNORE_TOP = {".git", ".venv", "build", "dist", "runs", "data", "mlruns", "mlartifacts", "mlflow.db",
                     "outputs", "tests"}
SOURCE_IGNORE_ANYWHERE = ("__pycache__", "*.egg-info", ".pytest_cache", "*.tmp", "*.tar.gz")


def log(message: str) -> None:
    print(f"{PROG} build: {message}", flush=True)


def repo_root() -> Path:
    return REPO_ROOT if (REPO_ROOT / "Dockerfile").is_file() else Path.cwd()


# --------------------------------------------------------------------------------------------- base image


def dockerfile_default_base(dockerfile: Path) -> str:
    match = re.search(r"^ARG\s+BASE_IMAGE=(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
    if not match:
        raise UserError(f"{dockerfile}: no `ARG BASE_IMAGE=...` default")
    return match.group(1)


def registry_host(ref: str) -> str:
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return first
    return "registry-1.docker.io"  # Docker Hub


def registry_reachable(ref: str, timeout: float = 8.0) -> bool:
    """Whether the registry of `ref` answers at all (401 counts: it is there, and asks for a token)."""
    host = registry_host(ref)
    if host.startswith("localhost"):
        return False
    try:
        urllib.request.urlopen(f"https://{host}/v2/", timeout=timeout)
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def local_base_tag() -> str:
    recipe = f"{LOCAL_BASE_SUITE} minbase {' '.join(LOCAL_BASE_PACKAGES)} slim-v1"
    return f"{LOCAL_BASE_NAME}:{LOCAL_BASE_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"


def ensure_local_base(engine: Engine, mirror: str = "") -> str:
    """A Debian base with python3 in the engine's storage: debootstrap (~1-2 min) once, then reused."""
    tag = local_base_tag()
    if engine.image_exists(tag):
        log(f"local base image {tag}: present, reused")
        return tag
    if not shutil.which("debootstrap"):
        raise UserError("no registry access and debootstrap is not installed: apt-get install debootstrap, "
                        "or pass BASE_IMAGE=<an image this machine has>")
    if os.geteuid() != 0:
        raise UserError("building a local base image needs root (debootstrap); pass BASE_IMAGE=... instead")
    mirror = mirror or os.environ.get("DEBIAN_MIRROR", "") or "http://deb.debian.org/debian"
    log(f"no registry access: building a local base image {tag} with debootstrap ({mirror})")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="w2s-base-", dir=os.environ.get("W2S_BASE_TMPDIR") or None) as tmp:
        rootfs = Path(tmp) / "rootfs"
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(LOCAL_BASE_PACKAGES)}",
                   LOCAL_BASE_SUITE, str(rootfs), mirror]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise UserError(f"debootstrap failed (exit {result.returncode}): {' | '.join(tail)}")
        for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*",
                        "usr/share/man/*", "usr/share/info/*", "var/log/*.log", "var/cache/debconf/*-old"):
            for path in rootfs.glob(pattern):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        engine.import_rootfs(rootfs, tag)
    log(f"local base image {tag} built in {time.perf_counter() - started:.0f} s")
    return tag


def choose_base(engine: Engine, requested: str, dockerfile: Path) -> tuple[str, bool]:
    """(base image, whether it is the local Debian base that has no torch)."""
    if requested:
        return requested, False
    default = dockerfile_default_base(dockerfile)
    if engine.image_exists(default):
        log(f"base image {default}: present locally")
        return default, False
    if registry_reachable(default):
        log(f"base image {default}: will be pulled from {registry_host(default)}")
        return default, False
    log(f"base image {default}: not present and {registry_host(default)} is not reachable")
    return ensure_local_base(engine), True


def base_has_torch(base: str, is_local_base: bool, with_torch: str) -> bool:
    """Whether the base image brings torch: explicit --with-torch yes|no, else judged by the image name."""
    if with_torch in ("yes", "no"):
        return with_torch == "no"
    return not is_local_base and "pytorch" in base.lower()


# ---------------------------------------------------------------------------------------------- wheelhouse


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def installed_torch_spec() -> str:
    """`torch==<the version installed here>` (e.g. 2.13.0+cpu: a CPU build, found via $PIP_FIND_LINKS)."""
    from importlib.metadata import version

    return f"torch=={version('torch')}"


def prepare_wheelhouse(dest: Path, requirements: Sequence[str], python_version: str, find_links: Sequence[str] = ()) -> list[Path]:
    """`pip download` binary wheels for the image's Python into a fresh `dest` (pip's cache makes reruns fast)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest), "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp",
               *[arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)],
               *[arg for link in find_links for arg in ("--find-links", link)], *requirements]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines()
                 if line.strip() and not line.startswith("WARNING: Location")]
        hint = ""
        if any(r.startswith("torch") and "+" in r for r in requirements):
            hint = (" (a CPU torch build is not on PyPI: put its wheel in a folder named by $PIP_FIND_LINKS or "
                    "--find-links, or use --torch-spec with --find-links https://download.pytorch.org/whl/cpu)")
        raise UserError(f"pip download for the wheelhouse failed: {lines[-1] if lines else result.returncode}{hint}")
    return sorted(dest.glob("*.whl"))


def build_project_wheel(root: Path, dest: Path) -> Path:
    """The project's wheel, built from a clean copy of the source (no stale build/lib, no runs or data)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="w2s-src-") as tmp:
        source = Path(tmp) / "src"
        anywhere = shutil.ignore_patterns(*SOURCE_IGNORE_ANYWHERE)

        def ignore(folder: str, names: list[str]) -> set[str]:
            top = SOURCE_IGNORE_TOP if Path(folder) == root else set()
            return set(anywhere(folder, names)) | (top & set(names))

        shutil.copytree(root, source, ignore=ignore, symlinks=True)
        try:
            import setuptools  # noqa: F401  (present: build without fetching a build backend)

            isolation = ["--no-build-isolation"]
        except ImportError:
            isolation = []
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation, "--wheel-dir",
                   str(dest), str(source)]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"building the project wheel failed: {(result.stderr or result.stdout).strip()[-400:]}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise UserError(f"building the project wheel gave {len(wheels)} wheels in {dest}")
    return wheels[0]


def write_requirements(path: Path, requirements: Sequence[str], wheels: Sequence[Path]) -> None:
    """The runtime requirements plus the wheelhouse's names and checksums (the deps layer's cache key)."""
    lines = ["# Written by submission/build.py: runtime requirements of the challenge image.", *requirements,
             "# wheelhouse (name sha256):"]
    lines += [f"# {wheel.name} {sha256_file(wheel)}" for wheel in wheels]
    path.write_text("\n".join(lines) + "\n")


def _is_torch(requirement: str) -> bool:
    return re.match(r"torch(?![\w.-])", requirement) is not None


# ------------------------------------------------------------------------------------------------- build


def build(model: str, image: str = DEFAULT_IMAGE, base_image: str = "", engine_name: str = "",
          python_version: str = DEFAULT_PYTHON, with_torch: str = "auto", torch_spec: str = "",
          find_links: Sequence[str] = (), tracking_uri: str = "", no_cache: bool = False) -> dict:
    from submission.package import describe, package_model
    from training.checkpoint import code_version

    started = time.perf_counter()
    root = repo_root()
    dockerfile = root / "Dockerfile"
    context = root / CONTEXT_SUBDIR
    engine = detect_engine(engine_name)
    log(f"container engine: {engine.describe()}")

    manifest = package_model(model, context / "model", tracking_uri)
    log("packaged model into " + str(context / "model") + "\n  " + describe(manifest).replace("\n", "\n  "))

    base, is_local_base = choose_base(engine, base_image, dockerfile)
    requirements = requirement_lines(root / "submission" / "requirements.txt")
    if base_has_torch(base, is_local_base, with_torch):
        download = [r for r in requirements if not _is_torch(r)]  # the base's (CUDA) torch satisfies it
    else:
        spec = torch_spec or installed_torch_spec()
        requirements = download = [spec if _is_torch(r) else r for r in requirements]
        log(f"base {base} has no torch: the wheelhouse gets {spec}")
    wheel_started = time.perf_counter()
    wheels = prepare_wheelhouse(context / "wheels", download, python_version, find_links)
    project_wheel = build_project_wheel(root, context / "dist")
    write_requirements(context / "requirements.txt", requirements, wheels)
    size = sum(w.stat().st_size for w in wheels) / 1e6
    log(f"wheelhouse: {len(wheels)} wheels ({size:.0f} MB) for Python {python_version} + {project_wheel.name} "
        f"in {time.perf_counter() - wheel_started:.0f} s")

    build_args = {"BASE_IMAGE": base, "MODEL_SHA256": manifest["files"][CHECKPOINT_NAME]["sha256"],
                  "MODEL_RUN_ID": manifest.get("run_id") or "unknown", "CODE_VERSION": code_version()}
    log(f"building {image} from {base}")
    build_seconds = engine.build(root, dockerfile, image, build_args, no_cache=no_cache)
    info = engine.inspect(image)
    total = time.perf_counter() - started
    log(f"built {info.ref}: {info.size / 1e9:.2f} GB, {info.os}/{info.architecture}, user {info.user or 'root'}; "
        f"image build {build_seconds:.0f} s, total {total:.0f} s")
    log(f"next: make docker-test IMAGE={image}   then   make docker-save IMAGE={image}")
    return {"image": info.ref, "size": info.size, "base": base, "build_seconds": build_seconds, "total_seconds": total,
            "manifest": manifest}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submission.build", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("MODEL", ""),
                        help="checkpoint, run folder, runs/latest or MLflow URI (models:/w2s-unet@champion)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"tag of the built image (default {DEFAULT_IMAGE})")
    parser.add_argument("--base-image", default=os.environ.get("BASE_IMAGE", ""),
                        help="base image (default: the Dockerfile's, or a local Debian base without registry access)")
    parser.add_argument("--engine", default="", help="docker | podman (default: docker when its daemon answers)")
    parser.add_argument("--python-version", default=DEFAULT_PYTHON, help="the base image's Python, for the wheels")
    parser.add_argument("--with-torch", choices=("auto", "yes", "no"), default="auto",
                        help="put torch in the wheelhouse (auto: unless the base is a PyTorch image)")
    parser.add_argument("--torch-spec", default="", help="torch requirement for the wheelhouse (default: the installed one)")
    parser.add_argument("--find-links", action="append", default=[], help="extra wheel locations for pip download")
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking URI for models:/ and runs:/ MODELs")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every image layer")
    args = parser.parse_args(argv)
    try:
        if not args.model:
            raise UserError("no model given: make docker-build MODEL=runs/latest (or a checkpoint, a run folder, "
                            "models:/w2s-unet@champion)")
        build(args.model, args.image, args.base_image, args.engine, args.python_version, args.with_torch,
              args.torch_spec, args.find_links, args.tracking_uri, args.no_cache)
    except UserError as exc:
        print(f"{PROG} build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
