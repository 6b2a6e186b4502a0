"""Real processes staging at the same time."""

import json
import os
import subprocess
import sys
import time

from rollout import control
from rollout import staging
from rollout import tfserving

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Each worker waits for a shared "go" file so both really start together,
# then stages N fake models through the controller.
WORKER = """
import os, sys, time
from rollout import control
serving_root, model, name, count, go, exports = sys.argv[1:7]
while not os.path.exists(go):
    time.sleep(0.005)
controller = control.RolloutController(
    serving_root, model, storage_uri_prefix="gs://b/serving")
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
    # alpha and beta race on the same model; gamma stages another model,
    # racing on the shared models.config only.
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, serving_root, model, name,
             str(count), go, str(tmp_path / "exports")],
            cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        for model, name in (("taxi", "alpha"), ("taxi", "beta"),
                            ("fraud", "gamma"))]
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
    # Neither model's models.config entry was lost to the other's writes.
    config = tfserving.read_config(tfserving.config_path(serving_root))
    assert sorted(c.name for c in config.model_config_list.config) == [
        "fraud", "taxi"]
    fraud = control.RolloutController(serving_root, "fraud").status()
    assert fraud["in_sync"], fraud["problems"]
    assert (fraud["stable_version"], fraud["canary_version"]) == (1, count)


# Widens the read-modify-write window of models.config so that, without the
# serving-root config lock, concurrent writers would lose each other's
# entries.
SLOW_CONFIG_WORKER = """
import time
from rollout import tfserving
_read = tfserving.read_config
def slow_read(path):
    config = _read(path)
    time.sleep(0.05)
    return config
tfserving.read_config = slow_read
""" + WORKER


def test_models_sharing_models_config_do_not_lose_entries(tmp_path):
    serving_root = str(tmp_path / "serving")
    go = str(tmp_path / "go")
    models = [f"model{i}" for i in range(4)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", SLOW_CONFIG_WORKER, serving_root, model,
             model, "2", go, str(tmp_path / "exports")],
            cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        for model in models]
    time.sleep(0.3)
    open(go, "w").close()
    for worker in workers:
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr
    config = tfserving.read_config(tfserving.config_path(serving_root))
    assert sorted(c.name for c in config.model_config_list.config) == models
    for model in models:
        status = control.RolloutController(serving_root, model).status()
        assert status["in_sync"], status["problems"]
