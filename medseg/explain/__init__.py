"""medseg.explain."""
