"""Errors that reach the operator as one clear line (the CLI prints them without a traceback)."""


class VigilError(Exception):
    """Base class: the message names the problem and where it is."""


class PacketError(VigilError, ValueError):
    """A packet was built with arrays of the wrong shape or dtype."""


class GraphError(VigilError):
    """The stage graph is invalid: a missing or duplicate provider, or a cycle."""


class ConfigError(VigilError):
    """config.yaml is invalid; the message lists each problem with its YAML path and line."""


class SourceError(VigilError):
    """A source cannot be opened or read (missing file, corrupt video, unreachable camera)."""


class ModelError(VigilError):
    """A model file is missing, corrupt, of the wrong kind or incompatible with this version."""
