"""Real processes killed with SIGKILL in the middle of rollout commands.

Each test runs a command in a child Python process whose code is patched to
write a marker file and sleep at one chosen point; the parent waits for the
marker, kills the child with SIGKILL (no cleanup handler, no `finally`, no
lock release runs) and checks what a crash there leaves on disk, that
`tfx-canary rollout status` tells the truth about it and that
`tfx-canary rollout repair` plus the next command recover from it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from common import locations
from rollout import control
from rollout import fsutil
from rollout import staging
from rollout import state as state_mod

from tests.rollout.conftest import snapshot_tree

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PREFIX = "gs://bucket/serving"
MODEL = "taxi"
MARKER_TIMEOUT_S = 20
MB = 1 << 20

# argv: serving_root command point marker [args...]
#   command: stage SRC KEEP | promote | set-traffic PERCENT
#   point:   where to stop (see the `if point == ...` branches)
CHILD = r"""
import json, os, shutil, sys, time

from rollout import control, kserve, state as state_mod, tfserving

serving_root, command, point, marker = sys.argv[1:5]
args = sys.argv[5:]


def hang(**info):
    # Say where we are (atomically: the parent polls the marker), then wait
    # for the SIGKILL; the sleep is bounded so a broken test cannot leave a
    # process behind for long.
    info["pid"] = os.getpid()
    with open(marker + ".part", "w") as handle:
        json.dump(info, handle)
    os.replace(marker + ".part", marker)
    time.sleep(60)
    sys.exit("hang(): not killed within 60 s")


if point == "copy":
    # copy_tree_durable -> shutil.copytree: copy files one by one through
    # copy2 and stop after the third, with the copy half done.
    real_copytree = shutil.copytree
    copied = []

    def copytree(src, dst, *rest, **kwargs):
        if rest:  # copytree's own recursion into a subdirectory
            return real_copytree(src, dst, *rest, **kwargs)
        def copy_file(src_file, dst_file):
            result = shutil.copy2(src_file, dst_file)
            copied.append(os.path.relpath(dst_file, dst))
            if len(copied) == 3:
                hang(point=point, temp_dir=dst, copied=copied)
            return result
        kwargs["copy_function"] = copy_file
        return real_copytree(src, dst, **kwargs)

    shutil.copytree = copytree
elif point == "publish":
    # The version dir has been renamed into place; rollout.json not written.
    def save_state(path, state):
        hang(point=point, version=state.last_version)
    state_mod.save_state = save_state
elif point in ("state_replace", "config_replace"):
    # Inside atomic_write_bytes: temp file written and fsynced, not renamed.
    target = os.path.join(serving_root, MODEL_REL[point])
    real_replace = os.replace
    def replace(src, dst, *rest, **kwargs):
        if os.path.abspath(dst) == target:
            hang(point=point, temp_file=os.path.abspath(src))
        return real_replace(src, dst, *rest, **kwargs)
    os.replace = replace
elif point == "models_config":
    # rollout.json saved, the config lock taken, models.config not written.
    def write_model_entry(serving_root, state, base_path):
        hang(point=point)
    tfserving.write_model_entry = write_model_entry
elif point == "manifest":
    # rollout.json and models.config written, the KServe manifest not.
    def write_manifest(path, manifest):
        hang(point=point)
    kserve.write_manifest = write_manifest
elif point == "prune":
    # The old versions are renamed to .deleting-*; stop half-way through
    # deleting the first one.
    real_rmtree = shutil.rmtree
    def rmtree(path, *rest, **kwargs):
        if os.path.basename(path).startswith(".deleting-"):
            os.remove(os.path.join(path, "saved_model.pb"))
            hang(point=point, deleting=path)
        return real_rmtree(path, *rest, **kwargs)
    shutil.rmtree = rmtree
else:
    sys.exit(f"unknown point {point!r}")

controller = control.RolloutController(
    serving_root, "taxi", storage_uri_prefix="gs://bucket/serving")
if command == "stage":
    controller.stage(args[0], canary_percent=10, keep=int(args[1]))
elif command == "promote":
    controller.promote(reason="killed while promoting")
