"""The accessibility check of the console's browser tests: axe-core in the page
(`axe-playwright-python`) over the whole page, shared header and navigation included, and
no page wider than its window.

`problems(page, what)` lists what is wrong with the page as it is now, at its current
width; `assert_accessible(page, what)` fails the test on any of it (and
`assert_accessible_without_script` for a page of a context without JavaScript); `Walk`
checks one page state at both widths (1280 px and 390 px) and collects every problem, so
one run reports them all.
"""

from __future__ import annotations

from typing import Any

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, Route

WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
BLOCKING = ("serious", "critical")

_AXE = Axe()


async def problems(page: Page, what: str) -> list[str]:
    """axe-core's serious and critical violations on the whole page, and a page wider than
    its window, each named with `what` and the width."""
    width = await page.evaluate("window.innerWidth")
    found: list[str] = []
    response: dict[str, Any] = (await _AXE.run(page)).response
    for v in response["violations"]:
        if v["impact"] in BLOCKING:
            targets = [", ".join(map(str, n["target"])) for n in v["nodes"]][:4]
            found.append(f"{what} at {width}px: {v['id']} ({v['impact']}): {v['help']} {targets}")
    wide = await page.evaluate("document.documentElement.scrollWidth")
    if wide > width:
        found.append(f"{what} at {width}px is {wide}px wide")
    return found


async def assert_accessible(page: Page, what: str) -> None:
    """Fail the test on any of `problems(page, what)`."""
    found = await problems(page, what)
    assert not found, "\n".join(found)


class Walk:
    """Checks page states at both widths; collects every problem."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.pages: list[str] = []

    async def check(self, page: Page, what: str) -> None:
        self.pages.append(what)
        for width, height in WIDTHS.values():
            await page.set_viewport_size({"width": width, "height": height})
            self.problems.extend(await problems(page, what))
        await page.set_viewport_size({"width": 1280, "height": 900})

    async def visit(self, page: Page, path: str, what: str = "") -> None:
        await page.goto(path)
        await self.check(page, what or path)


async def assert_accessible_without_script(browser: Browser, page: Page, what: str) -> None:
    """`assert_accessible` for a page whose context runs no JavaScript (axe needs it): its
    HTML as served, opened at the same address and width in a context that runs scripts."""
    html = await page.content()
    size = page.viewport_size or {"width": 1280, "height": 900}
    context = await browser.new_context(viewport=size)
    try:
        copy = await context.new_page()
        url = page.url

        async def served(route: Route) -> None:
            await route.fulfill(body=html, content_type="text/html; charset=utf-8")

        await copy.route(url, served)
        await copy.goto(url)
        await assert_accessible(copy, what)
    finally:
        await context.close()
