import pytest

from reer_assets.core.evaluation.metrics import check_format, length_score


@pytest.mark.parametrize(
    "required,produced,expected",
    [(100, 100, 100.0), (100, 250, 50.0), (100, 400, 0.0), (100, 1000, 0.0), (100, 50, 50.0), (100, 25, 0.0), (100, 0, 0.0)],
)
def test_length_score(required, produced, expected):
    assert length_score(required, produced) == pytest.approx(expected)


def test_format_adherence():
    assert check_format("<think>\nplan\n</think>\n<answer>\nText\n</answer>").adherent
    assert check_format("<think>\nplan\n</think>\nText without tags").adherent
    assert not check_format("<think>\nplan that never ends").adherent
    assert not check_format("<think>\nplan\n</think>\n<answer>\n  </answer>").adherent
    assert not check_format("<think>\nplan <think> again\n</think>\n<answer>\nText</answer>").adherent
    assert not check_format("<think>\nplan <refine>x</refine>\n</think>\n<answer>\nText</answer>").adherent
    checked = check_format("<think>\nthe plan\n</think>\n<answer>\nText\n</answer>")
    assert checked.thinking == "\nthe plan\n" and checked.answer == "Text"
