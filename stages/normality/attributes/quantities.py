"""What the attributes judged against per-(cell, class) quantile tables share."""

from __future__ import annotations

#: why quantile-table attributes take no operator feedback
QUANTILE_TABLES = (
    "its model part keeps quantile tables per place and class, not the samples they came from, so one "
    "more observation cannot be added to them without refitting"
)
