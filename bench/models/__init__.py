"""The model side: the catalog, the store that fetches and verifies files, derived variants, GGUF headers."""
