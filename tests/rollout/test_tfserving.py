"""models.config generation, parsed back with TF Serving's own protos."""

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from rollout import state as st
from rollout import tfserving
from rollout.errors import RolloutError


def _state(*versions):
    state = st.RolloutState.empty("taxi")
    for version in versions:
        state = st.stage(state, version, 10)
    return state


def _parse(text):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, config)
    return config


def _server_config(state, base_path):
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.append(tfserving.model_config(state, base_path))
    return config


def test_rendered_config_serves_stable_and_canary_with_labels():
    config = _parse(tfserving.render(_server_config(_state(1, 2), "/models/taxi")))
    (entry,) = config.model_config_list.config
    assert entry.name == "taxi"
    assert entry.base_path == "/models/taxi"
    assert entry.model_platform == "tensorflow"
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 1, "canary": 2}


def test_stable_only_has_no_canary_label():
    entry = tfserving.model_config(st.promote(_state(1, 2)), "/m/taxi")
    assert list(entry.model_version_policy.specific.versions) == [2]
    assert dict(entry.version_labels) == {"stable": 2}


def test_write_preserves_other_models_and_their_order(tmp_path):
    root = str(tmp_path)
    (tmp_path / "models.config").write_text("""
model_config_list {
  config { name: "fraud" base_path: "/m/fraud" model_platform: "tensorflow" }
  config { name: "taxi" base_path: "/old" model_platform: "tensorflow" }
  config { name: "churn" base_path: "/m/churn" model_platform: "tensorflow"
           model_version_policy { latest { num_versions: 2 } } }
}
""")
    assert tfserving.write_model_entry(root, _state(1, 2), "/m/taxi")
    config = _parse((tmp_path / "models.config").read_text())
    names = [c.name for c in config.model_config_list.config]
    assert names == ["fraud", "taxi", "churn"]
    churn = config.model_config_list.config[2]
    assert churn.model_version_policy.latest.num_versions == 2
    taxi = config.model_config_list.config[1]
    assert taxi.base_path == "/m/taxi"
    assert dict(taxi.version_labels) == {"stable": 1, "canary": 2}
    # Unchanged content is not rewritten (no needless TF Serving reload).
    assert not tfserving.write_model_entry(root, _state(1, 2), "/m/taxi")


def test_new_model_is_appended_and_empty_model_removed(tmp_path):
    root = str(tmp_path)
    tfserving.write_model_entry(root, _state(1), "/m/taxi")
    other = st.stage(st.RolloutState.empty("fraud"), 1, 10)
    tfserving.write_model_entry(root, other, "/m/fraud")
    config = tfserving.read_config(tfserving.config_path(root))
    assert [c.name for c in config.model_config_list.config] == [
        "taxi", "fraud"]
    tfserving.write_model_entry(root, st.RolloutState.empty("taxi"), "/x")
    config = tfserving.read_config(tfserving.config_path(root))
    assert [c.name for c in config.model_config_list.config] == ["fraud"]


def test_unparseable_config_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { name: ")
    with pytest.raises(RolloutError) as info:
        tfserving.write_model_entry(str(tmp_path), _state(1), "/m/taxi")
    assert str(path) in str(info.value)
    assert "not a valid TF Serving model config" in str(info.value)
    assert path.read_text() == "model_config_list { config { name: "
