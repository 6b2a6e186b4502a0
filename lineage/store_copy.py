"""Copies one ML Metadata store into another through MLMD's API.

Used to move a local SQLite store into a MySQL/MariaDB-backed one (and by the
tests, to check that lineage answers the same on both). Everything that
carries structure is copied: types with their properties, contexts and
their parent links, artifacts, executions, events with their paths,
attributions and associations. The target assigns new ids (returned as
maps) and its own create/update times; relative order is kept because
nodes are inserted in source id order. The target should be empty:
context names must be unique per type.
"""

import dataclasses

from ml_metadata.proto import metadata_store_pb2

# Nodes per put call: large enough to be quick, small enough for one
# MySQL packet with the default max_allowed_packet.
_BATCH = 200


@dataclasses.dataclass
class IdMaps:
    artifact_types: dict
    execution_types: dict
    context_types: dict
    artifacts: dict
    executions: dict
    contexts: dict


def _copy_types(get_types, put_type, message_type):
    mapping = {}
    for source_type in get_types():
        copied = message_type()
        copied.CopyFrom(source_type)
        copied.ClearField('id')
        mapping[source_type.id] = put_type(copied, can_add_fields=True)
    return mapping


def _clear_output_only(node):
    """Fields the target store sets itself."""
    for name in ('id', 'type', 'create_time_since_epoch', 'last_update_time_since_epoch'):
        if node.DESCRIPTOR.fields_by_name.get(name) is not None:
            node.ClearField(name)


def _copy_nodes(nodes, type_map, put, message_type):
    mapping = {}
    nodes = sorted(nodes, key=lambda n: n.id)
    for begin in range(0, len(nodes), _BATCH):
        batch = nodes[begin:begin + _BATCH]
        copies = []
        for node in batch:
            copied = message_type()
            copied.CopyFrom(node)
            _clear_output_only(copied)
            copied.type_id = type_map[node.type_id]
            copies.append(copied)
        for node, new_id in zip(batch, put(copies)):
            mapping[node.id] = new_id
    return mapping


def copy_store(source, target):
    """Copies everything in `source` into the empty store `target`; returns IdMaps."""
    pb = metadata_store_pb2
    maps = IdMaps(
        artifact_types=_copy_types(source.get_artifact_types, target.put_artifact_type,
                                   pb.ArtifactType),
        execution_types=_copy_types(source.get_execution_types, target.put_execution_type,
                                    pb.ExecutionType),
        context_types=_copy_types(source.get_context_types, target.put_context_type,
                                  pb.ContextType),
        artifacts={}, executions={}, contexts={})
    contexts = source.get_contexts()
    maps.contexts = _copy_nodes(contexts, maps.context_types, target.put_contexts, pb.Context)
    maps.artifacts = _copy_nodes(source.get_artifacts(), maps.artifact_types,
                                 target.put_artifacts, pb.Artifact)
    executions = source.get_executions()
    maps.executions = _copy_nodes(executions, maps.execution_types, target.put_executions,
                                  pb.Execution)

    events = []
    for event in source.get_events_by_execution_ids([e.id for e in executions]):
        copied = pb.Event()
        copied.CopyFrom(event)  # Keeps type, path and milliseconds_since_epoch.
        copied.execution_id = maps.executions[event.execution_id]
        copied.artifact_id = maps.artifacts[event.artifact_id]
        events.append(copied)
    events.sort(key=lambda e: (e.execution_id, e.artifact_id))
    for begin in range(0, len(events), _BATCH):
        target.put_events(events[begin:begin + _BATCH])

    # Attributions and associations have no bulk getter: read them per context.
    parents = []
    for context in contexts:
        new_context = maps.contexts[context.id]
        attributions = [pb.Attribution(context_id=new_context, artifact_id=maps.artifacts[a.id])
                        for a in source.get_artifacts_by_context(context.id)]
        associations = [pb.Association(context_id=new_context,
                                       execution_id=maps.executions[e.id])
                        for e in source.get_executions_by_context(context.id)]
        for begin in range(0, max(len(attributions), len(associations)), _BATCH):
            target.put_attributions_and_associations(attributions[begin:begin + _BATCH],
                                                     associations[begin:begin + _BATCH])
        parents += [pb.ParentContext(child_id=new_context, parent_id=maps.contexts[p.id])
                    for p in source.get_parent_contexts_by_context(context.id)]
    if parents:
        target.put_parent_contexts(parents)
    return maps
