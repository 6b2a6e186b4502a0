"""Staging layout, version numbering, crash safety and pruning."""

import os

import pytest

from rollout import staging
from rollout.errors import RolloutError

from tests.rollout.conftest import snapshot_tree


def test_versions_are_numbered_dirs_holding_the_model(
        make_model, serving_root):
    first = staging.stage_model(make_model("a"), serving_root, "taxi")
    second = staging.stage_model(make_model("b"), serving_root, "taxi")
    assert (first, second) == (1, 2)
    pb = os.path.join(serving_root, "taxi", "2", "saved_model.pb")
    assert open(pb).read() == "fake graph b"
    assert os.path.isfile(os.path.join(
        serving_root, "taxi", "2", "variables", "variables.index"))
    assert staging.list_versions(serving_root, "taxi") == [1, 2]


def test_list_versions_ignores_hidden_and_non_numeric_entries(serving_root):
    model = os.path.join(serving_root, "taxi")
    for name in ("3", "10", ".staging-11-99", "kserve", "v4", "²"):
        os.makedirs(os.path.join(model, name))
    open(os.path.join(model, "7"), "w").close()  # a file, not a version
    assert staging.list_versions(serving_root, "taxi") == [3, 10]
    assert staging.list_versions(serving_root, "other") == []


def test_versions_only_grow_even_after_pruning(make_model, serving_root):
    for _ in range(4):
        staging.stage_model(make_model(), serving_root, "taxi")
    assert staging.prune_versions(serving_root, "taxi", keep=1,
                                  protected=set()) == [1, 2, 3]
    # Even with every directory gone, last_version keeps numbers unique.
    staging.prune_versions(serving_root, "taxi", keep=1, protected=set())
    version = staging.stage_model(make_model(), serving_root, "taxi",
                                  last_version=4)
    assert version == 5
    assert staging.list_versions(serving_root, "taxi") == [4, 5]


def test_crash_before_rename_leaves_nothing_visible(
        make_model, serving_root, monkeypatch):
    staging.stage_model(make_model(), serving_root, "taxi")
    before = snapshot_tree(serving_root)
    seen = {}

    def crash(temp_dir, final_dir):
        seen["temp"] = temp_dir
        assert os.path.isfile(os.path.join(temp_dir, "saved_model.pb"))
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(staging, "_before_rename", crash)
    with pytest.raises(KeyboardInterrupt):
        staging.stage_model(make_model(), serving_root, "taxi")
    assert os.path.basename(seen["temp"]).startswith(".staging-2-")
    assert not os.path.exists(seen["temp"])
    assert snapshot_tree(serving_root) == before


def test_validation_runs_on_the_copy_and_failure_stages_nothing(
         make_model, serving_root):
    staging.stage_model(make_model(), serving_root, "taxi")
    before = snapshot_tree(serving_root)
    checked = []

    def reject(path):
        checked.append(path)
        raise ValueError("signature serving_default missing")

    with pytest.raises(RolloutError) as info:
        staging.stage_model(make_model(), serving_root, "taxi",
                            validate=reject)
    assert "signature serving_default missing" in str(info.value)
    assert "nothing was staged" in str(info.value)
    assert os.path.dirname(checked[0]) == os.path.join(serving_root, "taxi")
    assert snapshot_tree(serving_root) == before


def test_stage_rejects_a_directory_without_saved_model(tmp_path, serving_root):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RolloutError, match="no saved_model.pb"):
        staging.stage_model(str(tmp_path / "empty"), serving_root, "taxi")
    with pytest.raises(RolloutError, match="does not exist"):
        staging.stage_model(str(tmp_path / "nope"), serving_root, "taxi")


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x y"])
def test_unsafe_model_names_are_rejected(name, serving_root):
    with pytest.raises(RolloutError, match="model name"):
        staging.list_versions(serving_root, name)


def test_prune_never_removes_protected_versions(make_model, serving_root):
    for _ in range(6):
        staging.stage_model(make_model(), serving_root, "taxi")
    removed = staging.prune_versions(serving_root, "taxi", keep=2,
                                     protected={1, 3})
    assert removed == [2, 4]
    assert staging.list_versions(serving_root, "taxi") == [1, 3, 5, 6]
    assert not [n for n in os.listdir(os.path.join(serving_root, "taxi"))
                if n.startswith(".")]


@pytest.mark.parametrize("keep", [0, -1, "3", True])
def test_prune_rejects_bad_keep(keep, serving_root):
    with pytest.raises(RolloutError, match="keep"):
        staging.prune_versions(serving_root, "taxi", keep, set())


def test_clean_stale_temp_dirs_removes_crash_leftovers(serving_root):
    model = os.path.join(serving_root, "taxi")
    for name in ("1", ".staging-2-123", ".deleting-1-77"):
        os.makedirs(os.path.join(model, name))
    removed = staging.clean_stale_temp_dirs(serving_root, "taxi")
    assert [os.path.basename(p) for p in removed] == [
        ".deleting-1-77", ".staging-2-123"]
    assert os.listdir(model) == ["1"]


def test_validate_saved_model_with_a_real_savedmodel(tmp_path, serving_root):
    tf = pytest.importorskip("tensorflow")

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return {"y": x * 2.0}

    module = Doubler()
    export = str(tmp_path / "export")
    tf.saved_model.save(module, export,
                        signatures={"serving_default": module.double})

    def validate(path):
        staging.validate_saved_model(path, ["serving_default"])

    version = staging.stage_model(export, serving_root, "taxi",
                                  validate=validate)
    assert version == 1
    with pytest.raises(RolloutError) as info:
        staging.validate_saved_model(
            os.path.join(serving_root, "taxi", "1"),
            ["serving_default", "transform_features"])
    assert "missing signature(s) transform_features" in str(info.value)
    assert "serving_default" in str(info.value)  # lists what it has
    with pytest.raises(RolloutError, match="not a loadable SavedModel"):
        staging.validate_saved_model(str(tmp_path), ["serving_default"])


