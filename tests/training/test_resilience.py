"""training.resilience and the atomic writers in-process (the real-process fault tests are in tests/faults/)."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from training.errors import UserError
from training.io import write_bytes, write_text
from training.resilience import GracefulStop, Interrupted, Tracking, fault_point, retry_busy


def test_tracking_reports_the_first_failure_once_then_stops_calling(capsys):
    calls = []

    def broken(*args):
        calls.append(args)
        raise ConnectionError("server gone\nsecond line")

    tracking = Tracking("http://127.0.0.1:9", "run123", "resume later")
    assert tracking.call("logging metrics", broken, 1) is None
    assert tracking.call("logging metrics", broken, 2) is None and tracking.call("x", broken, 3) is None
    assert calls == [(1,)] and tracking.offline and tracking.skipped == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server gone" in err[0] and "second line" not in err[0] and "run123" in err[0]


def test_a_locked_sqlite_store_is_retried_not_reported():
    attempts = []

    def locked_twice():
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert retry_busy(locked_twice) == "ok" and len(attempts) == 3
    with pytest.raises(ValueError):
        retry_busy(lambda: (_ for _ in ()).throw(ValueError("not transient")))


def test_disk_full_is_a_one_line_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    write_bytes(target, b"epoch 1")
    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    monkeypatch.setattr("builtins.open", lambda *a, **k: FullDisk(real_open(*a, **k)))
    with pytest.raises(UserError, match=r"last.pt: cannot write \(No space left on device\)"):
        write_bytes(target, b"epoch 2, longer")
    monkeypatch.undo()
    assert target.read_bytes() == b"epoch 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_other_write_errors_are_not_disguised(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        write_text(tmp_path / "dir", "x")  # renaming onto a folder is a bug, not a full disk


def test_graceful_stop_turns_the_first_signal_into_a_request(capfd):
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        error = stop.interrupted("stopped after epoch 1")
    assert isinstance(error, Interrupted) and isinstance(error, KeyboardInterrupt)
    assert error.exit_code == 143 and str(error) == "SIGTERM: stopped after epoch 1"
    assert "SIGTERM: stopping after the current step" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the previous handler is back


def test_fault_point_does_nothing_unless_named(tmp_path, monkeypatch):
    monkeypatch.delenv("W2S_FAULT_PAUSE", raising=False)
    fault_point("step")
    monkeypatch.setenv("W2S_FAULT_PAUSE", "validate@99")
    monkeypatch.setenv("W2S_FAULT_DIR", str(tmp_path))
    fault_point("step")
    assert not list(tmp_path.iterdir())
