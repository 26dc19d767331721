"""Settings, read once: from the environment by Settings.from_env, then from flags in cli.

declaration.py declares every setting once; environment.py, flags.py, checks.py and
docs/configuration.md (docs/generate_configuration.py) are derived from it.
"""

from gateway.settings.declaration import Settings
from gateway.settings.environment import OTHER_VARIABLES, SettingsError
from gateway.settings.schema import ENV_PREFIX, env_variable

__all__ = ["ENV_PREFIX", "OTHER_VARIABLES", "Settings", "SettingsError", "env_variable"]
