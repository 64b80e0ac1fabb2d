"""Access control and concurrency for the whole app, applied once after the tabs are built.

The tabs know nothing of roles. `protect(demo, policy)` wraps every event function of the built
Blocks with a check of the caller's role (core.auth.access's table), so a refused write is refused on
the server whatever the browser or an API client sends. It also:
- puts the signed-in user's name into the events' annotator inputs (the name typed in the page
  cannot impersonate someone else once people sign in);
- gives long jobs their own queues (one at a time each) so they cannot starve searches;
- logs every write and every refusal to the "hearsay.access" logger (the audit trail).

Below the events, at the HTTP level (`launch_options`): sign-in is throttled per name and per client
address and failures are logged (core/auth/throttle.py, `access.SignIn`); visitors' uploads are capped per
request and per address per hour (`HttpGate`); Gradio's temporary files expire (`CACHE_EXPIRY`); and
only clip audio and spectrograms are served by path (`served_paths`).

The request is read from Gradio's per-call context (set just before it calls an event function),
so the wrapped function keeps its signature and Gradio still injects gr.Request / gr.Progress.
"""
from __future__ import annotations

import functools
import inspect
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable

import gradio as gr
from gradio import utils as gr_utils
from gradio.context import LocalContext

from core.auth import access
from core.auth.access import ADMIN, ANNOTATOR, ANONYMOUS, VISITOR, AccessDenied, AccessPolicy
from core.auth.throttle import UploadQuota

log = logging.getLogger("hearsay.access")

# Inputs that name the person acting; filled from the sign-in when there is one.
IDENTITY_ELEM_IDS = ("review-annotator",)

# Long jobs: api_name → (queue, how many run at once). Events sharing a queue share its limit.
LONG_JOBS: dict[str, tuple[str, int]] = {
    "library_import": ("import", 1),
    "captions_run": ("captions", 1),
    "train_launch": ("train", 1), "train_resume": ("train", 1),
    "evaluate": ("evaluate", 1),
    "search_update_index": ("index", 1), "search_rebuild_index": ("index", 1),
    "review_export": ("export", 1), "review_import": ("export", 1), "review_bulk_apply": ("bulk", 1),
    "map_draw": ("map", 2), "map_compare": ("map", 2), "map_open": ("map", 2),
}
SEARCH_QUEUE, SEARCH_LIMIT = "search", 8     # quick reads: their own, wider queue


@dataclass
class Protection:
    """What protect() did: the rule of every event, and anything it could not classify."""
    rules: dict[int, tuple[str, str]] = field(default_factory=dict)   # fn id → (event key, role needed)
    unclassified: list[str] = field(default_factory=list)             # keys that fell to the admin default
    problems: list[str] = field(default_factory=list)                 # argument rules that match no parameter


def event_key(block_fn) -> str:
    """The name an event is classified by: its api_name, or 'module:qualname' for page-only events."""
    if block_fn.api_visibility != "private":
        return str(block_fn.api_name)
    fn = inspect.unwrap(block_fn.fn)
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}"


def rule_for(demo: gr.Blocks, block_fn) -> tuple[str, str, bool]:
    """(key, role needed, explicitly classified?). A chained page event inherits the event before it."""
    if block_fn.api_visibility == "private" and block_fn.trigger_after is not None:
        parent = demo.fns.get(block_fn.trigger_after)
        if parent is not None and parent.fn is not None:
            _, needed, known = rule_for(demo, parent)
            return event_key(block_fn), needed, known
    key = event_key(block_fn)
    if block_fn.api_visibility == "private":
        return key, access.page_event_role(key), key in access.PAGE_EVENTS
    return key, access.required_role(key), key in access.PERMISSIONS


def protect(demo: gr.Blocks, policy: AccessPolicy) -> Protection:
    """Wrap every event function of `demo` with its role check; set per-event queues."""
    report = Protection()
    for fn_id, block_fn in demo.fns.items():
        if block_fn.fn is None or getattr(block_fn.fn, "_hearsay_guarded", False):
            continue
        key, needed, known = rule_for(demo, block_fn)
        if not known:
            report.unclassified.append(key)
        arg_rules, stale = _argument_rules(block_fn, key, report)
        needed = ADMIN if stale else needed
        identity = _identity_positions(block_fn)
        report.rules[fn_id] = (key, needed)
        block_fn.fn = _guard(block_fn, policy, key, needed, arg_rules, identity)
        _set_queue(block_fn, key)
    return report


