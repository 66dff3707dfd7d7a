"""The asyncio client (its client.py is also the source of the blocking one in _sync)."""
