"""The names tfx-canary reads and writes in ML Metadata, defined once.

Type names, context names and property names are how the pipeline's
components, the rollout audit trail, the run summary and lineage find each
other's records, so a name spelled differently in one of them is a silent
"not found". Everyone imports them from here (plain strings, no imports).
"""

# ------------------------------------------------------------ types

# TFX's standard artifact types that tfx-canary looks up by name.
EXAMPLES = 'Examples'
SCHEMA = 'Schema'
MODEL = 'Model'
MODEL_BLESSING = 'ModelBlessing'
PUSHED_MODEL = 'PushedModel'

# TFX's context types: the pipeline, one of its runs, one of its nodes.
PIPELINE_CONTEXT = 'pipeline'
RUN_CONTEXT = 'pipeline_run'
NODE_CONTEXT = 'node'

# The rollout audit trail (rollout/audit.py writes, lineage reads).
ROLLOUT_EXECUTION = 'tfx_canary.RolloutTransition'
ROLLOUT_CONTEXT = 'tfx_canary.Rollout'


def rollout_context_name(model_name):
    """The rollout context of one model: rollout.<model_name>."""
    return 'rollout.%s' % model_name


# ------------------------------------------------------------ artifact properties

# TFX's own (stock Pusher, Evaluator, ExampleGen).
PUSHED = 'pushed'                            # 1 = staged, 0 = not
PUSHED_VERSION = 'pushed_version'            # the staged version, as a string
PUSHED_DESTINATION = 'pushed_destination'    # its directory
BLESSED = 'blessed'                          # ModelBlessing: 1 = blessed
SPAN = 'span'                                # Examples: the (newest) span

# Examples of a span-range ExampleGen: "A-B".
SPAN_RANGE = 'span_range'

# PushedModel, set by CanaryPusher.
MODEL_NAME = 'model_name'
ROLLOUT_ROLE = 'rollout_role'                # 'stable' or 'canary' when staged
CHALLENGES_STABLE_VERSION = 'challenges_stable_version'   # stable a canary challenged, 0 = none
SERVING_ROOT = 'serving_root'                # where it was staged
NOT_PUSHED_REASON = 'not_pushed_reason'      # why a blessed model was not staged, else ''
STALE_BASELINE = 'stale_baseline'            # 1: refused, the baseline moved (compare-and-set)

# Model from the BaselineModel step (and, copied, the Evaluator's outputs):
# which baseline a run compared against.
HAS_BASELINE = 'has_baseline'                # 1 = a SavedModel is inside, 0 = none serving yet
BASELINE_VERSION = 'baseline_version'        # staged version number, 0 = none
BASELINE_SOURCE = 'baseline_source'          # human-readable: where the choice came from
BASELINE_URI = 'baseline_uri'                # the staged version directory that was copied
BASELINE_FINGERPRINT = 'baseline_fingerprint'  # rollout.staging.saved_model_fingerprint

# ExampleStatistics from the BaselineModel step: the stable version's
# training statistics (components/baseline/statistics.py).
HAS_STATISTICS = 'has_statistics'            # 1 = statistics inside, 0 = none
STATISTICS_VERSION = BASELINE_VERSION        # the stable version they belong to, 0 = none
STATISTICS_SPAN = 'baseline_span'            # the span(s) it was trained on, in words
STATISTICS_NOTE = 'statistics_note'          # why there are none, or where they came from

# ExampleAnomalies from the DriftGate (components/drift_gate): its verdict.
DRIFT_CHECKED = 'drift_checked'              # 1 = compared with a baseline, 0 = nothing to compare
DRIFT_SPAN = 'drift_span'                    # the new data, in words
DRIFT_BASELINE = 'drift_baseline'            # what it was compared with, in words
DRIFTED_FEATURES = 'drifted_features'        # comma-separated, blocking or allowed
DRIFT_NOTE = 'drift_note'                    # why nothing was compared, if so

# ------------------------------------------------------------ rollout executions

# Properties of a ROLLOUT_EXECUTION: the state the event left behind.
EVENT = 'event'
ACTOR = 'actor'
REASON = 'reason'
STABLE_VERSION = 'stable_version'
CANARY_VERSION = 'canary_version'
TRAFFIC_PERCENT = 'traffic_percent'
# Custom properties: the whole history event and its id (for idempotent back-fill).
EVENT_JSON = 'event_json'
EVENT_ID = 'event_id'
METRICS_JSON = 'metrics_json'
AT = 'at'
