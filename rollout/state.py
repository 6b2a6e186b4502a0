"""Rollout state (`rollout.json`) and its pure transition functions.

`rollout.json` is the single source of truth for what should be served;
models.config and the KServe manifest are derived from it. This module is its
one validated reader (`load_state`, for local paths and object-store URIs
alike) and writer (`save_state`); its path is common.locations.rollout_json_path.
Transitions never mutate their input: they return a new RolloutState whose
history has one more event, so a failed command cannot leave a half-updated
state in memory.
"""

import dataclasses
import datetime
import getpass
import json
import math
import os
import socket
import uuid

from common import storage
from rollout import fsutil
from rollout.errors import RolloutError

FORMAT_VERSION = 1
PHASES = ("empty", "stable", "canary")
# The traffic a newly staged canary starts with, unless told otherwise
# (PipelineConfig.canary_traffic_percent, `tfx-canary run --canary-percent`).
DEFAULT_CANARY_PERCENT = 10
BACKUP_SUFFIX = ".bak"

_FIELDS = {
    "format_version", "model_name", "phase", "stable_version",
    "canary_version", "canary_traffic_percent", "last_version", "history",
}


@dataclasses.dataclass(frozen=True)
class RolloutState:
    """What is served for one model: stable, optional canary, traffic split.

    phase is "empty" (nothing staged yet), "stable" (only stable serves) or
    "canary" (a canary gets canary_traffic_percent of traffic).
    last_version is the highest version ever staged; history is append-only.
    """

    model_name: str
    stable_version: int | None = None
    canary_version: int | None = None
    canary_traffic_percent: int = 0
    phase: str = "empty"
    last_version: int = 0
    history: list = dataclasses.field(default_factory=list)

    @classmethod
    def empty(cls, model_name):
        """Return the state of a model that has never been staged."""
        return cls(model_name=model_name)

    @property
    def last_event(self):
        """The most recent history event, or None."""
        return self.history[-1] if self.history else None

    def versions(self):
        """Return the set of versions this state serves (stable, canary)."""
        return {v for v in (self.stable_version, self.canary_version)
                if v is not None}

    def to_dict(self):
        """Return the JSON-ready representation stored in rollout.json."""
        return {
            "format_version": FORMAT_VERSION,
            "model_name": self.model_name,
            "phase": self.phase,
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
            "canary_traffic_percent": self.canary_traffic_percent,
            "last_version": self.last_version,
            "history": [dict(event) for event in self.history],
        }

    @classmethod
    def from_dict(cls, data, source="rollout.json", model_name=None):
        """Build a state from parsed JSON, validating every field strictly.

        `source` names the file in error messages.
        """
        fix = f"fix it by hand or restore it from {_backup_name(source)}"
        if not isinstance(data, dict):
            raise RolloutError(
                f"{source} must contain a JSON object, found "
                f"{type(data).__name__}: {fix}")
        missing = sorted(_FIELDS - data.keys())
        if missing:
            raise RolloutError(
                f"{source} is missing field(s) {', '.join(missing)}: {fix}")
        unknown = sorted(data.keys() - _FIELDS)
        if unknown:
            raise RolloutError(
                f"{source} has unknown field(s) {', '.join(unknown)} (typo, "
                f"or written by a newer tfx-canary?): {fix}")
        if data["format_version"] != FORMAT_VERSION:
            raise RolloutError(
                f"{source}: field 'format_version' is "
                f"{data['format_version']!r} but this tfx-canary reads "
                f"version {FORMAT_VERSION}: upgrade tfx-canary or {fix}")

        def field(name, kinds, allow_none=False):
            value = data[name]
            if value is None and allow_none:
                return None
            # bool is a subclass of int; `true` is never a valid version.
            if isinstance(value, bool) or not isinstance(value, kinds):
                kind = " or ".join(k.__name__ for k in kinds)
                if allow_none:
                    kind += " or null"
                raise RolloutError(
                    f"{source}: field '{name}' must be {kind}, got "
                    f"{value!r}: {fix}")
            return value

        state = cls(
            model_name=field("model_name", (str,)),
            phase=field("phase", (str,)),
            stable_version=field("stable_version", (int,), allow_none=True),
            canary_version=field("canary_version", (int,), allow_none=True),
            canary_traffic_percent=field("canary_traffic_percent", (int,)),
            last_version=field("last_version", (int,)),
            history=list(field("history", (list,))),
        )
        if model_name is not None and state.model_name != model_name:
            raise RolloutError(
                f"{source} belongs to model {state.model_name!r}, not "
                f"{model_name!r}: check --model-name / --serving-root")
        for index, event in enumerate(state.history):
            if (not isinstance(event, dict)
                    or not isinstance(event.get("event"), str)
                    or not isinstance(event.get("at"), str)):
                raise RolloutError(
                    f"{source}: history[{index}] must be an object with "
                    f"string fields 'event' and 'at': {fix}")
        problem = state.inconsistency()
        if problem:
            raise RolloutError(f"{source}: {problem}: {fix}")
        return state

    def inconsistency(self):
        """Return why this state is impossible, or None if it is consistent."""
        stable, canary = self.stable_version, self.canary_version
        traffic = self.canary_traffic_percent
        if self.phase not in PHASES:
            return (f"field 'phase' must be one of {', '.join(PHASES)}, "
                    f"got {self.phase!r}")
        for name, value in (("stable_version", stable),
                            ("canary_version", canary),
                            ("last_version", self.last_version)):
            if value is not None and value < (0 if name == "last_version"
                                              else 1):
                return f"field '{name}' must be positive, got {value}"
        if not 0 <= traffic <= 100:
            return (f"field 'canary_traffic_percent' must be 0-100, got "
                    f"{traffic}")
        if self.phase == "empty" and (stable is not None
                                      or canary is not None):
            return ("phase is 'empty' but stable_version/canary_version are "
                    "set")
        if self.phase != "empty" and stable is None:
            return f"phase is {self.phase!r} but stable_version is null"
        if self.phase == "canary" and canary is None:
            return "phase is 'canary' but canary_version is null"
        if self.phase != "canary" and canary is not None:
            return (f"phase is {self.phase!r} but canary_version is "
                    f"{canary} (a canary requires phase 'canary')")
        if self.phase != "canary" and traffic != 0:
            return (f"phase is {self.phase!r} but canary_traffic_percent is "
                    f"{traffic} (must be 0 without a canary)")
        if canary is not None and canary == stable:
            return f"canary_version equals stable_version ({canary})"
        highest = max(self.versions(), default=0)
        if self.last_version < highest:
            return (f"field 'last_version' ({self.last_version}) is lower "
                    f"than a served version ({highest})")
        return None


