"""How we prove that fine-tuning improved search (EVALUATION.md): data sets of items and graded queries,
a click simulator on them, exact retrieval, and ranking metrics with a paired bootstrap CI. Used by
`es emulate`, `es evaluate`, `es demo` and `bench/quality.py`; the trainer uses the metrics."""
