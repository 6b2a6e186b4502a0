"""The adaptations a TFX package needs under kfp.local, on the ExecutorInput
kfp.local built, never on the package. Pure functions on protos.

1. Input artifact types. kfp.local keeps a task's outputs between tasks as
   `dsl.Artifact` objects, which carry a `schema_title` only: an output TFX's
   IR types by `instanceSchema` (title: tfx.Examples, ...) comes back as the
   generic `system.Artifact`, and TFX's KFP v2 entrypoint
   (kubeflow_v2_entrypoint_utils._retrieve_class_path) then tries to import a
   class called `system.Artifact` and fails. A KFP backend does not lose the
   type (it keeps it in ML Metadata), so the consumer is given the type its
   own IR declares for that input, and only where kfp.local gave the generic
   one.
2. Mounted folders. A step sees its PVC (KFP) or Cloud Storage FUSE (Vertex)
   at a path inside the pod; there is no pod here, so string parameters on a
   mount are rewritten to the local folder that stands for it (see
   package.local_mounts). That is what a volume mount does to the paths a
   process opens.
3. Lifecycle hooks. Vertex runs a container's `preCacheCheck` command (TFX's
   ExampleGen driver: span resolution, input fingerprint) before the main
   command, then updates the task's parameters and output artifacts from the
   ExecutorOutput the hook wrote; kfp.local ignores lifecycle hooks, and so
   does the open-source KFP backend (hence components/span_example_gen). So
   runner.py runs the hook for Vertex packages only, applies its output
   (`apply_hook_output`) and resolves the main command again.
"""
from typing import List, Optional

from google.protobuf import json_format

GENERIC_SCHEMA_TITLE = 'system.Artifact'
PRE_CACHE_CHECK = 'preCacheCheck'


def restore_declared_types(executor_input, component_spec) -> List[str]:
    """Gives each generic input artifact the type the component declares for
    it (adaptation 1). Returns the input names changed."""
    changed = []
    declared_inputs = component_spec.input_definitions.artifacts
    for name, artifact_list in executor_input.inputs.artifacts.items():
        if name not in declared_inputs:
            continue
        declared = declared_inputs[name].artifact_type
        if declared.WhichOneof('kind') != 'instance_schema':
            continue
        for artifact in artifact_list.artifacts:
            if (artifact.type.WhichOneof('kind') in (None, 'schema_title')
                    and artifact.type.schema_title in ('', GENERIC_SCHEMA_TITLE)):
                artifact.type.CopyFrom(declared)
                changed.append(name)
    return changed


def translate_mounted_paths(executor_input, mounts, executor_label) -> List[str]:
    """Rewrites string parameters that lie on a mount of this executor to the
    local folder (adaptation 2). Returns 'name: old -> new' lines."""
    changes = []
    for name, value in executor_input.inputs.parameter_values.items():
        if value.WhichOneof('kind') != 'string_value':
            continue
        for mount in mounts:
            if not mount.applies_to(executor_label):
                continue
            local = mount.translate(value.string_value)
            if local is not None:
                changes.append('%s: %s -> %s' % (name, value.string_value, local))
                value.string_value = local
                break
    return changes


def pre_cache_check_command(executor_spec: dict) -> Optional[List[str]]:
    """The container's preCacheCheck command + args (adaptation 3), or None."""
    hook = executor_spec.get('container', {}).get('lifecycle', {}).get(PRE_CACHE_CHECK)
    if not hook:
        return None
    return list(hook.get('command', [])) + list(hook.get('args', []))


def apply_hook_output(executor_input, hook_output):
    """What Vertex does with a preCacheCheck hook's ExecutorOutput before the
    main command: its parameter values replace the task's, its artifacts'
    metadata is merged into the task's output artifacts (adaptation 3)."""
    for name, value in hook_output.parameter_values.items():
        executor_input.inputs.parameter_values[name].CopyFrom(value)
    for key, artifact_list in hook_output.artifacts.items():
        if key not in executor_input.outputs.artifacts:
            continue
        targets = executor_input.outputs.artifacts[key].artifacts
        for target, written in zip(targets, artifact_list.artifacts):
            target.metadata.update(json_format.MessageToDict(written.metadata))
