"""Model quality on the gateway's side: what a later label needs of each prediction (its id,
version, role, segment values and scores), read off the request in the background."""
