"""Which version serves a request: an immutable route table and the pure router over it."""
