"""Where the repository and the tests' own data lie, for tests at any depth."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"
