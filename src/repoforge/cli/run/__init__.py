"""The commands' implementations, one module per module of repoforge/cli/ that declares them; each is imported
only when one of its commands runs (cli/common.py: `Command.run`)."""
