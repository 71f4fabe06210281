"""Models: the built-in offline model and the HTTP providers, all behind one `Model` protocol."""

from ._base import Model, ModelRequest, ModelSettings

__all__ = ["Model", "ModelRequest", "ModelSettings"]
