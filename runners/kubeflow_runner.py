"""`tfx-canary kfp compile|run-local|submit|schedule|runs`: the same pipeline on Kubeflow Pipelines v2 and Vertex AI.

    tfx-canary kfp compile --target kfp --image REGISTRY/tfx-canary:1.0 \\
        --pipeline-root gs://BUCKET/tfx-canary --serving-pvc serving --output build/pipeline.yaml
    tfx-canary kfp run-local --package build/pipeline.yaml        # smoke-test it here first
    tfx-canary kfp submit --host http://localhost:8080 --package build/pipeline.yaml --wait
    tfx-canary kfp schedule --host http://localhost:8080 --package build/pipeline.yaml --cron "0 3 * * *"
    tfx-canary kfp runs --host http://localhost:8080

`--target kfp` writes the YAML PipelineSpec package open-source KFP accepts;
`--target vertex` writes the PipelineJob JSON Vertex AI Pipelines accepts.
Model code is referenced by module path (modules.model.run_fn, ...) and baked
into the image (Dockerfile), so compiling needs no upload and no network.
"""
import dataclasses
import json
import os
import re
from typing import Optional

from common.cli import HelpFormatter
from pipeline import kubeflow_configs
from pipeline.configs import ConfigError, PipelineConfig
from common.errors import TfxCanaryError
from runners import kfp_spec

# Runtime parameters of the compiled pipeline: {name: (component type name,
# exec property)}. Only plain strings handed straight to one component can be
# runtime parameters in TFX 1.16's KubeflowV2 compiler; thresholds live inside
# the TFMA EvalConfig proto and the serving root is shared by two steps that
# must agree, so those are compile-time (see docs/kubeflow.md).
RUNTIME_PARAMETERS = {
    'data_root': ('CsvExampleGen', 'input_base'),
    'schema_path': ('ImportSchemaGen', 'schema_file'),
}
_KFP_NAME_RE = r'[a-z0-9][a-z0-9-]{0,127}'


class KfpCompileError(TfxCanaryError):
    """The pipeline cannot be compiled for the chosen target."""


@dataclasses.dataclass
class Compiled:
    path: str
    target: str
    pipeline_spec: dict
    platform_spec: Optional[dict] = None   # KFP's Kubernetes document, if any


def cluster_config(config: PipelineConfig,
                   kconfig: kubeflow_configs.KubeflowConfig) -> PipelineConfig:
    """The PipelineConfig as the pods see it: cluster paths and Beam args."""
    if not re.fullmatch(_KFP_NAME_RE, config.pipeline_name):
        raise ConfigError('config field pipeline_name=%r: KFP and Vertex need lower-case letters, '
                          'digits and "-" (e.g. tfx-canary-taxi)' % config.pipeline_name)
    return dataclasses.replace(
        config, pipeline_root_override=kconfig.pipeline_root, data_root=kconfig.data_root,
        schema_path=kconfig.schema_path, serving_root_override=kconfig.serving_root,
        beam_args=kconfig.pipeline_beam_args(),
        # The task status is the run's outcome on KFP/Vertex: a push refused
        # because the baseline moved fails the CanaryPusher task.
        fail_on_stale_baseline=True).validate()


def _component_type(component):
    return type(component).__name__


def expose_runtime_parameters(tfx_pipeline):
    """Turns the RUNTIME_PARAMETERS exec properties into RuntimeParameters.

    Done on the built pipeline, not through PipelineConfig, because config
    validation and string formatting of paths must keep seeing strings.
    Returns {parameter name: default}.
    """
    from tfx import v1 as tfx

    defaults = {}
    for name, (component_type, key) in RUNTIME_PARAMETERS.items():
        for component in tfx_pipeline.components:
            if _component_type(component) == component_type and key in component.exec_properties:
                default = component.exec_properties[key]
                component.exec_properties[key] = tfx.dsl.experimental.RuntimeParameter(
                    name=name, ptype=str, default=default)
                defaults[name] = default
    return defaults


def use_driverless_example_gen(tfx_pipeline):
    """Open-source KFP never runs ExampleGen's driver (see components/span_example_gen);
    a span-range ExampleGen already has that package's executor."""
    from tfx.components.example_gen.csv_example_gen import executor as csv_executor
    from tfx.dsl.components.base import executor_spec

    from components.span_example_gen import executor as span_example_gen

    for component in tfx_pipeline.components:
        old = getattr(component, 'executor_spec', None)
        if getattr(old, 'executor_class', None) is csv_executor.Executor:
            new = executor_spec.BeamExecutorSpec(span_example_gen.Executor)
            # The pipeline already handed its Beam args to the old spec.
            new.add_beam_pipeline_args(old.beam_pipeline_args)
            component.executor_spec = new


