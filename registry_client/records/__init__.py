"""What the registry keeps in Redis, one module per kind of record: models and versions with
their artifacts, routing rules (the documents and their writes) and the audit, gateways'
heartbeats; over a base holding the connection pool, transactions and audit writing.
RegistryClient (registry_client.client) is all of them together."""
