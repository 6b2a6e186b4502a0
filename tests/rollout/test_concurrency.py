"""Real processes staging at the same time.

A race test that passes without racing proves nothing, so the workers log
every lock they take and the tests check, from that log, that the race
happened: some worker was refused a lock (a non-blocking flock failed)
while another worker held it. To make that certain rather than likely, a
worker holding a raced lock for the first time keeps it until some worker
has been refused it (a bounded wait, so a lost race fails the test instead
of hanging it). The log also shows the holds never overlapped.
"""

import collections
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
MODEL_LOCK = os.path.join("taxi", control.LOCK_FILE)
CONFIG_LOCK = control.CONFIG_LOCK_FILE
TIMEOUT_S = 30

# argv[1]: JSON {serving_root, model, name, count, sync_dir, exports, raced}.
# Each worker instruments fsutil's lock, says it is ready, waits for the
# parent's "go" (a barrier: all interpreters are up before anyone stages),
# then stages `count` fake models through the controller.
WORKER = """
import contextlib, collections, fcntl, json, os, sys, time, types
from rollout import control, fsutil
cfg = json.loads(sys.argv[1])
serving_root, name, sync_dir = (
    cfg["serving_root"], cfg["name"], cfg["sync_dir"])
log = open(os.path.join(sync_dir, name + ".jsonl"), "a", buffering=1)


def wait_for(predicate):
    deadline = time.monotonic() + 10  # bounded: the parent checks the log
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def refused_file(key, worker):
    return os.path.join(
        sync_dir, "refused." + key.replace("/", "_") + "." + worker)


# Every flock refused with EAGAIN is the kernel saying another process holds
# the lock; count them per lock and announce the first one to the others.
busy = collections.Counter()
trying = [None]
real_flock = fcntl.flock


def flock(fd, operation):
    try:
        return real_flock(fd, operation)
    except BlockingIOError:
        key = trying[0]
        if not busy[key]:
            open(refused_file(key, name), "w").close()
        busy[key] += 1
        raise


fsutil.fcntl = types.SimpleNamespace(
    flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB,
    LOCK_UN=fcntl.LOCK_UN)
real_file_lock = fsutil.file_lock
held_before = set()


def someone_refused(key):
    # Once anyone was refused this lock, the race on it has happened.
    prefix = os.path.basename(refused_file(key, ""))
    return any(entry.startswith(prefix) for entry in os.listdir(sync_dir))


@contextlib.contextmanager
def file_lock(path, *args, **kwargs):
    key = os.path.relpath(path, serving_root)
    refused_before = busy[key]
    trying[0] = key
    t_try = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes
    with real_file_lock(path, *args, **kwargs):
        t_acquired = time.monotonic()
        saw_refusal = None
        if key in cfg["raced"] and key not in held_before:
            held_before.add(key)
            saw_refusal = wait_for(lambda: someone_refused(key))
        try:
            yield
        finally:
            t_released = time.monotonic()  # still held: an under-estimate
            log.write(json.dumps({
                "worker": name, "lock": key, "t_try": t_try,
                "t_acquired": t_acquired, "t_released": t_released,
                "refused": busy[key] - refused_before,
                "saw_refusal": saw_refusal}) + "\\n")


fsutil.file_lock = file_lock

open(os.path.join(sync_dir, "ready." + name), "w").close()
if not wait_for(lambda: os.path.exists(os.path.join(sync_dir, "go"))):
    sys.exit("no go from the parent")
controller = control.RolloutController(
    serving_root, cfg["model"], storage_uri_prefix="gs://b/serving")
for i in range(int(cfg["count"])):
    src = os.path.join(cfg["exports"], f"{name}-{i}")
    os.makedirs(os.path.join(src, "variables"))
    with open(os.path.join(src, "saved_model.pb"), "w") as handle:
        handle.write(f"{name}-{i}")
    controller.stage(src, canary_percent=10, reason=f"{name}-{i}", keep=100)
"""


