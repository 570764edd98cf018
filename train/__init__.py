"""Training of Sparrow drafts (`python -m train.main`): arrives with the training milestone."""
