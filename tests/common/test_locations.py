"""common/locations.py: one workspace layout and its derivation rules, for every command."""
import argparse
import os

import pytest

from common import locations
from common.cli import HelpFormatter, add_deprecated_alias
from common.locations import (METADATA_PATH, MODEL_NAME, WORKSPACE, resolve,
                              serving_root_for_store, store_belongs_to)


def parse(argv, **options):
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    locations.add_location_options(parser, **options)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    # ./workspace is relative to the cwd: never the project's.
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_layout_run_writes():
    where = resolve(parse([], capture=True))
    assert where.workspace == 'workspace' and where.workspace_from == 'default'
    assert where.metadata_path == os.path.join('workspace', 'metadata.sqlite')
    assert where.serving_root == os.path.join('workspace', 'serving')
    assert where.capture_dir == os.path.join('workspace', 'capture')
    assert where.model_name == 'taxi' and where.given == frozenset()
    assert where.rollout_json() == os.path.join('workspace', 'serving', 'taxi', 'rollout.json')


def test_workspace_moves_everything_not_given(tmp_path):
    ws = tmp_path / 'ws'
    where = resolve(parse(['--workspace', ws, '--model-name', 'fraud'], capture=True))
    assert (where.metadata_path, where.serving_root, where.capture_dir) == (
        str(ws / 'metadata.sqlite'), str(ws / 'serving'), str(ws / 'capture'))
    assert where.model_name == 'fraud' and where.given == {WORKSPACE, MODEL_NAME}
    assert where.serving_root_from == 'in --workspace'
    # What is given wins over the workspace.
    where = resolve(parse(['--workspace', ws, '--serving-root', tmp_path / 's']))
    assert where.serving_root == str(tmp_path / 's') and where.serving_root_from == '--serving-root'
    assert where.metadata_path == str(ws / 'metadata.sqlite')


def test_metadata_path_alone_brings_its_own_serving_root(tmp_path):
    """The bug: --metadata-path X read ./workspace/serving; now X's folder is the workspace."""
    store = tmp_path / 'elsewhere' / 'metadata.sqlite'
    where = resolve(parse(['--metadata-path', store], capture=True))
    assert where.workspace == str(tmp_path / 'elsewhere')
    assert where.workspace_from == '--metadata-path'
    assert where.serving_root == str(tmp_path / 'elsewhere' / 'serving')
    assert where.serving_root_from == 'next to --metadata-path'
    assert where.metadata_path == str(store) and where.given == {METADATA_PATH}
    # Relative paths work too (the folder of 'metadata.sqlite' is the cwd).
    assert resolve(parse(['--metadata-path', 'metadata.sqlite'])).serving_root == str(
        tmp_path / 'serving')


def test_serving_root_alone_uses_the_store_next_to_it_only_if_there_is_one(tmp_path):
    root = tmp_path / 'ws' / 'serving'
    root.mkdir(parents=True)
    where = resolve(parse(['--serving-root', root]))
    assert where.metadata_path == os.path.join('workspace', 'metadata.sqlite')
    assert where.workspace_from == 'default' and where.metadata_is_a_guess
    (tmp_path / 'ws' / 'metadata.sqlite').write_bytes(b'')
    where = resolve(parse(['--serving-root', root], capture=True))
    assert where.metadata_path == str(tmp_path / 'ws' / 'metadata.sqlite')
    assert where.metadata_path_from == 'next to --serving-root'
    assert where.capture_dir == str(tmp_path / 'ws' / 'capture')
    assert not where.metadata_is_a_guess


def test_run_never_infers_its_workspace(tmp_path):
    root = tmp_path / 'ws' / 'serving'
    root.mkdir(parents=True)
    (tmp_path / 'ws' / 'metadata.sqlite').write_bytes(b'')
    where = resolve(parse(['--serving-root', root], metadata=False), infer_workspace=False)
    assert where.workspace == 'workspace' and where.serving_root == str(root)


def test_missing_options_count_as_not_given():
    where = resolve(argparse.Namespace())
    assert where.serving_root == os.path.join('workspace', 'serving') and not where.given


def test_repeatable_model_name_means_every_model_when_absent():
    assert resolve(parse([], model_name='append')).model_name is None
    assert resolve(parse(['--model-name', 'a', '--model-name', 'b'],
                         model_name='append')).model_name == ('a', 'b')