def resources_by_task(tfx_pipeline, kconfig):
    """{node id: Resources}: the Trainer gets the GPU, Beam steps the Beam size."""
    from tfx.components import Trainer
    from tfx.dsl.components.base import base_component, executor_spec

    result = {}
    for component in tfx_pipeline.components:
        if not isinstance(component, base_component.BaseComponent):
            continue
        if isinstance(component, Trainer):
            result[component.id] = kconfig.trainer_resources()
        elif isinstance(component.executor_spec, executor_spec.BeamExecutorSpec):
            result[component.id] = kconfig.beam_resources()
        else:
            result[component.id] = kconfig.default_resources()
    return result


def uncached_tasks(tfx_pipeline, config, kconfig):
    """Tasks whose result depends on state outside their inputs, so a cache hit
    could be stale; KFP/Vertex have no custom drivers to fold that state into
    the cache key (LocalDagRunner does, see components/baseline/driver.py)."""
    from tfx.components.example_gen.component import FileBasedExampleGen

    from components.baseline.component import BaselineModel

    result = []
    for component in tfx_pipeline.components:
        if isinstance(component, BaselineModel):
            result.append(component.id)   # Reads rollout.json: what serves *now*.
        elif isinstance(component, FileBasedExampleGen) and (
                (kconfig.target == 'kfp' and config.span is None) or config.span_range):
            # No driver on KFP, so no input fingerprint in the cache key, and
            # "latest span" changes as data lands. A pinned span is immutable.
            # A range: Vertex's stock driver hook fingerprints only the newest
            # span, so a change to an older one could hit a stale cache.
            result.append(component.id)
    return result


def kubernetes_settings(tfx_pipeline, kconfig):
    """{node id: KubernetesExecutorConfig dict} for the KFP platform spec."""
    from tfx.components import Trainer

    settings = {}
    for component in tfx_pipeline.components:
        config = {}
        if isinstance(component, Trainer) and kconfig.gpu_count:
            # GPU node pools are usually tainted with the GPU resource name
            # (GKE: nvidia.com/gpu=present:NoSchedule); tolerating it is harmless elsewhere.
            config['tolerations'] = [{'key': kconfig.effective_gpu_type, 'operator': 'Exists',
                                      'effect': 'NoSchedule'}]
            if kconfig.gpu_node_selector:
                config['nodeSelector'] = {'labels': dict(kconfig.gpu_node_selector)}
        # Steps that read or write the staging area get the shared volume.
        if kconfig.serving_pvc and 'serving_root' in getattr(component, 'exec_properties', {}):
            config['pvcMount'] = [{'constant': kconfig.serving_pvc,
                                   'mountPath': kconfig.serving_root}]
        if config:
            settings[component.id] = config
    return settings


def default_output(config, kconfig):
    return os.path.join('build', '%s-%s.%s' % (config.pipeline_name, kconfig.target,
                                               'yaml' if kconfig.target == 'kfp' else 'json'))


