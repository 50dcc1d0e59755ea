"""Utterance hygiene on literal strings: what the embedded model really wrote, and edge cases."""

from __future__ import annotations

import pytest

from manyheads.agents.hygiene import (
    PLACEHOLDER,
    clean,
    cut_loop,
    cut_script,
    distinct_n,
    is_echo,
    mid_sentence,
    repeated_sentence_rate,
    sentences,
    strip_prefix,
    trim_to_sentence,
)

ADA = dict(speaker="Ada", others=["Basil"])


# -- sentences ------------------------------------------------------------------------------------
def test_abbreviations_and_numbers_do_not_end_sentences():
    text = ("Dr. Smith paid 3.5 dollars, e.g. for tea. Mr. J. Brown said no. "
            "See No. 5 at 10 a.m. today.")
    assert sentences(text) == ["Dr. Smith paid 3.5 dollars, e.g. for tea.",
                               "Mr. J. Brown said no.", "See No. 5 at 10 a.m. today."]


def test_list_numbers_and_line_breaks():
    assert sentences("Two points:\n1. Cars pollute.\n2. Walking helps!") == [
        "Two points:", "1. Cars pollute.", "2. Walking helps!"]


def test_ellipsis_and_closing_quotes_end_sentences():
    assert sentences('She said "no." Then... silence.') == ['She said "no."', "Then...",
                                                            "silence."]


# -- trimming -------------------------------------------------------------------------------------
def test_cut_sentence_is_trimmed_to_the_last_complete_one():
    result = clean("Cars pollute the air. It's not my", finish_reason="length", **ADA)
    assert result.text == "Cars pollute the air."
    assert result.trimmed and "trimmed" in result.flags and "mid_sentence" not in result.flags


def test_no_sentence_end_trims_even_when_the_model_stopped():
    assert clean("I agree with you. This involv", finish_reason="stop", **ADA).trimmed


def test_a_fragment_cut_by_the_budget_is_no_reply_but_an_own_ending_is_kept():
    # "It's not my", "I": what a reader must not see; the room samples once more instead.
    result = clean("I think that cars are", finish_reason="length", **ADA)
    assert result.empty and result.text == PLACEHOLDER and result.flags == ["fragment", "empty"]
    looped = clean("Family, wise, family, family, family, family, family", **ADA)
    assert looped.empty and "looped" in looped.flags
    result = clean("Sure thing", finish_reason="stop", **ADA)  # the model ended it itself
    assert result.text == "Sure thing" and result.flags == ["mid_sentence"] and not result.empty


def test_number_at_the_cut_is_not_a_sentence_end():
    text, trimmed = trim_to_sentence("Ban cars. Emissions fell by 3.5 percent in")
    assert (text, trimmed) == ("Ban cars.", True)
    assert trim_to_sentence("Dr. Smith agrees with Dr. Jones")[0] == \
        "Dr. Smith agrees with Dr. Jones"


def test_complete_text_is_left_alone():
    result = clean("Cities should ban cars. Walking is healthier!", finish_reason="length",
                   **ADA)
    assert result.text == "Cities should ban cars. Walking is healthier!"
    assert result.flags == []


# -- prefixes, salutations, scripts ---------------------------------------------------------------
@pytest.mark.parametrize("raw", ["Ada: I disagree.", "**Ada:** I disagree.", "Basil: I disagree.",
                                 "Ada (persuader): I disagree.", "Assistant: I disagree.",
                                 "Dear Basil, I disagree.", "Hello, Basil! I disagree.",
                                 "Ada: Dear Basil,\n\nI disagree."])
def test_leading_names_and_salutations_are_stripped(raw):
    result = clean(raw, **ADA)
    assert result.text == "I disagree."
    assert result.stripped_prefix


def test_a_name_inside_the_text_stays():
    assert strip_prefix("Basil is right about cars.", ["Ada", "Basil"]) == (
        "Basil is right about cars.", False)


def test_salutation_alone_becomes_the_placeholder():
    result = clean("Dear Basil,", finish_reason="stop", **ADA)
    assert result.empty and result.text == PLACEHOLDER and "empty" in result.flags


def test_scripted_continuation_is_cut():
    result = clean("I think we should walk more.\nBasil: You are right.\nAda: Thanks!", **ADA)
    assert result.text == "I think we should walk more."
    assert "scripted" in result.flags
    assert cut_script("Fine. User: and then?", ["Ada"]) == ("Fine.", True)
    assert cut_script("Sure.<|im_end|>junk", ["Ada"]) == ("Sure.", True)


def test_letter_signoff_is_dropped():
    result = clean("I agree with you.\n\nBest regards,\nAda", **ADA)
    assert result.text == "I agree with you."


# -- loops ----------------------------------------------------------------------------------------
def test_repeated_sentence_is_cut_at_the_first_repetition():
    loop = "You should come. " + "You can have a very important clue. " * 6
    result = clean(loop, finish_reason="length", **ADA)
    assert result.text == "You should come. You can have a very important clue."
    assert result.looped and "looped" in result.flags


def test_repeated_word_run_is_cut():
    text, looped = cut_loop("Hello, hello, hello, hello, hello, hello,")
    assert looped and text == "Hello,"
    text, looped = cut_loop("Sure. I think that we I think that we I think that we")
    assert looped and text == "Sure. I think that we"


