"""Hardware tiers: profiles and host detection, tier arithmetic (memory, fit, cost), calibration."""