elif command == "set-traffic":
    controller.set_traffic(int(args[0]), reason="killed while shifting")
else:
    sys.exit(f"unknown command {command!r}")
sys.exit(f"{command} finished without reaching {point!r}")
""".replace("MODEL_REL[point]", repr({
    "state_replace": os.path.join(MODEL, "rollout.json"),
    "config_replace": "models.config"}) + "[point]")


# ---------------------------------------------------------------- helpers

def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def kill_at(tmp_path, serving_root, command, point, *args):
    """Run `command` in a child, SIGKILL it at `point`; return the marker.

    Fails unless the child reached `point` (its marker exists) and died from
    the SIGKILL (exit status -9).
    """
    marker = tmp_path / f"marker-{point}"
    log = tmp_path / f"child-{point}.log"
    with open(log, "wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, serving_root, command, point,
             str(marker), *map(str, args)],
            cwd=tmp_path, env=_env(), stdout=stderr, stderr=stderr)
    try:
        deadline = time.monotonic() + MARKER_TIMEOUT_S
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"child exited {child.returncode} before "
                            f"reaching {point!r}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"child did not reach {point!r} within "
                            f"{MARKER_TIMEOUT_S}s:\n{log.read_text()}")
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        returncode = child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert returncode == -signal.SIGKILL, log.read_text()
    info = json.loads(marker.read_text())
    assert info["point"] == point and info["pid"] == child.pid
    return info


def cli(tmp_path, *argv):
    """Run `tfx-canary ARGV...` as a real process; return (rc, output).

    The cwd is tmp_path, so the default ./workspace/metadata.sqlite does not
    exist and nothing is audited; the timeout bounds any lock wait.
    """
    done = subprocess.run(
        [sys.executable, "-m", "runners.cli", *argv], cwd=tmp_path,
        env=_env(), capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def status(tmp_path, serving_root):
    rc, out = cli(tmp_path, "rollout", "status", "--serving-root",
                  serving_root, "--json")
    assert rc == 0, out
    return json.loads(out)


def repair(tmp_path, serving_root):
    rc, out = cli(tmp_path, "rollout", "repair", "--serving-root",
                  serving_root)
    assert rc == 0, out
    return out


def assert_died_holding(lock_path, pid):
    """The lock file still names the killed child (it never released it)."""
    with open(lock_path) as handle:
        assert handle.read() == f"pid {pid} on {socket.gethostname()}\n"


def assert_lock_free(lock_path):
    """The kernel dropped the dead child's flock: it is ours at once."""
    started = time.monotonic()
    with fsutil.file_lock(lock_path, timeout=2):
        pass
    assert time.monotonic() - started < 2


def hidden_entries(directory):
    """Names TF Serving ignores (leading '.'), but for the lock files."""
    return sorted(name for name in os.listdir(directory)
                  if name.startswith(".")
                  and name not in (control.LOCK_FILE,
                                   control.CONFIG_LOCK_FILE))


def durable_view(serving_root):
    """snapshot_tree without the lock files (the holder line changes)."""
    return {path: data for path, data in snapshot_tree(serving_root).items()
            if os.path.basename(path) not in (control.LOCK_FILE,
                                              control.CONFIG_LOCK_FILE)}


def make_big_model(tmp_path, tag, shards=4, shard_bytes=MB):
    """A fake SavedModel of a few MB, so copying it takes measurable time."""
    path = tmp_path / "exports" / tag
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"fake graph " + tag.encode())
    (path / "variables" / "variables.index").write_bytes(tag.encode())
    for shard in range(shards):
        name = f"variables.data-{shard:05d}-of-{shards:05d}"
        (path / "variables" / name).write_bytes(os.urandom(shard_bytes))
    return str(path)


def tree_files(root):
    return {path: data for path, data in snapshot_tree(root).items()
            if data != "<dir>"}


def controller(serving_root):
    # A short lock timeout: a lock left by the dead child would fail fast.
    return control.RolloutController(
        serving_root, MODEL, storage_uri_prefix=PREFIX, lock_timeout=5)


# ---------------------------------------------------------------- stage

@pytest.mark.parametrize("existing", [0, 1], ids=["first-stage",
                                                  "canary-over-stable"])
