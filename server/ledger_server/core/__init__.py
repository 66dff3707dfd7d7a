"""The ledger's rules: validation, posting, idempotency. Imports neither gRPC nor SQL."""
