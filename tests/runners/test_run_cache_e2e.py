"""`tfx-canary run` twice on the workspace `make run` left: the first re-run is a
TFX cache hit and records it, the second answers from the record with the same
summary, the installed command, in a real process (issue #17 item 3)."""
import subprocess

import pytest

from tests.conftest import tfx_canary_command

pytestmark = pytest.mark.e2e


def _run(cwd, *argv):
    process = subprocess.run(tfx_canary_command() + ['run', '--workspace', 'workspace'] + list(argv),
                             cwd=cwd, capture_output=True, text=True, timeout=900)
    assert process.returncode == 0, process.stdout + process.stderr
    return process.stdout.splitlines()


def _summary(lines):
    """The Summary block without its wall time."""
    start = lines.index('Summary')
    return [l for l in lines[start:] if not l.startswith('  wall time')]


def test_unchanged_rerun_answers_from_the_record(copy_workspace):
    cwd = copy_workspace.parent
    normal = _run(cwd, '--span', '2')
    # The normal path (in a copy BaselineModel's serving root differs, so not every step is cached).
    assert not [l for l in normal if l.startswith('nothing changed')]
    assert [l for l in normal if l.startswith('  [')]
    cached = _run(cwd, '--span', '2')
    assert cached[1].startswith('nothing changed (cached)')
    assert cached[0] == normal[0]     # The same 'Running ... on span 2' line.
    assert _summary(cached) == _summary(normal)