# -- the wrapper -------------------------------------------------------------------------------------
def _guard(block_fn, policy: AccessPolicy, key: str, needed: str, arg_rules: dict[str, str],
           identity: list[int]) -> Callable:
    fn = block_fn.fn
    gate = _Gate(policy, key, needed, arg_rules, identity, _signature(fn),
                 silent=block_fn.api_visibility == "private",     # page plumbing: refuse quietly, no error toasts
                 n_outputs=len(block_fn.outputs))
    guarded = _wrap(fn, gate)
    guarded._hearsay_guarded = True
    guarded._hearsay_needs = needed
    return guarded


@dataclass
class _Gate:
    """The check one event's function goes through before it runs."""
    policy: AccessPolicy
    key: str
    needed: str
    arg_rules: dict[str, str]
    identity: list[int]
    signature: inspect.Signature | None
    silent: bool
    n_outputs: int

    def __call__(self, args: tuple, kwargs: dict):
        """(args, kwargs, None) to go ahead, or (…, outputs) to answer without running."""
        policy, key, needed = self.policy, self.key, self.needed
        request = LocalContext.request.get(None)
        user = access.user_of(request)
        try:
            role = access.check(policy, request, key, needed)
            if self.arg_rules and self.signature is not None:
                given = self.signature.bind_partial(*args, **kwargs).arguments
                for param, param_needed in self.arg_rules.items():
                    if _filled(given.get(param)) and not access.allows(role, param_needed):
                        raise AccessDenied(key, param_needed, role, user, param=param, can_sign_in=policy.login)
        except AccessDenied as exc:
            log.warning("denied", extra={"event": key, "user": user, "role": exc.role, "needed": exc.needed,
                                         **({"argument": exc.param} if exc.param else {})})
            if self.silent:
                return args, kwargs, _skip(self.n_outputs)
            if not from_api_client(request):
                # in the page: one warning toast, every output left as it was (no "Error" badge on each)
                gr.Warning(str(exc), title="Not allowed")
                return args, kwargs, _skip(self.n_outputs)
            raise gr.Error(str(exc), title="Not allowed", print_exception=False) from None
        if self.identity and policy.enabled and user is not None:
            args = list(args)
            for i in self.identity:
                if i < len(args):
                    args[i] = user
            args = tuple(args)
        if access.rank(needed) > access.rank(VISITOR):
            log.info("write", extra={"event": key, "user": user or ("anonymous" if policy.enabled else "local"),
                                     "role": role})
        return args, kwargs, None

    def mistake(self, exc: gr.Error) -> gr.Error:
        """A gr.Error is the tab telling the user what to fix: one log line, no traceback on the console."""
        exc.print_exception = False
        log.info("refused input", extra={"event": self.key, "user": access.user_of(LocalContext.request.get(None)),
                                         "reason": str(getattr(exc, "message", exc))})
        return exc


