"""`tfx-canary rollout ...` subcommands (registered by the top-level CLI).

Handlers return an exit code and raise RolloutError for bad input; the
top-level CLI turns that into `error: <message>` and exit status 2.
"""

import argparse
import json
import os
import re
import sys

from rollout import analyze as analyze_mod
from rollout import control
from rollout.errors import RolloutError

DEFAULT_SERVING_ROOT = "./workspace/serving"
DEFAULT_MODEL_NAME = "taxi"
DEFAULT_METADATA_PATH = "./workspace/metadata.sqlite"

_EPILOG = """\
Traffic split: the canary gets PERCENT of requests and stable the rest.
Every change updates rollout.json (source of truth), models.config (TF
Serving) and, when a storage URI prefix is known, the KServe manifest, and is
recorded in the ML Metadata store when one is found.
"""


def _common_options():
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "--serving-root", default=DEFAULT_SERVING_ROOT, metavar="DIR",
        help="directory TF Serving watches, holding <model>/<version>/ "
             "(default: %(default)s)")
    group.add_argument(
        "--model-name", default=DEFAULT_MODEL_NAME, metavar="NAME",
        help="model to act on (default: %(default)s)")
    group.add_argument(
        "--metadata-path", default=None, metavar="FILE",
        help="SQLite ML Metadata store for the audit trail (default: "
             f"{DEFAULT_METADATA_PATH} if it exists, else no audit)")
    group.add_argument(
        "--storage-uri-prefix", default=None, metavar="URI",
        help="where KServe fetches versions from, e.g. gs://bucket/serving "
             "(default: the prefix recorded in the existing KServe manifest; "
             "none means no manifest is written)")
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

    status = commands.add_parser(
        "status", parents=[common], help="show stable, canary and traffic",
        description="Show the stable and canary versions, the traffic "
                    "split, the staged versions and the last event, and "
                    "warn if models.config or the KServe manifest disagree "
                    "with rollout.json.")
    status.add_argument("--json", action="store_true",
                        help="print machine-readable JSON instead of a table")
    status.set_defaults(func=cmd_status)

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
    return rollout


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


def _metadata_config(args):
    path = args.metadata_path
    if path is None:
        if not os.path.exists(DEFAULT_METADATA_PATH):
            return None
        path = DEFAULT_METADATA_PATH
    elif not os.path.isfile(path):
        raise RolloutError(
            f"--metadata-path {path} does not exist: pass the pipeline's "
            f"metadata.sqlite, or omit the option to skip the audit trail")
    # Imported lazily: ml_metadata is only needed when auditing.
    from rollout import audit  # pylint: disable=import-outside-toplevel

    return audit.sqlite_connection_config(os.path.abspath(path), create=False)


def _controller(args):
    return control.RolloutController(
        args.serving_root, args.model_name,
        storage_uri_prefix=args.storage_uri_prefix,
        metadata_connection_config=_metadata_config(args))


# ---------------------------------------------------------------- output

def describe(snapshot):
    """Describe a before/after snapshot in words."""
    if snapshot["stable"] is None:
        return "nothing served"
    text = f"stable v{snapshot['stable']}"
    if snapshot["canary"] is None:
        return text + " (100%), no canary"
    return (f"{text} ({100 - snapshot['traffic']}%), canary "
            f"v{snapshot['canary']} ({snapshot['traffic']}%)")


def _print_result(args, result, out=None):
    out = out or sys.stdout
    headline = f"{args.model_name}: {result['event']}"
    if result.get("version") is not None:
        headline += f" v{result['version']}"
    print(headline, file=out)
    print(f"  before: {describe(result['before'])}", file=out)
    print(f"  after:  {describe(result['after'])}", file=out)
    files = result["files"]
    written, unchanged = ["rollout.json"], []
    for key, label in (("models_config", "models.config"),
                       ("kserve_manifest", "kserve/inferenceservice.yaml")):
        if files[key]:
            written.append(label)
        elif files[key] is False:
            unchanged.append(label)
    print(f"  wrote:  {', '.join(written)}", file=out)
    if unchanged:
        # e.g. set-traffic: TF Serving has no traffic split to update.
        print(f"  unchanged: {', '.join(unchanged)}", file=out)
    if files["kserve_manifest"] is None and result["after"]["stable"]:
        print("  kserve: manifest not written (no storage URI prefix known; "
              "pass --storage-uri-prefix once)", file=out)
    _print_audit(result["audit"])


def _print_audit(audit):
    if audit.get("error"):
        print(f"warning: {audit['error']}", file=sys.stderr)


# ---------------------------------------------------------------- handlers

def cmd_status(args):
    """`rollout status`: print the status table (or JSON)."""
    status = _controller(args).status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(control.format_status(status))
    return 0


def cmd_set_traffic(args):
    """`rollout set-traffic PERCENT`."""
    percent = parse_percent(args.percent)
    result = _controller(args).set_traffic(percent, reason=args.reason)
    _print_result(args, result)
    return 0


def cmd_promote(args):
    """`rollout promote`."""
    result = _controller(args).promote(reason=args.reason)
    _print_result(args, result)
    return 0


def cmd_rollback(args):
    """`rollout rollback [--to VERSION]`."""
    to_version = (None if args.to_version is None
                  else parse_version(args.to_version))
    result = _controller(args).rollback(to_version, reason=args.reason)
    _print_result(args, result)
    return 0


def cmd_repair(args):
    """`rollout repair`: regenerate derived files from rollout.json."""
    result = _controller(args).repair()
    print(f"{args.model_name}: {describe(result['state'])}")
    files = result["files"]
    for name, label in (("models_config", "models.config"),
                        ("kserve_manifest", "kserve/inferenceservice.yaml")):
        if files[name] is None:
            print(f"  {label}: skipped (no storage URI prefix known; pass "
                  f"--storage-uri-prefix)")
        else:
            outcome = "rewritten" if files[name] else "already in sync"
            print(f"  {label}: {outcome}")
    for path in result["removed_temp_dirs"]:
        print(f"  removed leftover {path}")
    if result["audit"]["execution_ids"]:
        print(f"  audit: back-filled {len(result['audit']['execution_ids'])} "
              f"event(s)")
    _print_audit(result["audit"])
    return 0


def cmd_analyze(args):
    """`rollout analyze`: decide from the serving metrics (see rollout/analyze.py)."""
    return analyze_mod.run(args, _controller(args),
                           lambda result: _print_result(args, result))
