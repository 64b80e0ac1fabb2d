"""CLI: `python -m core hash-password` and `python -m core users` (who may sign in, and as what)."""
from __future__ import annotations

import getpass
import sys

from core.cli.common import command


def register(sub) -> None:
    p = command(sub, "hash-password", func=cmd_hash, workspace=None,
                help="print a password hash for HEARSAY_USERS / hearsay.toml",
                description="Reads a password (prompted, or one line from stdin with --stdin) and prints "
                            "a pbkdf2_sha256 hash to use in place of the plain password: "
                            "HEARSAY_USERS='alice:<hash>:admin'.")
    p.add_argument("--stdin", action="store_true", help="read the password from stdin instead of prompting")
    command(sub, "users", func=cmd_users, workspace=None,
            help="list the configured users and roles (never their passwords)")


def cmd_hash(args) -> int:
    from core.auth.access import hash_password
    password = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass("password: ")
    if not password:
        print("error: empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def cmd_users(args) -> int:
    from core.auth.access import load_policy
    from core.store.settings import load_settings
    try:
        policy = load_policy(load_settings())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not policy.enabled:
        print("access control is off: no users, no visitor mode (everyone is admin)")
    else:
        print(f"visitor mode: {'on (anonymous people are visitors)' if policy.visitor_mode else 'off'}")
        for user in policy.users.values():
            hashed = "hashed" if user.password.startswith("pbkdf2_sha256$") else "PLAIN TEXT"
            print(f"{user.name}\t{user.role}\t(password {hashed})")
    return 0