def _wrap(fn: Callable, gate: _Gate) -> Callable:
    """`fn` behind `gate`, of the same kind (Gradio treats generators and coroutines apart)."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def guarded(*args, **kwargs):
            args, kwargs, refused = gate(args, kwargs)
            if refused is not None:
                yield refused
                return
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except gr.Error as exc:
                raise gate.mistake(exc)
    elif inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def guarded(*args, **kwargs):
            args, kwargs, refused = gate(args, kwargs)
            if refused is not None:
                return refused
            try:
                return await fn(*args, **kwargs)
            except gr.Error as exc:
                raise gate.mistake(exc)
    elif inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            args, kwargs, refused = gate(args, kwargs)
            if refused is not None:
                yield refused
                return
            try:
                yield from fn(*args, **kwargs)
            except gr.Error as exc:
                raise gate.mistake(exc)
    else:
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            args, kwargs, refused = gate(args, kwargs)
            if refused is not None:
                return refused
            try:
                return fn(*args, **kwargs)
            except gr.Error as exc:
                raise gate.mistake(exc)
    return guarded


def from_api_client(request) -> bool:
    """Whether a call comes from gradio_client (or MCP), which expects a refusal as an error, rather than
    from the page, where a refusal is a warning toast. The clients say so in a header."""
    headers = getattr(request, "headers", None) or {}
    try:
        return headers.get("x-gradio-user") in ("api", "mcp")
    except AttributeError:
        return True       # no page behind it: a test or a CLI calling the function


def _skip(n_outputs: int):
    if n_outputs == 0:
        return None
    return gr.skip() if n_outputs == 1 else tuple(gr.skip() for _ in range(n_outputs))


def _filled(value) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip()) and value != []


def _signature(fn) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _positional_params(fn) -> list[inspect.Parameter]:
    sig = _signature(fn)
    if sig is None:
        return []
    return [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _is_special(param: inspect.Parameter, hints: dict) -> bool:
    """What Gradio fills in itself (gr.Request, gr.Progress, event data…), not an input component."""
    return isinstance(param.default, gr.Progress) or gr_utils.is_special_typed_parameter(param.name, hints)


def _identity_positions(block_fn) -> list[int]:
    """Argument positions that receive an identity input (Gradio passes inputs positionally,
    with its special arguments inserted where the signature has them)."""
    wanted = [i for i, comp in enumerate(block_fn.inputs) if getattr(comp, "elem_id", None) in IDENTITY_ELEM_IDS]
    if not wanted or block_fn.inputs_as_dict:
        return []
    hints = gr_utils.get_type_hints(block_fn.fn)
    params = _positional_params(block_fn.fn)
    input_slots = [pos for pos, p in enumerate(params) if not _is_special(p, hints)]
    return [input_slots[i] for i in wanted if i < len(input_slots)]


def _argument_rules(block_fn, key: str, report: Protection) -> tuple[dict[str, str], bool]:
    """(parameter → role its non-empty value needs, whether a rule names a parameter that is gone)."""
    rules = dict(access.ARGUMENT_RULES.get(key, {}))
    names = {p.name for p in _positional_params(block_fn.fn)}
    missing = [param for param in rules if param not in names]
    for param in missing:          # the tab renamed it: fail closed, and say so
        report.problems.append(f"{key}: no parameter {param!r}; the whole event now needs admin")
    return {k: v for k, v in rules.items() if k in names}, bool(missing)


def _set_queue(block_fn, key: str) -> None:
    if key in LONG_JOBS:
        block_fn.concurrency_id, block_fn.concurrency_limit = LONG_JOBS[key]
    elif block_fn.api_visibility != "private" and key.startswith("search_") and "cancel" not in key and block_fn.queue:
        block_fn.concurrency_id, block_fn.concurrency_limit = SEARCH_QUEUE, SEARCH_LIMIT


# -- who is signed in: the bar above the tabs, tab visibility, the visitor-mode login page ---------------
def tab_visible_at_start(policy: AccessPolicy, tab_id: str) -> bool:
    """In the page's config (before anyone is known) a tab some role may not use starts hidden;
    `access_bar`'s page-load event shows it to the roles that may. Without roles every tab shows."""
    return not policy.enabled or all(tab_id not in hidden for hidden in access.HIDDEN_TABS.values())


# The banner looks like one: a tinted strip above the tabs (app.head_html adds this to the page).
HEAD = """<style>#access-bar{background:var(--color-accent-soft);border:1px solid var(--border-color-accent-subdued);
border-radius:var(--radius-lg)}#access-bar p{margin:0}</style>"""


def access_banner(policy: AccessPolicy) -> gr.Markdown | None:
    """Call inside the Blocks, above the tabs: the line saying who you are (filled on page load)."""
    if not policy.enabled:
        return None
    return gr.Markdown(elem_id="access-bar", elem_classes=["hearsay-banner"], padding=True)


def banner_text(policy: AccessPolicy, user: str | None, role: str) -> str:
    """What the banner says to this person: a visitor learns what the demo offers, and how editors sign
    in only when someone can (users configured)."""
    if user is None:
        line = ("You are browsing as a **visitor**: this demo is read-only. Search sounds by description or "
                "by example, explore the map, browse and listen to the library, and see evaluation results.")
        return line + (" Editors: **[Sign in](login)**." if policy.login else "")
    return f"Signed in as **{user}** ({role}) · [Sign out](logout)"


