"""Quality: corpora, perplexity/KLD scoring against a reference, and tasks scored by exact match."""
