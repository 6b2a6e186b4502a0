"""`tfx-canary lineage ...` subcommands (registered by the top-level CLI).

    tfx-canary lineage runs                     # every run: status, spans, blessed, pushed
    tfx-canary lineage show --canary            # where the canary came from
    tfx-canary lineage show --version 2 --png lineage.png
    tfx-canary lineage diff stable canary       # what changed between the two

Handlers return an exit code and raise LineageError (a TfxCanaryError) for
bad input; the top-level CLI prints it as one `error:` line, exit status 2.
Nothing here imports TensorFlow or writes to the store.
"""

import argparse
import json
import os
import re
import struct
import sys

from lineage.errors import LineageError

DEFAULT_SERVING_ROOT = './workspace/serving'
DEFAULT_MODEL_NAME = 'taxi'
DEFAULT_PIPELINE_NAME = 'tfx-canary-taxi'

_EPILOG = """\
The store is the local SQLite file by default (--metadata-path, opened read
only); --mysql-host/--mysql-database/... reads an MLMD store in MySQL or
MariaDB (use a SELECT-only user), --grpc-host an MLMD gRPC server.
Stable and canary come from <serving root>/<model>/rollout.json, else from
the rollout events recorded in ML Metadata. See docs/lineage.md.
"""


def _common_options():
    common = argparse.ArgumentParser(add_help=False)
    store = common.add_argument_group('ML Metadata store (default: local SQLite)')
    store.add_argument(
        '--metadata-path', default=None, metavar='FILE',
        help='SQLite ML Metadata store, opened read-only '
             '(default: ./workspace/metadata.sqlite)')
    store.add_argument('--mysql-host', metavar='HOST',
                       help='read a MySQL/MariaDB-backed store on HOST instead')
    store.add_argument('--mysql-port', type=int, default=3306, metavar='PORT',
                       help='(default: %(default)s)')
    store.add_argument('--mysql-database', metavar='NAME',
                       help='database holding the MLMD tables (required with --mysql-host)')
    store.add_argument('--mysql-user', default='root', metavar='USER',
                       help='(default: %(default)s; a SELECT-only user is enough)')
    store.add_argument('--mysql-password-env', metavar='VAR',
                       help='name of the environment variable holding the password '
                            '(never pass a password on the command line)')
    store.add_argument('--grpc-host', metavar='HOST',
                       help='read from an MLMD gRPC server on HOST instead')
    store.add_argument('--grpc-port', type=int, default=8080, metavar='PORT',
                       help='(default: %(default)s)')
    names = common.add_argument_group('what to look at')
    names.add_argument('--pipeline-name', default=DEFAULT_PIPELINE_NAME, metavar='NAME',
                       help='pipeline whose runs to read (default: %(default)s)')
    names.add_argument('--model-name', default=DEFAULT_MODEL_NAME, metavar='NAME',
                       help='served model (default: %(default)s)')
    names.add_argument('--serving-root', default=DEFAULT_SERVING_ROOT, metavar='DIR',
                       help='where <model>/rollout.json says what serves '
                            '(default: %(default)s)')
    return common


