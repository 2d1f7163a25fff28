"""The points service: accounts over an append-only ledger, expiring lots, holds, earn rules."""
