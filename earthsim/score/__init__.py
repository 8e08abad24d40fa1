"""Rollout scoring as the weather and neural-PDE communities do it: forecast stores in, scorecards out.

``score(forecasts, truth, out)`` aligns forecast stores (WeatherBench 2 layout) with a catalog truth by
valid time and writes a scorecard (netCDF, CSV, Markdown, PNG plots). Scoring reads stores only.
"""

from earthsim.score.align import AlignmentError
from earthsim.score.scorecard import CONVENTIONS, GROUPS, Evaluation, evaluate, markdown_table, score, write_scorecard

__all__ = ["AlignmentError", "CONVENTIONS", "GROUPS", "Evaluation", "evaluate", "markdown_table", "score",
           "write_scorecard"]
