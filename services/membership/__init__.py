"""The membership service: programs, members, consent, order facts and tiers."""
