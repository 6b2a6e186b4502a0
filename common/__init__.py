"""The bottom layer shared by every tfx-canary package (README "Architecture").

`locations` owns the workspace layout (`./workspace`, its metadata.sqlite,
serving/ and capture/, the rollout.json path) and the rules that derive one
location from another; `cli` the argparse pieces every command uses; `errors`
the one error type the CLI prints as `error: ...`; `mlmd_names` and `mlmd` the
ML Metadata names, connection builder and property reader; `storage` reading
local paths and object-store URIs alike; `tfx_outputs` the readers of TFMA
metrics and TFDV anomalies. Nothing here imports another tfx-canary package,
and nothing imports TensorFlow at module level (TFX's fileio only for a URI).
"""