def compile_pipeline(config: PipelineConfig, kconfig: kubeflow_configs.KubeflowConfig,
                     output_path=None, pipeline_factory=None) -> Compiled:
    """Compiles the pipeline for kconfig.target and writes it to output_path."""
    kconfig.validate()
    config = cluster_config(config, kconfig)
    output_path = output_path or default_output(config, kconfig)
    if kconfig.target == 'kfp' and not output_path.endswith(('.yaml', '.yml')):
        raise KfpCompileError('--output %s: open-source KFP packages are YAML; name it *.yaml'
                              % output_path)
    if kconfig.target == 'vertex' and not output_path.endswith('.json'):
        raise KfpCompileError('--output %s: the Vertex AI PipelineJob is JSON; name it *.json'
                              % output_path)

    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as v2

    from pipeline import pipeline as pipeline_lib

    tfx_pipeline = (pipeline_factory or pipeline_lib.create_pipeline)(config)
    defaults = expose_runtime_parameters(tfx_pipeline)
    if kconfig.target == 'kfp':
        use_driverless_example_gen(tfx_pipeline)
    resources = resources_by_task(tfx_pipeline, kconfig)
    by_id = {c.id: c for c in tfx_pipeline.components}
    for node_id, node_resources in resources.items():
        by_id[node_id].with_platform_config(kfp_spec.resource_spec(node_resources))

    runner = v2.KubeflowV2DagRunner(
        config=v2.KubeflowV2DagRunnerConfig(
            default_image=kconfig.image,
            # Schema 2.1 (parameterType, parameter_values): what KFP 2.x
            # backends and current Vertex expect.
            use_pipeline_spec_2_1=True),
        output_dir=os.path.dirname(os.path.abspath(output_path)))
    job = runner.run(tfx_pipeline, parameter_values=defaults, write_out=False)
    spec = job['pipelineSpec']
    kfp_spec.fill_resources(spec, resources)
    kfp_spec.set_parameter_defaults(spec, defaults)
    for task in uncached_tasks(tfx_pipeline, config, kconfig):
        kfp_spec.set_caching(spec, task, False)

    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    if kconfig.target == 'vertex':
        with open(output_path, 'w') as f:
            json.dump(job, f, indent=2, sort_keys=True)
        return Compiled(output_path, kconfig.target, spec)

    unsupported = kfp_spec.non_kfp_executors(spec)
    if unsupported:
        raise KfpCompileError(
            'the pipeline has executors open-source KFP cannot run: %s (a tfx.dsl.Resolver '
            'compiles to these): use components.baseline.BaselineModel for the baseline, see '
            'docs/kubeflow.md' % ', '.join(unsupported))
    platform = kfp_spec.kubernetes_platform_spec(spec, kubernetes_settings(tfx_pipeline, kconfig))
    write_kfp_package(output_path, spec, platform, kconfig)
    return Compiled(output_path, kconfig.target, spec, platform)


def write_kfp_package(path, spec, platform, kconfig):
    """The YAML package `kfp.Client().create_run_from_pipeline_package` reads:
    the PipelineSpec document, then the optional Kubernetes platform spec."""
    import yaml

    header = ['# PIPELINE DEFINITION', '# Name: %s' % spec['pipelineInfo']['name'],
              '# Compiled by tfx-canary for open-source Kubeflow Pipelines v2; image %s'
              % kconfig.image]
    for name, parameter in sorted(spec['root'].get('inputDefinitions', {})
                                  .get('parameters', {}).items()):
        header.append('# Parameter %s [default: %r]' % (name, parameter.get('defaultValue')))
    documents = [spec] + ([platform] if platform else [])
    with open(path, 'w') as f:
        f.write('\n'.join(header) + '\n')
        # safe_dump: the client reads it back with yaml.safe_load_all.
        yaml.safe_dump_all(documents, f, sort_keys=True)


# ------------------------------------------------------------------- CLI

def _assignments(values, flag):
    result = {}
    for value in values or []:
        key, sep, item = value.partition('=')
        if not sep or not key:
            raise ConfigError('%s %r: use KEY=VALUE' % (flag, value))
        result[key] = item
    return result


