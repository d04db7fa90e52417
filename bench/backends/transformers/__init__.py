"""transformers (torch) backend."""
