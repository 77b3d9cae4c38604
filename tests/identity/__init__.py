"""Identity tests: a real OpenID provider and IAP keys on loopback, real brokers, real Chromium."""
