"""`python -m bench`: measures the pipeline on this machine (see the README's Performance section)."""
