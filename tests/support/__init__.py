"""Helpers the tests share: models, servers, wire messages, gateways."""
