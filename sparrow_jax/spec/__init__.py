"""Speculative decoding: the draft's window cache, tree drafting, verification, the decode loop."""
