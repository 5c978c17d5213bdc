"""MIT-BIH Arrhythmia evaluation constants: the inter-patient split and the AAMI EC57 beat classes.

Only training and evaluation use them (the stream reads records and beat annotations, see
:mod:`stream.records`, but never splits or classifies by AAMI class).
"""

from __future__ import annotations

#: MIT-BIH records with paced beats, excluded from inter-patient evaluation (AAMI recommendation).
MITDB_PACED: tuple[str, ...] = ("102", "104", "107", "217")
#: de Chazal et al. (2004) inter-patient split of MIT-BIH.
MITDB_DS1: tuple[str, ...] = (
    "101",
    "106",
    "108",
    "109",
    "112",
    "114",
    "115",
    "116",
    "118",
    "119",
    "122",
    "124",
    "201",
    "203",
    "205",
    "207",
    "208",
    "209",
    "215",
    "220",
    "223",
    "230",
)
MITDB_DS2: tuple[str, ...] = (
    "100",
    "103",
    "105",
    "111",
    "113",
    "117",
    "121",
    "123",
    "200",
    "202",
    "210",
    "212",
    "213",
    "214",
    "219",
    "221",
    "222",
    "228",
    "231",
    "232",
    "233",
    "234",
)
#: MIT-BIH beat annotation symbols mapped to AAMI EC57 classes.
AAMI_CLASSES: dict[str, str] = {
    **dict.fromkeys(["N", "L", "R", "e", "j"], "N"),
    **dict.fromkeys(["A", "a", "J", "S"], "S"),
    **dict.fromkeys(["V", "E"], "V"),
    "F": "F",
    **dict.fromkeys(["/", "f", "Q"], "Q"),
}
