"""Model versions in the gateway: loading, signatures, input binding and running."""
