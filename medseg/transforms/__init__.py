"""medseg.transforms."""
