"""Idle reclaim: policy, one reclaim cycle, leader lock. Knows nothing of the broker."""
