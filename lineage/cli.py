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

from common import locations
from lineage.errors import LineageError

_EPILOG = """\
The store is the local SQLite file by default (--metadata-path, opened read
only); --mysql-host/--mysql-database/... reads an MLMD store in MySQL or
MariaDB (use a SELECT-only user), --grpc-host an MLMD gRPC server.
Stable and canary come from <serving root>/<model>/rollout.json, else from
the rollout events recorded in ML Metadata; the output names the file used
(`serving state:`). See docs/lineage.md.

Locations: the same --workspace as `tfx-canary run` (default ./workspace):
--metadata-path defaults to WORKSPACE/metadata.sqlite, --serving-root to
WORKSPACE/serving. Without --serving-root and --workspace, the serving state
is the one that belongs to the store: the serving root its newest push
recorded, if that folder exists here, else the serving/ folder next to the
SQLite file; a MySQL or gRPC store has no local one (its rollout events say
what serves).
"""


def _common_options():
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group('locations (as in `tfx-canary run --workspace`)')
    locations.add_location_options(where, notes={
        'metadata_path': 'opened read-only',
        'serving_root': 'where <model>/rollout.json says what serves; without it and '
                        '--workspace, the serving root the newest push recorded in ML '
                        'Metadata, if that folder exists here'})
    store = common.add_argument_group('other ML Metadata stores (instead of SQLite)')
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
    names.add_argument('--pipeline-name', default=locations.DEFAULT_PIPELINE_NAME, metavar='NAME',
                       help='pipeline whose runs to read (default: %(default)s)')
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
    return connection.sqlite_config(locations.resolve(args).metadata_path)


def recorded_serving_roots(queries, model_name, limit=None):
    """[(serving root, 'PushedModel #N')] the model's pushes recorded, newest first."""
    from common import mlmd_names
    from common.mlmd import value_of

    try:
        pushes = queries.pushed_models(model_name, limit=limit)
    except LineageError:
        return []   # The command's own queries report what is wrong.
    return [(str(value_of(p, mlmd_names.SERVING_ROOT)), f'PushedModel #{p.id}') for p in pushes
            if value_of(p, mlmd_names.SERVING_ROOT)]


def _open(args):
    """(LineageQueries, Locations): the store, and the serving root that belongs to it."""
    from lineage import connection
    from lineage.query import LineageQueries

    where = locations.resolve(args)
    _check_name('--pipeline-name', args.pipeline_name)
    _check_name('--model-name', where.model_name)
    store = connection.open_store(connection_config(args))
    queries = LineageQueries(store, args.pipeline_name)
    local = not (args.mysql_host or args.grpc_host)
    if not (where.is_given(locations.SERVING_ROOT) or where.is_given(locations.WORKSPACE)):
        newest = recorded_serving_roots(queries, where.model_name, limit=1)
        root, by = newest[0] if newest else (None, None)
        where = locations.serving_root_for_store(where, root, by, store_is_local=local)
    elif local and where.metadata_is_a_guess:
        # Only --serving-root: ./workspace's store must be that root's.
        roots = sorted({r for r, _ in recorded_serving_roots(queries, where.model_name)})
        if not locations.store_belongs_to(roots, where.serving_root):
            raise LineageError(
                f'--serving-root {os.path.abspath(where.serving_root)} has no metadata.sqlite '
                f'next to it, and the default store {os.path.abspath(where.metadata_path)} '
                f'is the store of serving root {", ".join(roots)}: pass --metadata-path '
                f'(or --workspace) with the store of this serving root')
    return queries, where


def _with_serving_root_from(record, where):
    """Adds how the serving root was chosen to the record's serving-state dicts."""
    for state in (record.get('served'), record.get('serving_state'),
                  (record.get('a') or {}).get('served'), (record.get('b') or {}).get('served')):
        if isinstance(state, dict):
            state['serving_root_from'] = where.serving_root_from
    return record


def _model_hparams():
    """The model code's hyperparameter merge: lineage itself knows no model code."""
    from modules import hparams
    return hparams.hparams_from


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
    queries, where = _open(args)
    record = _with_serving_root_from(build.runs(queries, where.model_name, where.serving_root,
                                                limit=args.limit or None), where)
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
    queries, where = _open(args)
    record = _with_serving_root_from(build.show(
        queries, where.model_name, where.serving_root, version=version, role=role,
        artifact_id=args.artifact_id, effective_hparams=_model_hparams()), where)
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
    queries, where = _open(args)
    record = _with_serving_root_from(build.diff(queries, where.model_name, where.serving_root,
                                                a, b, effective_hparams=_model_hparams()),
                                     where)
    if args.json:
        _print_json(record)
    else:
        _emit(render.diff_text(record, show_slices=not args.no_slices))
    return 0
