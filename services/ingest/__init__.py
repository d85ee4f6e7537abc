"""The ingest service: sessions, events and batches (ClickstreamService)."""
