"""Rollout scoring as the weather and neural-PDE communities do it: forecast stores in, scorecards out.

``score(forecasts, truth, out)`` aligns forecast stores (WeatherBench 2 layout) with a catalog truth by
valid time (:mod:`~earthsim.score.align`), feeds them block by block to the metrics that apply
(:mod:`~earthsim.score.metrics`, one class per score) and writes the scorecard
(:mod:`~earthsim.score.output`: netCDF, CSV, Markdown; :mod:`~earthsim.score.plots`: PNG plots).
Scoring reads stores only.
"""

from earthsim.score.align import AlignmentError
from earthsim.score.evaluation import Evaluation, evaluate, score
from earthsim.score.metrics import METRICS, conventions
from earthsim.score.output import markdown_table, write_scorecard

__all__ = ["AlignmentError", "Evaluation", "METRICS", "conventions", "evaluate", "markdown_table", "score",
           "write_scorecard"]
