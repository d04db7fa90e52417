"""Native code built for the machine it runs on: llama.cpp through llama-cpp-python, and (for the
fidelity and serving checks) llama.cpp's own tools from the same source with the same flags.

Everything here imports only the standard library, so ``python -m bench.install`` can run before
the suite's dependencies are installed.
"""
