"""Agents: role + prompt + engine + what each may see."""

from manyheads.agents.agent import Agent, AgentSpec, Example, Turn, Visibility
from manyheads.agents.hygiene import (
    PLACEHOLDER,
    Cleaned,
    clean,
    distinct_n,
    is_echo,
    mid_sentence,
    repeated_sentence_rate,
)
from manyheads.agents.names import NamePair, PersonName, choose_name, is_person_name, valid_pair

__all__ = ["PLACEHOLDER", "Agent", "AgentSpec", "Cleaned", "Example", "NamePair", "PersonName",
           "Turn", "Visibility", "choose_name", "clean", "distinct_n", "is_echo", "is_person_name",
           "mid_sentence", "repeated_sentence_rate", "valid_pair"]
