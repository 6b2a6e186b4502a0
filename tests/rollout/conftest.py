"""Shared fixtures: fake SavedModel dirs and a file snapshot helper."""

import os

import pytest

from rollout import control


@pytest.fixture
def make_model(tmp_path):
    """Return a factory creating tiny fake SavedModel dirs."""
    counter = iter(range(1, 10_000))

    def factory(tag=None):
        tag = tag or f"model-{next(counter)}"
        path = tmp_path / "exports" / tag
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_text(f"fake graph {tag}")
        (path / "variables" / "variables.index").write_text(tag)
        return str(path)

    return factory


@pytest.fixture
def serving_root(tmp_path):
    return str(tmp_path / "serving")


@pytest.fixture
def controller(serving_root):
    return control.RolloutController(
        serving_root, "taxi", storage_uri_prefix="gs://bucket/serving")


def snapshot_tree(root):
    """Return {relative path: bytes or '<dir>'} for everything under root."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            result[os.path.relpath(path, root)] = "<dir>"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                result[os.path.relpath(path, root)] = handle.read()
    return result
