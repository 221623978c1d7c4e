"""`gpu-cdi configure containerd`: NRI on (and, asked for, CDI reading our spec dirs) in
containerd's config.toml, for config version 2 (containerd 1.7) and 3 (containerd 2.x).

The file is edited as a document (tomlkit round trip): comments, order and layout stay. A key
is written only where its effective value (set in the file, else containerd's default for that
config version) is not the wanted one, so a second run changes nothing. New keys and tables
are indented like their neighbours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from cdi.node.configfile import ConfigError, Edit, merged_dirs

DEFAULT_CONFIG = "/etc/containerd/config.toml"
NRI_PLUGIN = "io.containerd.nri.v1.nri"
RESTART = "restart containerd (systemctl restart containerd)"


class Version(NamedTuple):
    """What differs between config versions: where CDI is set, and containerd's defaults."""

    containerd: str
    cri_plugin: str  # the table holding enable_cdi and cdi_spec_dirs
    nri_disabled: bool  # default of plugins."io.containerd.nri.v1.nri".disable
    cdi_enabled: bool  # default of enable_cdi


VERSIONS = {
    2: Version("1.7", "io.containerd.grpc.v1.cri", nri_disabled=True, cdi_enabled=False),
    3: Version("2.x", "io.containerd.cri.v1.runtime", nri_disabled=False, cdi_enabled=True),
}
NEW_FILE_VERSION = 2  # containerd 1.7 reads it, and 2.x migrates it when it loads it
_SPACED = r"\n[ \t]*\n[ \t]*\["  # a blank line before a table header


def _parse(text: str, source: str) -> Any:
    """The document to edit; the standard library's TOML 1.0 reader judges it first (it is the
    stricter one, and words the error with its place)."""
    import tomllib

    import tomlkit

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        reason, _, place = str(error).rpartition(" (at ")
        where = place.rstrip(")").replace("end of document", "the end")
        raise ConfigError(
            f"{source}: {where}: not valid TOML ({reason}); nothing changed"
        ) from None
    return tomlkit.parse(text)


def _version(doc: Any, source: str) -> Version:
    """The file's config version; an empty file (or one of comments only) becomes version 2."""
    import tomlkit

    known = " and ".join(f"{n} (containerd {v.containerd})" for n, v in VERSIONS.items())
    if "version" not in doc:
        if doc:  # containerd reads a file without `version` as the long-gone version 1
            raise ConfigError(
                f"{source}: no `version` key, so containerd reads it as config version 1; "
                f"gpu-cdi edits versions {known}: migrate it first (containerd config migrate)"
            )
        doc.add("version", NEW_FILE_VERSION)
    number = doc["version"]
    if isinstance(number, bool) or not isinstance(number, int) or number not in VERSIONS:
        shown = tomlkit.item(number).as_string()
        raise ConfigError(
            f"{source}: version = {shown}: gpu-cdi edits config versions {known}; nothing changed"
        )
    return VERSIONS[int(number)]


def _is_table(item: Any) -> bool:
    from tomlkit.container import OutOfOrderTableProxy
    from tomlkit.items import Table

    return isinstance(item, Table | OutOfOrderTableProxy)


def _entries(table: Any) -> list[Any]:
    """The items directly in `table` (a document, a table or a split table's proxy)."""
    container = getattr(table, "value", table)  # a Table holds a Container; others are one
    return [item for key, item in getattr(container, "body", ()) if key is not None]


def _key_indent(table: Any) -> str:
    for item in _entries(table):
        if not _is_table(item):
            return str(item.trivia.indent)
    header = str(getattr(getattr(table, "trivia", None), "indent", ""))
    return header + "  " if header else ""


def _like(old: Any, value: Any) -> Any:
    """`value` as a TOML item quoted like `old` (containerd 2 writes 'literal' strings)."""
    import tomlkit
    from tomlkit.items import String, StringType

    strings = [
        item for item in (old if isinstance(old, list) else [old]) if isinstance(item, String)
    ]
    if not strings or strings[0].type != StringType.SLL:
        return value
    if isinstance(value, str):
        return tomlkit.string(value, literal=True)
    if isinstance(value, list):
        styled = tomlkit.array()
        styled.extend(_like(old, item) for item in value)
        return styled
    return value


def _set(table: Any, key: str, value: Any) -> None:
    """Set `key`, in place (comment and quoting kept) if it exists, else indented like its
    neighbours."""
    if key in table:
        table[key] = _like(table.item(key) if hasattr(table, "item") else table[key], value)
        return
    indent = _key_indent(table)
    tables = [item for item in _entries(table) if _is_table(item)]
    before = [item.trivia.indent for item in tables]
    table[key] = value  # tomlkit puts a blank line before the sub-table that now follows
    for item, kept in zip(tables, before, strict=True):
        item.trivia.indent = kept
    table.item(key).trivia.indent = indent


