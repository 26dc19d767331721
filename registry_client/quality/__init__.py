"""Model quality (accuracy, calibration, fairness) from predictions joined with their delayed
labels: a model's task and segments (task), the prediction log a label is joined with
(predictions, prediction_store), the additive state of the joined rows per (version, role,
segment, window), which writers keep cumulatively and readers merge across writers and windows
as they merge the request statistics windows (state), and the metrics and fairness figures
computed from a (merged) state (metrics, fairness); the episodes of quality events, one
event when one starts and one when it ends (episodes, episode_store); a version measured on a
labelled dataset before it serves, as its live predictions are (scores, runner, offline,
evaluation)."""
