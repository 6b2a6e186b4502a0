"""One run of our pipeline for the bench (same code path as `tfx-canary run`).

Prints a final JSON line with the summary, so the bench process (which never
imports TensorFlow itself while timing) can read metrics and paths.

    python -m bench.run_ours WORKSPACE DATA_ROOT [--span N] [--hash-buckets 2,1] [--beam-mode M]
"""
import argparse
import dataclasses
import json
import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('workspace')
    p.add_argument('data_root')
    p.add_argument('--span', type=int)
    p.add_argument('--hash-buckets', default='3,1')
    p.add_argument('--beam-arg', action='append')
    args = p.parse_args(argv)

    from runners import cli
    cli._quiet(verbose=False)  # Same terminal output as the CLI.
    from pipeline.configs import PipelineConfig
    from runners import local_runner
    config = PipelineConfig(
        workspace=args.workspace, data_root=args.data_root, span=args.span,
        train_eval_hash_buckets=tuple(int(x) for x in args.hash_buckets.split(',')))
    if args.beam_arg:
        config = dataclasses.replace(config, beam_args=tuple(args.beam_arg))
    result = local_runner.run(config)
    print(result.format())
    print('BENCH_RESULT ' + json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
