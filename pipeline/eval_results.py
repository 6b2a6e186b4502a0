"""Deprecated location of the TFMA metrics reader: it lives in common/tfx_outputs.py.

Kept only while files outside this change still import it from here.
"""
from common.tfx_outputs import overall_metrics  # noqa: F401  (re-export)
