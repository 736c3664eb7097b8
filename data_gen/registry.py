"""Units registered by name (model families, tasks, alignment methods): each lives in one module of a package,
registers itself with a decorator, and is found by importing that package's modules once. It lives in `data_gen`,
the bottom layer, so that every layer above can keep a registry."""
from __future__ import annotations

import importlib
import pkgutil


class Registry:
    """`units` maps a name to its class; `key` is the class attribute that names it; `package` the dotted name of
    the package whose modules register units; `unknown` the error for a name nobody registered, formatted with
    {name} and {names}."""

    def __init__(self, kind: str, package: str, key: str = "name",
                 unknown: str = "{kind} {name!r} is unknown; use one of {names}"):
        self.kind, self.package, self.key, self.unknown = kind, package, key, unknown
        self.units: dict[str, type] = {}

    def register(self, cls: type) -> type:
        name = getattr(cls, self.key)
        if name in self.units and self.units[name] is not cls:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self.units[name] = cls
        return cls

    def discover(self) -> None:
        """Import every module of the package once, so each registers itself."""
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")

    def names(self) -> list[str]:
        self.discover()
        return sorted(self.units)

    def get(self, name: str):
        """An instance of the unit registered as `name`."""
        self.discover()
        if name not in self.units:
            raise ValueError(self.unknown.format(kind=self.kind, name=name, names=self.names()))
        return self.units[name]()
