"""The garbage collector and the retention rules it applies."""
