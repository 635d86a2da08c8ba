"""The `penetrator-dev` command."""
