"""The procedural video world the embedded demo pair is trained on: seeded scenes of moving shapes
(`world`), their ground-truth descriptions, facts and recall scoring (`describe`), and datasets of
rendered videos with manifests (`dataset`; `python -m train.synthetic --out DIR --count N` writes one)."""
