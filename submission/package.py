"""A trained model -> the folder the challenge image carries: checkpoint, config and a manifest.

`package_model(spec, out_dir)` takes what `w2s predict` takes: a checkpoint file, a run folder, `runs/latest`,
or an MLflow URI (`models:/w2s-unet@champion`, `models:/w2s-unet/3`, `runs:/<id>`, `runs:/<id>/model`). It
writes, into a fresh `out_dir`:

- `best.pt`: the checkpoint, byte for byte (so its SHA-256 matches the MLflow artifact it came from);
- `config.json`: the training config stored in it;
- `manifest.json`: where it came from (source, MLflow run id, registered model version), its validation
  metrics, the code versions that trained and packaged it, and the size and SHA-256 of every file.
  `submission.inference` verifies those checksums before loading, and at image build time.

The checkpoint is opened with torch.load(weights_only=True) only (training.checkpoint); the pickled MLflow
PyTorch model is never unpickled.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from submission.inference import (CHECKPOINT_NAME, CONFIG_NAME, DEFAULT_TILE, MANIFEST_FORMAT, MANIFEST_NAME,
                                  sha256_file)
from training.errors import UserError, first_line

PACKAGED_NAMES = (CHECKPOINT_NAME, CONFIG_NAME, MANIFEST_NAME)


def package_model(spec: str | Path, out_dir: str | Path, tracking_uri: str = "", allow_2x: bool = False) -> dict[str, Any]:
    """Write checkpoint, config and manifest for `spec` into `out_dir` (replacing a previous package).

    `allow_2x` packages a jdsr model too: the container then writes 2x outputs, which the challenge rejects."""
    from training.predict import is_model_uri, local_checkpoint_path

    spec = str(spec).strip()
    if not spec:
        raise UserError("no model given: pass a checkpoint, a run folder, runs/latest or an MLflow URI "
                        "such as models:/w2s-unet@champion")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="w2s-package-") as tmp:
        if is_model_uri(spec):
            checkpoint_path, mlflow_info = _fetch_from_mlflow(spec, Path(tmp), tracking_uri)
            source = spec
        else:
            checkpoint_path, mlflow_info = local_checkpoint_path(spec), {}
            source = str(checkpoint_path.resolve())
        checkpoint = _load_checked(checkpoint_path, allow_2x)
        _prepare_out_dir(out_dir)
        shutil.copyfile(checkpoint_path, out_dir / CHECKPOINT_NAME)
    (out_dir / CONFIG_NAME).write_text(json.dumps(checkpoint.get("config", {}), indent=2, sort_keys=True) + "\n")
    manifest = build_manifest(checkpoint, source, mlflow_info, out_dir)
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_manifest(checkpoint: dict[str, Any], source: str, mlflow_info: dict[str, Any],
                   out_dir: Path) -> dict[str, Any]:
    from training.checkpoint import code_version

    config = checkpoint.get("config", {})
    run_id = checkpoint.get("mlflow_run_id") or mlflow_info.get("run_id") or ""
    return {
        "format": MANIFEST_FORMAT,
        "packaged_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "run_id": run_id,
        "mlflow": mlflow_info,
        "metrics": {k: float(v) for k, v in (checkpoint.get("best_metrics") or {}).items()},
        "best_epoch": checkpoint.get("best_epoch"),
        "code_version": {"training": checkpoint.get("code_version", "unknown"), "packaging": code_version()},
        "model": config.get("model", {}),
        "normalization": checkpoint.get("normalization", {}),
        "noise_level": checkpoint.get("noise_level", ""),
        "data": {"layout": checkpoint.get("data_layout", ""), "fingerprint": checkpoint.get("data_fingerprint", "")},
        "inference": {"tile": DEFAULT_TILE},
        "files": {name: {"sha256": sha256_file(out_dir / name), "bytes": (out_dir / name).stat().st_size}
                  for name in (CHECKPOINT_NAME, CONFIG_NAME)},
    }


def _load_checked(path: Path, allow_2x: bool = False) -> dict[str, Any]:
    """The checkpoint dict, after proving that its weights load into the model its config describes; a 2x
    model (--task jdsr) is refused unless asked for, as the challenge expects outputs of the input's size."""
    from training.checkpoint import load_model

    loaded = load_model(path, "cpu")
    if loaded.config.model.scale != 1 and not allow_2x:
        raise UserError(f"{path}: a {loaded.config.task} model outputs {loaded.config.model.scale}x the input's size; "
                        "the challenge container needs a same-size denoiser (train with --task denoise or n2v; "
                        "--allow-2x packages it anyway, for use outside the challenge)")
    return loaded.checkpoint


