"""Stage infrastructure: the one way a stage is declared, its locks, its preflight checks."""
