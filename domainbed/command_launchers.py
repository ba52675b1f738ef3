"""Upstream's import path of the command launchers: this name is the module
`domainbed.launchers.command_launchers` itself (same `REGISTRY`, same functions)."""
import sys

from domainbed.launchers import command_launchers

sys.modules[__name__] = command_launchers
