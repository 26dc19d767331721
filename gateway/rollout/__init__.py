"""Progressive delivery: rollout controller, its lease, metrics and webhook."""
