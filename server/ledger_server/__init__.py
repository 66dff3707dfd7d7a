"""Credit ledger gRPC service: api (servicers) -> core (rules) -> store (SQL)."""
