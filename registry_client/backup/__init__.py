"""The registry's control plane written out as one JSON document and written back from it."""
