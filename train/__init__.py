"""Training of Sparrow drafts against a frozen target: `python -m train.main --config FILE [key=value ...]`
(see README "Train a draft" and docs/DESIGN.md "Training")."""
