"""The Tether console: where approvers decide and auditors look (`tether console`)."""

from console.app import create_app
from console.auth import hash_password, token_credential

__all__ = ["create_app", "hash_password", "token_credential"]