def test_kill_during_stage_copy(tmp_path, existing):
    serving_root = str(tmp_path / "serving")
    model_dir = os.path.join(serving_root, MODEL)
    state_path = os.path.join(model_dir, locations.ROLLOUT_FILE)
    for i in range(existing):
        controller(serving_root).stage(make_big_model(tmp_path, f"old{i}"))
    # Before the first stage there is nothing; stage() creates the model
    # dir (and its lock file) before anything else.
    before = durable_view(serving_root) if existing else {MODEL: "<dir>"}
    src = make_big_model(tmp_path, "killed")

    info = kill_at(tmp_path, serving_root, "stage", "copy", src, 5)

    # The copy really was half done: 3 of the 6 files, complete, no others.
    temp_dir = info["temp_dir"]
    version = existing + 1
    assert os.path.basename(temp_dir) == (
        f"{staging.STAGING_PREFIX}{version}-{info['pid']}")
    copied = tree_files(temp_dir)
    assert sorted(copied) == sorted(info["copied"])
    source = tree_files(src)
    assert len(copied) == 3 < len(source) == 6
    assert all(copied[path] == source[path] for path in copied)
    assert_died_holding(os.path.join(model_dir, control.LOCK_FILE),
                        info["pid"])

    # Nothing visible changed: rollout.json (absent, or byte-identical),
    # models.config and the manifest are as before, no new version dir;
    # the only trace is the hidden staging dir TF Serving ignores.
    assert staging.list_versions(serving_root, MODEL) == list(
        range(1, existing + 1))
    assert hidden_entries(model_dir) == [os.path.basename(temp_dir)]
    after = durable_view(serving_root)
    leftover = os.path.relpath(temp_dir, serving_root)
    assert {path: data for path, data in after.items()
            if not path.startswith(leftover)} == before
    assert os.path.exists(state_path) == bool(existing)
    status_now = status(tmp_path, serving_root)
    assert status_now["in_sync"], status_now["problems"]
    assert status_now["staged_versions"] == list(range(1, existing + 1))
    assert_lock_free(os.path.join(model_dir, control.LOCK_FILE))

    out = repair(tmp_path, serving_root)
    assert f"removed leftover {temp_dir}" in out
    assert not os.path.exists(temp_dir)
    assert hidden_entries(model_dir) == []
    status_now = status(tmp_path, serving_root)
    assert status_now["in_sync"], status_now["problems"]

    # The number the dead child picked was never published, so the next
    # stage may take it; it succeeds without waiting for any lock.
    result = controller(serving_root).stage(make_big_model(tmp_path, "next"))
    assert result.version == version
    assert getattr(result.after, "stable" if not existing else "canary") == version
    status_now = status(tmp_path, serving_root)
    assert status_now["in_sync"], status_now["problems"]
    assert status_now["staged_versions"] == list(range(1, version + 1))
    assert tree_files(os.path.join(model_dir, str(version))) == tree_files(
        os.path.join(tmp_path, "exports", "next"))


def test_kill_after_publishing_before_rollout_json(tmp_path):
    """The version dir is renamed into place but rollout.json is not saved.

    The orphan is a complete copy (the rename is atomic); rollout.json does
    not mention it, so nothing serves it, and its number is never reused.
    """
    serving_root = str(tmp_path / "serving")
    model_dir = os.path.join(serving_root, MODEL)
    controller(serving_root).stage(make_big_model(tmp_path, "old"))
    before = durable_view(serving_root)
    src = make_big_model(tmp_path, "orphan", shards=1)

    info = kill_at(tmp_path, serving_root, "stage", "publish", src, 5)

    assert info["version"] == 2
    assert staging.list_versions(serving_root, MODEL) == [1, 2]
    assert tree_files(os.path.join(model_dir, "2")) == tree_files(src)
    assert hidden_entries(model_dir) == []
    after = durable_view(serving_root)
    assert {path: data for path, data in after.items()
            if not path.startswith(os.path.join(MODEL, "2"))} == before
    status_now = status(tmp_path, serving_root)
    assert status_now["in_sync"], status_now["problems"]
    assert (status_now["stable_version"], status_now["canary_version"],
            status_now["last_version"]) == (1, None, 1)

    repair(tmp_path, serving_root)
    result = controller(serving_root).stage(make_big_model(tmp_path, "next"))
    assert result.version == 3
    status_now = status(tmp_path, serving_root)
    assert status_now["in_sync"], status_now["problems"]
    assert (status_now["stable_version"], status_now["canary_version"]) == (
        1, 3)


