"""What visitors may read of the catalogue (core/auth/published.py): the published caption, nothing else."""
from __future__ import annotations

import json

from core.auth import published

from core.pipeline import review
from core.auth.access import ANNOTATOR, VISITOR
from core.store.catalog import ClipQuery


def test_the_published_caption_of_each_review_state(demo_ws):
    cat = demo_ws.catalog
    accepted, skipped, draft, edited, rejected, bare = cat.clip_ids()[:6]
    for cid in (accepted, skipped, draft, edited, rejected):
        cat.add_caption(cid, f"teacher caption {cid}", "teacher", teacher="embedded")
    review.accept(cat, accepted, "bob", cat.get_review(accepted).version)
    review.skip(cat, skipped, "bob", cat.get_review(skipped).version)
    review.edit(cat, draft, "bob", "bob's unfinished draft", cat.get_review(draft).version)
    review.reset(cat, draft, "bob", cat.get_review(draft).version)            # back to pending: a draft
    review.edit(cat, edited, "bob", "a corrected caption", cat.get_review(edited).version)
    review.reject(cat, rejected, "bob", cat.get_review(rejected).version, reason="noise")
    expected = {accepted: f"teacher caption {accepted}", skipped: f"teacher caption {skipped}",
                draft: f"teacher caption {draft}", edited: "a corrected caption", rejected: None, bare: None}

    records = {cid: published.clip_record(demo_ws, cid, VISITOR) for cid in expected}
    assert {cid: r["caption"] for cid, r in records.items()} == expected
    assert not {"review", "captions"} & set().union(*records.values())
    rows, total = published.clip_rows(demo_ws, ClipQuery(status="rejected", limit=100), VISITOR)
    assert total == 10 and {r["clip"]: r["caption"] or None for r in rows if r["clip"] in expected} == expected
    assert all("status" not in r for r in rows) and "bob" not in json.dumps(rows)
    assert published.clip_rows(demo_ws, ClipQuery(text="draft"), VISITOR)[1] == 0
    assert published.clip_rows(demo_ws, ClipQuery(text="draft"), ANNOTATOR)[1] == 1
    assert published.clip_record(demo_ws, draft, ANNOTATOR)["review"] == "pending"
