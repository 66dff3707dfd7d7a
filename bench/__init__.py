"""`make bench`: load generators in separate processes against a real `ledger-server`,
with every figure measured beside its ceiling in the same run. See bench/README.md."""