def _backup_name(source):
    return os.path.basename(source) + BACKUP_SUFFIX


def _read_if_present(path):
    """The file's bytes, or None when it does not exist."""
    if storage.is_remote(path):   # gs://...: the pipeline's serving root on Kubeflow.
        return storage.read_bytes(path) if storage.exists(path) else None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def load_state(path, model_name):
    """Read and validate rollout.json (a local path or a fileio URI).

    An absent file means a model never staged.
    """
    path = os.fspath(path)
    raw = _read_if_present(path)
    if raw is None:
        return RolloutState.empty(model_name)
    backup = _backup_name(path)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RolloutError(
            f"{path} is not UTF-8 text (byte {exc.start}): restore it from "
            f"{backup} or delete it to start over") from exc
    except json.JSONDecodeError as exc:
        raise RolloutError(
            f"{path} is not valid JSON (line {exc.lineno}): restore it from "
            f"{backup} or delete it to start over") from exc
    return RolloutState.from_dict(data, source=path, model_name=model_name)


def dumps_state(state):
    """Serialise a state exactly as save_state writes it."""
    problem = state.inconsistency()
    if problem:
        raise RolloutError(
            f"refusing to save an inconsistent rollout state for "
            f"{state.model_name}: {problem}")
    return json.dumps(state.to_dict(), indent=2, allow_nan=False) + "\n"


