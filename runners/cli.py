"""`tfx-canary`: the one command-line entry point, with a subcommand per task.

    tfx-canary run --span 1 --span 2     # train on span 1, then retrain on span 2
    tfx-canary rollout status            # what is stable / canary, at what traffic
    tfx-canary <command> --help          # every command explains itself
"""
import argparse
import os
import sys
import time

# Must be set before anything imports TensorFlow: TFX 1.16 / TFMA 0.47 need
# tf.keras to be Keras 2 (tf_keras), and TF's C++ INFO logs bury the progress lines.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from common.errors import TfxCanaryError  # noqa: E402  (after the env set-up)


def _quiet(verbose):
    """Keeps the terminal to our progress lines unless --verbose."""
    if verbose:
        return
    # 3: TF's C++ start-up prints harmless CUDA-plugin "errors" at level 2.
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    import logging
    import warnings
    warnings.filterwarnings('ignore')
    # TFX, TF and Beam log INFO lines by the hundred; progress comes from
    # runners/local_runner.py instead.
    # Components reset absl's level, so detach its records from the terminal
    # instead (a NullHandler keeps logging's last-resort printer away).
    absl_logger = logging.getLogger('absl')
    absl_logger.propagate = False
    absl_logger.addHandler(logging.NullHandler())
    for name in ('tensorflow', 'apache_beam'):
        logging.getLogger(name).setLevel(logging.ERROR)


def _add_run(subparsers):
    from common import locations
    from common.cli import HelpFormatter
    from pipeline.configs import PipelineConfig
    d = PipelineConfig()
    p = subparsers.add_parser(
        'run', help='run the pipeline locally (LocalDagRunner + SQLite ML Metadata)',
        description='Run the TFX pipeline locally: ExampleGen -> StatisticsGen -> schema -> '
                    'ExampleValidator -> ValidationGate -> Transform -> Trainer -> Evaluator '
                    '(vs. the model now serving) -> pusher. Re-running with nothing changed '
                    'hits the cache.',
        epilog='Example: tfx-canary run --span 1 --span 2  (first model on span 1, '
               'then a retrain on span 2 judged against it). Exit status: 0 done (blessed '
               'or not); 2 bad input; 3 a blessed model was not pushed because the stable '
               'version it was judged against stopped serving during the run (another run '
               'or a promote got there first): re-run to judge it against the new stable.',
        formatter_class=HelpFormatter)
    p.add_argument('--span', type=int, action='append', metavar='N',
                   help='span to train on; repeat to run several spans in order '
                        '(default: the latest span under --data-root)')
    p.add_argument('--span-range', type=int, nargs=2, metavar=('A', 'B'),
                   help='train on spans A..B (inclusive) in one run: all spans A..B are '
                        'ingested as one Examples artifact, split train/eval by hash as usual; '
                        'the run records span B and span_range "A-B". Cannot be combined '
                        'with --span')
    # --workspace, --serving-root, --model-name: defined once for every command.
    locations.add_location_options(p, metadata=False, notes={
        'serving_root': 'CanaryPusher stages new versions there'})
    p.add_argument('--data-root', default=d.data_root, help='folder holding span-N/*.csv')
    p.add_argument('--schema', default=d.schema_path, help='curated schema.pbtxt (ImportSchemaGen)')
    p.add_argument('--train-steps', type=int, default=d.train_steps)
    p.add_argument('--eval-steps', type=int, default=d.eval_steps)
    p.add_argument('--pipeline-name', default=d.pipeline_name)
    p.add_argument('--beam-arg', action='append', metavar='ARG',
                   help='Beam pipeline arg, repeatable; replaces the default choice (in-memory '
                        'DirectRunner below 64 MB of input, one worker process per core above)')
    p.add_argument('--allow-anomaly', action='append', metavar='NAME', default=[],
                   help='feature name or anomaly short description to accept instead of blocking')
    p.add_argument('--allow-drift', action='append', metavar='FEATURE', default=[],
                   help='feature whose drift from the data the stable model was trained on '
                        'is expected: reported, not blocking (repeatable; thresholds are the '
                        "schema's drift_comparators)")
    p.add_argument('--model-hparam', action='append', metavar='KEY=VALUE', default=[],
                   help='model hyperparameter override, repeatable (e.g. learning_rate=0.01, '
                        'warm_start=false); see modules/hparams.py')
    p.add_argument('--canary-percent', type=int, default=d.canary_traffic_percent,
                   help='traffic a newly staged canary starts with')
    p.add_argument('--kserve-storage-uri-prefix', default=d.kserve_storage_uri_prefix,
                   help='where KServe fetches staged versions from (e.g. gs://bucket/serving)')
    p.add_argument('--tf-serving-root', default=None,
                   help='the serving root as TF Serving sees it, e.g. /models in its container '
                        '(default: the serving root path itself)')
    p.add_argument('--no-cache', action='store_true', help='re-execute every component')
    p.set_defaults(func=_cmd_run)