def _add_compile_options(p):
    d, k = PipelineConfig(), kubeflow_configs.KubeflowConfig()
    g = p.add_argument_group('pipeline compile options')
    g.add_argument('--image', help='container image built from the Dockerfile (required to compile)')
    g.add_argument('--pipeline-root', help='where artifacts go, e.g. gs://BUCKET/tfx-canary')
    g.add_argument('--data-root', default=k.data_root,
                   help='default of runtime parameter data_root (folder of span-N/*.csv)')
    g.add_argument('--schema', default=k.schema_path,
                   help='default of runtime parameter schema_path (curated schema.pbtxt)')
    g.add_argument('--serving-root', default=k.serving_root,
                   help='staging area shared by BaselineModel and the pusher, as the pods see it')
    g.add_argument('--serving-pvc', help='KFP: ReadWriteMany PVC mounted at --serving-root')
    g.add_argument('--span', type=int, help='pin one span (default: the latest at run time)')
    g.add_argument('--pipeline-name', default=d.pipeline_name,
                   help='KFP/Vertex pipeline name (lower-case letters, digits, "-")')
    g.add_argument('--model-name', default=d.model_name, help='folder name under the serving root')
    g.add_argument('--train-steps', type=int, default=d.train_steps, help='Trainer steps')
    g.add_argument('--eval-steps', type=int, default=d.eval_steps, help='Trainer eval steps')
    g.add_argument('--min-auc', type=float, default=d.min_auc, help='blessing needs AUC >= this')
    g.add_argument('--min-binary-accuracy', type=float, default=d.min_binary_accuracy,
                   help='blessing needs binary accuracy >= this')
    g.add_argument('--max-auc-regression', type=float, default=d.max_auc_regression,
                   help='how far AUC may fall below the baseline\'s and still bless')
    g.add_argument('--allow-anomaly', action='append', default=[], metavar='NAME',
                   help='feature name or anomaly short description to accept, repeatable')
    g.add_argument('--allow-drift', action='append', default=[], metavar='FEATURE',
                   help='feature whose drift from the stable model\'s training data is '
                        'expected, repeatable')
    g.add_argument('--gpu-count', type=int, default=k.gpu_count, help='GPUs for the Trainer (0 = CPU)')
    gpu_types = kubeflow_configs.DEFAULT_GPU_TYPE
    g.add_argument('--gpu-type', help='default: %s (kfp), %s (vertex)'
                   % (gpu_types['kfp'], gpu_types['vertex']))
    g.add_argument('--gpu-node-selector', action='append', metavar='LABEL=VALUE',
                   help='KFP: node label the Trainer needs, repeatable')
    for name, steps in (('trainer', 'the Trainer'), ('beam', 'each Beam step'),
                        ('default', 'every other step')):
        g.add_argument('--%s-cpu' % name, default=getattr(k, '%s_cpu' % name),
                       help='CPU request = limit of %s (Kubernetes quantity)' % steps)
        g.add_argument('--%s-memory' % name, default=getattr(k, '%s_memory' % name),
                       help='memory request = limit of %s (Kubernetes quantity)' % steps)
    g.add_argument('--beam-runner', choices=kubeflow_configs.BEAM_RUNNERS, default=k.beam_runner,
                   help='where Beam steps run their work (see docs/kubeflow.md)')
    g.add_argument('--beam-arg', action='append', default=[], metavar='ARG',
                   help='extra Beam arg, repeatable (e.g. --beam-arg=--project=P for Dataflow)')
    g.add_argument('--no-cache', action='store_true', help='compile with caching off')


def configs_from_args(args, target):
    config = dataclasses.replace(
        PipelineConfig(), span=args.span, pipeline_name=args.pipeline_name,
        model_name=args.model_name, train_steps=args.train_steps, eval_steps=args.eval_steps,
        min_auc=args.min_auc, min_binary_accuracy=args.min_binary_accuracy,
        max_auc_regression=args.max_auc_regression,
        allowed_anomalies=tuple(args.allow_anomaly), allowed_drift=tuple(args.allow_drift),
        enable_cache=not args.no_cache)
    kconfig = kubeflow_configs.KubeflowConfig(
        target=target, image=args.image, pipeline_root=args.pipeline_root,
        data_root=args.data_root, schema_path=args.schema, serving_root=args.serving_root,
        serving_pvc=args.serving_pvc, gpu_count=args.gpu_count, gpu_type=args.gpu_type,
        gpu_node_selector=_assignments(args.gpu_node_selector, '--gpu-node-selector'),
        trainer_cpu=args.trainer_cpu, trainer_memory=args.trainer_memory,
        beam_cpu=args.beam_cpu, beam_memory=args.beam_memory,
        default_cpu=args.default_cpu, default_memory=args.default_memory,
        beam_runner=args.beam_runner, beam_args=tuple(args.beam_arg))
    return config, kconfig


def _cmd_compile(args):
    config, kconfig = configs_from_args(args, args.target)
    compiled = compile_pipeline(config, kconfig, args.output)
    tasks = compiled.pipeline_spec['root']['dag']['tasks']
    print('Compiled %s for %s: %d steps -> %s' % (config.pipeline_name, args.target, len(tasks),
                                                  compiled.path))
    parameters = compiled.pipeline_spec['root'].get('inputDefinitions', {}).get('parameters', {})
    for name, parameter in sorted(parameters.items()):
        print('  runtime parameter %s (default %s)' % (name, parameter.get('defaultValue')))
    return 0


