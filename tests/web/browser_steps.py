"""What a person does in the browser, shared by the browser tests: log in, open a menu entry, wait for a
page's script to be listening."""

import re

from playwright.sync_api import expect

PASSWORD = "alice-password-1"  # the `user` fixture's


def nav(page, name):
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def log_in(page, username="alice"):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Batches", exact=True)).to_be_visible()


def form_ready(page):
    """The new-batch page's script has started: choices made from now on are seen by it."""
    expect(page.locator("#batch-form")).to_have_attribute("data-ready", "true")
