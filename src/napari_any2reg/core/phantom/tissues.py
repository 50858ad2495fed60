"""The phantom's tissue table: sequence kinds and their default frame counts, T1 / T2 / T2* and
M0 per tissue and field strength (with their literature sources), the anatomical components
in painting order with their labels, and the per-component perfusion and ASL constants."""

from __future__ import annotations


#: Sequence kinds the phantom can simulate.
PHANTOM_KINDS = ("molli", "stone", "sasha", "ir", "asl", "perfusion", "cine", "t2prep", "mge")

#: Default number of frames per kind (MOLLI: given by the schedule, 5(3)3 -> 8).
DEFAULT_N_FRAMES = {"molli": 8, "stone": 11, "sasha": 10, "ir": 10, "asl": 20, "perfusion": 40, "cine": 25,
                    "t2prep": 4, "mge": 8}

# Typical T2* values in ms (multi-gradient-echo, bright blood). 1.5 T: myocardium 30-40
# (normal > 20; Anderson et al., Eur Heart J 2001: mean ~37 in normals), liver ~30
# (normal > 15-20; Wood et al., Blood 2005), skeletal muscle ~28, blood ~100 (oxygenated
# arterial blood, long), fat ~40 (ignoring the fat-water chemical shift modulation), lung
# ~2 (Hatabu et al., MRM 1999: 1-2 ms). 3 T: roughly 0.6-0.7 times the 1.5 T values
# (myocardium ~25 ms, Meloni et al., JMRI 2014).
TISSUE_T2STAR_MS: dict[float, dict[str, float]] = {
    1.5: {"myocardium": 35.0, "blood": 100.0, "liver": 30.0, "fat": 40.0, "muscle": 28.0, "lung": 2.0},
    3.0: {"myocardium": 25.0, "blood": 60.0, "liver": 20.0, "fat": 30.0, "muscle": 20.0, "lung": 1.2},
}

# Typical T1 values in ms (MOLLI-type apparent values for heart and blood).
#  Native 1.5 T: myocardium 950-1050, blood 1500-1600 (Messroghli et al., JCMR 2017 consensus;
#  Kellman & Hansen, JCMR 2014); liver 550-600, skeletal muscle 1000-1100, subcutaneous fat
#  250-350 (de Bazelaire et al., Radiology 2004; MOLLI reads fat short, ~260); lung ~1200
#  (Stadler et al., MRM 2005). Native 3 T: myocardium 1150-1250, blood 1800-2000, liver
#  ~810, fat ~380, muscle ~1400 (de Bazelaire 2004), lung ~1300.
#  Post-contrast (10-20 min after 0.1-0.2 mmol/kg Gd, ECV studies): myocardium 400-500,
#  blood 250-350, liver 300-400; fat and muscle shorten less.
TISSUE_T1_MS: dict[float, dict[str, dict[str, float]]] = {
    1.5: {
        "native": {"myocardium": 1000.0, "blood": 1550.0, "liver": 580.0, "fat": 260.0, "muscle": 1000.0, "lung": 1200.0},
        "post": {"myocardium": 450.0, "blood": 300.0, "liver": 350.0, "fat": 230.0, "muscle": 600.0, "lung": 500.0},
    },
    3.0: {
        "native": {"myocardium": 1200.0, "blood": 1900.0, "liver": 810.0, "fat": 380.0, "muscle": 1400.0, "lung": 1300.0},
        "post": {"myocardium": 500.0, "blood": 330.0, "liver": 400.0, "fat": 330.0, "muscle": 700.0, "lung": 550.0},
    },
}

#: Per-tissue properties other than T1 (field-independent approximations):
#: ``m0`` relative apparent equilibrium signal (bSSFP-read, blood brightest, lung dark),
#: ``t2_ms`` for the cine/ASL bSSFP contrast and the T2-prep decay (myocardium 50 ms, the
#: 1.5 T T2-prep bSSFP normal range 45-55 ms; Giri et al., JCMR 2009; blood ~250 ms,
#: liver ~45 ms), ``molli_b_over_a`` the MOLLI ``B/A`` ratio
#: (``T1 = T1* (B/A - 1)``; ``B/A > 2`` because the Look-Locker readout shortens T1*),
#: ``texture`` relative amplitude of the smooth M0 texture.
TISSUE_PROPERTIES: dict[str, dict[str, float]] = {
    "blood": {"m0": 1.0, "t2_ms": 250.0, "molli_b_over_a": 2.10, "texture": 0.02},
    "myocardium": {"m0": 0.7, "t2_ms": 50.0, "molli_b_over_a": 2.15, "texture": 0.03},
    "liver": {"m0": 0.6, "t2_ms": 45.0, "molli_b_over_a": 2.20, "texture": 0.05},
    "fat": {"m0": 0.9, "t2_ms": 80.0, "molli_b_over_a": 2.30, "texture": 0.05},
    "muscle": {"m0": 0.55, "t2_ms": 35.0, "molli_b_over_a": 2.15, "texture": 0.05},
    "lung": {"m0": 0.08, "t2_ms": 30.0, "molli_b_over_a": 2.05, "texture": 0.30},
}

