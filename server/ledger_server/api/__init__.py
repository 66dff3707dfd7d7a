"""gRPC surface: servicers translate between ledger.v1 messages and the core."""
