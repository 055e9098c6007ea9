"""Stage infrastructure: the one way a stage is declared, its parameters and its locks."""
