"""The multiplex synthesis carries one whole sentence per member, never a cut-off paste."""

from __future__ import annotations

from manyheads.orchestration.rooms.multiplex.graph import Panel, key_points

PANEL = Panel.model_validate({"members": [
    {"name": "Stoic Teacher", "tradition": "Stoicism", "voice": "plain",
     "values": "virtue, self-control, calm acceptance of what we cannot change"},
    {"name": "Ubuntu Elder", "tradition": "Ubuntu", "voice": "warm",
     "values": "community, shared humanity, caring for neighbours"}]})


def test_each_member_gives_its_closest_whole_sentence():
    answers = [
        {"name": "Stoic Teacher", "text": "Hello there friend. Accept calmly what you cannot "
                                          "change and keep your self-control. This involv"},
        {"name": "Ubuntu Elder", "text": "We live through our neighbours and care for the "
                                         "community together. (S.B"},
    ]
    points = dict(key_points(answers, PANEL))
    assert points == {
        "Stoic Teacher": "Accept calmly what you cannot change and keep your self-control.",
        "Ubuntu Elder": "We live through our neighbours and care for the community together."}


def test_a_member_with_no_whole_sentence_is_left_out():
    answers = [{"name": "Stoic Teacher", "text": "This involv"},
               {"name": "Ubuntu Elder", "text": "Care for your neighbours as family."}]
    assert [name for name, _ in key_points(answers, PANEL)] == ["Ubuntu Elder"]
