"""`silta demo init`: deterministic on-prem files for the embedded demo.

An occupation survey: free-text job titles in Finnish, Swedish and English with a few
numeric and categorical fields, exported as ;-separated UTF-8 CSV with decimal commas,
plus a sample coded into ISCO-08 by the office's coders.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config import LoadedConfig
from agent.stores import open_store
from connectors.errors import UsageError
from connectors.folder import FolderStore

# ISCO-08 unit group, then the title in Finnish, Swedish and English.
OCCUPATIONS: list[tuple[str, str, str, str]] = [
    ("2221", "sairaanhoitaja", "sjuksköterska", "registered nurse"),
    ("5321", "lähihoitaja", "närvårdare", "practical nurse"),
    ("2341", "luokanopettaja", "klasslärare", "primary school teacher"),
    ("2512", "ohjelmistokehittäjä", "mjukvaruutvecklare", "software developer"),
    ("5120", "kokki", "kock", "cook"),
    ("8332", "kuorma-autonkuljettaja", "lastbilschaufför", "truck driver"),
    ("5223", "myyjä", "försäljare", "shop sales assistant"),
    ("7115", "kirvesmies", "timmerman", "carpenter"),
    ("4311", "kirjanpitäjä", "bokförare", "bookkeeper"),
    ("5311", "lastenhoitaja", "barnskötare", "childcare worker"),
    ("9112", "siivooja", "städare", "office cleaner"),
    ("7411", "sähköasentaja", "elmontör", "electrician"),
    ("2635", "sosiaalityöntekijä", "socialarbetare", "social worker"),
    ("2411", "controller", "controller", "financial controller"),
]
PREFIXES = {
    "fi": ["", "", "", "vanhempi ", "apulais", "vastaava "],
    "sv": ["", "", "", "senior ", "biträdande ", "ansvarig "],
    "en": ["", "", "", "senior ", "assistant ", "lead "],
}
# Vague answers, as real ones often are: the same words for several unit groups, so an
# automated coder is unsure of them (and sends them to the coders).
VAGUE: dict[str, tuple[str, str, str]] = {
    "2221": ("hoitaja", "vårdare", "carer"),
    "5321": ("hoitaja", "vårdare", "carer"),
    "5311": ("hoitaja", "vårdare", "carer"),
    "2512": ("asiantuntija", "expert", "specialist"),
    "2411": ("asiantuntija", "expert", "specialist"),
    "2635": ("asiantuntija", "expert", "specialist"),
    "8332": ("työntekijä", "arbetare", "worker"),
    "7115": ("työntekijä", "arbetare", "worker"),
    "7411": ("työntekijä", "arbetare", "worker"),
    "9112": ("työntekijä", "arbetare", "worker"),
}
VAGUE_SHARE = 0.07
#: coders disagree now and then: a coded answer gets another unit group
CODER_SLIPS = 0.03
SUFFIXES = ["", "", "", "", " (osa-aikainen)", ", määräaikainen", " / part time", " 50%"]
REGIONS = ["Uusimaa", "Pirkanmaa", "Varsinais-Suomi", "Pohjois-Pohjanmaa", "Keski-Suomi",
           "Lappi", "Ahvenanmaa", "Pohjanmaa"]
SECTORS = ["public", "private", "third-sector"]
LANG_WEIGHTS = [("fi", 0.78), ("sv", 0.12), ("en", 0.10)]
HEADER = ["response_id", "survey_wave", "submitted_at", "region", "language", "age",
          "weekly_hours", "sector", "job_title"]
START = dt.datetime(2026, 9, 1, 8, 0, 0)


def _title(rng: random.Random, lang: str, occ: tuple[str, str, str, str]) -> str:
    base = {"fi": occ[1], "sv": occ[2], "en": occ[3]}[lang]
    vague = VAGUE.get(occ[0])
    if vague is not None and rng.random() < VAGUE_SHARE:
        base = {"fi": vague[0], "sv": vague[1], "en": vague[2]}[lang]
    title = rng.choice(PREFIXES[lang]) + base + rng.choice(SUFFIXES)
    if rng.random() < 0.15:
        title = title.capitalize()
    if rng.random() < 0.04 and len(title) > 5:  # a typo, as real answers have
        i = rng.randrange(1, len(title) - 1)
        title = title[:i] + title[i + 1] + title[i] + title[i + 2:]
    if rng.random() < 0.03:
        title = f'"{title}"; {rng.choice(["ja esimies", "och chef", "and team lead"])}'
    return title


def _quote(value: str) -> str:
    if any(c in value for c in ';"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


@dataclass(frozen=True)
class Month:
    """What one delivery period of the survey looks like."""

    wave: str
    start: dt.datetime
    first_id: int
    occupations: list[tuple[str, str, str, str]]
    lang_weights: list[tuple[str, float]]
    sector_weights: list[float] | None  # None: uniform (and the Q3 files stay byte-identical)
    coded_file: str


Q3 = Month("2026Q3", START, 1, OCCUPATIONS, LANG_WEIGHTS, None,
           "coded/coded_sample_2026Q3.csv")
# A later month that has drifted: new kinds of work the coder never saw (platform and
# data jobs), more answers in English, and the private sector growing.
NEW_OCCUPATIONS: list[tuple[str, str, str, str]] = [
    ("9621", "ruokalähetti", "matbud", "food delivery courier"),
    ("2511", "data-analyytikko", "dataanalytiker", "data analyst"),
    ("2166", "graafinen suunnittelija", "grafisk formgivare", "graphic designer"),
    ("4222", "asiakaspalvelija", "kundtjänstmedarbetare", "contact centre agent"),
]
Q4 = Month("2026Q4", dt.datetime(2026, 11, 2, 8, 0, 0), 500_001,
           OCCUPATIONS + NEW_OCCUPATIONS * 3, [("fi", 0.55), ("sv", 0.10), ("en", 0.35)],
           [0.5, 2.5, 0.5], "coded/coded_sample_2026Q4.csv")


def _month(rng: random.Random, month: Month, files: int, rows: int
           ) -> list[tuple[str, bytes, dt.datetime]]:
    out: list[tuple[str, bytes, dt.datetime]] = []
    coded: list[str] = ["response_id;isco08;coder"]
    n = month.first_id - 1
    for day in range(files):
        lines = [";".join(HEADER)]
        stamp = month.start + dt.timedelta(days=day)
        for _ in range(rows):
            n += 1
            occ = rng.choice(month.occupations)
            lang = rng.choices([x for x, _ in month.lang_weights],
                               [w for _, w in month.lang_weights])[0]
            submitted = stamp + dt.timedelta(seconds=rng.randrange(0, 12 * 3600))
            hours = rng.choice([37.5, 38.25, 40.0, 20.0, 30.0, 24.5, 36.75])
            rid = f"R26-{n:06d}"
            row = [rid, month.wave, submitted.strftime("%Y-%m-%d %H:%M:%S"),
                   rng.choice(REGIONS), lang, str(rng.randint(18, 67)),
                   f"{hours:.2f}".replace(".", ","),
                   rng.choice(SECTORS) if month.sector_weights is None
                   else rng.choices(SECTORS, month.sector_weights)[0],
                   _title(rng, lang, occ)]
            if rng.random() < 0.02:
                row[6] = ""  # a skipped question
            lines.append(";".join(_quote(v) for v in row))
            if rng.random() < 0.25:
                code = (rng.choice(month.occupations)[0] if rng.random() < CODER_SLIPS
                        else occ[0])
                coded.append(f"{rid};{code};{rng.choice(['coder-a', 'coder-b', 'coder-c'])}")
        exported = stamp + dt.timedelta(hours=13)
        out.append((f"responses/responses_{stamp:%Y%m%d}.csv",
                    ("\n".join(lines) + "\n").encode("utf-8"), exported))
    out.append((month.coded_file, ("\n".join(coded) + "\n").encode("utf-8"),
                month.start + dt.timedelta(days=files, hours=10)))
    return out


def generate(seed: int, files: int, rows: int) -> list[tuple[str, bytes, dt.datetime]]:
    """The demo's files as (relative path, content, export time); same seed, same bytes."""
    return _month(random.Random(seed), Q3, files, rows)