def run_configs(args):
    """The PipelineConfig of each run `tfx-canary run ARGS` asks for, in order."""
    import dataclasses

    from common import locations
    from pipeline.configs import PipelineConfig

    from modules.hparams import parse_assignment
    from pipeline.configs import ConfigError

    try:
        hparams = dict(parse_assignment(a) for a in args.model_hparam)
    except ValueError as e:
        raise ConfigError('--model-hparam: %s' % e) from None
    if args.span_range and args.span:
        raise ConfigError('--span-range cannot be combined with --span: use --span N (repeatable, '
                          'one run per span) or --span-range A B (one run on spans A..B together)')
    # `run` writes a workspace: it is --workspace or ./workspace, never inferred.
    where = locations.resolve(args, infer_workspace=False)
    config = PipelineConfig()
    config = dataclasses.replace(
        config, workspace=where.workspace, data_root=args.data_root, schema_path=args.schema,
        train_steps=args.train_steps, eval_steps=args.eval_steps,
        pipeline_name=args.pipeline_name, model_name=where.model_name,
        allowed_anomalies=tuple(args.allow_anomaly),
        allowed_drift=tuple(args.allow_drift), enable_cache=not args.no_cache, hparams=hparams,
        serving_root_override=args.serving_root, canary_traffic_percent=args.canary_percent,
        kserve_storage_uri_prefix=args.kserve_storage_uri_prefix, tf_serving_root=args.tf_serving_root,
        beam_args=tuple(args.beam_arg) if args.beam_arg else config.beam_args)
    if args.span_range:
        return [dataclasses.replace(config, span_range=tuple(args.span_range))]
    return [dataclasses.replace(config, span=span) for span in (args.span or [None])]


def _cmd_run(args):
    from runners import local_runner, run_cache

    started = time.time()
    runs = run_configs(args)
    # Every requested span is checked before any trains.
    preflighted = [local_runner.preflight(run_config) for run_config in runs]
    cached = run_cache.lookup(preflighted)
    if cached is not None:
        summaries = _print_cached(preflighted, cached, started)
    else:
        summaries = _run_all(runs, preflighted)
    if len(summaries) > 1:
        print('\nAll runs: ' + '; '.join(
            'span %s %s' % (s.span_used, _outcome(s)) for s in summaries))
    return _exit_status(summaries)


def _run_all(runs, preflighted):
    """Runs each config in turn; records the invocation for a cached re-run when it may."""
    from runners import local_runner, run_cache
    summaries, started_with = [], []
    for run_config, (checked, files) in zip(runs, preflighted):
        started_with.append(run_cache.stable_identity(checked))
        serving = run_cache.already_serving(checked, files)
        if serving is not None:
            result = _print_already_serving(checked, files, serving)
        else:
            result = local_runner.run(run_config)
            print(result.format())
            run_cache.record_produced(checked, files, result)
        summaries.append(result)
    run_cache.record(preflighted, summaries, started_with)
    return summaries


def _print_already_serving(config, files, serving):
    """A run whose model is staged now: its recorded summary, nothing retrained."""
    return _print_recorded(
        config, files, 'already serving: the same data, schema, code and flags produced v%d (%s), '
        'which serves as %s with the same files; not retrained (--no-cache retrains)'
        % (serving.version, serving.recorded_at, serving.role), serving.summary, time.time())


def _print_cached(preflighted, cached, started):
    """The recorded summaries of an unchanged invocation, without importing TFX."""
    note = ('nothing changed (cached): same data, schema, code, flags, serving state and '
            'ML Metadata as the run recorded %s (--no-cache re-executes)' % cached.recorded_at)
    for (config, files), summary in zip(preflighted, cached.summaries):
        _print_recorded(config, files, note, summary, started)
    return cached.summaries


def _print_recorded(config, files, note, summary, started):
    """A recorded run's summary as a run prints its own, with `note` saying
    why nothing ran; returns the summary with this invocation's time."""
    import dataclasses

    from runners import local_runner
    print(local_runner.running_line(config, files))
    print(note)
    summary = dataclasses.replace(summary, seconds=time.time() - started)
    print(summary.format())
    return summary


def _outcome(summary):
    if summary.pushed:
        return 'blessed+pushed'
    return 'blessed, NOT PUSHED (baseline moved)' if summary.stale_baseline else 'not pushed'


# A blessed model refused at push because its baseline moved: the run did its
# work but must be repeated, which a scheduler should notice.
EXIT_STALE_BASELINE = 3


def _exit_status(summaries):
    stale = [s for s in summaries if s.stale_baseline]
    for s in stale:
        print('error: span %s: %s' % (s.span_used, s.not_pushed_reason), file=sys.stderr)
    return EXIT_STALE_BASELINE if stale else 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog='tfx-canary', description=__doc__.split('\n\n')[0],
        epilog='Run "tfx-canary COMMAND --help" for the options of a command.')
    parser.add_argument('--verbose', action='store_true', help='show TFX/TensorFlow/Beam logs')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    subparsers.required = True
    # Each capability registers its own subcommands; none imports TensorFlow
    # at this point, so `--help` stays instant.
    from lineage import cli as lineage_cli
    from rollout import cli as rollout_cli
    from runners import kubeflow_runner
    from serving import cli as serving_cli
    from runners import loop
    _add_run(subparsers)
    for module in (rollout_cli, kubeflow_runner, serving_cli, lineage_cli):
        module.add_subcommands(subparsers)
    loop.add_subcommand(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    _quiet(args.verbose)
    try:
        return args.func(args)
    except TfxCanaryError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
