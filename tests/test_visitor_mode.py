"""Visitor mode over HTTP, as a browser and as an API client meet it (issue 14, item 2).

- the page's config opens on Search with the editor tabs hidden (not blank), before anyone is known;
- the page-load event shows each role its tabs and fills the banner ("Sign in" only when users exist);
- a refused action in the page is one warning toast with every output left alone (no "Error" badge on
  each), in words, never an internal endpoint name; an API client gets the same words as an error.
"""
from __future__ import annotations

import json

import httpx
import pytest

from core.auth.access import AccessPolicy, parse_users

USERS = "ann:pw-admin:admin,bob:pw-annotator:annotator"
EDITOR_TABS = {"captions", "review", "train"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two public demos on one empty workspace: with users (sign-in exists) and without."""
    from app import build_app, head_html
    from core.store.settings import load_settings
    from tests.conftest import free_port
    from ui import guard
    from ui.state import AppState

    settings = load_settings(workspace=tmp_path_factory.mktemp("visitor") / "ws", seed_demo=False)
    launched, urls = [], {}
    for name, users in (("with_users", USERS), ("no_users", "")):
        state = AppState(settings)
        policy = AccessPolicy(parse_users(users), visitor_mode=True)
        demo = build_app(state, policy)
        demo.queue()
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    head=head_html(), allowed_paths=guard.served_paths(state.ws), **guard.launch_options(demo, policy))
        guard.after_launch(demo, policy)
        launched.append(demo)
        urls[name] = f"http://127.0.0.1:{port}/"
    yield urls
    for demo in launched:
        demo.close()


def tab_items(config: dict) -> list[dict]:
    return [c["props"] for c in config["components"] if c["type"] == "tabitem"]


def page_call(url: str, event: str | int, data: list, http: httpx.Client | None = None) -> list[dict]:
    """Call an event (api_name or id) the way the page does: queue join + event stream, no API-client
    header, with the cookies of `http` (a signed-in browser). Returns the stream's messages."""
    http = http or httpx.Client()
    config = http.get(url + "config").json()
    fn_index = event if isinstance(event, int) else \
        next(d["id"] for d in config["dependencies"] if d.get("api_name") == event)
    session = f"test-{event}-{id(http)}"
    joined = http.post(url + "gradio_api/queue/join",
                       json={"data": data, "fn_index": fn_index, "session_hash": session,
                             "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    messages = []
    with http.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if messages[-1].get("msg") == "process_completed":
                    break
    return messages


def test_the_page_opens_on_search_with_editor_tabs_hidden(servers):
    config = httpx.get(servers["with_users"] + "config").json()
    tabs = tab_items(config)
    assert tabs[0]["id"] == "search"
    selected = [c["props"].get("selected") for c in config["components"] if c["type"] == "tabs"]
    assert selected == ["search"]
    hidden = {t["id"] for t in tabs if not t["visible"]}
    assert hidden == EDITOR_TABS
    assert {"search", "map", "evaluate", "library"} <= {t["id"] for t in tabs if t["visible"]}


def banner_of(client) -> str:
    who = client.predict(api_name="/access_whoami")         # the tabs' updates are not API outputs
    return who[0] if isinstance(who, (list, tuple)) else who


def test_the_banner_offers_sign_in_only_when_someone_can(servers):
    from gradio_client import Client
    for name, sign_in in (("with_users", True), ("no_users", False)):
        banner = banner_of(Client(servers[name], verbose=False))
        assert "visitor" in banner and "read-only" in banner
        assert ("Sign in" in banner) is sign_in, (name, banner)
    bob = Client(servers["with_users"], auth=("bob", "pw-annotator"), verbose=False)
    banner = banner_of(bob)
    assert "Signed in as **bob**" in banner and "Sign out" in banner


def test_the_page_load_shows_each_role_its_tabs(servers):
    messages = page_call(servers["with_users"], "access_whoami", [])
    done = messages[-1]
    assert done["success"], done
    banner, *tabs = done["output"]["data"]
    config = httpx.get(servers["with_users"] + "config").json()
    ids = [t["id"] for t in tab_items(config)]
    shown = {tab_id for tab_id, update in zip(ids, tabs) if update.get("visible")}
    assert shown == {"search", "library", "map", "evaluate"}


def test_a_refused_action_in_the_page_is_one_clear_warning(servers):
    # Delete, as a visitor's page would send it: no error, one warning toast, every output untouched
    messages = page_call(servers["no_users"], "library_delete", ["3", "", "(all)", "(all)", 1])
    done = messages[-1]
    assert done["msg"] == "process_completed" and done["success"], done
    assert all(out == {"__type__": "update"} for out in done["output"]["data"])
    toasts = [m for m in messages if m.get("msg") == "log"]
    assert len(toasts) == 1 and toasts[0]["level"] == "warning", toasts
    text = toasts[0]["log"]
    assert text.startswith("Deleting clips needs the admin role") and "read-only" in text
    assert "library_delete" not in text and "Sign in" not in text      # no sign-in exists here


def test_an_api_client_gets_the_refusal_as_an_error_in_the_same_words(servers):
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    client = Client(servers["with_users"], verbose=False)
    with pytest.raises(AppError) as refused:
        client.predict("3", "", "(all)", "(all)", 1, api_name="/library_delete")
    text = str(refused.value)
    assert "Deleting clips needs the admin role" in text and "sign in" in text.lower()
    assert "library_delete" not in text
    with pytest.raises(AppError) as refused:
        client.predict(None, "/tmp", api_name="/library_import")
    assert "Importing audio" in str(refused.value) and "library_import" not in str(refused.value)


def test_the_library_is_read_only_for_visitors(servers):
    """Its import column and delete button start hidden; the page load shows them to roles that may use them."""
    url = servers["with_users"]
    config = httpx.get(url + "config").json()
    by_id = {c["id"]: c for c in config["components"]}
    delete = next(i for i, c in by_id.items() if c["type"] == "button" and c["props"].get("value") == "Delete this clip…")
    load = next(d for d in config["dependencies"] if delete in d["outputs"] and d["targets"][0][1] == "load")
    column = next(i for i in load["outputs"] if by_id[i]["type"] == "column")
    assert not by_id[column]["props"]["visible"] and not by_id[delete]["props"]["visible"]
    filters = ["", "(all)", "(all)", 1]

    def shown(http=None) -> tuple[bool, bool]:
        done = page_call(url, load["id"], filters, http)[-1]
        assert done["success"], done
        outputs = dict(zip(load["outputs"], done["output"]["data"]))
        return outputs[column]["visible"], outputs[delete]["visible"]

    assert shown() == (False, False)                       # a visitor: browse and listen only
    with httpx.Client() as bob:
        assert bob.post(url + "login", data={"username": "bob", "password": "pw-annotator"}).status_code == 200
        assert shown(bob) == (True, False)                 # an annotator imports, only admins delete
    with httpx.Client() as ann:
        assert ann.post(url + "login", data={"username": "ann", "password": "pw-admin"}).status_code == 200
        assert shown(ann) == (True, True)
