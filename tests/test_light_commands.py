"""The light commands never import TensorFlow, TFX or Beam (issue #17 item 3).

`tfx-canary --help`, `rollout status`, `lineage show|runs|diff` and `serve --help`
answer in a fraction of a second only while nothing on their path imports
TensorFlow (seconds on its own), TFX or Beam. Each command runs here in a real
subprocess under `python -X importtime` against a real workspace (a SQLite ML
Metadata store with two runs and real TFMA metrics files, a serving root with a
stable and a canary version); a failure names the command and the import chain
that pulled the heavy package in, read from importtime's nesting.
"""
import os
import subprocess
import sys

import pytest

from rollout import control
from tests.synthetic_runs import MODEL, RunStore

HEAVY = ('tensorflow', 'tfx', 'apache_beam')
FIRST = {'auc': 0.90, 'binary_accuracy': 0.80, 'example_count': 100.0}
SECOND = {'auc': 0.91, 'binary_accuracy': 0.81, 'example_count': 100.0}


def _fake_saved_model(path, tag):
    # Staging copies and fingerprints the files; it never loads the graph.
    os.makedirs(os.path.join(path, 'variables'))
    with open(os.path.join(path, 'saved_model.pb'), 'w') as f:
        f.write('graph ' + tag)
    with open(os.path.join(path, 'variables', 'variables.index'), 'w') as f:
        f.write(tag)
    return path


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A workspace as two `tfx-canary run`s leave it: runs in ML Metadata, v1 stable, v2 canary."""
    ws = tmp_path_factory.mktemp('light')
    runs = RunStore(ws)
    runs.add(FIRST, blessed=True)
    runs.add(SECOND, FIRST, blessed=True)
    controller = control.RolloutController(str(ws / 'serving'), MODEL)
    controller.stage(_fake_saved_model(str(ws / 'exports' / 'm1'), 'm1'))
    controller.stage(_fake_saved_model(str(ws / 'exports' / 'm2'), 'm2'), canary_percent=10)
    return str(ws)


def _parse_importtime(stderr):
    """[(depth, module)] in importtime's order (a module's line follows its children's)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith('import time:') or 'cumulative' in line:
            continue
        name = line.rsplit('|', 1)[1][1:]
        rows.append(((len(name) - len(name.lstrip(' '))) // 2, name.strip()))
    return rows


def heavy_import_chain(stderr):
    """'a -> b -> tensorflow' for the first heavy package imported, else None."""
    rows = _parse_importtime(stderr)
    for i, (depth, module) in enumerate(rows):
        if module.split('.')[0] not in HEAVY:
            continue
        chain = [module]
        for parent_depth, parent in rows[i + 1:]:   # Parents are printed after their children.
            if parent_depth == depth - 1:
                chain.insert(0, parent)
                depth -= 1
        # Up to the first heavy package: what TensorFlow imports itself is noise.
        first = next(j for j, name in enumerate(chain) if name.split('.')[0] in HEAVY)
        return ' -> '.join(chain[:first + 1])
    return None


def test_chain_is_read_from_importtime_nesting():
    stderr = '\n'.join([
        'import time: self [us] | cumulative | imported package',
        'import time:       10 |         10 |     tensorflow.python',
        'import time:       10 |         20 |   tensorflow',
        'import time:       10 |         30 | lineage.files',
        'import time:       10 |         10 | json',
    ])
    assert heavy_import_chain(stderr) == 'lineage.files -> tensorflow'
    assert heavy_import_chain(stderr.replace('tensorflow', 'tensorflow_metadata')) is None


LIGHT_COMMANDS = [
    ['--help'],
    ['rollout', '--help'],
    ['serve', '--help'],
    ['lineage', '--help'],
    ['rollout', 'status'],
    ['lineage', 'runs'],
    ['lineage', 'show', '--version', '2'],
    ['lineage', 'diff', '1', '2'],
]


@pytest.mark.parametrize('argv', LIGHT_COMMANDS, ids=' '.join)
def test_light_command_imports_no_tensorflow(argv, workspace, tmp_path):
    if '--help' not in argv:
        argv = argv + ['--workspace', workspace]
    process = subprocess.run(
        [sys.executable, '-X', 'importtime', '-m', 'runners.cli'] + argv,
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.strip(), 'tfx-canary %s printed nothing' % ' '.join(argv)
    chain = heavy_import_chain(process.stderr)
    assert chain is None, 'tfx-canary %s imports %s' % (' '.join(argv), chain)
