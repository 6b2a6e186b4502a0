"""A pre-started interpreter that forks run-local's task processes.

Each task of a package is `python -m ENTRYPOINT ARGS` in its container. Run as
a fresh interpreter here, every task spends ~10 s importing TensorFlow, TFX and
Beam before it does anything (11 tasks a run; measured in docs/bench-results.md).
This server imports the entry points' modules and the executors' modules once,
then forks one child per task. The child is still a process of its own with the
task's argv, working folder, environment and log, running the entry point as
`__main__` exactly as `python -m` does; it only skips the imports.

What differs from a fresh interpreter, and why it is safe here:
- modules imported before the fork already hold their import-time state. Every
  task gets the same environment (IMAGE_ENV), and the server is started with
  it, so that state is the state a fresh import would build; a task asking for
  another environment is refused by the client and runs cold.
- the server has not run any TensorFlow op, so no thread pool exists to be lost
  by the fork (the C++ threads TF leaves at import only wait).
`tfx-canary kfp run-local --cold-start` runs every task in a fresh interpreter.

Protocol (one line of JSON each way per task, over the server's stdin/stdout):
  -> {"argv": ["-m", MODULE, ...], "cwd": DIR, "env": {...}, "log": PATH}
  <- {"code": EXIT_STATUS}     (negative: killed by that signal, as subprocess reports)
The server's first line is {"ready": true, "seconds": S} once it has imported.
It ends when its stdin closes.
"""
import ast
import importlib
import importlib.util
import json
import os
import runpy
import subprocess
import sys
import time
import traceback

READY = 'ready'


class Prestarted:
    """The client: starts the server, hands it tasks, says when it cannot."""

    def __init__(self, entry_modules, executor_class_paths, env, cwd):
        self.env = dict(env)
        self.note = None
        self.ready_seconds = None
        # The server works out what to import: finding a module's spec
        # imports its parents, which would load TensorFlow here.
        what = json.dumps({'entry_modules': list(entry_modules),
                           'executor_class_paths': list(executor_class_paths)})
        self._proc = subprocess.Popen(
            [sys.executable, '-m', __name__, what], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env, cwd=cwd, text=True)
        self._ready = None

    def _wait_ready(self):
        if self._ready is None:
            line = self._proc.stdout.readline()
            try:
                hello = json.loads(line)
            except ValueError:
                hello = {}
            self._ready = bool(hello.get(READY))
            self.ready_seconds = hello.get('seconds')
            if not self._ready:
                self.note = 'the pre-started interpreter did not start (exit %s)' % self._proc.poll()
        return self._ready

    def accepts(self, argv, env):
        """Whether `python ARGV` with `env` is a task the server can fork:
        `-m MODULE`, in the environment it imported under."""
        return len(argv) >= 2 and argv[0] == '-m' and env == self.env

    def call(self, argv, cwd, env, log_path):
        """Runs an accepted `python ARGV` as a forked child; returns its exit
        status, or None when the server is not there (self.note says why;
        the caller then runs the task cold)."""
        if not self._wait_ready():
            return None
        request = {'argv': list(argv), 'cwd': cwd, 'env': env, 'log': log_path}
        try:
            self._proc.stdin.write(json.dumps(request) + '\n')
            self._proc.stdin.flush()
            return json.loads(self._proc.stdout.readline())['code']
        except (OSError, ValueError, KeyError):
            self.note = 'the pre-started interpreter stopped (exit %s)' % self._proc.poll()
            return None

    def close(self):
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def modules_to_preload(entry_modules, executor_class_paths):
    """The modules the entry points import (read from their source, not
    imported: an entry point must run as `__main__` in the child, once) and
    the executor classes' modules."""
    wanted = []
    for name in entry_modules:
        wanted.extend(_imports_of(name))
    wanted.extend(path.rpartition('.')[0] for path in executor_class_paths)
    return [name for name in dict.fromkeys(wanted) if name and name not in entry_modules]


def _imports_of(module_name):
    try:
        spec = importlib.util.find_spec(module_name)
        if spec is None or not spec.origin or not spec.origin.endswith('.py'):
            return []
        with open(spec.origin) as f:
            tree = ast.parse(f.read())
    except (ImportError, ValueError, OSError, SyntaxError):
        return []   # The child's own import reports it.
    found = []
    for node in tree.body:    # Top level only: what runs at import.
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend(_from_import(node))
    return found


def _from_import(node):
    """`from a.b import c`: a.b.c when c is a module, else a.b."""
    names = []
    for alias in node.names:
        full = '%s.%s' % (node.module, alias.name)
        try:
            is_module = importlib.util.find_spec(full) is not None
        except (ImportError, ValueError):
            is_module = False
        names.append(full if is_module else node.module)
    return names


def _preload(modules):
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:   # noqa: BLE001 - the child imports it again and reports.
            pass


def _exit_status(code):
    """SystemExit's code as the process's exit status, as the interpreter maps it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run_child(request, reply_fd):
    """In the forked child: become the task's process, run it, never return."""
    status = 1
    try:
        os.close(reply_fd)   # stdin (the requests) is replaced by /dev/null below.
        log = os.open(request['log'], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(devnull)
        os.chdir(request['cwd'])
        os.environ.clear()
        os.environ.update(request['env'])
        argv = request['argv']
        sys.path[0] = request['cwd']    # What `python -m` puts first.
        sys.argv = [argv[1]] + list(argv[2:])
        try:
            runpy.run_module(argv[1], run_name='__main__', alter_sys=True)
            status = 0
        except SystemExit as e:
            status = _exit_status(e.code)
        except BaseException:  # noqa: BLE001 - reported as the interpreter would.
            traceback.print_exc()
            status = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def serve(entry_modules, executor_class_paths):
    # Replies go to a private copy of stdout; fd 1 becomes stderr so that
    # anything printed while importing cannot corrupt the protocol.
    reply = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)
    started = time.monotonic()
    _preload(modules_to_preload(entry_modules, executor_class_paths))
    reply.write(json.dumps({READY: True, 'seconds': round(time.monotonic() - started, 2)}) + '\n')
    reply.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request, reply.fileno())
        _, wait_status = os.waitpid(pid, 0)
        reply.write(json.dumps({'code': os.waitstatus_to_exitcode(wait_status)}) + '\n')
        reply.flush()


if __name__ == '__main__':
    serve(**json.loads(sys.argv[1]))