def _fingerprint_def(**hashes):
    """A TF FingerprintDef as a SavedModel export writes it (fingerprint.pb)."""
    from tensorflow.core.protobuf import fingerprint_pb2
    values = dict(saved_model_checksum=11, graph_def_program_hash=22, signature_def_hash=33,
                  saved_object_graph_hash=44, checkpoint_hash=55)
    values.update(hashes)
    return fingerprint_pb2.FingerprintDef(**values).SerializeToString()


@pytest.mark.parametrize("changed, same_model", [
    ({"saved_model_checksum": 12}, True),     # the same program and weights, re-exported
    ({"checkpoint_hash": 56}, False),         # other weights
    ({"graph_def_program_hash": 23}, False),  # other code
    ({"signature_def_hash": 34}, False),      # other signatures
])
def test_a_reexport_of_the_same_model_has_the_same_fingerprint(tmp_path, changed, same_model):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, data in ((first, _fingerprint_def()), (second, _fingerprint_def(**changed))):
        folder.mkdir()
        (folder / "fingerprint.pb").write_bytes(data)
    same = staging.saved_model_fingerprint(first) == staging.saved_model_fingerprint(second)
    assert same == same_model


def test_the_fingerprint_names_the_export_locally_and_on_an_object_store(make_model):
    from tfx.dsl.io import fileio
    a, b = make_model("a"), make_model("b")
    assert staging.saved_model_fingerprint(a) != staging.saved_model_fingerprint(b)
    assert staging.saved_model_fingerprint(a).startswith("saved_model.pb:")
    with open(os.path.join(a, "fingerprint.pb"), "wb") as f:
        f.write(_fingerprint_def())   # TF >= 2.9 exports: fingerprint.pb wins.
    local = staging.saved_model_fingerprint(a)
    assert local.startswith("fingerprint.pb:")
    remote = "ram://fingerprint-%s/1" % os.getpid()
    fileio.makedirs(remote)
    with fileio.open(remote + "/fingerprint.pb", "wb") as f:
        f.write(_fingerprint_def())
    assert staging.saved_model_fingerprint(remote) == local
    assert staging.saved_model_fingerprint(os.path.dirname(a)) is None


def _export(path, weights, output="score"):
    """A real SavedModel (TF writes fingerprint.pb) of `w . x` with `weights`."""
    import numpy as np
    import tensorflow as tf

    class Linear(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.asarray(weights, dtype="float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, len(weights)], tf.float32)])
        def serve(self, x):
            return {output: tf.linalg.matvec(x, self.w)}

    module = Linear()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def test_a_retrain_equal_up_to_round_off_is_the_same_model(tmp_path):
    """What a re-run without cache gives: other weight bytes (other checkpoint
    hash), values within float round-off -> not a new model to stage."""
    import numpy as np
    weights = np.random.default_rng(0).normal(size=200).astype("float32")
    served = _export(tmp_path / "served", weights)
    rerun = _export(tmp_path / "rerun", weights * np.float32(1 + 3e-7))
    assert staging.saved_model_fingerprint(served) != staging.saved_model_fingerprint(rerun)
    assert staging.same_model(served, rerun)


@pytest.mark.parametrize("change", ["retrained", "one weight moved", "other program"])
def test_a_real_change_is_another_model(tmp_path, change):
    import numpy as np
    weights = np.random.default_rng(0).normal(size=200).astype("float32")
    served = _export(tmp_path / "served", weights)
    if change == "retrained":        # every weight moved by what training moves them
        other = _export(tmp_path / "other", weights * np.float32(1.01))
    elif change == "one weight moved":
        moved = weights.copy()
        moved[17] += 0.01
        other = _export(tmp_path / "other", moved)
    else:                            # same weights, other signature
        other = _export(tmp_path / "other", weights, output="probability")
    assert not staging.same_model(served, other)


def test_a_folder_without_an_export_is_no_model(tmp_path):
    import numpy as np
    served = _export(tmp_path / "served", np.ones(3, dtype="float32"))
    (tmp_path / "empty").mkdir()
    assert not staging.same_model(served, str(tmp_path / "empty"))
    assert staging.same_model(served, served)


def _export_with_constant(path, mean):
    """A SavedModel whose serving function captures a constant, as the Transform
    layer's analyzer results (means, vocabulary sizes) are captured."""
    import numpy as np
    import tensorflow as tf

    class Centered(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.ones(3, dtype="float32"))
            self.mean = tf.constant(np.float32(mean))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def serve(self, x):
            return {"score": tf.linalg.matvec(x - self.mean, self.w)}

    module = Centered()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


@pytest.mark.parametrize("other_mean, same", [
    (24.4449368, True),    # what a re-run's Transform gave on CI: Beam summed in another order
    (24.6893841, False),   # a 1% change of the statistic: other data
])
def test_captured_constants_count_as_the_model_up_to_round_off(tmp_path, other_mean, same):
    served = _export_with_constant(tmp_path / "served", 24.4449348)
    rerun = _export_with_constant(tmp_path / "rerun", other_mean)
    assert staging.saved_model_fingerprint(served) != staging.saved_model_fingerprint(rerun)
    assert staging.same_model(served, rerun) == same
