"""Input drift: per-feature sketches recorded off the request path (DESIGN.md 9)."""
