"""A test app whose tools live in the package above its workflow module (`flows`): the
plugin must not pass that package through the sandbox, or the workflows would escape it."""

from __future__ import annotations

from pydantic import BaseModel

from tether.activities.tools import tool


class Note(BaseModel):
    text: str = ""


class PackageTools:
    """Tools declared in the package `__init__`, above the workflow module."""

    @tool(action="notes.write", resource="note", name="sandbox_package_note")
    async def note(self, args: Note) -> Note:
        return args
