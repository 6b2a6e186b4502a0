"""KServe InferenceService manifest."""

import yaml

from rollout import kserve
from rollout import state as st


def _load(state):
    manifest = kserve.inference_service(state, "taxi", "gs://b/serving/",
                                        namespace="ml")
    return yaml.safe_load(kserve.render_yaml(manifest))


def test_stable_only_manifest_has_no_canary_split():
    state = st.stage(st.RolloutState.empty("taxi"), 1, 10)
    doc = _load(state)
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert doc["kind"] == "InferenceService"
    assert doc["metadata"]["name"] == "taxi"
    assert doc["metadata"]["namespace"] == "ml"
    predictor = doc["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "tensorflow"}
    assert predictor["model"]["storageUri"] == "gs://b/serving/taxi/1"
    assert "canaryTrafficPercent" not in predictor
    annotations = doc["metadata"]["annotations"]
    assert annotations["tfx-canary/stable-version"] == "1"
    assert "tfx-canary/canary-version" not in annotations


def test_canary_manifest_rolls_out_canary_with_its_traffic():
    state = st.stage(st.stage(st.RolloutState.empty("taxi"), 1, 10), 2, 20)
    doc = _load(state)
    predictor = doc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "gs://b/serving/taxi/2"
    assert predictor["canaryTrafficPercent"] == 20
    annotations = doc["metadata"]["annotations"]
    assert annotations["tfx-canary/stable-version"] == "1"
    assert annotations["tfx-canary/canary-version"] == "2"
    assert kserve.recorded_prefix(doc) == "gs://b/serving/"

    # 0% must be explicit: omitting it would give the canary everything.
    idle = _load(st.set_traffic(state, 0))
    assert idle["spec"]["predictor"]["canaryTrafficPercent"] == 0

    promoted = _load(st.promote(state))["spec"]["predictor"]
    assert promoted["model"]["storageUri"] == "gs://b/serving/taxi/2"
    assert "canaryTrafficPercent" not in promoted

    rolled_back = _load(st.rollback(state))["spec"]["predictor"]
    assert rolled_back["model"]["storageUri"] == "gs://b/serving/taxi/1"
    assert "canaryTrafficPercent" not in rolled_back


def test_resource_name_is_kubernetes_safe():
    assert kserve.resource_name("Taxi_Model.v2") == "taxi-model-v2"
    assert kserve.resource_name("2fast") == "model-2fast"
