"""Input drift: per-feature sketches recorded off the request path."""
