"""The bottom layer shared by every tfx-canary command: where things live, CLI helpers.

`common.locations` owns the workspace layout (`./workspace`, its
metadata.sqlite, serving/ and capture/) and the rules that derive one location
from another; `common.cli` holds the argparse pieces every command uses.
Nothing here imports another tfx-canary package, TensorFlow or TFX.
"""
