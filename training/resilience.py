"""Surviving interruptions: signals, an unreachable or busy MLflow store, and a test hook for fault injection.

- `GracefulStop`: the first SIGINT/SIGTERM asks training to stop after the current step and write a
  resumable checkpoint (exit 130 / 143); a second one exits at once.
- `Tracking`: every MLflow call of a training run goes through it. A busy SQLite store ("database is
  locked") is retried; any other failure is reported once, and tracking is off for the rest of the process
  while training and checkpoints go on. The epochs it missed are logged by `w2s train --resume`.
- `fault_point`: a no-op unless the W2S_FAULT_PAUSE environment variable names the point; then the
  process stops there so that a test can deliver a real signal (kill -9, SIGINT, a full disk) at an exact,
  repeatable place instead of at a racy moment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from training.errors import UserError

FAULT_PAUSE_ENV = "W2S_FAULT_PAUSE"  # comma-separated NAME@N: pause the Nth time point NAME is reached
FAULT_DIR_ENV = "W2S_FAULT_DIR"  # where a paused process announces itself (an empty file named NAME@N)
LOCK_RETRIES = 8
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

_reached: Counter[str] = Counter()
_signals_seen = 0


def fault_point(name: str) -> None:
    """Test hook. With W2S_FAULT_PAUSE=NAME@N the Nth arrival here creates W2S_FAULT_DIR/NAME@N and waits
    until that file is removed (continue) or a signal arrives (handled as usual); tests kill the process
    while it waits. Points: `step`, `validate`, `write:<file name>`, `checkpointed`,
    `epoch_end`, `stop_checkpoint`."""
    spec = os.environ.get(FAULT_PAUSE_ENV)
    if not spec:
        return
    _reached[name] += 1
    point = f"{name}@{_reached[name]}"
    if point not in spec.split(","):
        return
    marker = Path(os.environ.get(FAULT_DIR_ENV, "."), point)
    marker.touch()
    seen = _signals_seen
    while marker.exists() and _signals_seen == seen:
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------------- signals


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; the CLI exits with `exit_code` (128 + signal)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class GracefulStop:
    """While active, SIGINT and SIGTERM set `signum` instead of raising; a second signal exits at once.

    Only the main thread may install signal handlers; elsewhere this does nothing and signals act as usual.
    """

    def __init__(self, on_second: str = ""):
        self.signum: int | None = None
        self.on_second = on_second
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        global _signals_seen
        _signals_seen += 1
        name = signal.Signals(signum).name
        if self.signum is not None:  # the user means it: no cleanup, the last complete checkpoint stays
            os.write(2, f"\nw2s: {name} again: exiting at once. {self.on_second}\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        os.write(2, f"\nw2s: {name}: stopping after the current step and writing a checkpoint "
                    f"(press Ctrl-C again to quit at once)\n".encode())

    def interrupted(self, message: str) -> Interrupted:
        signum = self.signum or signal.SIGINT
        return Interrupted(f"{signal.Signals(signum).name}: {message}", 128 + signum)


# ---------------------------------------------------------------------------------------------------- MLflow


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _is_busy(exc: BaseException) -> bool:
    """SQLite under concurrent writers: succeeds when retried."""
    return "database is locked" in str(exc).lower()


def _is_busy_or_raced(exc: BaseException) -> bool:
    """Also two processes creating the same store or experiment at once: the loser finds it on retry."""
    text = str(exc).lower()
    return _is_busy(exc) or "already exists" in text or "unique constraint" in text


def retry_busy(action: Callable[[], Any], retries: int = LOCK_RETRIES, transient=_is_busy) -> Any:
    """Run `action`, retrying with growing pauses (0.1 s doubling, ~25 s in all) while the store is busy."""
    for attempt in range(retries):
        try:
            return action()
        except Exception as exc:
            if not transient(exc) or attempt == retries - 1:
                raise
            time.sleep(0.1 * 2 ** attempt)


class Tracking:
    """MLflow calls that may fail without stopping training: the first failure is reported once."""

    def __init__(self, uri: str, run_id: str, hint: str = ""):
        self.uri, self.run_id, self.hint = uri, run_id, hint
        self.failure: str | None = None
        self.skipped = 0

    @property
    def offline(self) -> bool:
        return self.failure is not None

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.offline:
            self.skipped += 1
            return None
        try:
            return retry_busy(lambda: fn(*args, **kwargs))
        except Exception as exc:
            self.failure = _first_line(exc)
            from tqdm import tqdm

            tqdm.write(f"w2s: warning: MLflow tracking failed while {what} ({self.uri}: {self.failure}); nothing "
                       f"more is logged to run {self.run_id} by this process, training and checkpoints go on; "
                       f"{self.hint}", file=sys.stderr)
            return None

    def sync_history(self, history: list[dict[str, float]], metrics_of: Callable[[dict], dict[str, float]]) -> int:
        """Log the epochs of `history` (from a checkpoint) that the run lacks; returns how many were missing."""
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        def missing_metrics() -> list[Metric]:
            client = MlflowClient(self.uri)
            now, metrics = int(time.time() * 1000), []
            for key in sorted({k for record in history for k in metrics_of(record)}):
                logged = {m.step for m in client.get_metric_history(self.run_id, key)}
                metrics += [Metric(key, metrics_of(r)[key], now, int(r["epoch"])) for r in history
                            if r["epoch"] not in logged and key in metrics_of(r)]
            for start in range(0, len(metrics), 500):
                client.log_batch(self.run_id, metrics=metrics[start:start + 500])
            return metrics

        logged = self.call("logging the epochs it missed", missing_metrics) or []
        return len({m.step for m in logged})


@contextlib.contextmanager
def _sqlite_store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on the SQLite store's folder while a run starts: MLflow creates and migrates a
    new store's schema on first use, and two processes doing that at once leave it broken (measured:
    "table _alembic_tmp_tags already exists"). flock on the folder leaves no lock file behind."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri:
        yield
        return
    import fcntl

    folder = Path(uri[len(prefix):]).parent
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def tracked_run(tracking_uri: str, experiment: str, run_name: str, run_id: str | None,
                hint: str = "") -> Iterator[Tracking]:
    """Start (or continue) the MLflow run and end it as FINISHED, KILLED (a signal) or FAILED.

    The start must succeed (a one-line error otherwise); everything after it is best-effort via `Tracking`.
    HTTP retries are shortened (unless set in the environment) so a dead server costs seconds, not minutes.
    """
    import mlflow

    from training.tracking import resolve_tracking_uri, start_run

    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = resolve_tracking_uri(tracking_uri)
    try:
        with _sqlite_store_lock(uri):
            run = retry_busy(lambda: start_run(tracking_uri, experiment, run_name, run_id), transient=_is_busy_or_raced)
    except Exception as exc:
        raise UserError(f"MLflow tracking at {uri}: cannot {'continue' if run_id else 'start'} the run "
                        f"({_first_line(exc)})") from None
    tracking = Tracking(uri, run.info.run_id, hint)
    status = "FAILED"
    try:
        yield tracking
        status = "FINISHED"
    except Interrupted:
        status = "KILLED"
        raise
    finally:
        if tracking.offline:  # one quiet last try: the server may be back; end_run leaves the run either way
            with contextlib.suppress(Exception):
                mlflow.end_run(status)
        else:
            tracking.call("ending the run", mlflow.end_run, status)
