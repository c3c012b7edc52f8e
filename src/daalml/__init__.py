"""daalml: deep metric learning with DAAL, the Density-Aware Adaptive Line Margin loss."""

from __future__ import annotations

from daalml.errors import DaalmlError
from daalml.losses.daal import DAALLoss

__version__ = "0.1.0"

__all__ = ["DAALLoss", "DaalmlError", "__version__"]
