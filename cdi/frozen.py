"""The base of gpu-cdi's frozen attrs classes that every `gpu-cdi` run defines (the spec model,
the node's roots): one __repr__, __eq__ and __hash__ for all of them, where attrs would compile
the three for each class at every start. They behave as attrs' own: the repr lists the fields
in order; instances are equal when of the same class with equal fields.

Declare such a class as

    @attrs.frozen(repr=False, eq=False, match_args=False, slots=False)
    class Name(Frozen): ...

(nothing matches on these classes; without slots, attrs makes the class once instead of twice).
"""

from typing import Any


class Frozen:
    """Mixin of a frozen attrs class declared with repr=False and eq=False."""

    __slots__ = ()

    def _values(self) -> tuple[Any, ...]:
        cls: Any = type(self)
        return tuple(getattr(self, a.name) for a in cls.__attrs_attrs__)

    def __repr__(self) -> str:
        cls: Any = type(self)
        fields = (f"{a.name}={getattr(self, a.name)!r}" for a in cls.__attrs_attrs__)
        return f"{cls.__name__}({', '.join(fields)})"

    def __eq__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), *self._values()))
