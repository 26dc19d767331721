"""The status pages as HTML: one module per page over a shared layout (html.py). Every value
read from the registry is escaped where it is placed; charts are inline SVG, so a page is one
self-contained document that needs no script and nothing from the network."""
