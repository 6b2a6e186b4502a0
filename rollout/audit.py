"""Rollout audit trail in ML Metadata (MLMD).

Each rollout transition becomes a COMPLETE execution of type
`tfx_canary.RolloutTransition`, attributed to the context
`rollout.<model_name>` (type `tfx_canary.Rollout`) and, when known, linked by
an INPUT event to the TFX `PushedModel` artifact of the version concerned.
So the pipeline's lineage view shows who promoted or rolled back which
pushed model, when and why. Everything for one transition is written by a
single `put_execution` call, i.e. one MLMD transaction.
"""

import json

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from common import mlmd
from common import mlmd_names as names
from rollout.errors import RolloutError

_STRING = metadata_store_pb2.STRING
_INT = metadata_store_pb2.INT
_EXECUTION_PROPERTIES = {
    names.EVENT: _STRING, names.MODEL_NAME: _STRING, names.STABLE_VERSION: _INT,
    names.CANARY_VERSION: _INT, names.TRAFFIC_PERCENT: _INT, names.ACTOR: _STRING,
    names.REASON: _STRING,
}
# Execution property <- the key of the event's "to" snapshot it records.
_SNAPSHOT_PROPERTIES = ((names.STABLE_VERSION, "stable"),
                        (names.CANARY_VERSION, "canary"),
                        (names.TRAFFIC_PERCENT, "traffic"))


def sqlite_connection_config(path, create=True):
    """Return a ConnectionConfig for the SQLite MLMD file at `path`.

    With create=False a missing file is an error instead of a new, empty
    store (a typo in --metadata-path should not silently fork the audit).
    """
    return mlmd.sqlite_config(str(path), mlmd.CREATE if create else mlmd.READ_WRITE)


def connect(connection_config):
    """Open an MLMD store; raise RolloutError naming the store on failure."""
    try:
        return metadata_store.MetadataStore(connection_config)
    except Exception as exc:  # MLMD raises RuntimeError or its own errors
        where = (connection_config.sqlite.filename_uri
                 if connection_config.HasField("sqlite")
                 else "the configured MLMD database")
        raise RolloutError(
            f"cannot open the ML Metadata store {where} ({exc}): check "
            f"--metadata-path / the pipeline's metadata connection") from exc


def _execution_type_id(store):
    execution_type = metadata_store_pb2.ExecutionType(
        name=names.ROLLOUT_EXECUTION)
    for name, kind in _EXECUTION_PROPERTIES.items():
        execution_type.properties[name] = kind
    # can_add_fields: a later tfx-canary may add properties to the type.
    return store.put_execution_type(execution_type, can_add_fields=True)


def _context(store, model_name):
    """Return the rollout context, or an unsaved one to create."""
    existing = store.get_context_by_type_and_name(
        names.ROLLOUT_CONTEXT, names.rollout_context_name(model_name))
    if existing is not None:
        return existing
    context_type = metadata_store_pb2.ContextType(name=names.ROLLOUT_CONTEXT)
    context_type.properties[names.MODEL_NAME] = _STRING
    context = metadata_store_pb2.Context(
        type_id=store.put_context_type(context_type, can_add_fields=True),
        name=names.rollout_context_name(model_name))
    context.properties[names.MODEL_NAME].string_value = model_name
    return context


def record_transition(store, model_name, event, pushed_model_artifact_id=None):
    """Record one rollout history `event`; return the new execution id."""
    execution = metadata_store_pb2.Execution(
        type_id=_execution_type_id(store),
        last_known_state=metadata_store_pb2.Execution.COMPLETE)
    props = execution.properties
    props[names.EVENT].string_value = event["event"]
    props[names.MODEL_NAME].string_value = model_name
    props[names.ACTOR].string_value = event.get("actor", "")
    props[names.REASON].string_value = event.get("reason", "")
    after = event.get("to") or {}
    for name, key in _SNAPSHOT_PROPERTIES:
        if after.get(key) is not None:  # unset property = no such version
            props[name].int_value = after[key]
    custom = execution.custom_properties
    custom[names.METRICS_JSON].string_value = json.dumps(
        event.get("metrics") or {}, sort_keys=True)
    # The whole event, so transitions() can return exactly what rollout.json
    # holds, and its id, so missing records can be back-filled idempotently.
    custom[names.EVENT_JSON].string_value = json.dumps(event, sort_keys=True)
    custom[names.EVENT_ID].string_value = event.get("id", "")
    custom[names.AT].string_value = event.get("at", "")

    artifact_and_events = []
    if pushed_model_artifact_id is not None:
        artifacts = store.get_artifacts_by_id([pushed_model_artifact_id])
        if not artifacts:
            raise RolloutError(
                f"PushedModel artifact {pushed_model_artifact_id} does not "
                f"exist in the ML Metadata store: pass the id of an existing "
                f"artifact or None")
        artifact_and_events.append((
            artifacts[0],
            metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT)))
    # reuse_context_if_already_exist: another process may create the
    # context between our lookup and this call.
    execution_id, _, _ = store.put_execution(
        execution, artifact_and_events, [_context(store, model_name)],
        reuse_context_if_already_exist=True)
    return execution_id


