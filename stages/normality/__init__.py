"""The normality model of a camera: what `vigil fit` learns and what the scorer compares with."""

from stages.normality.fit import FrameSample, fit_normality
from stages.normality.model import ATTRIBUTES, NormalityModel

__all__ = ["ATTRIBUTES", "FrameSample", "NormalityModel", "fit_normality"]
