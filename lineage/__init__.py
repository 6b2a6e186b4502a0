"""Model lineage from ML Metadata: where a served model came from, what changed.

The Python API mirrors `tfx-canary lineage`; every function returns the same
JSON-ready dict the CLI prints with --json:

    from lineage import connection, open_lineage, show, runs, diff
    queries = open_lineage(connection.sqlite_config('workspace/metadata.sqlite'))
    record = show(queries, role='canary', serving_root='workspace/serving')
    record['examples']['span'], record['evaluation']['overall']['candidate']['auc']

    diff(queries, 1, 2, serving_root='workspace/serving')['training']['hyperparameters']

Rendering: lineage.render.show_text / runs_text / diff_text, and
lineage.graph.to_dot / write_png. Connections (SQLite read-only, MySQL,
gRPC): lineage.connection. Everything only reads the store.
"""

from common.locations import DEFAULT_MODEL_NAME, DEFAULT_PIPELINE_NAME


def open_lineage(connection_config, pipeline_name=DEFAULT_PIPELINE_NAME):
    """Opens the store read-only; returns the LineageQueries the functions take."""
    from lineage import connection
    from lineage.query import LineageQueries
    return LineageQueries(connection.open_store(connection_config), pipeline_name)


def show(queries, version=None, role=None, artifact_id=None,
         model_name=DEFAULT_MODEL_NAME, serving_root=None, effective_hparams=None):
    """The lineage record of a version, a role ('stable'/'canary') or an artifact id.

    `effective_hparams`: the model code's merge of recorded overrides over its
    defaults (e.g. modules.hparams.hparams_from); without it the record's
    trainer.hyperparameters is None.
    """
    from lineage import build
    return build.show(queries, model_name, serving_root, version=version, role=role,
                      artifact_id=artifact_id, effective_hparams=effective_hparams)


def runs(queries, limit=None, model_name=DEFAULT_MODEL_NAME, serving_root=None):
    """The pipeline's runs, newest first."""
    from lineage import build
    return build.runs(queries, model_name, serving_root, limit=limit)


def diff(queries, a, b, model_name=DEFAULT_MODEL_NAME, serving_root=None,
         effective_hparams=None):
    """Two versions (numbers or 'stable'/'canary') side by side."""
    from lineage import build
    return build.diff(queries, model_name, serving_root, a, b,
                      effective_hparams=effective_hparams)
