"""The one metric a version's accuracy is judged on, per task. Binary: AUC-ROC, which does not
depend on the decision threshold; multiclass: accuracy. Regression differs by use:

- A rollout compares a candidate with its baseline on the same interval (`--max-auc-drop`):
  on MAE, whose relative rise reads plainly (0.05: errors 5% larger).
- accuracy.drop holds one version against fixed bounds (its evaluation's figure less a
  margin, a floor), which needs a figure where higher is better on a scale of its own: R².
"""

from __future__ import annotations

__all__ = ["COMPARED", "WATCHED"]

COMPARED = {"binary": "auc_roc", "multiclass": "accuracy", "regression": "mae"}
WATCHED = {"binary": "auc_roc", "multiclass": "accuracy", "regression": "r2"}