def generate_drift(seed: int, files: int, rows: int) -> list[tuple[str, bytes, dt.datetime]]:
    """A later month that has drifted (new job titles, shifted categories), with its
    coded sample; same seed, same bytes."""
    return _month(random.Random(seed + 4), Q4, files, rows)


def later_answers(seed: int, index: int, rows: int) -> tuple[str, bytes]:
    """One more export file of answers like Q3's (the soak benchmark's steady stream):
    file ``index`` has response ids of its own, so every file is a new unit."""
    month = Month("2026Q3", START + dt.timedelta(minutes=index), 900_001 + index * rows,
                  OCCUPATIONS, LANG_WEIGHTS, None, "coded/unused.csv")
    (_, content, _), _coded = _month(random.Random(seed * 100_003 + index), month, 1, rows)
    return f"responses/stream_{index:06d}.csv", content


INDUSTRIES = [("47111", "Retail sale in non-specialised stores"),
              ("62010", "Computer programming"), ("86101", "General hospital activities"),
              ("41200", "Construction of buildings"), ("56101", "Restaurants"),
              ("49410", "Freight transport by road"), ("85201", "Primary education")]
NAME_PARTS = (["Pohjolan", "Järvi", "Koivu", "Saaristo", "Tunturi", "Kallio", "Meri"],
              ["Rakennus", "Data", "Kuljetus", "Ravintola", "Hoiva", "Kauppa", "Opetus"],
              ["Oy", "Ab", "Oy Ab", "Ky", "Osk"])


