"""Deployers: turn a Python object into a deployed model version.

Import the one you need (``admin.deployers.python``, ``admin.deployers.sklearn``,
``admin.deployers.onnx``); each imports its framework only when called.
"""

from __future__ import annotations

from admin.deployers.onnx import deploy_onnx_model
from admin.deployers.python import deploy_python_closure
from admin.deployers.sklearn import deploy_sklearn_model

__all__ = ["deploy_onnx_model", "deploy_python_closure", "deploy_sklearn_model"]
