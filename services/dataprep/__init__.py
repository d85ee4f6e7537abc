"""The dataprep service: turns a released batch into a plugin's ranking dataset, stores and announces it."""
