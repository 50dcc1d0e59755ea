"""Model-written person names: validation, pairs, and the documented fallback."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from manyheads.agents.names import (
    NamePair,
    PersonName,
    choose_name,
    is_person_name,
    person_name,
    valid_pair,
)


@pytest.mark.parametrize("name", ["Ada", "Basil", "Mary-Jane", "O'Brien", "Jean-Luc Picard",
                                  "Ludwig van Beethoven", "José Álvarez", "Zoë", "Li Wei"])
def test_real_names_are_valid(name):
    assert person_name(name) == name


@pytest.mark.parametrize("raw,clean", [("  Ada  ", "Ada"), ('"Basil"', "Basil"),
                                       ("**Ada Lovelace**", "Ada Lovelace"),
                                       ("Jean   Luc", "Jean Luc")])
def test_wrappers_and_spaces_are_removed(raw, clean):
    assert person_name(raw) == clean


@pytest.mark.parametrize("bad", [
    "Creating a lifestyle of:",  # what the scenario agent really wrote
    "Start running today!",
    "Ada.", "Ada:", "Basil!",  # trailing punctuation
    "", "   ", "Ada Maria Lovelace Byron",  # 0 or 4 words
    "I am Ada", "The Persuader", "Name", "Persuadee", "User",  # sentence or placeholder words
    "ada", "Ada lovelace",  # not capitalised
    "R2-D2", "Ada_1", "A&B", "Ada (persuader)",
    "X" * 41,
])
def test_non_names_are_refused(bad):
    assert not is_person_name(bad)
    with pytest.raises(ValidationError):
        person_name(bad)


def test_person_name_as_a_response_model_field():
    class Persona(BaseModel):
        name: PersonName

    assert Persona.model_validate_json('{"name": " Ada "}').name == "Ada"
    with pytest.raises(ValidationError):
        Persona(name="Creating a lifestyle of:")
    assert Persona.model_json_schema()["properties"]["name"]["maxLength"] == 40


def test_valid_pair_needs_two_different_people():
    assert valid_pair("Ada", "Basil")
    assert not valid_pair("Ada", "ada")
    assert not valid_pair("Ada Lovelace", "Ada Byron")  # a reader confuses the first names
    assert not valid_pair("Ada", "Start running today!")
    with pytest.raises(ValidationError):
        NamePair(first="Ada", second="Ada")
    assert NamePair(first="Ada", second="Basil").second == "Basil"


def test_choose_name_takes_the_first_valid_candidate():
    assert choose_name(["Creating a lifestyle of:", None, "Maya Chen", "Basil"], "Ada") == \
        "Maya Chen"


def test_choose_name_avoids_the_other_party():
    assert choose_name(["Ada", "Ada Smith", "Basil"], "Carla", avoid=["Ada"]) == "Basil"


def test_choose_name_falls_back_when_every_candidate_fails():
    assert choose_name(["Start running today!", "", 42], "Ada") == "Ada"
    assert choose_name([], "Ada") == "Ada"


def test_an_invalid_or_taken_fallback_is_a_programming_error():
    with pytest.raises(ValidationError):
        choose_name([], "the persuader")
    with pytest.raises(ValueError):
        choose_name([], "Ada", avoid=["Ada"])


def test_scenario_drafts_get_real_names_or_the_fallback():
    from manyheads.orchestration.rooms.persuasion.scenarios import (
        FALLBACK_NAMES,
        ScenarioDraft,
        _from_draft,
    )

    fields = dict(background="Two flatmates share a kitchen.", goal="join a cooking rota",
                  preventive_action="cook alone", preventive_belief="rotas are rigid",
                  preventive_desire="freedom", generative_belief="rotas save time",
                  generative_desire="less cleaning")
    odd = ScenarioDraft(persuader="Creating a lifestyle of:", persuadee="Start running today!",
                        **fields)
    with pytest.raises(ValueError, match="not two people's names"):
        _from_draft(odd, "home", strict_names=True)  # retried while attempts remain
    scenario = _from_draft(odd, "home", strict_names=False).scenario
    assert (scenario.persuader, scenario.persuadee) == FALLBACK_NAMES
    good = ScenarioDraft(persuader="Maria", persuadee="Tom", **fields)
    assert _from_draft(good, "home", strict_names=True).scenario.persuadee == "Tom"


def test_a_title_is_part_of_a_name_but_not_of_its_identity():
    assert valid_pair("Dr. Smith", "Tim") and valid_pair("Dr. Johnson", "Dr. Smith")
    assert valid_pair("Mr. Liu", "Xiao Mei")
    assert not is_person_name("Dr.") and not valid_pair("Dr. Ada", "Ada")
