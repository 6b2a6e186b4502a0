"""Runs the pipeline locally: LocalDagRunner, SQLite ML Metadata, one workspace folder."""
import contextlib
import dataclasses
import os
import time

from common import mlmd
from pipeline import spans
from pipeline.configs import PipelineConfig, beam_args_for


@contextlib.contextmanager
def progress_lines(total, out):
    """Prints `[i/N] Component  12.3 s|cached` as each component finishes.

    LocalDagRunner offers no progress callback and its own log lines go through
    absl (whose level components reset), so wrap the launcher for the run.
    """
    from tfx.orchestration.portable import launcher

    original_launch = launcher.Launcher.launch
    original_prepare = launcher.Launcher._prepare_execution  # pylint: disable=protected-access
    counter = {'done': 0}

    def prepare(self):
        result = original_prepare(self)
        # False for a cache hit (and for a node whose inputs were not ready).
        self._tfx_canary_executed = result.is_execution_needed  # pylint: disable=protected-access
        return result

    def launch(self):
        node_id = self._pipeline_node.node_info.id  # pylint: disable=protected-access
        started = time.time()
        self._tfx_canary_executed = True  # pylint: disable=protected-access
        result = original_launch(self)
        counter['done'] += 1
        executed = result is not None and self._tfx_canary_executed  # pylint: disable=protected-access
        out('  [%d/%d] %-32s %s' % (counter['done'], total, node_id,
                                     '%.1f s' % (time.time() - started) if executed else 'cached'))
        return result

    launcher.Launcher.launch = launch
    launcher.Launcher._prepare_execution = prepare  # pylint: disable=protected-access
    try:
        yield
    finally:
        launcher.Launcher.launch = original_launch
        launcher.Launcher._prepare_execution = original_prepare  # pylint: disable=protected-access


def absolute(config: PipelineConfig) -> PipelineConfig:
    """TFX records artifact URIs as given: make every path absolute first."""
    fields = ('workspace', 'data_root', 'schema_path', 'pipeline_root_override',
              'metadata_path_override', 'serving_root_override')
    return dataclasses.replace(config, **{
        f: os.path.abspath(getattr(config, f)) for f in fields if getattr(config, f)})


def metadata_connection_config(config: PipelineConfig):
    """The run's SQLite store, created (with its folder) on the first run."""
    return mlmd.sqlite_config(config.metadata_path, mlmd.CREATE)


def preflight(config: PipelineConfig):
    """Cheap checks before TensorFlow is even imported; returns (config, files).

    Resolves the span (None -> latest) and fails with one clear line for a
    missing data folder or schema, an unknown span, or an unreadable CSV. For a
    span range every span in it is checked and `span` stays None.
    """
    config = absolute(config).validate()
    if config.span_range is not None:
        files = spans.check_span_range(config.data_root, config.span_pattern, *config.span_range)
    else:
        span, files = spans.check_span(config.data_root, config.span_pattern, config.span)
        config = dataclasses.replace(config, span=span)
    if not os.path.isfile(config.schema_path):
        raise spans.DataError('schema file %s does not exist: pass --schema with a schema.pbtxt '
                              '(see data/taxi/schema.pbtxt)' % config.schema_path)
    return config, files


def running_line(config: PipelineConfig, files):
    """'Running <pipeline> on span N (span-N/data.csv) -> workspace W' for a preflighted config."""
    which = ('spans %d-%d' % tuple(config.span_range) if config.span_range is not None
             else 'span %d' % config.span)
    return 'Running %s on %s (%s) -> workspace %s' % (
        config.pipeline_name, which,
        ', '.join(os.path.relpath(f, config.data_root) for f in files), config.workspace)


def run(config: PipelineConfig, out=print):
    """Runs one pipeline run on config.span (None = latest) or config.span_range;
    returns a RunSummary."""
    config, files = preflight(config)
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from modules.tf_compat import skip_autograph_for_tf_keras
    skip_autograph_for_tf_keras()  # Evaluator and pusher load Keras models too.

    from pipeline.pipeline import create_pipeline
    from runners import summary

    input_bytes = sum(os.path.getsize(f) for f in files)
    if config.beam_args is None:
        config = dataclasses.replace(config, beam_args=beam_args_for(input_bytes))
    os.makedirs(config.workspace, exist_ok=True)
    connection = metadata_connection_config(config)
    pipeline = create_pipeline(config, connection)
    run_id, ir = compile_with_run_id(pipeline)
    out(running_line(config, files))
    out('Beam: %s (%.1f MB of input)' % (' '.join(config.beam_args), input_bytes / 2 ** 20))
    started = time.time()
    with progress_lines(len(pipeline.components), out):
        LocalDagRunner().run_with_ir(ir)
    _record_rollout_events(config, connection, out)
    return summary.summarize(connection, config, run_id, time.time() - started)


def new_run_id():
    """A pipeline run id unique even for two runs started in the same microsecond.

    LocalDagRunner's own is datetime.now().isoformat(); ours sorts the same way
    and adds a random suffix, and we know it, so the summary can read exactly
    this run's pipeline_run context.
    """
    import datetime
    import uuid
    return '%s-%s' % (datetime.datetime.now().isoformat(), uuid.uuid4().hex[:8])


def compile_with_run_id(pipeline):
    """(run_id, pipeline IR with that run id substituted) for LocalDagRunner.run_with_ir."""
    from tfx.dsl.compiler import compiler
    from tfx.dsl.compiler import constants
    from tfx.orchestration.portable import runtime_parameter_utils

    ir = compiler.Compiler().compile(pipeline)
    run_id = new_run_id()
    # run_with_ir substitutes its own id only where the parameter is still unset.
    runtime_parameter_utils.substitute_runtime_parameter(
        ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    return run_id, ir


def _record_rollout_events(config, connection, out):
    """Links the run's staging event (rollout.json) to its PushedModel in ML Metadata."""
    from rollout.control import RolloutController
    result = RolloutController(config.serving_root, config.model_name,
                               metadata_connection_config=connection).sync_audit()
    if result.error:
        out('warning: ' + result.error)
