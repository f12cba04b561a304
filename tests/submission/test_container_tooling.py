"""The image recipe and the tools around it, without a container engine: Dockerfile contract, build
helpers, engine commands (run as Grand Challenge does), docker-test checks, archive name."""

from __future__ import annotations

import datetime
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from submission import build, containers, docker_test, save
from submission.containers import ImageInfo, Mount

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def _instructions() -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(l for l in DOCKERFILE.splitlines() if not l.lstrip().startswith("#")))
    return [line.strip() for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_follows_the_challenge_contract():
    lines = _instructions()
    base = build.dockerfile_default_base(REPO_ROOT / "Dockerfile")
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime", base)  # pinned CUDA runtime
    assert "FROM --platform=linux/amd64 ${BASE_IMAGE}" in lines
    assert any(l.startswith("ENV PYTHONUNBUFFERED=1") for l in lines)
    users = [l.split()[1] for l in lines if l.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert lines[-1] == 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "submission.inference"]'
    pip = [l for l in lines if "pip install" in l]
    assert pip and all("--no-index" in l for l in pip)
    for line in lines:  # weights and metadata live under /opt, never /tmp (empty at run time)
        if line.startswith("COPY "):
            assert line.split()[-1].startswith("/opt/")
    assert any("--self-check" in l for l in lines)  # a missing model fails the build


def test_dockerignore_sends_only_the_prepared_context():
    rules = [l.strip() for l in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert rules == ["*", "!build/submission/context/"]
    for line in _instructions():
        if line.startswith("COPY ") or "source=" in line:
            sources = re.findall(r"source=(\S+?)[, ]", line) or line.split()[1:-1]
            assert all(s.startswith("build/submission/context/") for s in sources), line


# ------------------------------------------------------------------------------------------ build helpers


@pytest.mark.parametrize("ref, host", [
    ("pytorch/pytorch:2.7.0-cuda12.8-cudnn9-runtime", "registry-1.docker.io"),
    ("python:3.11-slim", "registry-1.docker.io"),
    ("ghcr.io/pytorch/pytorch:2.3.0", "ghcr.io"),
    ("localhost:5000/base:1", "localhost:5000"),
    ("localhost/w2s-base:x", "localhost"),
])
def test_registry_host(ref, host):
    assert build.registry_host(ref) == host


def test_local_registry_refs_are_never_probed():
    assert build.registry_reachable("localhost/w2s-base:x") is False


def test_torch_comes_from_the_base_only_for_pytorch_images():
    assert build.base_has_torch("pytorch/pytorch:2.7.0-cuda12.8-cudnn9-runtime", False, "auto")
    assert not build.base_has_torch(build.local_base_tag(), True, "auto")
    assert not build.base_has_torch("python:3.11-slim", False, "auto")
    assert build.base_has_torch("python:3.11-slim", False, "no") and not build.base_has_torch("pytorch/x", False, "yes")
    assert build._is_torch("torch>=2.2,<3") and build._is_torch("torch==2.13.0+cpu")
    assert not build._is_torch("torchmetrics>=1") and not build._is_torch("torch-geometric")


def test_requirements_are_the_inference_runtime_only():
    names = [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in
             build.requirement_lines(REPO_ROOT / "submission" / "requirements.txt")]
    assert sorted(names) == ["numpy", "tifffile", "torch", "tqdm"]


def test_local_base_tag_is_stable_and_local():
    assert build.local_base_tag() == build.local_base_tag()
    assert build.local_base_tag().startswith("localhost/w2s-base:bookworm-")


def test_requirements_file_records_the_wheelhouse(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    build.write_requirements(tmp_path / "requirements.txt", ["numpy>=1.24"], [wheel])
    text = (tmp_path / "requirements.txt").read_text()
    assert "numpy>=1.24" in text and f"# {wheel.name} " in text


@pytest.mark.slow
def test_project_wheel_holds_the_inference_path(tmp_path):
    """Built from a clean copy of the source: nested packages such as training/data must be in it."""
    wheel = build.build_project_wheel(REPO_ROOT, tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("submission/inference.py", "training/checkpoint.py", "training/predict.py", "training/io.py",
                   "training/data/normalization.py", "training/model.py"):
        assert module in names
    assert not any(n.startswith(("tests/", "runs/", "build/")) for n in names)


# ------------------------------------------------------------------------------------------ engine commands


def _image(**changes) -> ImageInfo:
    values = dict(ref="localhost/w2s-mdc24:latest", user="user", entrypoint=["/opt/venv/bin/python", "-m",
                  "submission.inference"], cmd=[], workdir="/opt/app", env=[], os="linux", architecture="amd64",
                  size=1, labels={"w2s.model.sha256": "ab" * 32})
    values.update(changes)
    return ImageInfo(**values)


def test_podman_runs_images_like_grand_challenge(tmp_path):
    engine = containers.Podman(storage_driver="overlay")
    mounts = [Mount(tmp_path / "in", "/input", read_only=True), Mount(tmp_path / "out", "/output")]
    command = engine.run_command(_image(), "ctr", mounts)
    assert command[:2] == ["unshare", "--net"]  # no network
    assert command[2:5] == ["buildah", "--storage-driver", "overlay"]  # forced: both tools get it
    assert containers.Podman(storage_driver="").buildah() == ["buildah"] or os.environ.get("W2S_STORAGE_DRIVER")
    assert command[command.index("--user") + 1] == "user"  # buildah run does not apply USER by itself
    assert command[command.index("--workingdir") + 1] == "/opt/app"
    assert f"{(tmp_path / 'in').resolve()}:/input:ro" in command
    assert f"{(tmp_path / 'out').resolve()}:/output" in command
    assert "type=tmpfs,destination=/tmp" in command  # an empty /tmp
    assert command[-4:] == ["--", "/opt/venv/bin/python", "-m", "submission.inference"]
    build_command = engine.build_command(REPO_ROOT, REPO_ROOT / "Dockerfile", "w2s:1", {"BASE_IMAGE": "b"}, False)
    assert "--platform=linux/amd64" in build_command and "--build-arg=BASE_IMAGE=b" in build_command
    assert "localhost/w2s:1" in build_command


@pytest.mark.parametrize("ref, normalized", [
    ("w2s-mdc24", "localhost/w2s-mdc24:latest"), ("w2s-mdc24:dev", "localhost/w2s-mdc24:dev"),
    ("localhost/x:1", "localhost/x:1"), ("docker.io/library/python:3.11", "docker.io/library/python:3.11"),
    ("pytorch/pytorch:2.7.0", "pytorch/pytorch:2.7.0"),
])
def test_podman_image_names(ref, normalized):
    assert containers.Podman(storage_driver="vfs").normalize(ref) == normalized


def test_docker_runs_images_like_grand_challenge(tmp_path):
    command = containers.Docker().run_command(_image(ref="w2s:1"), [Mount(tmp_path, "/input", read_only=True)])
    assert command[:3] == ["docker", "run", "--rm"]
    assert command[command.index("--network") + 1] == "none"
    assert command[command.index("--tmpfs") + 1] == "/tmp"
    assert f"{tmp_path.resolve()}:/input:ro" in command and command[-1] == "w2s:1"
    assert "--user" not in command  # the image's own user, as on Grand Challenge


def test_unknown_engine_is_a_user_error():
    from training.errors import UserError

    with pytest.raises(UserError, match="unknown container engine"):
        containers.detect_engine("lxc")


# ------------------------------------------------------------------------------------------ docker-test checks


def test_image_config_checks():
    manifest = {"files": {"best.pt": {"sha256": "ab" * 32}}}
    assert docker_test.check_image_config(_image(), manifest) == []
    problems = docker_test.check_image_config(
        _image(user="", entrypoint=[], architecture="arm64", labels={}), manifest)
    assert len(problems) == 4
    assert docker_test.check_image_config(_image(user="0:0"), manifest)
    assert docker_test.check_image_config(_image(user="root"), manifest)


def test_edge_cases_cover_the_required_shapes_and_types():
    cases = {c.name: c.array for c in docker_test.edge_cases()}
    arrays = list(cases.values())
    assert any(a.ndim == 4 for a in arrays)
    assert any(a.shape[-1] != a.shape[-2] for a in arrays)
    assert any(max(a.shape[-2:]) < 8 for a in arrays)  # smaller than one tile and one U-Net level
    assert {np.dtype(np.uint8), np.dtype(np.float32)} <= {a.dtype for a in arrays}


def test_comparison_and_plausible_range():
    reference = np.array([[100.0, 200.0]], dtype=np.float32)
    assert docker_test.compare(reference + 0.01, reference) == pytest.approx(0.01 / 200, rel=1e-3)
    low, high = docker_test.plausible_range(np.array([[10, 30]], dtype=np.uint16))
    assert (low, high) == (-10, 50)


def test_real_challenge_cases_are_found(tmp_path):
    folder = tmp_path / "images" / "image-stack-structured-noise"
    folder.mkdir(parents=True)
    (folder / "hagen_0.tif").write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    cases = docker_test.real_cases(tmp_path)
    assert [(c.name, c.track) for c in cases] == [("hagen_0.tif", "structured")]


# ---------------------------------------------------------------------------------------------------- save


def test_archive_name():
    day = datetime.date(2024, 7, 1)
    assert save.archive_name("w2s-mdc24:latest", day) == "w2s-mdc24_2024-07-01.tar.gz"
    assert save.archive_name("localhost/team/w2s:v2", day) == "w2s_2024-07-01.tar.gz"
