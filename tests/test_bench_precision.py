"""The precision bench's verdicts, from rows whose answers are known."""

from __future__ import annotations

from pixelreg.bench.precision import verdicts


def row(method: str, brightness: float, rmse: float, hits: float, recall: float = 1.0) -> dict:
    bound = 0.1
    return {
        "blur": 1.0,
        "brightness": brightness,
        "method": method,
        "crlb_px": bound,
        "rmse_px": rmse,
        "rmse_over_crlb": rmse / bound,
        "rmse_hits_px": hits,
        "rmse_hits_over_crlb": hits / bound,
        "rmse_common_px": hits,
        "recall_1px": recall,
    }


def test_verdicts_compare_with_the_fit_over_found_spots_only_where_spots_are_lost():
    results = {
        "at_bound": 1.05,
        "rows": [
            row("offsets", 1000, 0.104, 0.104),
            row("gaussian_fit", 1000, 0.103, 0.103),
            row("offsets", 250, 0.098, 0.095, recall=0.99),  # below the bound over every spot
            row("gaussian_fit", 250, 0.5, 0.097, recall=0.98),
        ],
    }
    bright, dim = verdicts(results, "offsets")
    assert bright["compared_on"] == "rmse_px" and bright["at_bound"] and not bright["beats_fit"]
    assert bright["margin_over_fit"] == round(0.104 / 0.103 - 1, 4) and bright["below_bound_by"] is None
    assert dim["compared_on"] == "rmse_common_px" and dim["beats_fit"]
    assert dim["below_bound_by"] == 0.02
    assert verdicts(results, "heatmap") == []  # a method not in the rows has no verdict
