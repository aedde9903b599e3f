"""medseg.io."""