def test_kill_while_pruning(tmp_path):
    serving_root = str(tmp_path / "serving")
    model_dir = os.path.join(serving_root, MODEL)
    for tag in ("v1", "v2", "v3"):
        controller(serving_root).stage(
            make_big_model(tmp_path, tag, shards=1), keep=100)
    src = make_big_model(tmp_path, "v4", shards=1)

    # keep=1 prunes v2 and v3 (v1 is stable, v4 the new canary).
    info = kill_at(tmp_path, serving_root, "stage", "prune", src, 1)

    assert os.path.basename(info["deleting"]) == (
        f"{staging.DELETING_PREFIX}2-{info['pid']}")
    leftovers = [f"{staging.DELETING_PREFIX}{v}-{info['pid']}"
                 for v in (2, 3)]
    assert hidden_entries(model_dir) == leftovers
    assert not os.path.exists(os.path.join(info["deleting"],
                                           "saved_model.pb"))
    # Pruning runs after rollout.json and the derived files are written.
    assert staging.list_versions(serving_root, MODEL) == [1, 4]
    status_now = status(tmp_path, serving_root)
    assert status_now["in_sync"], status_now["problems"]
    assert (status_now["stable_version"], status_now["canary_version"]) == (
        1, 4)

    out = repair(tmp_path, serving_root)
    for name in leftovers:
        assert f"removed leftover {os.path.join(model_dir, name)}" in out
    assert hidden_entries(model_dir) == []
    for version, tag in ((1, "v1"), (4, "v4")):
        assert tree_files(os.path.join(model_dir, str(version))) == (
            tree_files(os.path.join(tmp_path, "exports", tag)))
    status_now = status(tmp_path, serving_root)
    assert status_now["in_sync"], status_now["problems"]
    assert controller(serving_root).promote().after.stable == 4


# ---------------------------------------------------------------- transitions

# (command, its args, kill point, whether rollout.json holds the new state
# at that point, derived files left stale, leftover temp file in)
TRANSITIONS = [
    pytest.param("promote", [], "state_replace", False, False, "model_dir",
                 id="promote-before-rollout-json-rename"),
    pytest.param("promote", [], "models_config", True, True, None,
                 id="promote-before-models-config"),
    pytest.param("promote", [], "config_replace", True, True, "serving_root",
                 id="promote-before-models-config-rename"),
    pytest.param("promote", [], "manifest", True, True, None,
                 id="promote-before-manifest"),
    pytest.param("set-traffic", [50], "models_config", True, True, None,
                 id="set-traffic-before-models-config"),
]


@pytest.mark.parametrize(
    "command,args,point,saved,stale,leftover_in", TRANSITIONS)