def register_rows(seed: int, count: int = 300) -> list[tuple[str, str, str, str, int, str]]:
    """An enterprise register extract: (id, name, region, industry, employees, updated_at)."""
    rng = random.Random(seed + 1)
    rows = []
    for i in range(1, count + 1):
        name = " ".join(rng.choice(part) for part in NAME_PARTS)
        updated = START - dt.timedelta(days=rng.randrange(0, 365), seconds=rng.randrange(86400))
        rows.append((f"{1000000 + i * 7}-{i % 10}", name, rng.choice(REGIONS),
                     rng.choice(INDUSTRIES)[0], rng.choice([1, 2, 4, 9, 25, 60, 240, 1200]),
                     updated.strftime("%Y-%m-%d %H:%M:%S")))
    return rows


def write_register(path: Path, seed: int, force: bool) -> Path:
    """The demo's on-prem database (SQLite): the enterprise register the office keeps."""
    import sqlite3

    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to write the demo files again")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(tmp)) as db:
        db.execute("CREATE TABLE enterprises (enterprise_id TEXT PRIMARY KEY, name TEXT NOT "
                   "NULL, region TEXT, industry TEXT, employees INTEGER, updated_at TIMESTAMP "
                   "NOT NULL)")
        db.executemany("INSERT INTO enterprises VALUES (?, ?, ?, ?, ?, ?)",
                       register_rows(seed))
        db.commit()
    os.replace(tmp, path)  # whole or not at all, like the other demo files
    return path


def _dropzone(loaded: LoadedConfig) -> FolderStore:
    if "dropzone" not in loaded.config.connectors:
        raise UsageError(f"{loaded.path} has no [connectors.dropzone]; the demo writes there "
                         "(use config/demo.toml)")
    store = open_store(loaded, "dropzone")
    if not isinstance(store, FolderStore):
        raise UsageError("the demo's dropzone must be a folder connector")
    return store


def _write(store: FolderStore, files: list[tuple[str, bytes, dt.datetime]], force: bool
           ) -> list[Path]:
    written: list[Path] = []
    for rel, _, _ in files:
        if (store.root / rel).exists() and not force:
            raise UsageError(f"{store.root / rel} exists; pass --force to write the demo "
                             "files again")
    for rel, content, exported in files:
        target = store.root / rel
        store.write_atomic(rel, [content])
        # The export time is the file's mtime: the files are settled, as real exports are.
        ts = exported.replace(tzinfo=dt.UTC).timestamp()
        os.utime(target, (ts, ts))
        written.append(target)
    return written


def init_demo(loaded: LoadedConfig, *, seed: int, files: int, rows: int, force: bool
              ) -> list[Path]:
    """Write the demo files into the ``dropzone`` folder; refuse to overwrite unless forced."""
    store = _dropzone(loaded)
    if force:  # a fresh demo: a drifted month from an earlier one must not linger
        for rel, _, _ in generate_drift(seed, files, rows):
            (store.root / rel).unlink(missing_ok=True)
    written = _write(store, generate(seed, files, rows), force)
    register = loaded.config.connectors.get("register")
    if register is not None and register.type == "sql" and register.url.startswith("sqlite:///"):
        written.append(write_register(loaded.resolve(register.url.removeprefix("sqlite:///")),
                                      seed, force))
    return written


def add_drift(loaded: LoadedConfig, *, seed: int, files: int, rows: int, force: bool
              ) -> list[Path]:
    """Write the later, drifted month (answers and their coded sample) into the dropzone."""
    return _write(_dropzone(loaded), generate_drift(seed, files, rows), force)


#: `silta demo init` and `silta demo drift`
WRITERS: dict[str, Callable[..., list[Path]]] = {"init": init_demo, "drift": add_drift}
