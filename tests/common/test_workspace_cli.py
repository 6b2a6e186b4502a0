"""Every command reads the workspace it is pointed at, never the cwd's ./workspace.

Each test runs in a temp cwd that has its *own* ./workspace holding a different
rollout (the decoy), as the checkout has after `make run`; the command is
pointed at another workspace with --workspace, --metadata-path or
--serving-root and must report that one's state. (lineage: see
tests/lineage/test_lineage_unit.py, which has the synthetic stores.)
"""
import json
import os

import pytest

from rollout import audit, control
from runners import cli
from tests.conftest import one_error_line

MODEL = 'taxi'


def fake_model(root, tag):
    path = root / 'exports' / tag
    (path / 'variables').mkdir(parents=True)
    (path / 'saved_model.pb').write_text('fake graph ' + tag)
    (path / 'variables' / 'variables.index').write_text(tag)
    return str(path)


def stage(serving_root, versions, tmp_path, canary_percent=10):
    """Stages `versions` fake models (v1 stable, v2 canary, ...) under serving_root."""
    controller = control.RolloutController(str(serving_root), MODEL)
    for i in range(versions):
        controller.stage(fake_model(tmp_path, '%s-%d' % (os.path.basename(
            os.path.dirname(str(serving_root))), i)), canary_percent=canary_percent)
    return controller


def new_store(path):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    config = audit.sqlite_connection_config(str(path))
    return audit.connect(config)  # Creates the store, as the pipeline would.


def record_push(store, serving_root, version=1):
    """A PushedModel as CanaryPusher records it (model_name, pushed_version, serving_root)."""
    from ml_metadata.proto import metadata_store_pb2 as pb
    type_id = store.put_artifact_type(pb.ArtifactType(name='PushedModel'),
                                      can_add_fields=True)
    artifact = pb.Artifact(type_id=type_id, uri=os.path.join(str(serving_root), MODEL,
                                                              str(version)))
    artifact.custom_properties['model_name'].string_value = MODEL
    artifact.custom_properties['pushed_version'].string_value = str(version)
    artifact.custom_properties['pushed'].int_value = 1
    artifact.custom_properties['serving_root'].string_value = str(serving_root)
    store.put_artifacts([artifact])


def transitions(path):
    return [r['event'] for r in audit.transitions(
        audit.connect(audit.sqlite_connection_config(str(path), create=False)), MODEL)]


@pytest.fixture
def decoy(tmp_path, monkeypatch):
    """cwd = tmp/cwd, whose ./workspace serves stable v1 only, with its own store
    (whose pushes went to that ./workspace/serving)."""
    cwd = tmp_path / 'cwd'
    root = cwd / 'workspace' / 'serving'
    stage(root, 1, tmp_path)
    store = new_store(cwd / 'workspace' / 'metadata.sqlite')
    record_push(store, os.path.abspath(root))
    monkeypatch.chdir(cwd)
    return cwd / 'workspace'


@pytest.fixture
def other(tmp_path):
    """Another workspace: stable v1, canary v2 at 10%, with its own store."""
    ws = tmp_path / 'other'
    stage(ws / 'serving', 2, tmp_path)
    new_store(ws / 'metadata.sqlite')
    return ws


def main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- rollout

@pytest.mark.parametrize('flags', [
    lambda ws: ['--workspace', ws],
    lambda ws: ['--metadata-path', ws / 'metadata.sqlite'],     # Its serving/ folder.
    lambda ws: ['--serving-root', ws / 'serving'],
])
def test_rollout_status_reads_the_workspace_it_is_given(decoy, other, capsys, flags):
    code, out, err = main(capsys, 'rollout', 'status', *flags(other), '--json')
    assert code == 0, err
    status = json.loads(out)
    assert (status['stable_version'], status['canary_version']) == (1, 2)
    assert status['paths']['rollout_json'] == str(other / 'serving' / MODEL / 'rollout.json')
    # The store that belongs to it: given, or next to the serving root.
    assert status['metadata_path'] == str(other / 'metadata.sqlite')
    code, out, err = main(capsys, 'rollout', 'status', *flags(other))
    assert code == 0, err
    assert 'canary      v2  10% of traffic' in out
    assert 'serving state: %s' % (other / 'serving' / MODEL / 'rollout.json') in out


def test_rollout_status_default_is_the_cwd_workspace(decoy, capsys):
    code, out, err = main(capsys, 'rollout', 'status', '--json')
    assert code == 0, err
    status = json.loads(out)
    assert (status['stable_version'], status['canary_version']) == (1, None)
    assert status['paths']['rollout_json'] == str(decoy / 'serving' / MODEL / 'rollout.json')


