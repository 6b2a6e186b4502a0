"""Deprecated location of TfxCanaryError: it lives in common/errors.py.

Kept only while files outside this change still import it from here; new code
imports `from common.errors import TfxCanaryError`.
"""
from common.errors import TfxCanaryError  # noqa: F401  (re-export)
