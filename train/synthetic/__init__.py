"""Training on the synthetic world (`sparrow_jax.synthetic`): `python -m train.synthetic --out DIR --count N`
writes a dataset; `tokenizer`, `vision` and `evaluate` build and score the embedded demo target."""
