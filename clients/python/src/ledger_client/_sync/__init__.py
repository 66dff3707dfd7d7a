"""The blocking client, written from _async by scripts/gen_sync_client.py."""
