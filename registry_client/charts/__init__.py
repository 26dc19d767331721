"""Charts as self-contained SVG documents, drawn from data gatectl and the gateway's status pages
already hold: no JavaScript, nothing fetched, a title and a description for screen readers."""
