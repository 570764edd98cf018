"""Speculative decoding: proposers (`proposer.Proposer`, the Sparrow draft, `oracle`), the draft's window
cache, tree drafting, verification and the decode loop."""
