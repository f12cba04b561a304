"""One interface over the container tools: docker when a daemon answers, else podman + buildah.

Daemon-less machines (CI here, shared/docs/challenge.md): images are built with
`podman build --isolation chroot`, and run as Grand Challenge runs them with
`buildah from` + `unshare --net buildah run --isolation chroot` (podman run cannot set rlimits there),
passing the image's user, working directory and entrypoint explicitly because `buildah run` does not
apply them. Podman and buildah share one storage; its driver (overlay where the kernel allows, else vfs) is
their shared default, or the one $W2S_STORAGE_DRIVER forces on both (it must match the storage's).

$W2S_CONTAINER_ENGINE=docker|podman overrides the detection.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Sequence

from training.errors import UserError

PLATFORM = "linux/amd64"


@dataclass
class Mount:
    host: Path
    container: str
    read_only: bool = False


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    command: list[str] = field(default_factory=list)
    peak_memory: int | None = None  # bytes, when the run had a memory limit


@dataclass
class ImageInfo:
    ref: str
    user: str
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    env: list[str]
    os: str
    architecture: str
    size: int
    labels: dict[str, str]


def _run(args: Sequence[str], timeout: float | None = None, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kwargs)
    except FileNotFoundError:
        raise UserError(f"{args[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{' '.join(args[:3])} ...: no answer after {timeout} s") from None
    if check and result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise UserError(f"{' '.join(args[:4])} ... failed (exit {result.returncode}): {last[-1] if last else ''}")
    return result


class Engine:
    """Common operations; subclasses build the commands."""

    name = "engine"

    def build(self, context: Path, dockerfile: Path, tag: str, build_args: dict[str, str], no_cache: bool = False) -> float:
        command = self.build_command(context, dockerfile, tag, build_args, no_cache)
        started = time.perf_counter()
        result = subprocess.run(command)  # streamed: the build log is the user's progress bar
        if result.returncode != 0:
            raise UserError(f"image build failed (exit {result.returncode}): {' '.join(command[:3])} ...")
        return time.perf_counter() - started

    def build_command(self, context: Path, dockerfile: Path, tag: str, build_args: dict[str, str],
                      no_cache: bool) -> list[str]:
        raise NotImplementedError

    def image_exists(self, ref: str) -> bool:
        raise NotImplementedError

    def inspect(self, ref: str) -> ImageInfo:
        result = _run([*self.base_command(), "image", "inspect", self.normalize(ref)], check=False, timeout=60)
        if result.returncode != 0:
            raise UserError(f"image {ref} not found ({self.name}): build it first with `make docker-build MODEL=...`")
        data = json.loads(result.stdout)[0]
        config = data.get("Config") or {}
        return ImageInfo(ref=self.normalize(ref), user=config.get("User") or "", entrypoint=config.get("Entrypoint") or [],
                         cmd=config.get("Cmd") or [], workdir=config.get("WorkingDir") or "", env=config.get("Env") or [],
                         os=data.get("Os", ""), architecture=data.get("Architecture", ""), size=int(data.get("Size") or 0),
                         labels=config.get("Labels") or {})

    def import_rootfs(self, rootfs: Path, ref: str) -> None:
        """`tar -C rootfs -c . | ENGINE import - ref`."""
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        result = subprocess.run([*self.base_command(), "import", "-", self.normalize(ref)], stdin=tar.stdout,
                                capture_output=True, text=True)
        tar.stdout.close()
        if tar.wait() != 0 or result.returncode != 0:
            raise UserError(f"importing the base image {ref} failed: {result.stderr.strip()[-300:]}")

    def save(self, ref: str, stream: IO[bytes]) -> None:
        """Write `docker save` format (docker-archive) of `ref` to a binary stream."""
        result = subprocess.run([*self.base_command(), "save", *self.save_options(), self.normalize(ref)],
                                stdout=stream, stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise UserError(f"saving {ref} failed: {result.stderr.decode(errors='replace').strip()[-300:]}")

    def save_options(self) -> list[str]:
        return []

    def remove_image(self, ref: str) -> None:
        _run([*self.base_command(), "rmi", "-f", self.normalize(ref)], check=False, timeout=120)

    def base_command(self) -> list[str]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def normalize(self, ref: str) -> str:
        return ref

    def run_image(self, image: ImageInfo, mounts: Sequence[Mount], network: bool = False,
                  timeout: float | None = None, tmpfs: Sequence[str] = ("/tmp",), memory: int = 0) -> RunResult:
        """Run the image as a challenge job; `memory` > 0 limits its memory (bytes, no swap), as a job's
        instance does."""
        raise NotImplementedError


class Docker(Engine):
    name = "docker"

    def base_command(self) -> list[str]:
        return ["docker"]

    def build_command(self, context, dockerfile, tag, build_args, no_cache):
        args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        return ["docker", "build", f"--platform={PLATFORM}", "-f", str(dockerfile), "-t", tag, *args,
                *(["--no-cache"] if no_cache else []), str(context)]

    def image_exists(self, ref: str) -> bool:
        return _run(["docker", "image", "inspect", ref], check=False, timeout=60).returncode == 0

    def run_command(self, image: ImageInfo, mounts: Sequence[Mount], network: bool = False,
                    tmpfs: Sequence[str] = ("/tmp",)) -> list[str]:
        """As Grand Challenge runs it: the image's own user and entrypoint, no network, a fresh /tmp."""
        command = ["docker", "run", "--rm", f"--platform={PLATFORM}"]
        if not network:
            command += ["--network", "none"]
        for path in tmpfs:
            command += ["--tmpfs", path]
        for mount in mounts:
            command += ["-v", f"{mount.host.resolve()}:{mount.container}{':ro' if mount.read_only else ''}"]
        return command + [image.ref]

    def run_image(self, image, mounts, network=False, timeout=None, tmpfs=("/tmp",), memory=0):
        command = self.run_command(image, mounts, network, tmpfs)
        if memory:
            command[3:3] = [f"--memory={memory}b", f"--memory-swap={memory}b"]
        return _timed(command, timeout)


