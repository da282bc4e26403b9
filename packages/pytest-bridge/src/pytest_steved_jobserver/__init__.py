"""steved's pytest plugin: ``-p jobserver`` makes pytest-xdist tests take GNU make jobserver tokens.

The plugin itself is :mod:`pytest_steved_jobserver.plugin` (entry point ``jobserver``); it talks
to a ``jobclient agent`` subprocess through :mod:`pytest_steved_jobserver.agent`.
"""

__version__ = "0.1.0"
