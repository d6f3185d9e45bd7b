import numpy as np
import pytest

from cdss_node.pipeline.clinical import (
    FEATURES,
    ClinicalScaling,
    SuppliedFacts,
    clinical_vector,
)
from cdss_node.pipeline.records import HeaderFacts

MEDIANS = {"sex_male": 1.0, "age_years": 62.0, "height_m": 1.65, "weight_kg": 64.0,
           "smoker": 0.0, "family_history": 0.0, "stage_I": 1.0, "stage_II": 0.0,
           "stage_III": 0.0, "stage_IV": 0.0}
MINIMUMS = {**{k: 0.0 for k in FEATURES}, "age_years": 30.0, "height_m": 1.4, "weight_kg": 40.0}
MAXIMUMS = {**{k: 1.0 for k in FEATURES}, "age_years": 90.0, "height_m": 1.9, "weight_kg": 100.0}
SCALING = ClinicalScaling(MEDIANS, MINIMUMS, MAXIMUMS)


def test_complete_header_is_encoded_and_scaled():
    header = HeaderFacts(sex="F", age_years=60.0, size_m=1.65, weight_kg=70.0,
                         smoking_status="YES")
    vector = clinical_vector(header, SCALING, SuppliedFacts(family_history=True, stage="III"))
    values = dict(zip(vector.names, vector.values))
    assert values["sex_male"] == 0.0 and values["smoker"] == 1.0
    assert values["age_years"] == pytest.approx(0.5)
    assert values["height_m"] == pytest.approx(0.5)
    assert values["weight_kg"] == pytest.approx(0.5)
    assert values["family_history"] == 1.0
    assert [values[f"stage_{s}"] for s in ("I", "II", "III", "IV")] == [0, 0, 1, 0]
    assert vector.imputed == ()
    assert vector.raw["age_years"] == 60.0


def test_missing_facts_take_the_median_and_are_reported():
    vector = clinical_vector(HeaderFacts(smoking_status="UNKNOWN"), SCALING)
    assert set(vector.imputed) == set(FEATURES)  # nothing known: everything imputed
    assert vector.raw == MEDIANS
    assert float(dict(zip(vector.names, vector.values))["age_years"]) == pytest.approx(32 / 60)


def test_values_outside_the_training_range_are_clipped():
    vector = clinical_vector(HeaderFacts(age_years=101.0), SCALING)
    assert dict(zip(vector.names, vector.values))["age_years"] == 1.0
    assert np.all((vector.values >= 0) & (vector.values <= 1))


def test_scaling_and_supplied_facts_check_themselves():
    with pytest.raises(ValueError, match="medians"):
        ClinicalScaling({"age_years": 1.0}, MINIMUMS, MAXIMUMS)
    with pytest.raises(ValueError, match="stage"):
        SuppliedFacts(stage="V")