def test_rollout_audits_into_the_store_of_its_workspace(decoy, other, capsys):
    code, out, err = main(capsys, 'rollout', 'set-traffic', '25', '--serving-root',
                          other / 'serving', '--reason', 'ramp')
    assert code == 0, err
    assert transitions(other / 'metadata.sqlite')[-1] == 'traffic_changed'
    assert transitions(decoy / 'metadata.sqlite') == []


def test_rollout_never_audits_into_another_workspaces_store(decoy, tmp_path, capsys):
    """--serving-root alone, no store next to it: ./workspace's store belongs to
    ./workspace/serving, so the change is not recorded there."""
    root = tmp_path / 'bare' / 'serving'
    stage(root, 2, tmp_path)
    code, out, err = main(capsys, 'rollout', 'promote', '--serving-root', root)
    assert code == 0, err
    assert 'after:  stable v2 (100%), no canary' in out
    assert 'audit:  skipped: %s is the store of serving root %s' % (
        decoy / 'metadata.sqlite', decoy / 'serving') in out
    assert transitions(decoy / 'metadata.sqlite') == []


def test_kserve_storage_uri_prefix_and_its_deprecated_alias(other, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = other / 'serving' / MODEL / 'kserve' / 'inferenceservice.yaml'
    assert not manifest.exists()
    code, out, err = main(capsys, 'rollout', 'repair', '--workspace', other,
                          '--kserve-storage-uri-prefix', 'gs://new/serving')
    assert code == 0 and err == '', err
    assert 'gs://new/serving/%s/2' % MODEL in manifest.read_text()
    code, out, err = main(capsys, 'rollout', 'repair', '--workspace', other,
                          '--storage-uri-prefix', 'gs://old/name')
    assert code == 0
    assert err == ('warning: --storage-uri-prefix is deprecated; use '
                   '--kserve-storage-uri-prefix\n')
    assert 'gs://old/name/%s/2' % MODEL in manifest.read_text()
    help_text = ' '.join(_help(capsys, 'rollout', 'status').split())
    assert '--kserve-storage-uri-prefix URI' in help_text
    assert '--storage-uri-prefix URI' not in help_text   # Hidden; named as an alias.
    assert 'deprecated alias' in help_text


def _help(capsys, *argv):
    with pytest.raises(SystemExit):
        cli.main([*argv, '--help'])
    return capsys.readouterr().out


@pytest.mark.parametrize('command', [['run'], ['rollout', 'status'], ['lineage', 'show'],
                                     ['serve'], ['capture', 'validate']])
def test_every_command_takes_the_same_workspace_flag(capsys, command):
    text = ' '.join(_help(capsys, *command).split())
    assert '--workspace DIR pipeline workspace (what `tfx-canary run --workspace` writes' in text
    assert '(default: ./workspace)' in text


# ---------------------------------------------------------------- serve, capture

def test_serve_names_the_resolved_serving_root(decoy, tmp_path, capsys):
    missing = tmp_path / 'no-such-ws'
    line = one_error_line(*main(capsys, 'serve', '--workspace', missing))
    assert ('serving root %s does not exist (the serving/ folder of workspace %s from '
            '--workspace)' % (missing / 'serving', missing)) in line
    assert 'pass --serving-root' in line
    # An existing workspace without models: its own serving root, not the decoy's.
    empty = tmp_path / 'empty-ws'
    (empty / 'serving').mkdir(parents=True)
    line = one_error_line(*main(capsys, 'serve', '--workspace', empty))
    assert 'no models under %s' % (empty / 'serving') in line


def test_serve_default_serving_root_is_named_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(*main(capsys, 'serve'))
    assert ('serving root %s does not exist (the serving/ folder of the default workspace '
            './workspace (%s))' % (tmp_path / 'workspace' / 'serving',
                                   tmp_path / 'workspace')) in line


def test_capture_validate_reads_the_workspace_it_is_given(decoy, tmp_path, capsys):
    from serving import capture
    # The decoy has a captured span; the workspace asked for has none.
    span = capture.span_dir(str(decoy / 'capture'), 1)
    os.makedirs(span)
    with open(os.path.join(span, 'part-00000.csv'), 'w') as f:
        f.write('fare\n1.0\n')
    ws = tmp_path / 'ws'
    (ws / 'capture').mkdir(parents=True)
    line = one_error_line(*main(capsys, 'capture', 'validate', '--workspace', ws))
    assert 'no span-N folders in %s' % (ws / 'capture') in line
    # --capture-dir still wins over the workspace.
    line = one_error_line(*main(capsys, 'capture', 'validate', '--workspace', ws,
                                '--capture-dir', tmp_path / 'elsewhere'))
    assert 'no span-N folders in %s' % (tmp_path / 'elsewhere') in line
