"""Out-of-fold searches: blend weights and multi-label thresholds, fitted into the config."""
