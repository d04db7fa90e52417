"""Tier speeds for machines that are not at hand: the performance model, the evidence it rests on
(published measurements of real machines and imported llama-bench runs), its validation, and what a
projected speed costs on a tier.

    evidence.py   published measurements and machines (validation/), the frozen test split
    shape.py      a model's bytes and FLOPs per token, from a GGUF header, the catalog or an entry
    model.py      the physics: decode and prefill on a tier from its evidence or its figures
    fit.py        the per-class parameters and error bands, fitted on the training split only
    tier.py       a result row carried onto a tier (project_row), and its cost there
    validate.py   python -m bench.projection.validate: errors on both splits against a naive baseline
    importer.py   bench import: llama-bench's outputs as result rows
    predict.py    bench predict: fit, speed and cost per tier without running anything
"""