def _prepare_out_dir(out_dir: Path) -> None:
    """Empty `out_dir` so that no stale file ships; refuse to empty a folder that is not a model package."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UserError(f"{out_dir}: exists and is not a folder")
        foreign = [p.name for p in out_dir.iterdir() if p.name not in PACKAGED_NAMES]
        if foreign:
            raise UserError(f"{out_dir}: not empty and not a model package (holds {', '.join(sorted(foreign)[:5])}); "
                            f"choose another --out")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)


def _fetch_from_mlflow(spec: str, tmp: Path, tracking_uri: str) -> tuple[Path, dict[str, Any]]:
    """Download the w2s checkpoint behind an MLflow URI; also describe the run / registered model version."""
    from training.predict import CHECKPOINT_CANDIDATES, mlflow_uri

    uri = spec.rstrip("/")
    if uri.startswith("runs:/") and uri.count("/") == 1:  # runs:/<id> -> the run's checkpoint artifact
        uri += "/checkpoints/best.pt"
    with mlflow_uri(tracking_uri) as resolved_uri:
        import mlflow
        from mlflow.exceptions import MlflowException

        info: dict[str, Any] = {"uri": spec, "tracking_uri": resolved_uri}
        try:
            info.update(_describe_uri(spec))
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp)))
        except MlflowException as exc:
            raise UserError(f"{spec}: cannot fetch the model from MLflow at {resolved_uri} ({first_line(exc)})") from None
        except OSError as exc:
            raise UserError(f"{spec}: cannot fetch the model from MLflow ({first_line(exc)})") from None
    if local.is_file():
        return local, info
    for candidate in CHECKPOINT_CANDIDATES:
        if (local / candidate).is_file():
            return local / candidate, info
    raise UserError(f"{spec}: the MLflow artifact holds no w2s checkpoint (looked for "
                    f"{', '.join(CHECKPOINT_CANDIDATES)}); try runs:/<run id>/checkpoints/best.pt")


def _describe_uri(spec: str) -> dict[str, Any]:
    """Registered model name/version/alias and run id for models:/ URIs; the run id for runs:/ URIs."""
    from mlflow.tracking import MlflowClient

    if spec.startswith("runs:/"):
        return {"run_id": spec[len("runs:/"):].split("/", 1)[0]}
    if not spec.startswith("models:/"):
        return {}
    name_part = spec[len("models:/"):].split("/", 2)
    client = MlflowClient()
    if "@" in name_part[0]:
        name, alias = name_part[0].split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
        extra = {"alias": alias}
    elif len(name_part) >= 2 and name_part[1].isdigit():
        name, extra = name_part[0], {}
        version = client.get_model_version(name, name_part[1])
    else:
        return {"registered_model": name_part[0]}
    return {"registered_model": name, "version": str(version.version), "run_id": version.run_id or "", **extra}



def describe(manifest: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    metrics = manifest.get("metrics") or {}
    scores = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())) or "none recorded"
    checkpoint = manifest["files"][CHECKPOINT_NAME]
    return (f"source:   {manifest['source']}\n"
            f"run id:   {manifest.get('run_id') or 'unknown'}\n"
            f"metrics:  {scores}\n"
            f"code:     trained at {manifest['code_version']['training']}, packaged at "
            f"{manifest['code_version']['packaging']}\n"
            f"sha256:   {checkpoint['sha256']} ({checkpoint['bytes'] / 1e6:.1f} MB)")
