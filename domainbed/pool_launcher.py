"""The earlier import path of the `pool` launcher: this name is the module
`domainbed.launchers.pool` itself."""
import sys

from domainbed.launchers import pool

sys.modules[__name__] = pool
