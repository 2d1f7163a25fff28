"""`make bench`: the suite measured from outside, in production shape, as ratios to floors taken
in the same run (a no-op RPC on the same gRPC stack, pgbench, redis-benchmark)."""
