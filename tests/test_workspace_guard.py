"""The guard that keeps tests out of the caller's ./workspace catches reads and writes."""
import os
import sqlite3
import subprocess
import sys

from tests.workspace_guard import WorkspaceGuard, changed


def test_guard_records_reads_and_writes_in_this_process(tmp_path):
    root = tmp_path / 'workspace'
    (root / 'serving').mkdir(parents=True)
    (root / 'serving' / 'rollout.json').write_text('{}')
    guard = WorkspaceGuard([str(root)])
    guard.start()
    try:
        with open(root / 'serving' / 'rollout.json') as f:   # a read
            f.read()
        os.listdir(tmp_path)                                  # outside: fine
        sqlite3.connect(str(root / 'metadata.sqlite')).close()
    finally:
        violations = guard.stop()
    assert [v.split()[0] for v in violations] == ['open', 'sqlite3.connect']
    assert str(root / 'serving' / 'rollout.json') in violations[0]


def test_guard_sees_writes_by_other_processes(tmp_path):
    root = tmp_path / 'workspace'
    root.mkdir()
    guard = WorkspaceGuard([str(root)])
    before = guard.snapshot()
    subprocess.run([sys.executable, '-c', 'open(%r, "w").write("x")' % str(root / 'new')],
                   check=True)
    assert changed(before, guard.snapshot()) == [str(root / 'new')]


def test_guard_ignores_look_alike_paths(tmp_path):
    guard = WorkspaceGuard([str(tmp_path / 'workspace')])
    guard.start()
    try:
        (tmp_path / 'workspace-copy').mkdir()
        open(tmp_path / 'workspace-copy' / 'f', 'w').close()
    finally:
        assert guard.stop() == []