class Podman(Engine):
    name = "podman"

    def __init__(self, storage_driver: str = ""):
        # Empty: podman's and buildah's shared default (overlay where the kernel allows, else vfs). Forcing a
        # driver that differs from the one the storage was created with fails ("database configuration
        # mismatch"), so a driver is passed only when asked for.
        self.storage_driver = storage_driver or os.environ.get("W2S_STORAGE_DRIVER", "")

    def _driver_flag(self) -> list[str]:
        return ["--storage-driver", self.storage_driver] if self.storage_driver else []

    def describe(self) -> str:
        result = _run(["podman", *self._driver_flag(), "info", "--format", "{{.Store.GraphDriverName}}"], check=False,
                      timeout=60)
        return f"podman + buildah, storage driver {result.stdout.strip() or 'unknown'}"

    def base_command(self) -> list[str]:
        return ["podman", *self._driver_flag()]

    def buildah(self) -> list[str]:
        return ["buildah", *self._driver_flag()]

    def normalize(self, ref: str) -> str:
        """A bare name (`w2s-mdc24:dev`) is what podman stores as localhost/w2s-mdc24:dev; names with a path
        (`pytorch/pytorch:...`, `docker.io/...`) are left to podman's own short-name resolution."""
        if "/" in ref:
            return ref
        return f"localhost/{ref}" if ":" in ref else f"localhost/{ref}:latest"

    def build_command(self, context, dockerfile, tag, build_args, no_cache):
        args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        return [*self.base_command(), "build", "--isolation", "chroot", f"--platform={PLATFORM}", "--pull=never",
                "-f", str(dockerfile), "-t", self.normalize(tag), *args, *(["--no-cache"] if no_cache else []),
                str(context)]

    def image_exists(self, ref: str) -> bool:
        return _run([*self.base_command(), "image", "exists", self.normalize(ref)], check=False, timeout=60).returncode == 0

    def save_options(self) -> list[str]:
        return ["--format", "docker-archive"]

    def run_command(self, image: ImageInfo, container: str, mounts: Sequence[Mount], network: bool = False,
                    tmpfs: Sequence[str] = ("/tmp",)) -> list[str]:
        """`buildah run` of a working container made from the image, with the image's user, workdir and
        entrypoint + cmd given explicitly; `unshare --net` gives it a network namespace with no interfaces."""
        command = [] if network else ["unshare", "--net"]
        command += [*self.buildah(), "run", "--isolation", "chroot"]
        if image.user:
            command += ["--user", image.user]
        if image.workdir:
            command += ["--workingdir", image.workdir]
        for mount in mounts:
            command += ["-v", f"{mount.host.resolve()}:{mount.container}{':ro' if mount.read_only else ''}"]
        for path in tmpfs:
            command += ["--mount", f"type=tmpfs,destination={path}"]
        return command + [container, "--", *image.entrypoint, *image.cmd]

    def run_image(self, image, mounts, network=False, timeout=None, tmpfs=("/tmp",), memory=0):
        if os.geteuid() != 0:  # rootless: no `unshare --net` without privileges; podman run works there
            command = [*self.base_command(), "run", "--rm", "--network", "none" if not network else "bridge"]
            command += [f"--memory={memory}b", f"--memory-swap={memory}b"] if memory else []
            command += [arg for path in tmpfs for arg in ("--tmpfs", path)]
            command += [arg for m in mounts for arg in ("-v", f"{m.host.resolve()}:{m.container}{':ro' if m.read_only else ''}")]
            return _timed(command + [image.ref], timeout)
        started = time.perf_counter()
        made = _run([*self.buildah(), "from", "--pull=never", "--quiet", image.ref], timeout=300)
        container = made.stdout.strip().splitlines()[-1]
        try:
            command = self.run_command(image, container, mounts, network, tmpfs)
            if memory:  # buildah run has no --memory: run it, and so the container, inside a limited cgroup
                with memory_cgroup(memory) as group:
                    result = _timed(group.wrap(command), timeout)
                    result.peak_memory = group.peak()
            else:
                result = _timed(command, timeout)
        finally:
            _run([*self.buildah(), "rm", container], check=False, timeout=120)
        result.seconds = time.perf_counter() - started  # container creation and removal are part of a cold start
        return result


