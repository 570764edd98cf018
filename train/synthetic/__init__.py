"""Procedurally generated videos with ground-truth descriptions: the world the embedded demo pair is
trained on (`python -m train.synthetic --out DIR --count N`)."""
