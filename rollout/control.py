"""RolloutController: the API behind `tfx-canary rollout` and CanaryPusher.

Every mutating call runs under the model lock and in this order:
load rollout.json → compute the new state (bad input raises here, before
anything is written) → check the referenced version dirs exist → write
rollout.json (the source of truth) → models.config → KServe manifest →
prune (stage only) → record in ML Metadata. Each write is atomic, so a crash
leaves at worst derived files that lag behind rollout.json; `status()`
reports that and `repair()` (or the next command) regenerates them.
"""

import dataclasses
import logging
import os

from common import locations
from rollout import fsutil
from rollout import kserve
from rollout import staging
from rollout import state as state_mod
from rollout import tfserving
from rollout.errors import RolloutChangedError, RolloutError, StaleBaselineError
from rollout.results import (AuditResult, FilesWritten, RepairResult, RolloutPaths,
                             RolloutStatus, Snapshot, TransitionResult)

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CONFIG_LOCK_FILE = ".models.config.lock"
# `stage(expect_stable=ANY_STABLE)`: stage whatever serves as stable.
ANY_STABLE = object()


class RolloutController:
    """Stage, shift traffic, promote and roll back one model's versions.

    serving_root: directory TF Serving watches (`<root>/<model>/<version>`).
    storage_uri_prefix: where KServe fetches versions from, e.g.
        gs://bucket/serving; None reuses the prefix recorded in the existing
        KServe manifest, and with none recorded no manifest is written.
    metadata_connection_config: MLMD ConnectionConfig for the audit trail,
        or None for no audit.
    tf_serving_root: serving_root as TF Serving sees it (e.g. /models inside
        its container); None reuses the base_path already in models.config
        for this model, else serving_root. Reusing recorded settings lets
        the CLI, run without these options, keep what the pipeline set.
    """

    def __init__(self, serving_root, model_name, storage_uri_prefix=None,
                 metadata_connection_config=None, *, tf_serving_root=None,
                 namespace="default",
                 lock_timeout=fsutil.DEFAULT_LOCK_TIMEOUT_SECONDS):
        self.model_name = staging.check_model_name(model_name)
        self.serving_root = os.path.abspath(os.fspath(serving_root))
        self.storage_uri_prefix = storage_uri_prefix
        self.metadata_connection_config = metadata_connection_config
        self.tf_serving_root = tf_serving_root
        self.namespace = namespace
        self.lock_timeout = lock_timeout

    # ------------------------------------------------------------ paths

    @property
    def model_dir(self):
        return staging.model_dir(self.serving_root, self.model_name)

    @property
    def state_path(self):
        return locations.rollout_json_path(self.serving_root, self.model_name)

    @property
    def lock_path(self):
        return os.path.join(self.model_dir, LOCK_FILE)

    @property
    def models_config_path(self):
        return tfserving.config_path(self.serving_root)

    @property
    def manifest_path(self):
        return kserve.manifest_path(self.serving_root, self.model_name)

    def paths(self):
        """Return the files this controller reads and writes."""
        return RolloutPaths(
            serving_root=self.serving_root, model_dir=self.model_dir,
            rollout_json=self.state_path, models_config=self.models_config_path,
            kserve_manifest=self.manifest_path)

    # ------------------------------------------------------------ reading

    def load(self):
        """Return the current RolloutState (no lock: writes are atomic)."""
        return state_mod.load_state(self.state_path, self.model_name)

    def staged_versions(self):
        return staging.list_versions(self.serving_root, self.model_name)

    def status(self):
        """Return the rollout status and any disagreement between files.

        Takes no lock, so it answers even while a long stage is running.
        """
        state = self.load()
        staged = self.staged_versions()
        canary_live = state.canary_version is not None
        problems = self._missing_versions(state, staged)
        problems += self._drift(state)
        return RolloutStatus(
            model_name=self.model_name, phase=state.phase,
            stable_version=state.stable_version,
            canary_version=state.canary_version,
            canary_traffic_percent=(
                state.canary_traffic_percent if canary_live else None),
            stable_traffic_percent=(
                None if state.stable_version is None
                else 100 - state.canary_traffic_percent),
            staged_versions=staged, last_version=state.last_version,
            last_event=state.last_event, paths=self.paths(), problems=problems)

    def _missing_versions(self, state, staged):
        problems = []
        for role, version in (("stable", state.stable_version),
                              ("canary", state.canary_version)):
            if version is None or version in staged:
                continue
            path = staging.version_dir(
                self.serving_root, self.model_name, version)
            way_out = (
                "run `tfx-canary rollout rollback` to withdraw it"
                if role == "canary" else
                "run `tfx-canary rollout rollback --to VERSION` with a "
                f"staged version ({', '.join(map(str, staged)) or 'none'})")
            problems.append(
                f"{role} version {version} is missing on disk ({path}): "
                f"restore that directory, or {way_out}")
        return problems

    def _drift(self, state):
        """Describe where models.config / the manifest disagree with state."""
        problems = []
        fix = "run `tfx-canary rollout repair` to regenerate it"
        try:
            actual = tfserving.find_entry(
                tfserving.read_config(self.models_config_path),
                self.model_name)
        except RolloutError as exc:
            problems.append(str(exc))
        else:
            base_path = self._base_path(actual)
            expected = (tfserving.model_config(state, base_path)
                        if state.versions() else None)
            if actual != expected:
                problems.append(
                    f"{self.models_config_path}: the entry for "
                    f"{self.model_name} does not match {locations.ROLLOUT_FILE}: {fix}")
        try:
            manifest = kserve.read_manifest(self.manifest_path)
        except RolloutError as exc:
            problems.append(str(exc))
            return problems
        prefix = self.storage_uri_prefix or kserve.recorded_prefix(manifest)
        if prefix is None or state.stable_version is None:
            return problems
        expected = kserve.inference_service(
            state, self.model_name, prefix, self.namespace)
        if manifest != expected:
            problems.append(
                f"{self.manifest_path} does not match {locations.ROLLOUT_FILE}: {fix}")
        return problems

    # ------------------------------------------------------------ mutating

    def stage(self, src_dir, canary_percent=state_mod.DEFAULT_CANARY_PERCENT,
              validate=None, reason="", metrics=None,
              keep=staging.DEFAULT_KEEP_VERSIONS,
              actor=None, expect_stable=ANY_STABLE, training_data=None):
        """Stage the SavedModel in `src_dir` as the next version.

        The first model becomes stable, later ones the canary at
        `canary_percent`. `validate(path)` should raise on a bad model (e.g.
        a bound staging.validate_saved_model). Afterwards only the `keep`
        newest versions stay on disk, plus stable and canary.

        `expect_stable` (a version, or None for "nothing serves yet") is the
        stable version the model was judged against: compare-and-set under
        the lock, so a model evaluated against a baseline that has since
        moved (a concurrent run or a promote) raises StaleBaselineError and
        changes nothing.

        `training_data` (rollout.training_data.TrainingData) is staged beside
        the version: what the drift gate and `capture validate` compare with.
        """
        # Validate cheap arguments before copying a possibly large model.
        state_mod.check_percent(canary_percent, "canary traffic percent")
        staging.check_keep(keep)
        state_mod.snapshot_metrics(metrics)
        fsutil.makedirs_durable(self.model_dir)
        with self._lock():
            old = self.load()
            if (expect_stable is not ANY_STABLE
                    and old.stable_version != expect_stable):
                raise StaleBaselineError(
                    self.model_name, expect_stable, old.stable_version)
            targets = self._resolve_targets()
            # Refuse before copying if stable is gone: the new state would
            # point TF Serving at a missing directory.
            stable_only = dataclasses.replace(
                old, canary_version=None, canary_traffic_percent=0)
            self._check_on_disk(stable_only)
            staging.clean_stale_temp_dirs(self.serving_root, self.model_name)
            version = staging.stage_model(
                src_dir, self.serving_root, self.model_name, validate,
                last_version=old.last_version, training_data=training_data)
            try:
                new = state_mod.stage(
                    old, version, canary_percent, actor=actor, reason=reason,
                    metrics=metrics)
                self._check_on_disk(new)
            except BaseException:
                # rollout.json does not mention it yet: unpublish so a failed
                # stage leaves nothing visible.
                staging.remove_version(
                    self.serving_root, self.model_name, version)
                raise
            state_mod.save_state(self.state_path, new)
            files = self._write_derived(new, *targets)
            pruned = staging.prune_versions(
                self.serving_root, self.model_name, keep, new.versions())
            audit = self._audit(new)
        return self._result(old, new, files, audit, pruned=pruned)

    # `expect`: (stable, canary, traffic) the caller decided on; if
    # rollout.json says otherwise under the lock, RolloutChangedError and no
    # change (compare-and-set for analyze --apply and rollout watch).

    def set_traffic(self, percent, reason="", actor=None, expect=None):
        """Send `percent` (0-100) of traffic to the live canary."""
        return self._mutate(lambda s: state_mod.set_traffic(
            s, percent, actor=actor, reason=reason), expect=expect)

    def promote(self, reason="", actor=None, expect=None):
        """Make the canary the stable version with 100% of traffic."""
        return self._mutate(lambda s: state_mod.promote(
            s, actor=actor, reason=reason), expect=expect)

    def rollback(self, to_version=None, reason="", actor=None, expect=None):
        """Withdraw the canary, or serve staged `to_version` as stable."""
        return self._mutate(lambda s: state_mod.rollback(
            s, to_version, self.staged_versions(), actor=actor,
            reason=reason), expect=expect)

    def record_not_pushed(self, reason, metrics=None, actor=None):
        """Record that a model was not blessed; serving is unchanged."""
        return self._mutate(lambda s: state_mod.record_not_pushed(
            s, reason, metrics, actor=actor), may_create=True)

    def sync_audit(self):
        """Record in ML Metadata every history event not there yet.

        The CanaryPusher stages inside a pipeline execution whose PushedModel
        artifact is published only after it returns; the runner calls this
        afterwards so the staging event is linked to that artifact.
        """
        if not os.path.isfile(self.state_path):
            return AuditResult(
                enabled=self.metadata_connection_config is not None)
        with self._lock():
            return self._audit(self.load())

    def repair(self):
        """Regenerate models.config and the manifest from rollout.json.

        Also removes leftovers of crashed runs and back-fills audit records
        that a crash kept out of ML Metadata.
        """
        if not os.path.isdir(self.model_dir):
            raise RolloutError(
                f"{self.model_dir} does not exist: nothing to repair (check "
                f"--serving-root and --model-name)")
        with self._lock():
            current = self.load()
            targets = self._resolve_targets()
            removed = staging.clean_stale_temp_dirs(
                self.serving_root, self.model_name)
            files = self._write_derived(current, *targets)
            # A killed models.config writer leaves its temp file in the
            # serving root; that file is written under the config lock.
            with fsutil.file_lock(
                    os.path.join(self.serving_root, CONFIG_LOCK_FILE),
                    timeout=self.lock_timeout):
                removed = sorted(removed + fsutil.remove_stale_temp_files(
                    self.serving_root, [tfserving.CONFIG_FILE_NAME]))
            audit = self._audit(current)
        return RepairResult(files=files, removed_temp_dirs=removed,
                            audit=audit, state=Snapshot.of(current))

    # ------------------------------------------------------------ internals

    def _lock(self):
        return fsutil.file_lock(self.lock_path, timeout=self.lock_timeout)

    def _base_path(self, existing_entry):
        """Return the model's base_path for models.config."""
        if self.tf_serving_root:
            return os.path.join(self.tf_serving_root, self.model_name)
        if existing_entry is not None and existing_entry.base_path:
            return existing_entry.base_path
        return self.model_dir

    def _resolve_targets(self):
        """Return (TF Serving base_path, KServe prefix or None).

        Resolved before anything is written, so an unreadable models.config
        or manifest stops the command instead of leaving it half applied.
        """
        entry = tfserving.find_entry(
            tfserving.read_config(self.models_config_path), self.model_name)
        prefix = self.storage_uri_prefix or kserve.recorded_prefix(
            kserve.read_manifest(self.manifest_path))
        return self._base_path(entry), prefix

    def _check_on_disk(self, new):
        problems = self._missing_versions(new, self.staged_versions())
        if problems:
            raise RolloutError(problems[0])

    def _mutate(self, transition, may_create=False, expect=None):
        """Apply a non-staging transition under the lock (if still `expect`)."""
        if not os.path.isdir(self.model_dir):
            # Fail on a never-staged model without creating its directory.
            transition(state_mod.RolloutState.empty(self.model_name))
            if not may_create:
                raise RolloutError(
                    f"{self.model_dir} does not exist: check --serving-root "
                    f"and --model-name")
            fsutil.makedirs_durable(self.model_dir)
        with self._lock():
            old = self.load()
            served = (old.stable_version, old.canary_version,
                      old.canary_traffic_percent)
            if expect is not None and tuple(expect) != served:
                raise RolloutChangedError(self.model_name, tuple(expect), served)
            targets = self._resolve_targets()
            new = transition(old)
            self._check_on_disk(new)
            state_mod.save_state(self.state_path, new)
            files = self._write_derived(new, *targets)
            audit = self._audit(new)
        return self._result(old, new, files, audit)

    def _write_derived(self, new, base_path, prefix):
        """Write models.config then the KServe manifest from `new`."""
        # models.config is shared by all models under serving_root, whose
        # controllers hold different model locks: serialise its
        # read-modify-write separately (always after the model lock, so
        # the lock order is fixed and cannot deadlock).
        config_lock = os.path.join(self.serving_root, CONFIG_LOCK_FILE)
        with fsutil.file_lock(config_lock, timeout=self.lock_timeout):
            config_changed = tfserving.write_model_entry(
                self.serving_root, new, base_path)
        manifest_changed = None
        if prefix and new.stable_version is not None:
            manifest_changed = kserve.write_manifest(
                self.manifest_path, kserve.inference_service(
                    new, self.model_name, prefix, self.namespace))
        return FilesWritten(models_config=config_changed,
                            kserve_manifest=manifest_changed)

    def _audit(self, new):
        """Record every history event not yet in MLMD; never raises.

        rollout.json is already committed, so an audit failure must not
        report the change as failed; missing records are back-filled by the
        next command because events carry unique ids.
        """
        if self.metadata_connection_config is None:
            return AuditResult(enabled=False)
        # Imported lazily: ml_metadata is only needed when auditing.
        from rollout import audit  # pylint: disable=import-outside-toplevel

        recorded = []
        try:
            store = audit.connect(self.metadata_connection_config)
            done = audit.recorded_event_ids(store, self.model_name)
            for event in new.history:
                if not event.get("id") or event["id"] in done:
                    continue
                version = event.get("version")
                artifact_id = (None if version is None else
                               audit.find_pushed_model_artifact_id(
                                   store, self.model_name, version))
                recorded.append(audit.record_transition(
                    store, self.model_name, event, artifact_id))
        except Exception as exc:  # pylint: disable=broad-except
            error = (f"the rollout change was applied, but recording it in "
                     f"ML Metadata failed ({exc}); it is kept in "
                     f"{self.state_path} and will be back-filled by the next "
                     f"rollout command or `tfx-canary rollout repair`")
            logger.warning("%s", error)
            return AuditResult(enabled=True, execution_ids=recorded,
                               error=error)
        return AuditResult(enabled=True, execution_ids=recorded)

    @staticmethod
    def _result(old, new, files, audit, **extra):
        event = new.last_event
        return TransitionResult(
            event=event["event"], version=event.get("version"),
            before=Snapshot.of(old), after=Snapshot.of(new), files=files,
            audit=audit, history_event=event, **extra)


def _event_text(event):
    text = event["event"]
    if event.get("version") is not None:
        text += f" v{event['version']}"
    text += f" at {event['at']} by {event.get('actor', '?')}"
    if event.get("reason"):
        text += f": {event['reason']}"
    return text


def format_status(status):
    """Return a short human-readable table for a RolloutStatus."""
    def served(version, percent, absent):
        return absent if version is None else f"v{version}  {percent}% of traffic"

    staged = ", ".join(map(str, status.staged_versions)) or "none"
    rows = [("model", f"{status.model_name} (phase: {status.phase})"),
            ("stable", served(status.stable_version, status.stable_traffic_percent,
                              "-  (nothing staged yet)")),
            ("canary", served(status.canary_version, status.canary_traffic_percent, "-")),
            ("staged", f"{staged}  (highest ever: {status.last_version})")]
    if status.last_event:
        rows.append(("last event", _event_text(status.last_event)))
    rows.append(("files", "in sync with rollout.json" if status.in_sync
                 else "OUT OF SYNC (see below)"))
    width = max(len(key) for key, _ in rows)
    lines = [f"{key.ljust(width)}  {value}" for key, value in rows]
    lines += [f"warning: {problem}" for problem in status.problems]
    return "\n".join(lines)
