"""ML Metadata helpers every package shares: the connection builder and the property reader.

One SQLite ConnectionConfig builder (read-only for readers, read-write for the
audit trail, create for a pipeline run) and one way to read a property of an
MLMD node, so the run summary, the rollout audit and lineage cannot disagree
about what a record says. Names live in common/mlmd_names.py.
"""
import os

READ_ONLY, READ_WRITE, CREATE = 'read-only', 'read-write', 'create'


def version_number(raw):
    """A staged version as an int from its recorded value (the pusher writes
    '3'; older records hold 3); None when absent or not a number."""
    try:
        return int(str(raw).strip()) if raw is not None else None
    except ValueError:
        return None


def sqlite_config(path, mode=READ_ONLY):
    """A ConnectionConfig for the SQLite store at `path`.

    READ_ONLY: nothing can be written, not even a schema upgrade (lineage, the
    run summary); READ_WRITE: an existing store only (a typo in
    --metadata-path must not silently fork the audit trail); CREATE: make it
    (and its folder) if missing, as a pipeline run does.
    """
    from ml_metadata.proto import metadata_store_pb2

    modes = metadata_store_pb2.SqliteMetadataSourceConfig
    connection_mode = {READ_ONLY: modes.READONLY, READ_WRITE: modes.READWRITE,
                       CREATE: modes.READWRITE_OPENCREATE}[mode]
    path = os.fspath(path)
    if mode == CREATE and os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = connection_mode
    return config


def value_of(node, name):
    """A property or custom property of an MLMD node as a Python value, or None.

    Properties first, then custom properties; a struct comes back as a dict, a
    proto value (which needs its type to decode) as None.
    """
    for props in (node.properties, node.custom_properties):
        if name in props:
            value = props[name]
            kind = value.WhichOneof('value')
            if kind is None:
                return None
            result = getattr(value, kind)
            if kind == 'struct_value':
                from google.protobuf import json_format
                return json_format.MessageToDict(result)
            if kind == 'proto_value':
                return None
            return result
    return None


def event_role(event):
    """The input/output key of an MLMD event ('model', 'examples', ...), or ''."""
    return event.path.steps[0].key if event.path.steps else ''


def is_output(event):
    """True for the events of an execution's outputs.

    INTERNAL_OUTPUT is a resolver "producing" an artifact it only selected: not
    provenance, so not an output.
    """
    from ml_metadata.proto import metadata_store_pb2

    return event.type in (metadata_store_pb2.Event.OUTPUT,
                          metadata_store_pb2.Event.DECLARED_OUTPUT)