# Anatomical components painted in this order: (name, tissue, label). Label per DESIGN §2.
_COMPONENTS: tuple[tuple[str, str | None, int], ...] = (
    ("air", None, 0),
    ("subcutaneous_fat", "fat", 0),
    ("chest_wall", "muscle", 0),
    ("lung", "lung", 0),
    ("posterior_mediastinum", "muscle", 0),
    ("aorta", "blood", 0),
    ("liver", "liver", 0),
    ("mediastinal_fat", "fat", 0),
    ("rv_wall", "myocardium", 0),
    ("rv_blood", "blood", 3),
    ("lv_myocardium", "myocardium", 2),
    ("lv_blood", "blood", 1),
    ("papillary", "myocardium", 1),  # papillary muscles belong to the LV cavity label (ACDC)
)
_INDEX = {name: k for k, (name, _, _) in enumerate(_COMPONENTS)}

# Perfusion: Gd concentration of each component = scale * one of the first-pass curves of
# _perfusion_curves ("rv", "lv" = arterial input, "lung", "myo" = myocardial tissue, "late").
_PERFUSION_UPTAKE = {
    "air": ("lv", 0.0),
    "subcutaneous_fat": ("late", 0.03),
    "chest_wall": ("late", 0.10),
    "lung": ("lung", 1.0),
    "posterior_mediastinum": ("late", 0.10),
    "aorta": ("lv", 1.0),
    "liver": ("late", 0.35),
    "mediastinal_fat": ("late", 0.03),
    "rv_wall": ("myo", 1.0),
    "rv_blood": ("rv", 1.0),
    "lv_myocardium": ("myo", 1.0),
    "lv_blood": ("lv", 1.0),
    "papillary": ("myo", 1.0),
}
# ASL: fractional signal drop in labelled frames (exaggerated blood, ~2 % myocardium).
_ASL_LABEL_FRACTION = {"aorta": 0.08, "rv_blood": 0.08, "lv_blood": 0.08, "lv_myocardium": 0.02, "rv_wall": 0.02, "papillary": 0.02}

_CINE_FLIP_DEG = 50.0
_PERFUSION_TS_MS = 100.0
_RELAXIVITY = {1.5: 4.5, 3.0: 4.3}  # Gd r1 in /mM/s (typical macrocyclic agents)


def tissue_t1_ms(tissue: str, field_strength: float = 1.5, contrast: str = "native") -> float:
    """T1 (ms) of ``tissue`` from :data:`TISSUE_T1_MS` (field strength 1.5 or 3 T)."""
    table = TISSUE_T1_MS[_field_key(field_strength)]
    if contrast not in table:
        raise ValueError(f"contrast must be one of {sorted(table)}; got {contrast!r}")
    if tissue not in table[contrast]:
        raise ValueError(f"unknown tissue {tissue!r}; known: {sorted(table[contrast])}")
    return float(table[contrast][tissue])


def tissue_t2_ms(tissue: str) -> float:
    """T2 (ms) of ``tissue`` (``TISSUE_PROPERTIES[tissue]["t2_ms"]``; taken as field-independent)."""
    if tissue not in TISSUE_PROPERTIES:
        raise ValueError(f"unknown tissue {tissue!r}; known: {sorted(TISSUE_PROPERTIES)}")
    return float(TISSUE_PROPERTIES[tissue]["t2_ms"])


def tissue_t2star_ms(tissue: str, field_strength: float = 1.5) -> float:
    """T2* (ms) of ``tissue`` from :data:`TISSUE_T2STAR_MS` (field strength 1.5 or 3 T)."""
    table = TISSUE_T2STAR_MS[_field_key(field_strength)]
    if tissue not in table:
        raise ValueError(f"unknown tissue {tissue!r}; known: {sorted(table)}")
    return float(table[tissue])


def _field_key(field_strength: float) -> float:
    for key in TISSUE_T1_MS:
        if abs(float(field_strength) - key) < 0.26:
            return key
    raise ValueError(f"field_strength must be 1.5 or 3.0 (T); got {field_strength!r}")
