"""The gRPC surface: server, servicers, codec, error mapping and authentication."""