def access_bar(policy: AccessPolicy, tabs: dict[str, gr.Tab], banner: gr.Markdown | None = None) -> None:
    """Call inside the Blocks, after the tabs: on page load, fill the banner and show each role its tabs
    (the others stay hidden, not blank)."""
    if not policy.enabled:
        return
    banner = banner if banner is not None else access_banner(policy)
    tab_ids = list(tabs)

    def whoami(request: gr.Request):
        user, role = access.user_of(request), policy.role_of(request)
        hidden = access.HIDDEN_TABS.get(role, ())
        return (banner_text(policy, user, role), *[gr.Tab(visible=tab_id not in hidden) for tab_id in tab_ids])

    gr.context.Context.root_block.load(whoami, None, [banner, *tabs.values()], api_name="access_whoami",
                                       show_progress="hidden")


def served_paths(ws) -> list[str]:
    """Workspace folders Gradio may serve by path: clip audio and spectrograms only.

    Gradio serves anything under `allowed_paths` to anyone who asks for it by name, so the whole
    workspace (catalog.db with every review, logs, exports, models) must never be one, nor any folder
    of it that holds annotators' work: review exports are handed out as outputs instead, which Gradio
    copies into its own cache under a hashed, unguessable name (ui/review.py)."""
    folders = [ws.cache_dir / "clips", ws.cache_dir / "spectrograms"]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return [str(f) for f in folders]


# Gradio's own temporary files (uploads, copies of outputs) go after two hours, checked every 15 minutes.
CACHE_EXPIRY = (15 * 60, 2 * 3600)


@dataclass(frozen=True)
class VisitorLimits:
    """What a visitor (anyone below annotator) may upload: audio queries for search, not imports."""
    upload_mb: float = 10.0                 # one request
    mb_per_hour: float = 100.0              # per client address

    @classmethod
    def from_settings(cls, settings) -> "VisitorLimits":
        extra = getattr(settings, "extra", None) or {}
        return cls(float(extra.get("visitor_upload_mb", cls.upload_mb)),
                   float(extra.get("visitor_upload_mb_per_hour", cls.mb_per_hour)))


# Where Gradio takes files (a recording from the microphone goes to the second).
UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/process_recording")

# The client's address during a sign-in (Gradio's auth callable only receives the name and password).
CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("hearsay_client_address", default=None)


class HttpGate:
    """ASGI middleware for what the event guard cannot see: the address behind POST /login, and the
    size of visitors' requests, uploads above all (Gradio takes files from anyone who may load the page).

    The address is the socket's peer, or what a trusted proxy says it is (uvicorn's proxy headers:
    set FORWARDED_ALLOW_IPS to the proxy's address when one sits in front; otherwise every client shares
    the proxy's address, its sign-in backoff and its upload allowance)."""

    def __init__(self, app, policy: AccessPolicy, limits: VisitorLimits):
        self.app, self.policy, self.limits = app, policy, limits
        self.quota = UploadQuota(int(limits.mb_per_hour * 2**20))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        path = scope.get("path", "").rstrip("/")
        address = (scope.get("client") or (None,))[0]
        if path.endswith("/login"):
            token = CLIENT_ADDRESS.set(address)
            try:
                return await self.app(scope, receive, send)
            finally:
                CLIENT_ADDRESS.reset(token)
        refusal = self.visitor_refusal(scope, address, upload=path.endswith(UPLOAD_PATHS))
        if refusal is not None:
            return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)

    def visitor_refusal(self, scope, address: str | None, upload: bool):
        """None to let a POST through, else the response that refuses it. A visitor's request body is at
        most `upload_mb` (an audio query, or an event's inputs); files also count against the hourly quota."""
        from starlette.datastructures import Headers
        from starlette.responses import PlainTextResponse
        role = self.policy.role_of_user(signed_in_user(scope))
        if access.allows(role, ANNOTATOR):
            return None
        limit = int(self.limits.upload_mb * 2**20)
        try:
            length = int(Headers(scope=scope)["content-length"])
        except (KeyError, ValueError):
            return PlainTextResponse("Uploads need a Content-Length.", status_code=411) if upload else None
        if length > limit:
            log.warning("upload refused", extra={"address": address, "bytes": length, "role": role})
            return PlainTextResponse(f"Visitors may upload at most {self.limits.upload_mb:g} MB at a time "
                                     "(an audio query); sign in to upload more.", status_code=413)
        if upload and not self.quota.take(address or "?", length):
            log.warning("upload quota used up", extra={"address": address, "bytes": length})
            return PlainTextResponse("This address has used its upload allowance for the hour; try again later "
                                     "or sign in.", status_code=429, headers={"Retry-After": "600"})
        return None


