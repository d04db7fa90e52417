"""llama.cpp backend (llama-cpp-python)."""
