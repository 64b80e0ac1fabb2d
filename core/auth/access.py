"""Who may do what: users, roles and the permission table for every UI/API event.

Users come from the environment (`HEARSAY_USERS="alice:secret:admin,bob:pbkdf2_sha256$…:annotator"`)
or from `hearsay.toml` (`users = ["alice:…:admin"]`, or a `[users.alice]` table with `password` and
`role`); the environment wins. Passwords live only there, never in the workspace; a password may be
a hash from `python -m core hash-password`. Roles, weakest first:

- visitor:   read only: search, the map, evaluation on the workspace's own data, library browse/play,
             and of the annotators' work only the published captions (core/auth/published.py).
- annotator: also review, caption, import and export.
- admin:     everything: training, deleting, activating models, bulk actions, settings, server paths.

Who is who:
- no users and no visitor mode: everyone is admin (one person on their own machine);
- `HEARSAY_VISITOR_MODE=1` (the public demo; the default on Hugging Face Spaces, where `SPACE_ID`
  is set): anonymous people are visitors, and the configured users sign in as annotators or admins;
- users without visitor mode: everyone must sign in.

The permission table is default-deny: an event this module does not name needs admin, so a new
write endpoint is never open by accident (tests/test_access.py lists any event left unnamed).
Nothing here imports Gradio; ui/guard.py applies the table to the Blocks app.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from core.auth.throttle import LoginThrottle

VISITOR, ANNOTATOR, ADMIN = "visitor", "annotator", "admin"
ROLES = (VISITOR, ANNOTATOR, ADMIN)                 # weakest first
ANONYMOUS = "~visitor"                              # the name an anonymous visitor gets in visitor mode
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")     # so no configured user can be called ANONYMOUS
HASH_SCHEME, HASH_ITERATIONS = "pbkdf2_sha256", 240_000
log = logging.getLogger("hearsay.access")

# -- the permission table: public event api_name → weakest role allowed ---------------------------------
PERMISSIONS: dict[str, str] = {
    # Library
    "library_table": VISITOR, "library_clip": VISITOR, "library_refresh": VISITOR,
    "library_import": ANNOTATOR, "library_cancel_import": ANNOTATOR,
    "library_delete": ADMIN,
    # Captions: the teachers' work is the annotators' raw material (and may spend an API key)
    "captions_default_prompt": ANNOTATOR, "captions_table": ANNOTATOR, "captions_refresh": ANNOTATOR,
    "captions_clip": ANNOTATOR,
    "captions_run": ANNOTATOR, "captions_recaption": ANNOTATOR, "captions_cancel": ANNOTATOR,
    # Review: annotators' work stays private, so even its reads need the annotator role
    "review_load_queue": ANNOTATOR, "review_previous": ANNOTATOR, "review_next": ANNOTATOR,
    "review_open": ANNOTATOR, "review_history": ANNOTATOR, "review_agreement": ANNOTATOR,
    "review_bulk_preview": ANNOTATOR,
    "review_accept": ANNOTATOR, "review_edit": ANNOTATOR, "review_reject": ANNOTATOR, "review_skip": ANNOTATOR,
    "review_undo": ANNOTATOR, "review_keep_mine": ANNOTATOR, "review_keep_theirs": ANNOTATOR,
    "review_revert": ANNOTATOR, "review_resolve": ANNOTATOR,
    "review_export": ANNOTATOR, "review_import": ANNOTATOR,
    "review_bulk_apply": ADMIN, "review_save_guidelines": ADMIN, "review_set_overlap": ADMIN,
    # Train: watching is for the team, changing runs and models is for admins
    "train_watch": ANNOTATOR, "train_refresh": ANNOTATOR,
    "train_compare": ANNOTATOR,                                 # on a server folder: see ARGUMENT_RULES
    "train_launch": ADMIN, "train_cancel": ADMIN, "train_resume": ADMIN, "train_make_active": ADMIN,
    "train_compare_make_active": ADMIN,
    # Search
    "search_text": VISITOR, "search_text_submit": VISITOR, "search_sound": VISITOR,
    "search_more_like_this": VISITOR, "search_prev_page": VISITOR, "search_next_page": VISITOR,
    **{f"search_more_like_result_{i}": VISITOR for i in range(1, 11)},
    "search_classify": VISITOR, "search_index_status": VISITOR, "search_model_changed": VISITOR,
    "search_update_index": ANNOTATOR, "search_cancel_index": ANNOTATOR,
    "search_rebuild_index": ADMIN,
    "search_example": VISITOR,                                  # an example-query chip (a text search)
    # Map
    "map_draw": VISITOR, "map_recolor": VISITOR, "map_filter": VISITOR, "map_select_row": VISITOR,
    "map_play": VISITOR, "map_compare": VISITOR, "map_open": VISITOR, "map_pick": VISITOR,
    "map_send_to_review": ANNOTATOR, "map_send_outliers": ANNOTATOR,
    # Evaluate (on a server folder: see ARGUMENT_RULES)
    "evaluate": VISITOR, "evaluate_stop": VISITOR, "evaluate_confusion": VISITOR,
    "evaluate_models": VISITOR, "evaluate_history": VISITOR,
    # the documented API (ui/api.py): caption takes a teacher other than the embedded one from annotators only
    "search": VISITOR, "search_audio": VISITOR, "classify": VISITOR, "caption": VISITOR,
    # the app's own events (ui/guard.py)
    "access_whoami": VISITOR,
}

# Page-only events (api_name=False) have no stable name: they are named by the function they run,
# "module:qualified name" (all lambdas of one function share a name). A `.then()` event needs what
# the event before it needed, so chained page events need no entry.
PAGE_EVENTS: dict[str, str] = {
    "ui.library:build.<locals>.<lambda>": VISITOR,          # delete-confirm toggles
    "ui.library:LibraryEvents.refilter": VISITOR,           # filters (what each role reads: core/auth/published.py)
    "ui.library:LibraryEvents.on_load": VISITOR,            # page load
    "ui.library:LibraryEvents.prev_page": VISITOR,          # previous / next page
    "ui.library:LibraryEvents.next_page": VISITOR,
    "ui.library:LibraryEvents.on_select": VISITOR,
    "ui.map:MapEvents.show_editor_row": VISITOR,            # page load: the send-to-review buttons, editors only
    "ui.captions:build.<locals>.<lambda>": ANNOTATOR,       # filters
    "ui.captions:CaptionsEvents.on_select": ANNOTATOR,
    "ui.captions:CaptionsEvents.fill": ANNOTATOR,           # page load: the tables (empty in /config)
    "ui.review:ReviewEvents.whoami": ANNOTATOR,
    "ui.review:_wire.<locals>.<lambda>": ANNOTATOR,         # remember the annotator's name
    "ui.review:ReviewEvents.revert_clicked": ANNOTATOR,
    "ui.review:ReviewEvents.history_closed": ANNOTATOR,
    "ui.train:TrainEvents.tick": ANNOTATOR,                 # the live-curves timer
    "ui.train:build.<locals>.<lambda>": ANNOTATOR,          # data summary, page load
    "ui.train:TrainEvents.show_admin_controls": ANNOTATOR,  # page load: the server-folder box, admins only
    "ui.search:SearchEvents.tick": VISITOR,                 # the index status line (timer, after a search)
    "ui.search:SearchEvents.on_load": VISITOR,              # page load: chips, models, what the role may use
    "app:blank_empty_number_boxes.<locals>.<lambda>": VISITOR,  # page load: empty id boxes drawn empty, not 0
}

# Arguments that widen what an event may touch: a non-empty value needs the given role.
# A folder typed by hand is a path on the server, so reading or writing one is for admins.
ARGUMENT_RULES: dict[str, dict[str, str]] = {
    "library_import": {"folder_path": ADMIN},
    "evaluate": {"folder_path": ADMIN},
    "train_compare": {"folder": ADMIN},
    "review_export": {"folder": ADMIN},
    "review_import": {"folder": ADMIN},
}

# Tabs a role sees (the events behind the others are refused anyway; hiding them spares confusion).
HIDDEN_TABS: dict[str, tuple[str, ...]] = {VISITOR: ("captions", "review", "train"), ANNOTATOR: (), ADMIN: ()}


# What a refused event was trying to do, in words (a refusal never shows an internal endpoint name).
ACTION_WORDS: dict[str, str] = {
    "library_import": "Importing audio", "library_cancel_import": "Importing audio",
    "library_delete": "Deleting clips",
    "search_update_index": "Updating the search index", "search_cancel_index": "Updating the search index",
    "search_rebuild_index": "Rebuilding the search index",
    "train_make_active": "Choosing the active model", "train_compare_make_active": "Choosing the active model",
    "map_send_to_review": "Sending clips to review", "map_send_outliers": "Sending clips to review",
    "review_bulk_apply": "Bulk review changes", "review_export": "Exporting reviews",
    "review_import": "Importing reviews",
}
PREFIX_WORDS = {"library": "Changing the library", "captions": "Captioning", "review": "Reviewing captions",
                "train": "Training", "search": "Changing the search index", "map": "Changing clips from the map",
                "evaluate": "Evaluating", "access": "This"}
PARAM_WORDS = {"folder_path": "a folder on the server", "folder": "a folder on the server"}


def describe_action(key: str, param: str | None = None) -> str:
    """'Deleting clips', 'Importing audio using a folder on the server', 'Reviewing captions'…"""
    what = ACTION_WORDS.get(key) or PREFIX_WORDS.get(key.split("_")[0].split(":")[0].split(".")[-1], "This action")
    return f"{what} using {PARAM_WORDS.get(param, param)}" if param else what


class AccessDenied(PermissionError):
    """An event needs a stronger role than the caller has. The message says, in words, what was refused,
    which role it needs and what to do (sign in only where there is a sign-in)."""

    def __init__(self, action: str, needed: str, role: str, user: str | None, *, param: str | None = None,
                 can_sign_in: bool = True):
        self.action, self.needed, self.role, self.user, self.param = action, needed, role, user, param
        who = "you are browsing as a visitor" if user in (None, ANONYMOUS) else f"{user} is signed in as {role}"
        hint = ""
        if role == VISITOR:
            hint = (" Editors can sign in at the top of the page." if can_sign_in
                    else " This demo is read-only: search, the map and the library are open to everyone.")
        super().__init__(f"{describe_action(action, param)} needs the {needed} role, and {who}.{hint}")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password: str = field(repr=False, default="")     # plain text or a pbkdf2_sha256$… hash


@dataclass(frozen=True)
class AccessPolicy:
    users: Mapping[str, User] = field(default_factory=dict)
    visitor_mode: bool = False

    @property
    def enabled(self) -> bool:
        """False for the open single-user setup, where everyone is admin."""
        return bool(self.users) or self.visitor_mode

    @property
    def login(self) -> bool:
        """Whether there is anyone to sign in as."""
        return bool(self.users)

    def authenticate(self, username: str, password: str) -> bool:
        """(username, password) → bool, at the cost of one full hash whoever asks: an unknown name, or a
        user whose password is kept in plain text, costs what a hashed one does, so timing tells nothing."""
        user = self.users.get((username or "").strip())
        if user is None or not is_hashed(user.password):
            verify_password(password or "", _dummy_hash())
        if user is None:
            return False
        return verify_password(password or "", user.password)

    def role_of_user(self, username: str | None) -> str:
        if not self.enabled:
            return ADMIN
        user = self.users.get(username or "")
        return user.role if user else VISITOR

    def role_of(self, request) -> str:
        """The role behind a Gradio request (anything with `.username`; None: a local call)."""
        return self.role_of_user(user_of(request))


@dataclass(frozen=True)
class SignInResult:
    ok: bool
    retry_after: float = 0.0          # > 0: refused without checking, the name or address is locked out


@dataclass
class SignIn:
    """Sign-in attempts: refused at once while the name or the client address is locked out (core/auth/throttle.py),
    else checked; every failure is logged with the name and address (never the password)."""
    policy: AccessPolicy
    throttle: "LoginThrottle" = field(default_factory=lambda: _login_throttle())

    def attempt(self, username: str, password: str, address: str | None = None) -> SignInResult:
        name = " ".join(str(username or "").split())[:64]
        wait = self.throttle.begin(name, address)
        if wait > 0:
            return SignInResult(False, wait)
        if self.policy.authenticate(name, password):
            self.throttle.succeeded(name, address)
            log.info("signed in", extra={"user": name, "address": address})
            return SignInResult(True)
        log.warning("sign-in failed", extra={"user": name, "address": address,
                                             "locked_for": round(self.throttle.retry_after(name, address), 1)})
        return SignInResult(False)


def _login_throttle():
    from core.auth.throttle import LoginThrottle
    return LoginThrottle()


def user_of(request) -> str | None:
    """The signed-in user name of a request, or None (anonymous or no request)."""
    name = getattr(request, "username", None)
    return None if name in (None, "", ANONYMOUS) else str(name)


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)     # an unknown role ranks above admin


def allows(role: str, needed: str) -> bool:
    return role in ROLES and rank(role) >= rank(needed)


def required_role(api_name: str | None) -> str:
    """Default-deny: events not in the table need admin."""
    return PERMISSIONS.get(api_name or "", ADMIN)


def page_event_role(key: str) -> str:
    return PAGE_EVENTS.get(key, ADMIN)


def check(policy: AccessPolicy, request, action: str, needed: str) -> str:
    """Raise AccessDenied unless the request's role reaches `needed`; returns the role."""
    role = policy.role_of(request)
    if not allows(role, needed):
        raise AccessDenied(action, needed, role, user_of(request), can_sign_in=policy.login)
    return role


