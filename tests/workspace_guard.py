"""Fails any test that reads or writes the caller's ./workspace.

Tests must never see the state `make run` leaves there (a test that read
./workspace/serving/taxi/rollout.json once reported another workspace's
stable version; one wrote fake rollout records into ./workspace/metadata.sqlite).

Two nets, because neither catches everything alone:
  * a Python audit hook: every open/listdir/scandir/mkdir/rename/remove/
    rmtree/copytree/sqlite3.connect of a path under a guarded root, in this
    process (reads included);
  * a snapshot of the guarded roots (path -> size, mtime) before and after
    each test: writes by subprocesses and by C++ (ML Metadata's SQLite).
"""
import os
import sys

AUDITED_EVENTS = frozenset({
    'open', 'os.listdir', 'os.scandir', 'os.mkdir', 'os.rename', 'os.replace', 'os.remove',
    'os.rmdir', 'os.truncate', 'os.utime', 'shutil.rmtree', 'shutil.copytree', 'shutil.copyfile',
    'shutil.move', 'sqlite3.connect', 'os.chmod',
})
_GUARDS = []


def _audit(event, args):
    if event not in AUDITED_EVENTS or not _GUARDS:
        return
    for guard in _GUARDS:
        guard.check(event, args)


class WorkspaceGuard:
    """Records accesses to paths under `roots` while started."""

    def __init__(self, roots):
        self.roots = tuple(sorted({os.path.abspath(r) for r in roots}))
        self.violations = []

    def _guarded(self, value):
        if isinstance(value, bytes):
            value = os.fsdecode(value)
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value:
            return None
        path = os.path.abspath(value)
        return next((path for root in self.roots
                     if path == root or path.startswith(root + os.sep)), None)

    def check(self, event, args):
        for value in args:
            path = self._guarded(value)
            if path is not None:
                self.violations.append('%s %s' % (event, path))

    def snapshot(self):
        """{path: (size, mtime_ns)} of everything under the roots."""
        result = {}
        for root in self.roots:
            # os.walk's own scandir calls must not count as the test's access.
            active, _GUARDS[:] = list(_GUARDS), []
            try:
                for dirpath, dirnames, filenames in os.walk(root):
                    for name in dirnames + filenames:
                        path = os.path.join(dirpath, name)
                        try:
                            st = os.lstat(path)
                        except FileNotFoundError:
                            continue
                        result[path] = (st.st_size, st.st_mtime_ns)
            finally:
                _GUARDS[:] = active
        return result

    def start(self):
        self.violations = []
        _GUARDS.append(self)

    def stop(self):
        if self in _GUARDS:
            _GUARDS.remove(self)
        return list(self.violations)


def changed(before, after):
    """Paths created, removed or modified between two snapshots."""
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


sys.addaudithook(_audit)
