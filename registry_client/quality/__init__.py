"""Model quality (accuracy, calibration, fairness) from predictions joined with their delayed
labels: a model's task and segments (task), the prediction log a label is joined with
(predictions, prediction_store), the additive state of the joined rows per (version, role,
segment, window), which writers keep cumulatively and readers merge across writers and windows
as they merge the request statistics windows (state), and the metrics and fairness figures
computed from a (merged) state (metrics, fairness)."""
