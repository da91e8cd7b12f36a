"""The Tether console: where approvers decide and auditors look (`tether console`)."""

from tether.console.app import create_app
from tether.console.auth import hash_password, token_credential

__all__ = ["create_app", "hash_password", "token_credential"]
