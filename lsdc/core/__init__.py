"""Shared ground: the RSNA data model, CSV readers, the Config and the CLI."""
