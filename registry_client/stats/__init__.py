"""Request statistics per model version: the 1-minute window format gateways write, and
the store that merges every replica's windows."""
