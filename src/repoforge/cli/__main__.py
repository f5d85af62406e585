"""`python -m repoforge.cli`."""

from repoforge.cli import main

main()