def test_kill_during_transition(tmp_path, command, args, point, saved, stale,
                                leftover_in):
    serving_root = str(tmp_path / "serving")
    model_dir = os.path.join(serving_root, MODEL)
    state_path = os.path.join(model_dir, locations.ROLLOUT_FILE)
    backup_path = state_path + state_mod.BACKUP_SUFFIX
    controller(serving_root).stage(make_big_model(tmp_path, "v1", shards=1))
    controller(serving_root).stage(make_big_model(tmp_path, "v2", shards=1))
    with open(state_path, "rb") as handle:
        old_bytes = handle.read()
    old = state_mod.load_state(state_path, MODEL)
    before = durable_view(serving_root)

    info = kill_at(tmp_path, serving_root, command, point, *args)

    assert_died_holding(os.path.join(model_dir, control.LOCK_FILE),
                        info["pid"])
    if point == "models_config":
        assert_died_holding(
            os.path.join(serving_root, control.CONFIG_LOCK_FILE),
            info["pid"])
    # rollout.json is whole: the old bytes, or a valid new state whose
    # history is the old one plus this command's event.
    current = state_mod.load_state(state_path, MODEL)
    if not saved:
        with open(state_path, "rb") as handle:
            assert handle.read() == old_bytes
    else:
        assert current.history[:-1] == old.history
        if command == "promote":
            assert (current.phase, current.stable_version,
                    current.canary_version) == ("stable", 2, None)
            assert current.last_event["event"] == "promoted"
        else:
            assert (current.phase, current.canary_traffic_percent) == (
                "canary", 50)
            assert current.last_event["event"] == "traffic_changed"
    # The backup is the complete previous state either way.
    with open(backup_path, "rb") as handle:
        assert handle.read() == old_bytes
    state_mod.load_state(backup_path, MODEL)
    temp_files = []
    if leftover_in:
        temp_files = [info["temp_file"]]
        directory = model_dir if leftover_in == "model_dir" else serving_root
        assert os.path.dirname(info["temp_file"]) == directory
        assert os.path.isfile(info["temp_file"])
    if not saved:
        assert {path: data for path, data in durable_view(serving_root).items()
                if os.path.join(serving_root, path) not in temp_files
                and path != os.path.join(MODEL, os.path.basename(
                    backup_path))} == {
            path: data for path, data in before.items()
            if path != os.path.join(MODEL, os.path.basename(backup_path))}

    rc, out = cli(tmp_path, "rollout", "status", "--serving-root",
                  serving_root)
    assert rc == 0, out
    if stale:
        assert "OUT OF SYNC" in out, out
        assert "run `tfx-canary rollout repair` to regenerate it" in out
    else:
        assert "in sync with rollout.json" in out, out
    assert_lock_free(os.path.join(model_dir, control.LOCK_FILE))
    assert_lock_free(os.path.join(serving_root, control.CONFIG_LOCK_FILE))

    out = repair(tmp_path, serving_root)
    for path in temp_files:
        assert not os.path.exists(path), f"repair left {path}"
        assert f"removed leftover {path}" in out
    assert hidden_entries(model_dir) == []
    assert hidden_entries(serving_root) == []
    rc, out = cli(tmp_path, "rollout", "status", "--serving-root",
                  serving_root)
    assert rc == 0 and "in sync with rollout.json" in out, out
    assert status(tmp_path, serving_root)["in_sync"]

    # The next command takes the lock at once and works on the state the
    # crash left.
    after_repair = controller(serving_root)
    if current.canary_version is None:
        result = after_repair.rollback(to_version=1)
    else:
        result = after_repair.promote()
    assert result.after.stable in (1, 2)
    status_now = status(tmp_path, serving_root)
    assert status_now["in_sync"], status_now["problems"]


def test_repair_removes_only_crash_temp_files(tmp_path):
    """The temp-file clean-up matches atomic_write_bytes' names, no more."""
    serving_root = str(tmp_path / "serving")
    model_dir = os.path.join(serving_root, MODEL)
    controller(serving_root).stage(make_big_model(tmp_path, "v1", shards=1))
    garbage = [
        os.path.join(model_dir, ".rollout.json.4242.0123abcd.tmp"),
        os.path.join(model_dir, ".rollout.json.bak.4242.0123abcd.tmp"),
        os.path.join(model_dir, "kserve",
                     ".inferenceservice.yaml.7.deadbeef.tmp"),
        os.path.join(serving_root, ".models.config.99.cafef00d.tmp"),
    ]
    kept = [
        os.path.join(model_dir, ".notes.tmp"),
        os.path.join(model_dir, "rollout.json.4242.0123abcd.tmp"),
        os.path.join(serving_root, ".other.config.99.cafef00d.tmp"),
        os.path.join(serving_root, ".models.config.99.nothex!!.tmp"),
    ]
    for path in garbage + kept:
        with open(path, "w") as handle:
            handle.write("x")
    out = repair(tmp_path, serving_root)
    for path in garbage:
        assert not os.path.exists(path)
        assert f"removed leftover {path}" in out
    for path in kept:
        assert os.path.exists(path), path
    assert status(tmp_path, serving_root)["in_sync"]