def _cmd_submit(args):
    import tempfile

    from runners import kfp_submit

    def submit(package):
        return kfp_submit.submit_and_report(
            host=args.host, package=package, experiment=args.experiment, run_name=args.run_name,
            params=_assignments(args.param, '--param'), token_file=args.token_file,
            namespace=args.namespace, pipeline_root=args.pipeline_root, wait=args.wait,
            timeout=args.timeout, poll_seconds=args.poll_seconds, ui_host=args.ui_host)

    if args.package is not None:
        return submit(args.package)
    config, kconfig = configs_from_args(args, 'kfp')
    with tempfile.TemporaryDirectory(prefix='tfx-canary-kfp-') as tmp:
        package = compile_pipeline(config, kconfig, os.path.join(tmp, 'pipeline.yaml')).path
        print('Compiled the kfp target (%s)' % kconfig.image)
        return submit(package)


def _cmd_run_local(args):
    from common import locations
    from runners import kfp_local
    from runners.kfp_local import summary
    from runners.kfp_local.runner import TASK_LOG

    where = locations.resolve(args, infer_workspace=False)
    run = kfp_local.run_local(args.package, where.workspace, where.serving_root,
                              _assignments(args.param, '--param'), cold_start=args.cold_start)
    print(summary.summarize(run).format())
    print('  outputs        : %s (each task\'s log: <task>/%s)' % (run.run_dir,
                                                                   TASK_LOG))
    print('  caching        : none; kfp.local runs every task (KFP\'s cache lives in its API '
          'server)')
    return 0


def _add_cluster_options(p):
    """--host/--namespace/--token-file/--ui-host, shared by submit, schedule and runs."""
    p.add_argument('--host', default=os.environ.get('KF_PIPELINES_ENDPOINT'),
                   help='KFP API endpoint, e.g. http://localhost:8080 (default $KF_PIPELINES_ENDPOINT)')
    p.add_argument('--namespace', help='multi-user KFP: your profile namespace')
    p.add_argument('--token-file', metavar='PATH', help='file holding the bearer token')
    p.add_argument('--ui-host', help='base URL of the KFP UI for links (default --host)')


def _cmd_schedule(args):
    from runners import kfp_schedule
    kfp_schedule.schedule(
        host=args.host, package=args.package, cron=args.cron, experiment=args.experiment,
        name=args.name, params=_assignments(args.param, '--param'), token_file=args.token_file,
        namespace=args.namespace, pipeline_root=args.pipeline_root,
        max_concurrency=args.max_concurrency, catchup=args.catchup, ui_host=args.ui_host)
    return 0


def _cmd_runs(args):
    from runners import kfp_schedule
    kfp_schedule.list_runs(host=args.host, experiment=args.experiment,
                           token_file=args.token_file, namespace=args.namespace,
                           limit=args.limit, run_id=args.run_id, ui_host=args.ui_host)
    return 0


def _add_run_local(commands):
    from common import locations
    r = commands.add_parser(
        'run-local', help='run a compiled package on this machine under kfp.local (smoke test)',
        formatter_class=HelpFormatter,
        description='Runs a package from `kfp compile` (KFP YAML or Vertex JSON) through '
                    'kfp.local\'s orchestrator, each container command run as a process of '
                    'this environment (no Docker). Paths the package takes from the image '
                    '(/pipeline/...) come from this checkout; the serving volume is '
                    '--serving-root. See docs/kubeflow.md "Smoke-test a package locally".',
        epilog='Example: tfx-canary kfp compile --target kfp --image local/tfx-canary:dev '
               '--pipeline-root gs://unused --serving-pvc serving --gpu-count 0 --beam-cpu 1 '
               '--output build/p.yaml && tfx-canary kfp run-local --package build/p.yaml')
    r.add_argument('--package', required=True, metavar='FILE',
                   help='compiled package: *.yaml (KFP) or *.json (Vertex PipelineJob)')
    r.add_argument('--param', action='append', metavar='NAME=VALUE',
                   help='runtime parameter value, repeatable (e.g. data_root=DIR)')
    r.add_argument('--cold-start', action='store_true',
                   help='run each task in a fresh interpreter, as its container does (slower: '
                        'every task imports TensorFlow and TFX again; by default tasks are '
                        'forked from one interpreter that imported them once)')
    locations.add_location_options(r, metadata=False, model_name=False, notes={
        'workspace': 'task outputs and logs go to WORKSPACE/kfp-local/<run>/',
        'serving_root': 'the folder the package\'s serving volume (its PVC, or Vertex\'s '
                        '/gcs/ path) stands for here'})
    r.set_defaults(func=_cmd_run_local)


