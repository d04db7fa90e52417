"""Serving under load (``bench serve``): a real server (llama.cpp's llama-server, started and
stopped by the suite) or any OpenAI-compatible endpoint, measured as a client under fixed
concurrency or open-loop Poisson arrivals (docs/METRICS.md, "Serving")."""