def _table(parent: Any, key: str, source: str, create: bool, parent_only: bool = False) -> Any:
    """`parent[key]` as a table: None when missing and not `create`d, then indented like its
    sibling tables. `parent_only`: a table with no header of its own, like [plugins] above
    [plugins."io.containerd.nri.v1.nri"]. ConfigError when it is something else."""
    import tomlkit

    if key in parent:
        found = parent[key]
        if not _is_table(found):
            shown = tomlkit.item(found).as_string().strip()
            raise ConfigError(f"{source}: {key} = {shown}: must be a table; nothing changed")
        return found
    if not create:
        return None
    siblings = [item for item in _entries(parent) if _is_table(item)]
    parent[key] = tomlkit.table(is_super_table=parent_only)
    table = parent[key]
    if siblings:
        table.trivia.indent = siblings[-1].trivia.indent
    return table


class _Editor:
    """Sets keys of the document where their effective value differs, saying what it did."""

    def __init__(self, doc: Any, source: str) -> None:
        self.doc = doc
        self.source = source
        self.changes: list[str] = []
        self.created: list[Any] = []  # tables with a header of their own that were added

    def lookup(self, path: Sequence[str], key: str, default: Any) -> Any:
        node = self.doc
        for part in path:
            node = _table(node, part, self.source, create=False)
            if node is None:
                return default
        value = node.get(key, default)
        return value.unwrap() if hasattr(value, "unwrap") else value

    def ensure(self, path: Sequence[str], key: str, wanted: Any, default: Any, said: str) -> None:
        if self.lookup(path, key, default) == wanted:
            return
        node = self.doc
        for depth, part in enumerate(path, 1):
            found = _table(node, part, self.source, create=False)
            if found is None:  # a new table; the tables above it get no header of their own
                found = _table(node, part, self.source, create=True, parent_only=depth < len(path))
                self.created += [found] if depth == len(path) else []
            node = found
        _set(node, key, wanted)
        self.changes.append(said)

    def space(self) -> None:
        """A blank line after each added table, as between the file's own tables."""
        import tomlkit

        for table in self.created:
            table.add(tomlkit.nl())


def configure(
    text: str | None, source: str, cdi: bool = False, spec_dirs: Sequence[str] = ()
) -> Edit:
    """containerd's config `text` (None: no file yet) with NRI on and, with `cdi` (implied by
    `spec_dirs`), CDI on and reading `spec_dirs`. ConfigError (one line) when it cannot be."""
    import tomlkit

    old = text or ""
    doc = _parse(old, source)
    version = _version(doc, source)
    edit = _Editor(doc, source)
    notes: list[str] = []

    spaced = not any(_is_table(item) for item in _entries(doc)) or re.search(_SPACED, old)
    disabled = edit.lookup((), "disabled_plugins", [])
    if not isinstance(disabled, list):
        shown = tomlkit.item(disabled).as_string().strip()
        raise ConfigError(f"{source}: disabled_plugins must be a list of plugin names, not {shown}")
    if NRI_PLUGIN in disabled or "nri" in disabled:
        kept = [name for name in disabled if name not in (NRI_PLUGIN, "nri")]
        edit.ensure((), "disabled_plugins", kept, [], f"{NRI_PLUGIN} out of disabled_plugins")
    if version.cri_plugin in disabled or "cri" in disabled:
        notes.append(
            f"warning: {source}: disabled_plugins lists the CRI plugin, left so: NRI and CDI "
            "act only on containers made through CRI (kubelet, crictl)"
        )

    imports = edit.lookup((), "imports", [])
    if imports:
        notes.append(
            f"note: {source} imports {', '.join(map(str, imports))}: what those files set wins "
            "over this one (`containerd config dump` shows the result)"
        )

    nri = ("plugins", NRI_PLUGIN)
    edit.ensure(
        nri, "disable", False, version.nri_disabled, f"NRI enabled ({NRI_PLUGIN} disable = false)"
    )
    edit.ensure(nri, "disable_connections", False, False, "NRI plugins may connect")
    if cdi or spec_dirs:
        cri = ("plugins", version.cri_plugin)
        edit.ensure(
            cri, "enable_cdi", True, version.cdi_enabled, f"CDI enabled ({cri[1]} enable_cdi)"
        )
        current = edit.lookup(cri, "cdi_spec_dirs", None)
        merged = merged_dirs(current, spec_dirs)
        if merged is not None:
            dirs, added = merged
            edit.ensure(cri, "cdi_spec_dirs", dirs, None, f"CDI spec dirs + {added}")
    if spaced:
        edit.space()
    new = tomlkit.dumps(doc)
    if new.endswith("\n\n") and not old.endswith("\n\n"):
        new = new.rstrip("\n") + "\n"  # the blank line after a table we added last
    return Edit(new, tuple(edit.changes), tuple(notes))
