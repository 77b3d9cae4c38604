"""Redis as production runs it: TLS and AUTH, Sentinel failover, readiness without Redis."""