# -- configuration -------------------------------------------------------------------------------------
def parse_users(spec: str | list | dict | None) -> dict[str, User]:
    """`"name:password:role,…"`, a list of such strings, or {name: {password, role}} → users.

    A password may itself contain ':' (only the first and last ':' split the entry)."""
    if not spec:
        return {}
    entries: list[tuple[str, str, str]] = []
    if isinstance(spec, Mapping):
        for name, value in spec.items():
            value = value if isinstance(value, Mapping) else {"password": str(value)}
            entries.append((str(name), str(value.get("password", "")), str(value.get("role", ANNOTATOR))))
    else:
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            name, sep, rest = item.partition(":")
            password, sep2, role = rest.rpartition(":")
            if not sep or not sep2:
                raise ValueError(f"user entry {name!r} must look like name:password:role")
            entries.append((name.strip(), password, role.strip().lower()))
    users: dict[str, User] = {}
    for name, password, role in entries:
        if not _NAME.match(name):
            raise ValueError(f"user name {name!r}: use letters, digits and . _ @ + - only")
        if role not in ROLES:
            raise ValueError(f"user {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
        if not password:
            raise ValueError(f"user {name!r} has an empty password")
        users[name] = User(name, role, password)
    return users


def load_policy(settings=None, environ: Mapping[str, str] | None = None) -> AccessPolicy:
    """Users and visitor mode from the environment, else from the settings' TOML (`users`, `visitor_mode`).
    On Spaces (`SPACE_ID` set) visitor mode is on unless switched off explicitly."""
    env = os.environ if environ is None else environ
    extra = dict(getattr(settings, "extra", None) or {})
    spec = env.get("HEARSAY_USERS")
    users = parse_users(spec if spec is not None else extra.get("users"))
    mode = env.get("HEARSAY_VISITOR_MODE")
    # A public Space is read-only for strangers unless its owner says otherwise.
    default = extra.get("visitor_mode", bool(env.get("SPACE_ID")))
    visitor_mode = _truthy(mode) if mode is not None else _truthy(default)
    return AccessPolicy(users=users, visitor_mode=visitor_mode)


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


# -- passwords -----------------------------------------------------------------------------------------
def hash_password(password: str, *, salt: str | None = None, iterations: int = HASH_ITERATIONS) -> str:
    """`pbkdf2_sha256$iterations$salt$hex`: safe to keep in an environment variable or the TOML file."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return f"{HASH_SCHEME}${iterations}${salt}${digest}"


def is_hashed(stored: str) -> bool:
    return stored.startswith(HASH_SCHEME + "$")


def plaintext_users(policy: AccessPolicy) -> list[str]:
    """Users whose password is configured in plain text (worth a warning at startup)."""
    return sorted(name for name, user in policy.users.items() if not is_hashed(user.password))


def verify_password(password: str, stored: str) -> bool:
    if is_hashed(stored):
        try:
            _, iterations, salt, digest = stored.split("$")
            got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(iterations)).hex()
        except ValueError:
            return False
        return hmac.compare_digest(got, digest)
    return hmac.compare_digest(password.encode(), stored.encode())


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password("", salt="0" * 32)


# -- secrets in error text -----------------------------------------------------------------------------
REDACTED = "[redacted]"
_SECRET_PATTERNS = [
    # an Authorization value: "Bearer …", "Basic …", "Token …"
    (re.compile(r"\b(Bearer|Basic|Token)(\s+)[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE), rf"\1\2{REDACTED}"),
    # well-known key shapes: OpenAI-style sk-…, Hugging Face hf_…
    (re.compile(r"\bsk-[A-Za-z0-9_-]{4,}"), f"sk-{REDACTED}"),
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), f"hf_{REDACTED}"),
    # "api_key": "…", x-api-key=…, access_token: …
    (re.compile(r"((?:api[_-]?key|access[_-]?token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+",
                re.IGNORECASE), rf"\1{REDACTED}"),
]


def redact(text: str, *secrets_: str | None) -> str:
    """`text` without credentials: the given secret values wherever they appear, and anything shaped like a
    bearer token or an API key (an endpoint may echo our request headers into its error)."""
    out = str(text)
    for secret in _distinct(secrets_):
        out = out.replace(secret, REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        out = pattern.sub(replacement, out)
    return out


def _distinct(values: Iterable[str | None]) -> list[str]:
    # longest first, so a key that contains another is replaced whole; very short values would mangle text
    return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)