def signed_in_user(connection) -> str | None:
    """The user named by Gradio's sign-in cookie of a request (or an ASGI scope), else None."""
    from starlette.requests import HTTPConnection
    if isinstance(connection, dict):
        connection = HTTPConnection(connection)
    app = connection.scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return None
    token = connection.cookies.get(f"access-token-{cookie_id}") or \
        connection.cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token) if token else None


def sign_in_callable(sign_in: access.SignIn) -> Callable:
    """Gradio's `auth` callable: the password check runs off the event loop (a full hash costs ~0.1 s
    of CPU), and a locked-out name or address gets 429 with Retry-After at once."""
    async def authenticate(username: str, password: str) -> bool:
        import math

        import anyio
        from fastapi import HTTPException
        result = await anyio.to_thread.run_sync(sign_in.attempt, username, password, CLIENT_ADDRESS.get())
        if result.retry_after > 0:
            wait = math.ceil(result.retry_after)
            raise HTTPException(status_code=429, detail=f"Too many failed sign-ins: try again in {wait} s.",
                                headers={"Retry-After": str(wait)})
        return result.ok
    return authenticate


def launch_options(demo: gr.Blocks, policy: AccessPolicy) -> dict:
    """The `launch()` arguments for this policy (call `after_launch` once it is running)."""
    if not policy.enabled:
        return {}
    from starlette.middleware import Middleware
    limits = getattr(demo, "hearsay_limits", None) or VisitorLimits()
    options: dict = {"app_kwargs": {"middleware": [Middleware(HttpGate, policy=policy, limits=limits)]}}
    if not policy.login:
        return options
    demo.hearsay_sign_in = access.SignIn(policy)
    authenticate = sign_in_callable(demo.hearsay_sign_in)
    message = "Hearsay: sign in with the name and password your admin gave you."
    if not policy.visitor_mode:
        return options | {"auth": authenticate, "auth_message": message}

    # Visitor mode: everyone gets in; Gradio's own sign-in cookie, when present, names the user.
    demo.hearsay_authenticate = authenticate
    return options | {"auth_dependency": lambda request: signed_in_user(request) or ANONYMOUS, "ssr_mode": False}


def after_launch(demo: gr.Blocks, policy: AccessPolicy) -> None:
    """Visitor mode: switch on Gradio's sign-in route (POST /login) and serve a small sign-in page."""
    if not (policy.login and policy.visitor_mode):
        return
    from fastapi.responses import HTMLResponse
    app = demo.server_app
    app.auth = demo.hearsay_authenticate   # POST /login checks this; launch() would refuse it beside auth_dependency
    app.add_api_route("/login", lambda: HTMLResponse(LOGIN_PAGE), methods=["GET"], include_in_schema=False)


LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Hearsay · sign in</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{font-family:system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;margin:0}
form{display:grid;gap:.6rem;min-width:16rem}input,button{font-size:1rem;padding:.5rem}
#msg{color:#b00}</style></head><body><form id="f"><h2>Hearsay · sign in</h2>
<input name="username" placeholder="name" autocomplete="username" required>
<input name="password" type="password" placeholder="password" autocomplete="current-password" required>
<button>Sign in</button><a href="./">continue as a visitor</a><div id="msg"></div></form>
<script>document.getElementById("f").onsubmit=async e=>{e.preventDefault();
const r=await fetch("login",{method:"POST",body:new URLSearchParams(new FormData(e.target)),credentials:"same-origin"});
const j=r.ok?{}:await r.json().catch(()=>({}));
if(r.ok){location.href="./"}else{document.getElementById("msg").textContent=r.status==429&&j.detail?j.detail:"Wrong name or password."}}</script>
</body></html>"""