def test_a_store_uses_the_serving_root_its_pushes_recorded(tmp_path):
    store = tmp_path / 'ws' / 'metadata.sqlite'
    recorded = tmp_path / 'mnt' / 'models'
    where = resolve(parse(['--metadata-path', store]))
    # Recorded but absent here (a store from a cluster): the folder next to the store.
    assert serving_root_for_store(where, str(recorded), 'PushedModel #3') == where
    recorded.mkdir(parents=True)
    moved = serving_root_for_store(where, str(recorded), 'PushedModel #3')
    assert moved.serving_root == str(recorded)
    assert moved.serving_root_from == 'recorded in ML Metadata by PushedModel #3'
    # Never over an explicit --serving-root or --workspace.
    for flags in (['--serving-root', tmp_path / 's'], ['--workspace', tmp_path / 'w']):
        explicit = resolve(parse(['--metadata-path', store, *flags]))
        assert serving_root_for_store(explicit, str(recorded), 'x') == explicit


def test_a_copied_store_keeps_its_own_serving_root(tmp_path):
    """The recorded root sits next to another metadata.sqlite: this store is a copy."""
    original = tmp_path / 'original'
    (original / 'serving').mkdir(parents=True)
    (original / 'metadata.sqlite').write_bytes(b'')
    copy = tmp_path / 'copy' / 'metadata.sqlite'
    where = resolve(parse(['--metadata-path', copy]))
    assert serving_root_for_store(where, str(original / 'serving'), 'x') == where
    own = resolve(parse(['--metadata-path', original / 'metadata.sqlite']))
    assert serving_root_for_store(own, str(original / 'serving'), 'x').serving_root == str(
        original / 'serving')


def test_a_remote_store_has_no_local_serving_root_unless_told(tmp_path):
    where = resolve(parse([]))
    remote = serving_root_for_store(where, None, None, store_is_local=False)
    assert remote.serving_root is None and remote.rollout_json() is None
    assert remote.serving_root_from.startswith('none')
    told = resolve(parse(['--serving-root', tmp_path]))
    assert serving_root_for_store(told, None, None, store_is_local=False) == told


def test_store_belongs_to(tmp_path):
    assert store_belongs_to([], str(tmp_path))                       # An empty store.
    assert store_belongs_to([str(tmp_path / 'a'), None], str(tmp_path / 'a'))
    assert not store_belongs_to([str(tmp_path / 'b')], str(tmp_path / 'a'))


def test_help_explains_the_derivation(capsys):
    with pytest.raises(SystemExit):
        parse(['--help'], capture=True)
    out = ' '.join(capsys.readouterr().out.split())
    assert 'WORKSPACE/metadata.sqlite' in out and 'WORKSPACE/serving' in out
    assert 'given only --metadata-path, the serving/ folder next to that file' in out
    assert 'given only --serving-root, the metadata.sqlite next to that folder' in out
    assert '(default: ./workspace)' in out and 'default: None' not in out


def test_deprecated_alias_warns_once_and_sets_the_new_name(capsys):
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument('--kserve-storage-uri-prefix', default=None)
    add_deprecated_alias(parser, '--storage-uri-prefix', dest='kserve_storage_uri_prefix',
                         replacement='--kserve-storage-uri-prefix')
    assert parser.parse_args([]).kserve_storage_uri_prefix is None
    assert capsys.readouterr().err == ''
    args = parser.parse_args(['--storage-uri-prefix', 'gs://b/s'])
    assert args.kserve_storage_uri_prefix == 'gs://b/s'
    err = capsys.readouterr().err
    assert err == 'warning: --storage-uri-prefix is deprecated; use --kserve-storage-uri-prefix\n'
    assert '--storage-uri-prefix' not in parser.format_help()   # Hidden.


def test_help_formatter_keeps_laid_out_text_and_wraps_the_rest():
    parser = argparse.ArgumentParser(prog='p', formatter_class=HelpFormatter,
                                     description='one long paragraph ' * 10 + '<serving-root>',
                                     epilog='Examples:\n  p --x   # as written')
    parser.add_argument('--x', default=None, help='no default shown')
    parser.add_argument('--y', default=3, help='shown')
    text = parser.format_help()
    assert '  p --x   # as written' in text and '<serving-root>' in text
    assert all(len(line) <= 100 for line in text.splitlines())
    assert 'no default shown\n' in text and '(default: 3)' in text


def test_the_bottom_layer_imports_nothing_of_ours():
    import ast
    root = os.path.dirname(os.path.dirname(os.path.abspath(locations.__file__)))
    ours = {name for name in os.listdir(root)
            if os.path.isfile(os.path.join(root, name, '__init__.py')) and name != 'common'}
    for name in ('__init__.py', 'locations.py', 'cli.py'):
        tree = ast.parse(open(os.path.join(root, 'common', name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or '']
            else:
                continue
            assert not {m.split('.')[0] for m in modules} & ours, (name, modules)