def add_subcommands(subparsers):
    """Register `lineage` and its commands on a top-level subparsers object."""
    lineage = subparsers.add_parser(
        'lineage', help='where a served model came from, and what changed',
        description='Trace a served model version back through ML Metadata: pushed '
                    'model, training run, transform, data, validation, evaluation '
                    'and rollout events.',
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = lineage.add_subparsers(dest='lineage_command', metavar='COMMAND',
                                      title='commands')
    commands.required = True
    common = _common_options()

    runs = commands.add_parser(
        'runs', parents=[common], help='list pipeline runs, newest first',
        description='List the pipeline runs recorded in ML Metadata, newest first: '
                    'start time, duration, status, spans consumed, blessed or not, '
                    'version pushed and whether it serves now.')
    runs.add_argument('--limit', type=int, default=20, metavar='N',
                      help='show the N newest runs; 0 for all (default: %(default)s)')
    runs.add_argument('--json', action='store_true', help='print machine-readable JSON')
    runs.set_defaults(func=cmd_runs)

    show = commands.add_parser(
        'show', parents=[common], help='the lineage of one model version',
        description='Show where a model version came from: served version -> pushed '
                    'model -> model -> trainer run -> transform graph -> examples -> '
                    'statistics, schema, anomalies -> evaluation -> rollout events.')
    target = show.add_mutually_exclusive_group(required=True)
    target.add_argument('--version', metavar='N', help='a pushed version number')
    target.add_argument('--stable', action='store_true', help='the version serving as stable')
    target.add_argument('--canary', action='store_true', help='the version serving as canary')
    target.add_argument('--artifact-id', type=int, metavar='ID',
                        help='a PushedModel or Model artifact id (e.g. an unblessed model)')
    output = show.add_mutually_exclusive_group()
    output.add_argument('--json', action='store_true', help='print machine-readable JSON')
    output.add_argument('--dot', nargs='?', const='-', metavar='FILE',
                        help='print Graphviz DOT (or write it to FILE)')
    output.add_argument('--png', metavar='FILE', help='draw the lineage graph as a PNG')
    show.add_argument('--renderer', choices=('auto', 'graphviz', 'pillow'), default='auto',
                      help='PNG renderer: graphviz `dot` if installed, else Pillow '
                           '(default: %(default)s)')
    show.add_argument('--no-slices', action='store_true',
                      help='leave per-slice metrics out of the text tree')
    show.set_defaults(func=cmd_show)

    diff = commands.add_parser(
        'diff', parents=[common], help='two model versions side by side',
        description='Compare two pushed versions: serving role, data (span, '
                    'fingerprint, split sizes), schema, training code and '
                    'hyperparameters, blessing, and metrics per slice.')
    diff.add_argument('a', metavar='A', help='version number, "stable" or "canary"')
    diff.add_argument('b', metavar='B', help='version number, "stable" or "canary"')
    diff.add_argument('--json', action='store_true', help='print machine-readable JSON')
    diff.add_argument('--no-slices', action='store_true',
                      help='leave per-slice metrics out of the table')
    diff.set_defaults(func=cmd_diff)
    return lineage


# ---------------------------------------------------------------- parsing

def parse_version(text, allow_roles=False):
    """'2' or 'v2' -> 2; with allow_roles also 'stable'/'canary'."""
    value = str(text).strip().lower()
    if allow_roles and value in ('stable', 'canary'):
        return value
    match = re.fullmatch(r'v?(\d+)', value)
    if not match or int(match.group(1)) < 1:
        allowed = 'a version number (e.g. 2)' + (', "stable" or "canary"' if allow_roles else '')
        raise LineageError(f'expected {allowed}, got {text!r} (see `tfx-canary lineage runs`)')
    return int(match.group(1))


def _check_name(flag, value):
    # Names go into MLMD filter queries: keep them to what the pipeline allows.
    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', value or ''):
        raise LineageError(f'{flag} {value!r}: use letters, digits, ".", "_" and "-"')
    return value


def connection_config(args):
    """The MLMD connection the store flags describe."""
    from lineage import connection

    chosen = [flag for flag, value in (('--metadata-path', args.metadata_path),
                                       ('--mysql-host', args.mysql_host),
                                       ('--grpc-host', args.grpc_host)) if value]
    if len(chosen) > 1:
        raise LineageError(f'{" and ".join(chosen)} both name a store: pass only one')
    if args.mysql_host:
        password = None
        if args.mysql_password_env:
            password = os.environ.get(args.mysql_password_env)
            if password is None:
                raise LineageError(f'--mysql-password-env {args.mysql_password_env}: that '
                                   f'environment variable is not set')
        return connection.mysql_config(args.mysql_host, args.mysql_database,
                                       port=args.mysql_port, user=args.mysql_user,
                                       password=password)
    if args.grpc_host:
        return connection.grpc_config(args.grpc_host, args.grpc_port)
    return connection.sqlite_config(args.metadata_path or connection.DEFAULT_METADATA_PATH)


def _queries(args):
    from lineage import connection
    from lineage.query import LineageQueries

    _check_name('--pipeline-name', args.pipeline_name)
    _check_name('--model-name', args.model_name)
    store = connection.open_store(connection_config(args))
    return LineageQueries(store, args.pipeline_name)


def _emit(text):
    """Prints the answer; a reader that stops early (`| head`) is not an error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again when flushing at exit: point stdout at
        # /dev/null first (the recipe in the `signal` module docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _print_json(record):
    _emit(json.dumps(record, indent=2, sort_keys=True))


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, 'rb') as f:
        head = f.read(24)
    if head[:8] != b'\x89PNG\r\n\x1a\n' or head[12:16] != b'IHDR':
        raise LineageError(f'{path} is not a PNG file')
    return struct.unpack('>II', head[16:24])


# ---------------------------------------------------------------- handlers

def cmd_runs(args):
    """`lineage runs`."""
    from lineage import build, render

    if args.limit < 0:
        raise LineageError(f'--limit must be 0 (all) or more, got {args.limit}')
    record = build.runs(_queries(args), args.model_name, args.serving_root,
                        limit=args.limit or None)
    if args.json:
        _print_json(record)
    else:
        _emit(render.runs_text(record))
    return 0


def cmd_show(args):
    """`lineage show`."""
    from lineage import build, graph, render

    version = parse_version(args.version) if args.version is not None else None
    role = 'stable' if args.stable else ('canary' if args.canary else None)
    record = build.show(_queries(args), args.model_name, args.serving_root,
                        version=version, role=role, artifact_id=args.artifact_id)
    if args.json:
        _print_json(record)
    elif args.dot is not None:
        text = graph.to_dot(record)
        if args.dot == '-':
            _emit(text.rstrip('\n'))
        else:
            try:
                with open(args.dot, 'w', encoding='utf-8') as f:
                    f.write(text)
            except OSError as exc:
                raise LineageError(f'cannot write {args.dot}: {exc}') from exc
            print(f'wrote {args.dot} (Graphviz DOT)')
    elif args.png:
        renderer = graph.write_png(record, args.png, renderer=args.renderer)
        width, height = png_size(args.png)
        print(f'wrote {args.png} ({width}x{height} PNG, drawn with {renderer})')
    else:
        _emit(render.show_text(record, show_slices=not args.no_slices))
    return 0


def cmd_diff(args):
    """`lineage diff A B`."""
    from lineage import build, render

    a = parse_version(args.a, allow_roles=True)
    b = parse_version(args.b, allow_roles=True)
    record = build.diff(_queries(args), args.model_name, args.serving_root, a, b)
    if args.json:
        _print_json(record)
    else:
        _emit(render.diff_text(record, show_slices=not args.no_slices))
    return 0
