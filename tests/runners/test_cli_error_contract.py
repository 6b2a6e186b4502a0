"""The CLI's contract for bad input, for every subcommand's main failure.

Through `runners.cli.main` as a user's shell reaches it: exit status 2,
nothing on stdout, exactly one `error:` line on stderr, and nothing in the
workspace created or changed.
"""
import pytest

from rollout import control
from runners import cli
from tests.conftest import one_error_line
from tests.rollout.conftest import snapshot_tree


@pytest.fixture
def ws(tmp_path):
    """A workspace with a stable v1 staged (fake SavedModel: nothing loads it here)."""
    ws = tmp_path / 'workspace'
    src = tmp_path / 'export'
    (src / 'variables').mkdir(parents=True)
    (src / 'saved_model.pb').write_text('fake')
    control.RolloutController(str(ws / 'serving'), 'taxi').stage(str(src))
    return ws


def _corrupt(ws):
    (ws / 'serving' / 'taxi' / 'rollout.json').write_text('{not json')


CASES = {
    'run: unknown data folder': (['run', '--data-root', '{ws}/no-such-data'], None,
                                 'does not exist'),
    'run: bad --model-hparam': (['run', '--model-hparam', 'oops'], None, '--model-hparam'),
    'rollout status: corrupted rollout.json': (['rollout', 'status'], _corrupt, 'not valid JSON'),
    'rollout set-traffic: out of range': (['rollout', 'set-traffic', '150'], None, '0 to 100'),
    'rollout promote: no canary': (['rollout', 'promote'], None, 'canary'),
    'rollout rollback: unknown version': (['rollout', 'rollback', '--to', '99'], None, '99'),
    'rollout repair: unknown model': (['rollout', 'repair', '--model-name', 'fraud'], None,
                                      'does not exist'),
    'rollout analyze: no metrics': (['rollout', 'analyze', '--metrics', '{ws}/none.json'], None,
                                    'no metrics snapshot'),
    'rollout watch: no canary': (['rollout', 'watch', '--interval', '1'], None,
                                 'no live canary'),
    'lineage runs: no store': (['lineage', 'runs', '--metadata-path', '{ws}/none.sqlite'], None,
                               'none.sqlite'),
    'lineage diff: bad version': (['lineage', 'diff', 'x', 'stable'], None, "'x'"),
    'serve: missing serving root': (['serve', '--serving-root', '{ws}/nowhere'], None,
                                    'does not exist'),
    'loop: a workspace that already holds a run': (['loop'], None, 'already holds a pipeline run'),
    'capture validate: nothing captured': (['capture', 'validate'], None, 'capture'),
    'kfp compile: wrong extension': (['kfp', 'compile', '--target', 'kfp', '--image', 'r/i:1',
                                      '--pipeline-root', 'gs://b/r', '--serving-pvc', 'serving', '--output',
                                      '{ws}/p.txt'], None, '*.yaml'),
    'kfp submit: missing package': (['kfp', 'submit', '--host', 'http://127.0.0.1:9',
                                     '--package', '{ws}/none.yaml'], None, 'none.yaml'),
}
# Commands that take --workspace get it, so defaults never reach ./workspace.
NO_WORKSPACE_FLAG = ('kfp',)


@pytest.mark.parametrize('name', sorted(CASES))
def test_main_failure_is_one_error_line_and_changes_nothing(name, ws, capsys):
    argv, prepare, needle = CASES[name]
    if prepare:
        prepare(ws)
    argv = [a.replace('{ws}', str(ws)) for a in argv]
    if argv[0] not in NO_WORKSPACE_FLAG:
        argv += ['--workspace', str(ws)]
    before = snapshot_tree(ws)
    code = cli.main(argv)
    out, err = capsys.readouterr()
    line = one_error_line(code, out, err)
    assert needle in line, line
    assert snapshot_tree(ws) == before


def test_every_subcommand_is_covered():
    parser = cli.build_parser()
    top = next(a for a in parser._actions if a.dest == 'command')  # pylint: disable=protected-access
    covered = {CASES[name][0][0] for name in CASES}
    assert covered == set(top.choices), set(top.choices) - covered
    rollout = top.choices['rollout']
    commands = next(a for a in rollout._actions if a.dest == 'rollout_command')  # pylint: disable=protected-access
    assert {CASES[n][0][1] for n in CASES if CASES[n][0][0] == 'rollout'} == set(commands.choices)