def _add_schedule_and_runs(commands):
    from runners import kfp_schedule
    s = commands.add_parser(
        'schedule', help='retrain on a schedule: a KFP recurring run of a compiled package',
        formatter_class=HelpFormatter,
        description='Creates a KFP recurring run of the package. ' + kfp_schedule.OVERLAP_NOTE,
        epilog='Cron: 5 fields are standard cron ("0 3 * * *" = 03:00 daily) and are sent to KFP '
               'with a leading seconds field; 6 fields are KFP\'s own (seconds first).')
    _add_cluster_options(s)
    s.add_argument('--package', required=True, metavar='FILE',
                   help='compiled KFP YAML (a schedule runs the same reviewed package every time)')
    s.add_argument('--cron', required=True, help='when to run, e.g. "0 3 * * *"')
    s.add_argument('--experiment', default='tfx-canary', help='created if missing')
    s.add_argument('--name', help='recurring run name (default: PIPELINE on CRON)')
    s.add_argument('--param', action='append', metavar='NAME=VALUE',
                   help='runtime parameter value for every run, repeatable')
    s.add_argument('--pipeline-root', help='override the compiled pipeline root')
    s.add_argument('--max-concurrency', type=int, default=1,
                   help='runs of this schedule at once; 1 because two overlapping retrains race '
                        'for the rollout and the pusher refuses the loser anyway')
    s.add_argument('--catchup', action='store_true',
                   help='after a pause, start every missed run (default: only the next one)')
    s.set_defaults(func=_cmd_schedule)

    n = commands.add_parser(
        'runs', help='list the schedules and newest runs of an experiment, or one run\'s state',
        formatter_class=HelpFormatter)
    _add_cluster_options(n)
    n.add_argument('--experiment', default='tfx-canary', help='experiment to list')
    n.add_argument('--run-id', help='show only this run')
    n.add_argument('--limit', type=int, default=20, help='newest runs to list')
    n.set_defaults(func=_cmd_runs)


def add_subcommands(subparsers):
    """Registers `kfp compile|run-local|submit|schedule|runs` on the tfx-canary CLI."""
    kfp = subparsers.add_parser(
        'kfp', help='compile, smoke-test, submit and schedule on Kubeflow Pipelines v2 / Vertex AI',
        description=__doc__.split('\n\n')[0])
    commands = kfp.add_subparsers(dest='kfp_command', metavar='COMMAND')
    commands.required = True

    c = commands.add_parser(
        'compile', help='compile the pipeline to a KFP YAML package or a Vertex PipelineJob JSON',
        formatter_class=HelpFormatter,
        epilog='Example: tfx-canary kfp compile --target kfp --image REGISTRY/tfx-canary:1.0 '
               '--pipeline-root gs://BUCKET/root --serving-pvc serving --output build/p.yaml')
    c.add_argument('--target', choices=kubeflow_configs.TARGETS, default='kfp',
                   help='kfp: open-source Kubeflow Pipelines YAML; vertex: Vertex AI JSON')
    c.add_argument('--output', metavar='FILE', help='default: build/PIPELINE-TARGET.yaml|json')
    _add_compile_options(c)
    c.set_defaults(func=_cmd_compile)
    _add_run_local(commands)

    s = commands.add_parser(
        'submit', help='start a run on a Kubeflow Pipelines v2 cluster',
        formatter_class=HelpFormatter,
        epilog='Token: --token-file or $KF_PIPELINES_SA_TOKEN_PATH (a file holding a bearer '
               'token); none for a port-forwarded, unauthenticated API.')
    _add_cluster_options(s)
    s.add_argument('--package', metavar='FILE',
                   help='compiled KFP YAML; without it the kfp target is compiled '
                        'from the compile options below')
    s.add_argument('--experiment', default='tfx-canary', help='created if missing')
    s.add_argument('--run-name', help='default: PIPELINE YYYY-mm-dd HH-MM-SS')
    s.add_argument('--param', action='append', metavar='NAME=VALUE',
                   help='runtime parameter value, repeatable (e.g. data_root=gs://b/taxi)')
    s.add_argument('--wait', action='store_true',
                   help='poll until the run ends; non-zero exit unless it succeeded')
    s.add_argument('--timeout', type=float, default=6 * 3600, help='--wait gives up after SECONDS')
    s.add_argument('--poll-seconds', type=float, default=20.0, help='--wait polls this often')
    _add_compile_options(s)
    s.set_defaults(func=_cmd_submit)

    _add_schedule_and_runs(commands)
