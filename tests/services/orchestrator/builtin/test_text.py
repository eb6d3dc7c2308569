"""Words and stems: headers and questions normalize to the same tokens whatever their spelling."""

from services.orchestrator.builtin.text import same_word, split_name, stem, tokenize, word_number


def test_headers_split_on_case_underscores_and_units() -> None:
    assert split_name("amount (INR)") == ["amount", "inr"]
    assert split_name("MonthlyIncome") == ["monthly", "income"]
    assert split_name("transaction_status") == ["transaction", "status"]
    assert split_name("Cost of Living Index") == ["cost", "of", "living", "index"]
    assert split_name("BMIs") == ["bmi"]


def test_word_forms_fold_together() -> None:
    assert stem("failure") == stem("failed") == "fail"
    assert stem("countries") == "country"
    assert stem("older") == stem("oldest") == "old"
    assert same_word(stem("satisfied"), stem("satisfaction"))
    assert same_word(stem("named"), stem("name"))
    assert not same_word(stem("rate"), stem("race"))


def test_tokenize_splits_camel_case_and_keeps_spans() -> None:
    question = "Is the highest DailyRate above $60,000?"
    tokens = tokenize(question)
    assert [t.text for t in tokens] == ["is", "the", "highest", "daily", "rate", "above", "60,000"]
    daily = tokens[3]
    assert question[daily.start : daily.end] == "Daily"


def test_ordinals_stem_to_digits_for_linking() -> None:
    assert next(t.stem for t in tokenize("first tier")) == "1"


def test_numbers_in_digits_and_words() -> None:
    assert word_number("1,000") == 1000
    assert word_number("five") == 5
    assert word_number("2.5") == 2.5
    assert word_number("10th") == 10
    assert word_number("apple") is None


def test_short_prefixes_are_not_the_same_word() -> None:
    assert not same_word(stem("count"), stem("country"))
    assert same_word(stem("employ"), stem("employee"))
