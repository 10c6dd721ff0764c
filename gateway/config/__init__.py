"""The gateway's configuration: the `GatewayConfig` struct and how it is loaded.

One frozen struct (gateway/config/model.py) declares every setting once. It is decoded from
`opsgate.toml`, then overridden by `OPSGATE_<KEY>` environment variables and by flags
(gateway/config/loader.py); what a key may hold is read from the struct (schema.py), and
anything that looks like a secret is refused wherever it comes from (secrets.py).
"""

from gateway.config.loader import (
    ENV_FILE,
    ENV_PREFIX,
    FILE_NAME,
    ConfigError,
    Loaded,
    Override,
    Problem,
    find_file,
    load,
)
from gateway.config.model import GatewayConfig, PathSetting

__all__ = ["ENV_FILE", "ENV_PREFIX", "FILE_NAME", "ConfigError", "GatewayConfig", "Loaded", "Override", "PathSetting",
           "Problem", "find_file", "load"]
