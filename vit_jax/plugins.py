"""Named plug-ins: a registry per kind (losses, evaluators, optimizers, data sources), filled by a
decorator in the module that defines each plug-in, and read by the config string that names it."""
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """name -> plug-in for one kind. `config_key` is the config entry that chooses among them, so an
  unknown name is reported as that key's value with the registered names."""

  def __init__(self, kind: str, config_key: str):
    self.kind, self.config_key = kind, config_key
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Decorator: makes the decorated object available under `name` (once)."""
    def register(entry: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = entry
      return entry
    return register

  def remove(self, name: str) -> None:
    """Unregisters `name` (a plug-in registered for one experiment or test)."""
    del self._entries[name]

  def names(self) -> tuple[str, ...]:
    return tuple(sorted(self._entries))

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def get(self, name: str, choices_extra: tuple[str, ...] = ()) -> T:
    """The plug-in called `name`; an unknown name is an error naming the config key and the choices
    (plus `choices_extra`, values the key also accepts that are not plug-ins)."""
    if name not in self._entries:
      raise ValueError(f"{self.config_key}={name!r} is not a registered {self.kind}; choose one of "
                       f"{', '.join(choices_extra + self.names())}")
    return self._entries[name]
