"""The UI configuration document: its JSON schema (the AppConfig validator and the loader use the same
file) and the default document deployed first."""
