"""The data plane: stores, ingest, conventions, statistics, windows and loaders."""
