from ui.train import curves


def test_empty_curves_say_starting():
    loss, recall = curves([])
    for fig in (loss, recall):
        assert [a.text for a in fig.layout.annotations] == ["starting…"]


def test_curves_with_data_have_no_starting_note():
    loss, _ = curves([{"kind": "train", "step": 1, "loss": 0.5}])
    assert not loss.layout.annotations