def test_only_a_loop_of_punctuation_becomes_the_placeholder():
    for raw in ["", "   \n\t ", "... ... ... ...", "!!!!!!!!", "- - - - - -"]:
        result = clean(raw, finish_reason="length", **ADA)
        assert result.empty and result.text == PLACEHOLDER, raw


def test_normal_repetition_of_short_words_is_not_a_loop():
    assert cut_loop("No, no. I mean the very very best one, the one we saw.") == (
        "No, no. I mean the very very best one, the one we saw.", False)


# -- echo -----------------------------------------------------------------------------------------
INSTRUCTION = ("Reply to Ada's last message, staying on Topic: Should cities ban cars from "
               "their centres? Answer in two sentences.")


def test_echoed_instruction_is_flagged():
    result = clean("Reply to Ada's last message, staying on Topic: Should cities ban cars?",
                   speaker="Basil", others=["Ada"], instruction=INSTRUCTION)
    assert result.echoed and "echoed" in result.flags
    assert is_echo("Staying on topic: should cities ban cars from their centres?", INSTRUCTION)


def test_an_answer_on_topic_is_not_an_echo():
    answer = "Yes, cities should ban cars from their centres because the air gets cleaner."
    assert not is_echo(answer, INSTRUCTION)
    assert not clean(answer, speaker="Basil", others=["Ada"], instruction=INSTRUCTION).echoed


# -- metrics --------------------------------------------------------------------------------------
def test_mid_sentence_metric():
    assert mid_sentence("It's not my")
    assert mid_sentence("I")
    assert not mid_sentence("Done.")
    assert not mid_sentence("Great idea! \U0001f60a")
    assert not mid_sentence('He said "yes."')
    assert not mid_sentence("")
    assert mid_sentence("It costs 3.5")
    assert not mid_sentence("We met at 7 a.m.")


def test_repeated_sentence_rate():
    assert repeated_sentence_rate(["A cat sat. A cat sat. A dog ran.", "Hi there."]) == 0.25
    assert repeated_sentence_rate([]) == 0.0


def test_distinct_n():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a"], 2) == 0.0


def test_dataset_quality_counts_flags_cut_sentences_and_repeats():
    from manyheads.agents.hygiene import quality

    utterances = [("We should cook together. We should cook together.", ["looped"]),
                  ("It is not my", ["mid_sentence"]),
                  ("Fine, I will join.", ["trimmed", "echoed"])]
    result = quality(utterances, dialogues=[[t for t, _ in utterances]])
    assert result["utterances"] == 3
    assert result["mid_sentence_rate"] == round(1 / 3, 4)
    assert result["trimmed_rate"] == result["instruction_echo_rate"] == round(1 / 3, 4)
    assert result["repeated_sentence_rate"] > 0  # the dialogue says one sentence twice
    assert 0 < result["distinct_1"] < 1 and 0 < result["distinct_2"] < 1
    assert quality([]) == {"utterances": 0}


# -- the switch (MANYHEADS_HYGIENE): "before" in bench/quality.py -------------------------------
RAW = "Ada: Dear Basil, we should cook. We should cook. We should cook. It's not my"


def test_switch_off_repairs_nothing_and_only_flags(monkeypatch):
    on = clean(RAW, **ADA, finish_reason="length")
    assert on.text == "we should cook." and {"stripped_prefix", "looped"} <= set(on.flags)
    monkeypatch.setenv("MANYHEADS_HYGIENE", "0")
    off = clean(RAW, **ADA, finish_reason="length")
    assert off.text == RAW and off.flags == ["mid_sentence"]
    instruction = "Reply to Basil's last message, staying on cooking."
    echo = clean(instruction, **ADA, instruction=instruction)
    assert echo.echoed and echo.text == instruction  # flagged, kept: measured, not repaired
    assert clean("  ", **ADA).meta() == {"hygiene": ["empty"]}


def test_switch_off_drops_the_rooms_repetition_control(monkeypatch):
    from manyheads.orchestration.room import SPEECH_PENALTIES, speech_params

    on = speech_params(max_tokens=32)
    assert on.penalized and on.max_tokens == 32
    assert on.model_dump(include=set(SPEECH_PENALTIES)) == SPEECH_PENALTIES
    monkeypatch.setenv("MANYHEADS_HYGIENE", "0")
    assert not speech_params(max_tokens=32).penalized


def test_sentences_said_before_in_the_dialogue_are_dropped():
    # What Basil really wrote after Ada on the embedded model, greedy and without penalties.
    ada = ("Bella, welcome to my little corner of the world. I'm glad you're interested in "
           "keeping a small vegetable garden on a balcony.")
    basil = ("I'm glad you're interested in keeping a small vegetable garden on a balcony. "
             "Start with herbs.\nHerbs need sun. Start with herbs.")
    cleaned = clean(basil, speaker="Basil", others=["Ada"], earlier=[ada])
    assert cleaned.text == "Start with herbs.\nHerbs need sun." and "repeated" in cleaned.flags
    parrot = clean(ada, speaker="Basil", others=["Ada"], earlier=[ada])
    assert parrot.empty and parrot.flags == ["repeated", "empty"]


def test_other_scripts_end_sentences_too():
    assert sentences("यह अच्छा है। और यह भी।") == ["यह अच्छा है।", "और यह भी।"]
    assert not mid_sentence("هل هذا صحيح؟") and mid_sentence("यह अच्छा")
