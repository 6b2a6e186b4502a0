"""Atomic writes, durable copies and the cross-process file lock."""

import os
import subprocess
import sys
import time

import pytest

from rollout import fsutil
from rollout.errors import RolloutError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_atomic_write_replaces_content_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "models.config"
    fsutil.atomic_write_text(target, "old")
    os.chmod(target, 0o640)
    fsutil.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["models.config"]
    # TF Serving may run as another user: permissions must survive rewrites.
    assert os.stat(target).st_mode & 0o777 == 0o640


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "rollout.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        fsutil.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["rollout.json"]


def test_copy_tree_durable_copies_nested_files(tmp_path):
    src = tmp_path / "src"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"\x00graph")
    (src / "variables" / "variables.data-00000-of-00001").write_bytes(b"w")
    fsutil.copy_tree_durable(src, tmp_path / "dst")
    assert (tmp_path / "dst" / "saved_model.pb").read_bytes() == b"\x00graph"
    assert (tmp_path / "dst" / "variables"
            / "variables.data-00000-of-00001").read_bytes() == b"w"


def _hold_lock(lock_path, ready_path, seconds):
    """Start a process that takes the lock, signals, then sleeps."""
    script = (
        "import pathlib, sys, time\n"
        "from rollout import fsutil\n"
        "with fsutil.file_lock(sys.argv[1]):\n"
        "    pathlib.Path(sys.argv[2]).write_text('ready')\n"
        "    time.sleep(float(sys.argv[3]))\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(lock_path), str(ready_path),
         str(seconds)], cwd=REPO_ROOT)
    deadline = time.monotonic() + 30
    while not os.path.exists(ready_path):
        assert proc.poll() is None, "lock holder died"
        assert time.monotonic() < deadline, "lock holder never started"
        time.sleep(0.02)
    return proc


def test_lock_timeout_names_lock_file_and_holder_pid(tmp_path):
    lock = tmp_path / ".lock"
    proc = _hold_lock(lock, tmp_path / "ready", 30)
    try:
        started = time.monotonic()
        with pytest.raises(RolloutError) as info:
            with fsutil.file_lock(lock, timeout=0.3):
                pass
        assert time.monotonic() - started < 5
        message = str(info.value)
        assert str(lock) in message
        assert f"pid {proc.pid}" in message
    finally:
        proc.kill()
        proc.wait()


def test_lock_is_released_when_holder_is_killed(tmp_path):
    lock = tmp_path / ".lock"
    proc = _hold_lock(lock, tmp_path / "ready", 30)
    proc.kill()
    proc.wait()
    # The stale lock file stays behind but must not block anyone.
    with fsutil.file_lock(lock, timeout=2):
        assert lock.read_text().startswith(f"pid {os.getpid()} ")
