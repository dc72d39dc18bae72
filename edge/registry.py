"""Plugins by name: the classes that a package's modules register, with their typed options.

The accelerator backends (:mod:`edge.runtime.backends`) and the quantization toolchains
(:mod:`edge.convert.toolchains`) are such packages: one module per plugin, each class
registered under a name, so a new board or toolchain is one new file. Importing a
plugin module must stay cheap (each imports its heavy library only when it is used),
because the registry imports them all to list them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edge.errors import describe

T = TypeVar("T")


class PluginOptions(BaseModel):
    """The base of every plugin's options: frozen, an unknown key refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Registry(Generic[T]):
    """The plugin classes of one package, by name.

    Parameters
    ----------
    package : str
        The package whose modules (all but ``base``) register plugins when imported.
    missing : str
        What to say of an unknown name, with ``{name!r}`` in it.
    error : type of Exception
        What an unknown name or bad options raise.
    """

    def __init__(self, package: str, missing: str, error: type[Exception]) -> None:
        self._package, self._missing, self._error = package, missing, error
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: make a class the plugin called ``name``."""

        def decorate(cls: type[T]) -> type[T]:
            self._classes[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        self._discover()
        return sorted(self._classes)

    def classes(self) -> list[type[T]]:
        """Return the registered classes."""
        self._discover()
        return list(self._classes.values())

    def get(self, name: str) -> type[T]:
        """Return the plugin called ``name``, or raise the registry's error naming the known ones."""
        self._discover()
        cls = self._classes.get(name)
        if cls is None:
            raise self._error(f"{self._missing.format(name=name)} (known: {', '.join(self.names())})")
        return cls

    def options(self, cls: Any, values: Mapping[str, Any] | None, owner: str) -> Any:
        """Return ``values`` as the typed options of plugin ``cls`` (its ``Options`` model).

        Raises
        ------
        Exception
            The registry's error, naming ``owner`` and each unknown option or bad value.
        """
        known = set(cls.Options.model_fields)
        unknown = set(values or {}) - known
        if unknown:
            raise self._error(
                f"{owner} has no option {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
            )
        try:
            return cls.Options.model_validate(dict(values or {}))
        except ValidationError as e:
            raise self._error(f"{owner} options: {describe(e, cls.Options)}") from None

    def _discover(self) -> None:
        package = importlib.import_module(self._package)
        for module in pkgutil.iter_modules(package.__path__):
            if module.name != "base":
                importlib.import_module(f"{self._package}.{module.name}")