def save_state(path, state):
    """Atomically write rollout.json, keeping the old file as rollout.json.bak.

    The backup is written (atomically) before the new file, so a crash in
    between leaves two identical good copies rather than none.
    """
    text = dumps_state(state)
    try:
        with open(path, "rb") as handle:
            previous = handle.read()
    except FileNotFoundError:
        previous = None
    if previous is not None:
        fsutil.atomic_write_bytes(path + BACKUP_SUFFIX, previous)
    fsutil.atomic_write_text(path, text)


# ---------------------------------------------------------------- transitions

def default_actor():
    """Return `user@host` for the audit trail."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry, e.g. arbitrary uid in a container
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def check_percent(percent, what="traffic percent"):
    """Return `percent` if it is an int in 0..100, else raise RolloutError."""
    if (isinstance(percent, bool) or not isinstance(percent, int)
            or not 0 <= percent <= 100):
        raise RolloutError(
            f"{what} must be a whole number from 0 to 100, got {percent!r}")
    return percent


def check_version(version, what="version"):
    """Return `version` if it is a positive int, else raise RolloutError."""
    if (isinstance(version, bool) or not isinstance(version, int)
            or version < 1):
        raise RolloutError(
            f"{what} must be a positive whole number, got {version!r}")
    return version


def snapshot_metrics(metrics):
    """Return a JSON-safe deep copy of `metrics` (None → {}).

    NumPy scalars become Python numbers and NaN/inf become strings, because
    evaluator metrics often contain both and JSON allows neither.
    """
    def convert(value, where):
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, dict):
            return {str(k): convert(v, f"{where}.{k}")
                    for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if hasattr(value, "item"):  # NumPy scalar / 0-d array
            return convert(value.item(), where)
        raise RolloutError(
            f"metrics{where} has a {type(value).__name__} value, which "
            f"cannot be stored in rollout.json: pass numbers or strings")

    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise RolloutError(
            f"metrics must be a dict of name → value, got "
            f"{type(metrics).__name__}")
    return convert(metrics, "")


def _snapshot(state):
    return {"stable": state.stable_version, "canary": state.canary_version,
            "traffic": state.canary_traffic_percent}


def _utc_now(now):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now.tzinfo is None:
        raise RolloutError("event time must be timezone-aware (UTC)")
    now = now.astimezone(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _transition(state, event, *, actor, reason, metrics, now, version=None,
                extra=None, **changes):
    """Return a copy of `state` with `changes` and one new history event."""
    if reason is None:
        reason = ""
    if not isinstance(reason, str):
        raise RolloutError(f"reason must be text, got {reason!r}")
    new_state = dataclasses.replace(state, **changes)
    record = {
        # A unique id lets the MLMD audit trail be back-filled idempotently
        # after a crash between writing rollout.json and recording in MLMD.
        "id": uuid.uuid4().hex,
        "event": event,
        "at": _utc_now(now),
        "actor": actor or default_actor(),
        "reason": reason,
        "from": _snapshot(state),
        "to": _snapshot(new_state),
    }
    if version is not None:
        record["version"] = version
    record.update(extra or {})
    record["metrics"] = snapshot_metrics(metrics)
    new_state = dataclasses.replace(
        new_state, history=[*state.history, record])
    problem = new_state.inconsistency()
    if problem:  # a bug in a transition, never user input
        raise RolloutError(
            f"internal error: {event} would produce an inconsistent state "
            f"({problem}); nothing was changed")
    return new_state


def stage(state, version, canary_percent, *, actor=None, reason="",
          metrics=None, now=None):
    """Register newly staged `version`.

    The first push ever becomes stable directly ("staged_stable"); later ones
    become the canary at `canary_percent` ("staged_canary"), replacing any
    live canary (recorded as "replaced_canary").
    """
    check_version(version)
    check_percent(canary_percent, "canary traffic percent")
    if version <= max(state.last_version, *state.versions(), 0):
        raise RolloutError(
            f"version {version} is not newer than the last staged version "
            f"{state.last_version} of {state.model_name}: versions only "
            f"grow; stage it again to get a new number")
    common = dict(actor=actor, reason=reason, metrics=metrics, now=now,
                  version=version, last_version=version)
    if state.stable_version is None:
        return _transition(
            state, "staged_stable", stable_version=version,
            canary_version=None, canary_traffic_percent=0, phase="stable",
            **common)
    extra = {}
    if state.canary_version is not None:
        extra["replaced_canary"] = state.canary_version
    return _transition(
        state, "staged_canary", canary_version=version,
        canary_traffic_percent=canary_percent, phase="canary", extra=extra,
        **common)


def _no_canary(state, command):
    if state.phase == "empty":
        return RolloutError(
            f"{command}: model {state.model_name} has nothing staged yet: "
            f"push a model through the pipeline first")
    return RolloutError(
        f"{command}: model {state.model_name} has no canary (stable is "
        f"version {state.stable_version}): wait for the pipeline to stage a "
        f"new model as canary")


def set_traffic(state, percent, *, actor=None, reason="", metrics=None,
                now=None):
    """Send `percent` of traffic to the live canary ("traffic_changed")."""
    check_percent(percent, "canary traffic percent")
    if state.canary_version is None:
        raise _no_canary(state, "set-traffic")
    return _transition(
        state, "traffic_changed", actor=actor, reason=reason,
        metrics=metrics, now=now, version=state.canary_version,
        canary_traffic_percent=percent)


def promote(state, *, actor=None, reason="", metrics=None, now=None):
    """Make the canary the new stable with all traffic ("promoted")."""
    if state.canary_version is None:
        raise _no_canary(state, "promote")
    return _transition(
        state, "promoted", actor=actor, reason=reason, metrics=metrics,
        now=now, version=state.canary_version,
        stable_version=state.canary_version, canary_version=None,
        canary_traffic_percent=0, phase="stable")


def _versions_text(versions):
    versions = sorted(versions)
    return ", ".join(map(str, versions)) if versions else "none"


def rollback(state, to_version=None, staged_versions=(), *, actor=None,
             reason="", metrics=None, now=None):
    """Withdraw the canary, or with `to_version` serve that staged version.

    Without `to_version` the canary is dropped and stable keeps 100%.
    With it, `to_version` (which must be in `staged_versions`) becomes stable
    and any canary is dropped. Both record "rolled_back".
    """
    staged = sorted(set(staged_versions))
    common = dict(actor=actor, reason=reason, metrics=metrics, now=now)
    if to_version is None:
        if state.canary_version is None:
            where = ("nothing is staged" if state.phase == "empty"
                     else f"stable is version {state.stable_version}")
            raise RolloutError(
                f"nothing to roll back: model {state.model_name} has no "
                f"canary ({where}); to serve another version run "
                f"`tfx-canary rollout rollback --to VERSION` (staged "
                f"versions: {_versions_text(staged)})")
        return _transition(
            state, "rolled_back", version=state.canary_version,
            canary_version=None, canary_traffic_percent=0, phase="stable",
            **common)
    check_version(to_version, "rollback target version")
    if to_version not in staged:
        raise RolloutError(
            f"version {to_version} of {state.model_name} is not staged: "
            f"choose one of the staged versions ({_versions_text(staged)})")
    if to_version == state.stable_version and state.canary_version is None:
        raise RolloutError(
            f"version {to_version} is already the stable version of "
            f"{state.model_name} and no canary is live: nothing to do")
    return _transition(
        state, "rolled_back", version=to_version, stable_version=to_version,
        canary_version=None, canary_traffic_percent=0, phase="stable",
        last_version=max(state.last_version, to_version), **common)


def record_not_pushed(state, reason, metrics=None, *, actor=None, now=None):
    """Record that a model was not blessed ("not_blessed"); nothing else."""
    return _transition(state, "not_blessed", actor=actor, reason=reason,
                       metrics=metrics, now=now)