def find_pushed_model_artifact_id(store, model_name, version):
    """Return the id of the PushedModel artifact for `version`, or None.

    Matches custom property `pushed_version` (int or string) and, if the
    artifact has one, custom property `model_name`. The newest match wins
    (a re-run pipeline may record the same push twice).
    """
    matches = []
    for artifact in store.get_artifacts_by_type(names.PUSHED_MODEL):
        pushed = mlmd.value_of(artifact, names.PUSHED_VERSION)
        if pushed is None or str(pushed).strip() != str(version):
            continue
        name = mlmd.value_of(artifact, names.MODEL_NAME)
        if name is not None and name != model_name:
            continue
        matches.append(artifact.id)
    return max(matches) if matches else None


def recorded_serving_roots(store, model_name):
    """The serving roots the model's PushedModel artifacts recorded (CanaryPusher
    sets `serving_root`): which serving root this store's pushes went to."""
    roots = set()
    for artifact in store.get_artifacts_by_type(names.PUSHED_MODEL):
        name = mlmd.value_of(artifact, names.MODEL_NAME)
        root = mlmd.value_of(artifact, names.SERVING_ROOT)
        if root and name in (None, model_name):
            roots.add(str(root))
    return sorted(roots)


def transitions(store, model_name):
    """Return the recorded events of `model_name`, oldest first.

    Each is the history event dict plus `execution_id` and
    `pushed_model_artifact_id` (None if not linked).
    """
    context = store.get_context_by_type_and_name(
        names.ROLLOUT_CONTEXT, names.rollout_context_name(model_name))
    if context is None:
        return []
    try:
        type_id = store.get_execution_type(names.ROLLOUT_EXECUTION).id
    except mlmd_errors.NotFoundError:
        return []
    executions = [e for e in store.get_executions_by_context(context.id)
                  if e.type_id == type_id]
    linked = {}
    for mlmd_event in store.get_events_by_execution_ids(
            [e.id for e in executions]):
        if mlmd_event.type == metadata_store_pb2.Event.INPUT:
            linked[mlmd_event.execution_id] = mlmd_event.artifact_id
    rows = []
    for row in event_rows(executions):
        row["pushed_model_artifact_id"] = linked.get(row["execution_id"])
        rows.append(row)
    return rows


def event_row(execution):
    """The history event a RolloutTransition execution records, plus `execution_id`."""
    try:
        row = json.loads(mlmd.value_of(execution, names.EVENT_JSON) or "{}")
    except ValueError:
        row = {}
    if not isinstance(row, dict) or not row:
        # Written by something else: rebuild what the properties hold.
        row = {"event": mlmd.value_of(execution, names.EVENT),
               "actor": mlmd.value_of(execution, names.ACTOR),
               "reason": mlmd.value_of(execution, names.REASON),
               "at": mlmd.value_of(execution, names.AT),
               "to": {key: mlmd.value_of(execution, name)
                      for name, key in _SNAPSHOT_PROPERTIES}}
    row["execution_id"] = execution.id
    return row


def event_rows(executions):
    """event_row of each execution, in history order.

    By event time, then id: a back-filled record (written after a failed
    audit) has a later id than newer events.
    """
    rows = [event_row(execution) for execution in executions]
    rows.sort(key=lambda r: (r.get("at") or "", r["execution_id"]))
    return rows


def recorded_event_ids(store, model_name):
    """Return the history event ids already recorded for `model_name`."""
    return {row["id"] for row in transitions(store, model_name)
            if row.get("id")}
