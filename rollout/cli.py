"""`tfx-canary rollout ...` subcommands (registered by the top-level CLI).

Handlers return an exit code and raise RolloutError for bad input; the
top-level CLI turns that into `error: <message>` and exit status 2.
"""

import argparse
import json
import os
import re
import sys

from common import locations
from common.cli import add_deprecated_alias
from rollout import analyze as analyze_mod
from rollout import control
from rollout import kserve
from rollout import tfserving
from rollout import watch as watch_mod
from rollout.errors import RolloutError

_EPILOG = """\
Traffic split: the canary gets PERCENT of requests and stable the rest.
Every change updates rollout.json (source of truth), models.config (TF
Serving) and, when a storage URI prefix is known, the KServe manifest, and is
recorded in the ML Metadata store when one is found.

Locations: the same --workspace as `tfx-canary run` (default ./workspace):
--serving-root defaults to WORKSPACE/serving, --metadata-path to
WORKSPACE/metadata.sqlite. Given only --metadata-path, the serving root is the
serving/ folder next to it; given only --serving-root, the audit goes to the
metadata.sqlite next to it when there is one, else to ./workspace's only if
that store's pushes went to that serving root.
"""


def _common_options():
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    locations.add_location_options(group, notes={
        "metadata_path": "the audit trail goes there (a derived one only "
                         "if it exists, else no audit)"})
    group.add_argument(
        "--kserve-storage-uri-prefix", default=None, metavar="URI",
        help="where KServe fetches versions from, e.g. gs://bucket/serving, "
             "as in `tfx-canary run` (default: the prefix recorded in the "
             "existing KServe manifest; none means no manifest is written; "
             "--storage-uri-prefix is a deprecated alias)")
    add_deprecated_alias(group, "--storage-uri-prefix",
                         dest="kserve_storage_uri_prefix",
                         replacement="--kserve-storage-uri-prefix", metavar="URI")
    group.add_argument(
        "--reason", default="", metavar="TEXT",
        help="why you are doing this; stored in the rollout history and "
             "audit trail")
    return common


def add_subcommands(subparsers):
    """Register `rollout` and its commands on a top-level subparsers object.

    Returns the `rollout` parser.
    """
    rollout = subparsers.add_parser(
        "rollout", help="inspect and control canary rollouts",
        description="Inspect and control the canary rollout of a served "
                    "model.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = rollout.add_subparsers(
        dest="rollout_command", metavar="COMMAND", title="commands")
    commands.required = True
    common = _common_options()
    _add_status_command(commands, common)
    _add_change_commands(commands, common)
    _add_repair_and_analyze(commands, common)
    return rollout


_WATCH_EPILOG = """\
Examples:
  tfx-canary rollout watch --metrics http://127.0.0.1:8501 --interval 60
  tfx-canary rollout watch --notify https://hooks.example/rollouts --json

Exit status: 0 promoted; 1 rolled back; 2 bad input; 3 paused at the
inconclusive limit (the rollout is left as it is); 4 the rollout changed
under the watch (someone promoted, rolled back or staged a new canary);
130 stopped by Ctrl-C or SIGTERM (between changes: the rollout is left
consistent).
"""


def _add_status_command(commands, common):
    """status: what serves, and whether the files agree."""
    status = commands.add_parser(
        "status", parents=[common], help="show stable, canary and traffic",
        description="Show the stable and canary versions, the traffic "
                    "split, the staged versions and the last event, and "
                    "warn if models.config or the KServe manifest disagree "
                    "with rollout.json.")
    status.add_argument("--json", action="store_true",
                        help="print machine-readable JSON instead of a table")
    status.set_defaults(func=cmd_status)


def _add_change_commands(commands, common):
    """set-traffic, promote and rollback: the transitions an operator makes."""
    traffic = commands.add_parser(
        "set-traffic", parents=[common],
        help="send PERCENT of traffic to the canary",
        description="Send PERCENT of traffic to the live canary; stable "
                    "gets the rest. 0 keeps the canary loaded but idle; "
                    "use `promote` rather than 100 to finish a rollout.")
    traffic.add_argument("percent", metavar="PERCENT",
                         help="whole number from 0 to 100")
    traffic.set_defaults(func=cmd_set_traffic)

    promote = commands.add_parser(
        "promote", parents=[common],
        help="make the canary the new stable version",
        description="Make the live canary the stable version with 100%% of "
                    "traffic. The old stable stays on disk for "
                    "`rollback --to`.")
    promote.set_defaults(func=cmd_promote)

    rollback = commands.add_parser(
        "rollback", parents=[common],
        help="withdraw the canary, or serve an older version",
        description="Without --to: withdraw the live canary; stable gets "
                    "100%% of traffic. With --to VERSION: serve that staged "
                    "version as stable and withdraw any canary.")
    rollback.add_argument(
        "--to", dest="to_version", metavar="VERSION", default=None,
        help="staged version to serve as stable (see `rollout status`)")
    rollback.set_defaults(func=cmd_rollback)


