"""KServe `InferenceService` manifest for the current rollout.

How KServe consumes it (serverless/Knative mode; canary rollout is not
supported in raw-deployment mode):

* Every change to the predictor spec (here: `storageUri`) creates a new
  Knative revision. KServe remembers the last revision that received 100%
  of traffic (status `previousRolledoutRevision`, our "stable").
* `spec.predictor.canaryTrafficPercent: N` sends N% to the newest revision
  (our canary) and the rest to that remembered revision. `0` is meaningful:
  the canary runs but gets no traffic, so it is written whenever a canary
  is live, even at 0%.
* Without `canaryTrafficPercent` the newest revision gets 100% at once and
  becomes the new rolled-out revision.

So the manifest always carries the URI of the version to roll out: the
canary while one is live, otherwise stable. Promote drops
`canaryTrafficPercent` (the canary revision takes 100%); rollback points
`storageUri` back at stable without a percentage, creating a revision of the
stable model that takes 100%. The stable side of a split is KServe's memory,
not this file: it equals our stable only if every generated manifest is
applied (`kubectl apply -f`) in order. The versions we believe are serving
are recorded as annotations for checking.

KServe's TF Serving runtime downloads `storageUri` into /mnt/models and runs
`tensorflow_model_server --model_base_path=/mnt/models`, so the object at
`storageUri` must itself contain a numbered version directory: publish
version N as `<prefix>/<model>/<N>/<N>/saved_model.pb` (i.e. copy the
staged directory `<serving_root>/<model>/<N>` *into* `<prefix>/<model>/<N>/`).
"""

import os
import re

import yaml

from rollout import fsutil
from rollout.errors import RolloutError

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
ANNOTATION_PREFIX = "tfx-canary/"
PREFIX_ANNOTATION = ANNOTATION_PREFIX + "storage-uri-prefix"
MANIFEST_DIR = "kserve"
MANIFEST_FILE = "inferenceservice.yaml"


def manifest_path(serving_root, model_name):
    """Return `<serving_root>/<model_name>/kserve/inferenceservice.yaml`."""
    return os.path.join(serving_root, model_name, MANIFEST_DIR, MANIFEST_FILE)


def resource_name(model_name):
    """Return a Kubernetes-safe (DNS-1035) name derived from `model_name`."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "model-" + name
    return name.rstrip("-")


def storage_uri(storage_uri_prefix, model_name, version):
    """Return `<prefix>/<model_name>/<version>` (see module docstring)."""
    if not isinstance(storage_uri_prefix, str) or not storage_uri_prefix:
        raise RolloutError(
            f"KServe storage URI prefix must be a non-empty string such as "
            f"gs://bucket/serving, got {storage_uri_prefix!r}")
    return f"{storage_uri_prefix.rstrip('/')}/{model_name}/{version}"


def inference_service(state, model_name, storage_uri_prefix,
                      namespace="default"):
    """Return the InferenceService dict for `state` (see module docstring)."""
    if state.stable_version is None:
        raise RolloutError(
            f"model {model_name} has nothing staged, so there is no "
            f"InferenceService to generate: push a model first")
    live = (state.canary_version if state.canary_version is not None
            else state.stable_version)
    annotations = {
        ANNOTATION_PREFIX + "model-name": model_name,
        ANNOTATION_PREFIX + "stable-version": str(state.stable_version),
        ANNOTATION_PREFIX + "stable-storage-uri": storage_uri(
            storage_uri_prefix, model_name, state.stable_version),
        PREFIX_ANNOTATION: storage_uri_prefix,
    }
    # The traffic split is deliberately not annotated: KServe copies
    # InferenceService annotations into the Knative revision template, so a
    # value changing on every set-traffic would mint a new revision each time.
    predictor = {
        "model": {
            "modelFormat": {"name": "tensorflow"},
            "storageUri": storage_uri(storage_uri_prefix, model_name, live),
        },
    }
    if state.canary_version is not None:
        annotations[ANNOTATION_PREFIX + "canary-version"] = str(
            state.canary_version)
        predictor["canaryTrafficPercent"] = state.canary_traffic_percent
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": resource_name(model_name),
            "namespace": namespace,
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def render_yaml(manifest):
    """Return `manifest` as YAML (safe_dump, keys in insertion order)."""
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


def read_manifest(path):
    """Return the parsed manifest at `path`, or None if it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RolloutError(
            f"{path} is not valid YAML ({exc}): delete it and run "
            f"`tfx-canary rollout repair` to regenerate it") from exc


def recorded_prefix(manifest):
    """Return the storage URI prefix recorded in a manifest, or None."""
    try:
        value = manifest["metadata"]["annotations"][PREFIX_ANNOTATION]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, str) and value else None


def write_manifest(path, manifest):
    """Atomically write `manifest` to `path`; return True if it changed."""
    return fsutil.write_text_if_changed(path, render_yaml(manifest))
