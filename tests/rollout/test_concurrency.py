"""Two real processes staging into the same model at the same time."""

import json
import os
import subprocess
import sys
import time

from rollout import control
from rollout import staging

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Each worker waits for a shared "go" file so both really start together,
# then stages N fake models through the controller.
WORKER = """
import os, sys, time
from rollout import control
serving_root, name, count, go, exports = sys.argv[1:6]
while not os.path.exists(go):
    time.sleep(0.005)
controller = control.RolloutController(
    serving_root, "taxi", storage_uri_prefix="gs://b/serving")
for i in range(int(count)):
    src = os.path.join(exports, f"{name}-{i}")
    os.makedirs(os.path.join(src, "variables"))
    with open(os.path.join(src, "saved_model.pb"), "w") as handle:
        handle.write(f"{name}-{i}")
    controller.stage(src, canary_percent=10, reason=f"{name}-{i}", keep=100)
"""


def test_two_processes_staging_concurrently(tmp_path):
    serving_root = str(tmp_path / "serving")
    go = str(tmp_path / "go")
    count = 6
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, serving_root, name, str(count),
             go, str(tmp_path / "exports")],
            cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        for name in ("alpha", "beta")]
    time.sleep(0.3)  # let both interpreters reach the wait loop
    open(go, "w").close()
    for worker in workers:
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr

    versions = staging.list_versions(serving_root, "taxi")
    assert versions == list(range(1, 2 * count + 1))
    with open(os.path.join(serving_root, "taxi", "rollout.json")) as handle:
        data = json.load(handle)  # valid JSON, never half written
    history = data["history"]
    assert len(history) == 2 * count
    assert [e["version"] for e in history] == versions
    assert [e["event"] for e in history] == (
        ["staged_stable"] + ["staged_canary"] * (2 * count - 1))
    for name in ("alpha", "beta"):
        assert sorted(e["reason"] for e in history
                      if e["reason"].startswith(name)) == [
            f"{name}-{i}" for i in range(count)]
    # Each version dir holds the model its event says it does.
    for event in history:
        pb = os.path.join(serving_root, "taxi", str(event["version"]),
                          "saved_model.pb")
        with open(pb) as handle:
            assert handle.read() == event["reason"]
    status = control.RolloutController(serving_root, "taxi").status()
    assert status["in_sync"], status["problems"]
    assert (status["stable_version"], status["canary_version"]) == (
        1, 2 * count)
