"""Following rollout.json: load before switching, survive errors, drain (fast, fake models)."""
import contextlib
import os

import pytest

from rollout import control
from serving.models import ServedModel


class FakeVersion:
    """Stands in for a loaded SavedModel; counts loads per version."""
    loads = {}
    broken = set()

    def __init__(self, model_name, version, path):
        if version in FakeVersion.broken:
            raise RuntimeError('corrupt SavedModel at %s' % path)
        FakeVersion.loads[version] = FakeVersion.loads.get(version, 0) + 1
        self.version = version
        self.in_flight = 0
        self.load_seconds = 0.0

    def warm_up(self):
        pass

    @contextlib.contextmanager
    def use(self):
        self.in_flight += 1
        try:
            yield self
        finally:
            self.in_flight -= 1


@pytest.fixture
def staged(tmp_path):
    FakeVersion.loads, FakeVersion.broken = {}, set()
    root = tmp_path / 'serving'
    controller = control.RolloutController(str(root), 'taxi')
    for version in (1, 2):
        src = tmp_path / 'exports' / str(version)
        (src / 'variables').mkdir(parents=True)
        (src / 'saved_model.pb').write_text('fake')
        controller.stage(str(src), canary_percent=10)
    changes = []
    model = ServedModel(str(root), 'taxi', FakeVersion,
                        on_change=lambda name, old, new: changes.append(new.key))
    return root, controller, model, changes


def test_new_versions_load_before_the_switch_and_old_ones_drain(staged):
    root, controller, model, changes = staged
    assert model.refresh() and model.plan.key == (1, 2, 10)
    assert FakeVersion.loads == {1: 1, 2: 1}
    assert not model.refresh()  # nothing changed on disk
    v1 = model.plan.versions[1]
    with v1.use():
        controller.promote()
        assert model.refresh() and model.plan.key == (2, None, 0)
        model.drain()
        assert model.version_states() == {2: 'AVAILABLE', 1: 'UNLOADING'}
    model.drain()
    assert model.version_states() == {2: 'AVAILABLE', 1: 'END'}
    assert FakeVersion.loads == {1: 1, 2: 1}  # v2 was reused, not reloaded
    assert changes == [(1, 2, 10), (2, None, 0)]


def test_a_bad_rollout_json_or_version_keeps_the_current_plan(staged):
    root, controller, model, _ = staged
    model.refresh()
    state_path = root / 'taxi' / 'rollout.json'
    good = state_path.read_text()
    state_path.write_text('{ not json')
    assert not model.refresh() and model.plan.key == (1, 2, 10)
    assert 'not valid JSON' in model.last_error
    state_path.write_text(good)
    assert not model.refresh() and model.last_error is None  # same plan again

    # A server starting while the canary's directory is not there (yet):
    # nothing is loaded for nothing, and the next poll retries.
    os.rename(root / 'taxi' / '2', root / 'taxi' / 'hidden')
    fresh = ServedModel(str(root), 'taxi', FakeVersion)
    assert not fresh.refresh() and 'holds no SavedModel' in fresh.last_error
    assert FakeVersion.loads == {1: 1, 2: 1} and fresh.plan.versions == {}
    os.rename(root / 'taxi' / 'hidden', root / 'taxi' / '2')
    assert fresh.refresh() and fresh.plan.key == (1, 2, 10)

    # A version that fails to load is not retried until rollout.json changes.
    FakeVersion.broken.add(3)
    src = root.parent / 'exports' / '1'
    controller.stage(str(src), canary_percent=20)
    assert not model.refresh() and 'corrupt SavedModel' in model.last_error
    errors = model.reload_errors
    assert not model.refresh() and model.reload_errors == errors
    assert model.plan.key == (1, 2, 10)
    FakeVersion.broken.clear()
    controller.set_traffic(30)
    assert model.refresh() and model.plan.key == (1, 3, 30)
