"""The gRPC surface: servicer, codec, status mapping and interceptors."""