def _add_repair_and_analyze(commands, common):
    """repair (files from rollout.json) and analyze (live metrics -> a transition)."""
    repair = commands.add_parser(
        "repair", parents=[common],
        help="regenerate models.config and the KServe manifest",
        description="Regenerate models.config and the KServe manifest from "
                    "rollout.json, remove leftovers of interrupted commands "
                    "and back-fill missing audit records.")
    repair.set_defaults(func=cmd_repair)

    analyze = commands.add_parser(
        "analyze", parents=[common],
        help="compare canary with stable on live metrics; promote, step, "
             "hold or roll back",
        description=analyze_mod.__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    analyze_mod.add_arguments(analyze)
    analyze.set_defaults(func=cmd_analyze)

    watch = commands.add_parser(
        "watch", parents=[common],
        help="analyze and apply every interval until the canary is promoted "
             "or rolled back",
        description=watch_mod.__doc__.split("\n\n", 1)[1],
        epilog=_WATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    watch_mod.add_arguments(watch)
    watch.set_defaults(func=cmd_watch)


# ---------------------------------------------------------------- parsing

def parse_percent(text):
    """Parse a PERCENT argument ("25" or "25%") into an int 0..100."""
    match = re.fullmatch(r"\s*([+-]?\d+)\s*%?\s*", str(text))
    value = int(match.group(1)) if match else None
    if value is None or not 0 <= value <= 100:
        raise RolloutError(
            f"PERCENT must be a whole number from 0 to 100 (e.g. "
            f"`tfx-canary rollout set-traffic 25`), got {text!r}")
    return value


def parse_version(text):
    """Parse a --to VERSION argument into a positive int."""
    match = re.fullmatch(r"\s*v?(\d+)\s*", str(text))
    if not match or int(match.group(1)) < 1:
        raise RolloutError(
            f"--to must be a version number such as 3 (see `tfx-canary "
            f"rollout status` for the staged versions), got {text!r}")
    return int(match.group(1))


def _locations(args):
    return locations.resolve(args)


def _metadata_config(args):
    where = _locations(args)
    path = where.metadata_path
    if not os.path.isfile(path):
        if where.is_given(locations.METADATA_PATH):
            raise RolloutError(
                f"--metadata-path {path} does not exist: pass the pipeline's "
                f"metadata.sqlite, or omit the option to skip the audit trail")
        return None   # Derived and absent: no audit.
    # Imported lazily: ml_metadata is only needed when auditing.
    from rollout import audit  # pylint: disable=import-outside-toplevel

    config = audit.sqlite_connection_config(os.path.abspath(path), create=False)
    if where.metadata_is_a_guess:
        # Only --serving-root was given: ./workspace's store is used only if
        # its pushes went to that serving root (else the audit would link the
        # events to another workspace's models).
        roots = _recorded_serving_roots(config, where.model_name)
        if not locations.store_belongs_to(roots, where.serving_root):
            args.audit_note = (
                f"skipped: {os.path.abspath(path)} is the store of serving root "
                f"{', '.join(roots)}, not of this one (pass --metadata-path to "
                f"record the change)")
            return None
    return config


def _recorded_serving_roots(config, model_name):
    from common import mlmd  # pylint: disable=import-outside-toplevel
    from rollout import audit  # pylint: disable=import-outside-toplevel

    readonly = mlmd.sqlite_config(config.sqlite.filename_uri, mlmd.READ_ONLY)
    try:
        return audit.recorded_serving_roots(audit.connect(readonly), model_name)
    except Exception:  # pylint: disable=broad-except
        return []   # Unreadable: the audit itself reports the problem.


def _controller(args):
    where = _locations(args)
    return control.RolloutController(
        where.serving_root, where.model_name,
        storage_uri_prefix=args.kserve_storage_uri_prefix,
        metadata_connection_config=_metadata_config(args))


# ---------------------------------------------------------------- output

def describe(snapshot):
    """Describe a before/after Snapshot in words."""
    if snapshot.stable is None:
        return "nothing served"
    text = f"stable v{snapshot.stable}"
    if snapshot.canary is None:
        return text + " (100%), no canary"
    return (f"{text} ({100 - snapshot.traffic}%), canary "
            f"v{snapshot.canary} ({snapshot.traffic}%)")


def _print_result(model_name, result, out=None, audit_note=None):
    out = out or sys.stdout
    headline = f"{model_name}: {result.event}"
    if result.version is not None:
        headline += f" v{result.version}"
    print(headline, file=out)
    print(f"  before: {describe(result.before)}", file=out)
    print(f"  after:  {describe(result.after)}", file=out)
    written, unchanged = [locations.ROLLOUT_FILE], []
    for label, changed in _derived_files(result.files):
        if changed:
            written.append(label)
        elif changed is False:
            unchanged.append(label)
    print(f"  wrote:  {', '.join(written)}", file=out)
    if audit_note:
        print(f"  audit:  {audit_note}", file=out)
    if unchanged:
        # e.g. set-traffic: TF Serving has no traffic split to update.
        print(f"  unchanged: {', '.join(unchanged)}", file=out)
    if result.files.kserve_manifest is None and result.after.stable:
        print("  kserve: manifest not written (no storage URI prefix known; "
              "pass --kserve-storage-uri-prefix once)", file=out)
    _print_audit(result.audit)


def _derived_files(files):
    """[(label, True rewritten / False unchanged / None not written)] of a FilesWritten."""
    return [(tfserving.CONFIG_FILE_NAME, files.models_config),
            (f"{kserve.MANIFEST_DIR}/{kserve.MANIFEST_FILE}", files.kserve_manifest)]


def _print_audit(audit):
    if audit.error:
        print(f"warning: {audit.error}", file=sys.stderr)


# ---------------------------------------------------------------- handlers

def cmd_status(args):
    """`rollout status`: print the status table (or JSON)."""
    controller = _controller(args)
    status = controller.status()
    config = controller.metadata_connection_config
    if args.json:
        print(json.dumps(dict(status.to_dict(), metadata_path=(
            config.sqlite.filename_uri if config else None)), indent=2, sort_keys=True))
    else:
        print(control.format_status(status))
        # Which workspace's state this is: see common/locations.py.
        print(f"serving state: {status.paths.rollout_json}")
    return 0


def cmd_set_traffic(args):
    """`rollout set-traffic PERCENT`."""
    percent = parse_percent(args.percent)
    controller = _controller(args)
    result = controller.set_traffic(percent, reason=args.reason)
    _print_result(controller.model_name, result,
                  audit_note=getattr(args, "audit_note", None))
    return 0


def cmd_promote(args):
    """`rollout promote`."""
    controller = _controller(args)
    result = controller.promote(reason=args.reason)
    _print_result(controller.model_name, result,
                  audit_note=getattr(args, "audit_note", None))
    return 0


def cmd_rollback(args):
    """`rollout rollback [--to VERSION]`."""
    to_version = (None if args.to_version is None
                  else parse_version(args.to_version))
    controller = _controller(args)
    result = controller.rollback(to_version, reason=args.reason)
    _print_result(controller.model_name, result,
                  audit_note=getattr(args, "audit_note", None))
    return 0


def cmd_repair(args):
    """`rollout repair`: regenerate derived files from rollout.json."""
    controller = _controller(args)
    result = controller.repair()
    print(f"{controller.model_name}: {describe(result.state)}")
    for label, changed in _derived_files(result.files):
        if changed is None:
            print(f"  {label}: skipped (no storage URI prefix known; pass "
                  f"--kserve-storage-uri-prefix)")
        else:
            outcome = "rewritten" if changed else "already in sync"
            print(f"  {label}: {outcome}")
    for path in result.removed_temp_dirs:
        print(f"  removed leftover {path}")
    if getattr(args, "audit_note", None):
        print(f"  audit: {args.audit_note}")
    if result.audit.execution_ids:
        print(f"  audit: back-filled {len(result.audit.execution_ids)} "
              f"event(s)")
    _print_audit(result.audit)
    return 0


def cmd_analyze(args):
    """`rollout analyze`: decide from the serving metrics (see rollout/analyze.py)."""
    controller = _controller(args)
    return analyze_mod.run(args, controller,
                           lambda result: _print_result(
                               controller.model_name, result,
                               audit_note=getattr(args, "audit_note", None)))


def cmd_watch(args):
    """`rollout watch`: analyze + apply every interval (see rollout/watch.py).

    SIGINT and SIGTERM only set a flag the loop reads between looks, so a
    change being written is finished first; the handlers are put back after.
    """
    import signal  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel

    controller = _controller(args)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return watch_mod.run(args, controller,
                             lambda result: _print_result(
                                 controller.model_name, result,
                                 audit_note=getattr(args, "audit_note", None)),
                             stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
