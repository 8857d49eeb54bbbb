"""Frozen records: the part of `dataclasses` the login path uses, at a fraction of its cost.

Every per-login process pays for its imports. `import dataclasses` pulls in `inspect`
(~6-9 ms) and each `@dataclass(frozen=True)` then generates its methods with exec()
(~0.5-0.7 ms a class); the login path defines ~15 of them. Here one generic __init__,
__repr__, __eq__ and __hash__ per class, driven by the class's field list, do the same
with no import at all (issue #7).

What @record gives a class (the dataclass(frozen=True) behaviour our code relies on):
fields in annotation order (only the names are read: the modules use
`from __future__ import annotations`), class-level defaults, field(default_factory=...),
field(repr=False) for values that must never reach a log (TOTP secrets, password+code),
positional and keyword construction with dataclass-like TypeErrors, FrozenInstanceError
(an AttributeError) on assignment and deletion, equality between instances of the same
class, a hash consistent with it, replace() and fields(). Not supported (not needed):
inheritance of fields from a record base, ordering, init=False, __post_init__, slots.
"""

from __future__ import annotations

__all__ = ["FrozenInstanceError", "field", "fields", "record", "replace"]

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a login ~4 ms
if TYPE_CHECKING:
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:
    def dataclass_transform(**_options: object):
        """Type checkers only: read @record as a frozen dataclass."""
        return lambda fn: fn


class FrozenInstanceError(AttributeError):
    """Assigning to or deleting an attribute of a record (as dataclasses.FrozenInstanceError)."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class Field:
    """What field() returns; read once by @record, then removed from the class."""

    __slots__ = ("default", "default_factory", "repr")

    def __init__(self, default: object, default_factory: object, repr: bool) -> None:
        self.default = default
        self.default_factory = default_factory
        self.repr = repr


def field(*, default: object = MISSING, default_factory: object = MISSING, repr: bool = True) -> Any:
    """A field with options: `repr=False` keeps a secret out of repr(); `default_factory`
    builds a default per instance."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, repr)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else str(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


@dataclass_transform(frozen_default=True, eq_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Class decorator: make `cls` a frozen record (see the module docstring)."""
    for base in cls.__mro__[1:]:
        if "__record_fields__" in base.__dict__:
            raise TypeError(f"{cls.__qualname__}: inheriting from the record {base.__qualname__} is not supported")
    for name in ("__setattr__", "__delattr__"):
        if name in cls.__dict__:
            raise TypeError(f"cannot overwrite attribute {name} in record class {cls.__qualname__}")
    annotations = cls.__dict__.get("__annotations__")
    if annotations is None:  # Python >= 3.14 may create them on first access only
        annotations = getattr(cls, "__annotations__", None) or {}

    # (name, default, default_factory, shown in repr)
    specs: list[tuple[str, object, object, bool]] = []
    for name, annotation in annotations.items():
        if _is_classvar(annotation):
            continue
        default: object = cls.__dict__.get(name, MISSING)
        factory: object = MISSING
        shown = True
        if isinstance(default, Field):
            default, factory, shown = default.default, default.default_factory, default.repr
        if default is not MISSING and type(default).__hash__ is None:
            # one list/dict/set shared by every instance: what dataclasses refuses too
            raise ValueError(f"mutable default {type(default)} for field {name} is not allowed: "
                             "use default_factory")
        if default is MISSING and factory is MISSING and specs and (specs[-1][1] is not MISSING
                                                                     or specs[-1][2] is not MISSING):
            raise TypeError(f"{cls.__qualname__}: non-default argument {name!r} follows default argument")
        specs.append((name, default, factory, bool(shown)))
        if default is MISSING:  # a Field without default must not shadow the instance value
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, default)  # as dataclasses: the class attribute is the default

    names = tuple(s[0] for s in specs)
    shown_names = tuple(s[0] for s in specs if s[3])
    known = frozenset(names)
    qualname = cls.__qualname__
    count = len(names)

    def __init__(self: object, *args: object, **kwargs: object) -> None:
        if len(args) == count and not kwargs:  # the common case: every field, in order
            self.__dict__.update(zip(names, args, strict=True))
            return
        if len(args) > count:
            raise TypeError(f"{qualname}() takes {count} positional argument{'' if count == 1 else 's'} "
                            f"but {len(args)} were given")
        values = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in known:
                raise TypeError(f"{qualname}() got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{qualname}() got multiple values for argument {key!r}")
            values[key] = value
        if len(values) < count:
            missing = []
            for name, default, factory, _shown in specs:
                if name in values:
                    continue
                if default is not MISSING:
                    values[name] = default
                elif factory is not MISSING:
                    values[name] = factory()  # type: ignore[operator]
                else:
                    missing.append(repr(name))
            if missing:
                listed = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]
                raise TypeError(f"{qualname}() missing {len(missing)} required argument"
                                f"{'' if len(missing) == 1 else 's'}: {listed}")
        self.__dict__.update(values)

    def __repr__(self: object) -> str:
        d = self.__dict__
        inner = ", ".join(f"{n}={d[n]!r}" for n in shown_names)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self: object, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        a, b = self.__dict__, other.__dict__
        return all(a[n] == b[n] for n in names)

    def __hash__(self: object) -> int:
        d = self.__dict__
        return hash(tuple(d[n] for n in names))

    def __setattr__(self: object, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self: object, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    methods = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__, "__hash__": __hash__,
               "__setattr__": __setattr__, "__delattr__": __delattr__}
    for attr, fn in methods.items():
        if attr in ("__init__", "__repr__", "__eq__") and attr in cls.__dict__:
            continue  # the class's own wins, as with dataclasses
        if attr == "__hash__" and cls.__dict__.get("__hash__") is not None:
            continue
        fn.__qualname__ = f"{qualname}.{attr}"
        setattr(cls, attr, fn)
    cls.__record_fields__ = names  # type: ignore[attr-defined]
    cls.__match_args__ = names  # type: ignore[attr-defined]
    return cls


def fields(cls_or_instance: object) -> tuple[str, ...]:
    """The field names of a record class or instance, in declaration order."""
    cls = cls_or_instance if isinstance(cls_or_instance, type) else type(cls_or_instance)
    names = getattr(cls, "__record_fields__", None)
    if names is None:
        raise TypeError(f"{cls.__qualname__} is not a record")
    return names


def replace(obj: T, /, **changes: object) -> T:
    """A copy of the record `obj` with `changes` applied (records are immutable)."""
    names = fields(obj)
    values = {n: obj.__dict__[n] for n in names}
    for key in changes:
        if key not in values:
            raise TypeError(f"{type(obj).__qualname__}.replace() got an unexpected keyword argument {key!r}")
    values.update(changes)
    return type(obj)(**values)
