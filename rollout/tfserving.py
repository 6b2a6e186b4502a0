"""TF Serving `models.config` generation from a rollout state.

TF Serving is started with `--model_config_file=<serving_root>/models.config`
(plus `--model_config_file_poll_wait_seconds=N` to pick up changes). Each
model entry serves exactly the stable and canary versions (a `specific`
version policy, so staging a new version never replaces stable by itself)
and labels them `stable` and `canary`, so clients can address
`/v1/models/<name>/labels/canary:predict`.

TF Serving itself does not split traffic: canary_traffic_percent is enforced
by whatever routes requests (KServe, an Istio/Envoy route, or a client that
sends that share of requests to the `canary` label). So set-traffic leaves
models.config unchanged.

Version-label rule (important for operators): TF Serving only assigns a
label to a version that is already loaded and available. A config that
labels a version still loading is rejected unless the server runs with
`--allow_version_labels_for_unavailable_models`, and even that flag only
covers labels that are not assigned yet. So:

* a label assigned for the first time (first push gets `stable`, first
  canary gets `canary`): applies at once with the flag, otherwise it
  behaves like the next case;
* a new canary replacing a live one, or `rollback --to` a version that is
  not loaded: the label *moves* to a version that is still loading, which is
  rejected even with the flag. TF Serving still starts loading the version
  (it is listed in `specific.versions`), and the label is applied by the
  first config reload after the version is available: with
  `--model_config_file_poll_wait_seconds` each poll re-applies the whole
  file, so this converges by itself; with the ReloadConfig RPC, send it
  again once the version is loaded;
* promote and rollback without `--to` only move labels onto versions that
  are already loaded, so they apply in one step.

Addressing by version number (`/versions/N`) works in every case.
"""

import os

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from rollout import fsutil
from rollout.errors import RolloutError

CONFIG_FILE_NAME = "models.config"
STABLE_LABEL = "stable"
CANARY_LABEL = "canary"


def config_path(serving_root):
    """Return `<serving_root>/models.config`."""
    return os.path.join(serving_root, CONFIG_FILE_NAME)


def model_config(state, base_path):
    """Return the ModelConfig entry for `state` (stable + canary versions)."""
    entry = model_server_config_pb2.ModelConfig(
        name=state.model_name, base_path=base_path,
        model_platform="tensorflow")
    versions = sorted(state.versions())
    entry.model_version_policy.specific.versions.extend(versions)
    if state.stable_version is not None:
        entry.version_labels[STABLE_LABEL] = state.stable_version
    if state.canary_version is not None:
        entry.version_labels[CANARY_LABEL] = state.canary_version
    return entry


def render(config):
    """Return `config` in protobuf text format, as TF Serving reads it."""
    return text_format.MessageToString(config)


def read_config(path):
    """Parse models.config; return an empty config if it does not exist."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return config
    except (OSError, UnicodeDecodeError) as exc:
        raise RolloutError(
            f"cannot read {path} ({exc}): fix its permissions/encoding or "
            f"delete it so it is regenerated") from exc
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise RolloutError(
            f"{path} is not a valid TF Serving model config ({exc}): fix "
            f"the syntax, or delete it and run `tfx-canary rollout repair` "
            f"for each model to regenerate it") from exc
    if config.WhichOneof("config") == "custom_model_config":
        raise RolloutError(
            f"{path} uses custom_model_config, which tfx-canary cannot "
            f"merge into: switch it to model_config_list or use a separate "
            f"serving root")
    return config


def find_entry(config, model_name):
    """Return this model's ModelConfig in `config`, or None."""
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            return entry
    return None


def merge_entry(config, model_name, entry):
    """Return a copy of `config` with `model_name`'s entry replaced.

    Other models keep their entries and order; a new model is appended;
    `entry=None` removes the model.
    """
    merged = model_server_config_pb2.ModelServerConfig()
    merged.CopyFrom(config)
    entries = merged.model_config_list.config
    kept = [e for e in entries if e.name != model_name]
    position = next((i for i, e in enumerate(entries)
                     if e.name == model_name), len(kept))
    if entry is not None:
        kept.insert(position, entry)
    copies = []
    for item in kept:
        copy = model_server_config_pb2.ModelConfig()
        copy.CopyFrom(item)
        copies.append(copy)
    del entries[:]
    entries.extend(copies)
    return merged


def write_model_entry(serving_root, state, base_path):
    """Update this model's entry in `<serving_root>/models.config`.

    Caller must hold the serving-root config lock (several models share the
    file; RolloutController takes it). Models without a staged version are
    removed from the file. Returns True if the file changed; an unchanged
    file is not rewritten, so TF Serving does not reload needlessly.
    """
    path = config_path(serving_root)
    current = read_config(path)
    entry = model_config(state, base_path) if state.versions() else None
    merged = merge_entry(current, state.model_name, entry)
    return fsutil.write_text_if_changed(path, render(merged))
