"""Progressive rollouts: the plan and the state it moves through, the judgement of each
interval, the stored document and the controller's leader lease."""