def run_workers(tmp_path, serving_root, specs, raced, prelude=""):
    """Start one worker per (model, name, count); release them together.

    Returns the lock log: {lock: [hold records]}.
    """
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    workers = []
    for model, name, count in specs:
        cfg = {"serving_root": serving_root, "model": model, "name": name,
               "count": count, "sync_dir": str(sync_dir),
               "exports": str(tmp_path / "exports"), "raced": raced}
        workers.append(subprocess.Popen(
            [sys.executable, "-c", prelude + WORKER, json.dumps(cfg)],
            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
            stderr=subprocess.PIPE, text=True))
    try:
        names = [name for _, name, _ in specs]
        deadline = time.monotonic() + TIMEOUT_S
        while not all((sync_dir / f"ready.{name}").exists()
                      for name in names):
            assert time.monotonic() < deadline, "workers never got ready"
            assert all(w.poll() is None for w in workers), (
                "a worker died before the barrier")
            time.sleep(0.01)
        (sync_dir / "go").touch()
        for worker in workers:
            _, stderr = worker.communicate(timeout=60)
            assert worker.returncode == 0, stderr
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
    holds = collections.defaultdict(list)
    for name in names:
        with open(sync_dir / f"{name}.jsonl") as handle:
            for line in handle:
                record = json.loads(line)
                holds[record["lock"]].append(record)
    return holds


def assert_raced(holds, lock, workers):
    """`lock` was contended between `workers` and never held twice at once."""
    records = sorted(holds[lock], key=lambda r: r["t_acquired"])
    assert {r["worker"] for r in records} == set(workers)
    # Mutual exclusion: the recorded holds lie inside the real ones, so
    # they must not overlap.
    for before, after in zip(records, records[1:]):
        assert before["t_released"] <= after["t_acquired"], (before, after)
    # The race: a worker started trying while another held the lock, was
    # refused by the kernel, and got it only after that holder let go.
    raced = [
        (waiter, holder) for waiter in records for holder in records
        if waiter["worker"] != holder["worker"] and waiter["refused"]
        and holder["t_acquired"] < waiter["t_acquired"]
        and waiter["t_try"] < holder["t_released"]]
    assert raced, f"no worker ever waited for {lock}: {records}"
    # No first hold gave up waiting for a refusal (that would mean the
    # workers ran one after the other there).
    assert all(r["saw_refusal"] is not False for r in records), records


def test_two_processes_staging_concurrently(tmp_path):
    serving_root = str(tmp_path / "serving")
    count = 6
    # alpha and beta race on the same model; gamma stages another model,
    # racing on the shared models.config only.
    holds = run_workers(
        tmp_path, serving_root,
        [("taxi", "alpha", count), ("taxi", "beta", count),
         ("fraud", "gamma", count)],
        raced=[MODEL_LOCK, CONFIG_LOCK])
    assert_raced(holds, MODEL_LOCK, ["alpha", "beta"])
    assert_raced(holds, CONFIG_LOCK, ["alpha", "beta", "gamma"])
    assert len(holds[MODEL_LOCK]) == 2 * count

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
    assert status.in_sync, status.problems
    assert (status.stable_version, status.canary_version) == (
        1, 2 * count)
    # Neither model's models.config entry was lost to the other's writes.
    config = tfserving.read_config(tfserving.config_path(serving_root))
    assert sorted(c.name for c in config.model_config_list.config) == [
        "fraud", "taxi"]
    fraud = control.RolloutController(serving_root, "fraud").status()
    assert fraud.in_sync, fraud.problems
    assert (fraud.stable_version, fraud.canary_version) == (1, count)


# Widens the read-modify-write window of models.config so that, without the
# serving-root config lock, concurrent writers would lose each other's
# entries.
SLOW_CONFIG_PRELUDE = """
import time
from rollout import tfserving
_read = tfserving.read_config
def slow_read(path):
    config = _read(path)
    time.sleep(0.05)
    return config
tfserving.read_config = slow_read
"""


def test_models_sharing_models_config_do_not_lose_entries(tmp_path):
    serving_root = str(tmp_path / "serving")
    models = [f"model{i}" for i in range(4)]
    holds = run_workers(
        tmp_path, serving_root, [(model, model, 2) for model in models],
        raced=[CONFIG_LOCK], prelude=SLOW_CONFIG_PRELUDE)
    assert_raced(holds, CONFIG_LOCK, models)
    config = tfserving.read_config(tfserving.config_path(serving_root))
    assert sorted(c.name for c in config.model_config_list.config) == models
    for model in models:
        status = control.RolloutController(serving_root, model).status()
        assert status.in_sync, status.problems
