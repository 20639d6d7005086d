"""`python -m bench`: measures the pipeline on this machine (see docs/performance-summary.md)."""
