"""Fault testing: the bank workload (`python -m chaos.bank`) against real servers."""