class MemoryGroup:
    """A memory cgroup made for one run (cgroup v1 or v2); `wrap` makes a command join it before it starts."""

    def __init__(self, path: Path, version: int):
        self.path, self.version = path, version

    def wrap(self, command: Sequence[str]) -> list[str]:
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *command]

    def peak(self) -> int | None:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((self.path / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


_GROUP_COUNTER = itertools.count()


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[MemoryGroup]:
    """A child of this process's own memory cgroup, limited to `limit` bytes with no swap; removed afterwards.
    Needs a writable cgroup file system (root, or a delegated subtree); raises UserError where there is none."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, where = line.split(":", 2)
        own[controllers] = where
    name = f"w2s-limit-{os.getpid()}-{next(_GROUP_COUNTER)}"
    if "memory" in own and Path("/sys/fs/cgroup/memory").is_dir():
        path, version = Path("/sys/fs/cgroup/memory") / own["memory"].lstrip("/") / name, 1
        files = {"memory.limit_in_bytes": limit, "memory.memsw.limit_in_bytes": limit}
    elif "" in own and (Path("/sys/fs/cgroup") / "cgroup.controllers").is_file():
        path, version = Path("/sys/fs/cgroup") / own[""].lstrip("/") / name, 2
        files = {"memory.max": limit, "memory.swap.max": 0}
    else:
        raise UserError("no memory cgroup to limit a container run with (/proc/self/cgroup names none)")
    try:
        path.mkdir()
    except OSError as exc:
        raise UserError(f"{path}: cannot make a memory cgroup ({exc.strerror or exc})") from None
    try:
        for file, value in files.items():
            target = path / file
            if target.exists():  # memsw / swap files exist only with swap accounting
                target.write_text(str(value))
        yield MemoryGroup(path, version)
    except OSError as exc:
        raise UserError(f"{path}: cannot set a memory limit ({exc.strerror or exc})") from None
    finally:
        for _ in range(50):  # the last process may still be leaving the group
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _timed(command: list[str], timeout: float | None) -> RunResult:
    started = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return RunResult(124, out, f"timed out after {timeout} s", time.perf_counter() - started, command)
    return RunResult(result.returncode, result.stdout, result.stderr, time.perf_counter() - started, command)


def docker_daemon_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def detect_engine(name: str = "") -> Engine:
    """docker when its daemon answers, else podman (+ buildah to run images); or the one asked for."""
    name = name or os.environ.get("W2S_CONTAINER_ENGINE", "")
    if name == "docker" or (not name and docker_daemon_answers()):
        if name == "docker" and not docker_daemon_answers():
            raise UserError("docker: the daemon does not answer (`docker info` failed)")
        return Docker()
    if name not in ("", "podman"):
        raise UserError(f"unknown container engine {name!r} (docker or podman)")
    missing = [tool for tool in ("podman", "buildah") if not shutil.which(tool)]
    if missing:
        raise UserError(f"no container engine: no Docker daemon answers and {' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not installed "
                        f"(Debian: apt-get install podman buildah)")
    return Podman()


__all__ = ["Docker", "Engine", "ImageInfo", "MemoryGroup", "Mount", "PLATFORM", "Podman", "RunResult", "detect_engine",
           "docker_daemon_answers", "memory_cgroup"]
