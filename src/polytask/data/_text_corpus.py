"""A synthetic English corpus for the text example: each sentence has a sentiment, entity tags,
a translation into a small invented language and a normalised spelling.

No pip package ships English text with sentence sentiment and entity annotations that can be
read offline (scikit-learn's and nltk's corpora are downloads), so the sentences are generated
from templates: one or two clauses ("but" / "and" join them) about people, places and
organisations, built from word lists (names, nouns, adjectives, verbs, time phrases).

- `sentiment` (positive / negative / neutral) follows the opinion words: each clause has one
  (an adjective after "was" / "is" or a verb), "not" / "did not" flips it (neutral stays
  neutral), a "Maria said that ..." clause takes its inner clause's, and the sentence takes the
  last clause with an opinion (neutral when none has), so a bag of words cannot get every
  sentence right: "The hotel was great but the service was bad ." is negative.
- `tags`: BIO tags per whitespace word, PER / LOC / ORG; entities may span several words
  ("Maria Lopez", "New York", "Acme Corp", "Bank of Lisbon"); titles (Dr, Mr, Ms) are O; some
  names are people or places by context ("Jordan", "Georgia", "Florence"): alone they stand only
  where the context tells (a person does things, a place follows "in" / "near").
- `translation`: the sentence in an invented language, by rules: every template word has a
  made-up word (`target_word`), names and numbers are copied, "the" is dropped, adjectives
  follow their noun, prepositions follow their noun phrase, time phrases open the clause and
  the verb closes it ("not" after it), so copying word by word is not enough.
- `normalized`: the sentence in lower case, numbers spelled out, abbreviations expanded (Corp,
  Dr, ...), no final full stop.

The test sentences are held-out combinations: a sentence goes to the test split when its first
clause's template (the row's `template`: which slots hold what) and its first entity form a pair
that `held_out` picks (one pair in `HOLD_OUT`), never to training or validation; the templates
and names themselves all recur in training, only these pairings are new.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polytask.data._builder_files import check_count, prepare_folder

SENTIMENTS = ("negative", "neutral", "positive")
ENTITY_TYPES = ("PER", "LOC", "ORG")
TEXT_FIELDS = ("text", "sentiment", "tags", "translation", "normalized", "template")
MIN_WORDS, MAX_WORDS = 6, 20  # per sentence, the full stop included
HOLD_OUT = 5  # one (template, entity) pair in HOLD_OUT is kept for the test split

FIRST_NAMES = (
    "Maria", "James", "Aisha", "Chen", "Olga", "Pedro", "Fatima", "Liam", "Sofia", "Kenji",
    "Amara", "Lucas", "Priya", "Omar", "Elena", "Noah", "Yuki", "Ibrahim", "Grace", "Mateo",
    "Leila", "Daniel", "Ana", "Tariq", "Hannah", "Diego", "Mei", "Samuel", "Zara", "Ivan",
    "Nora", "Felix", "Amina", "Hugo", "Ines", "Kwame", "Clara", "Ravi", "Lena", "Tomas",
    "Jordan", "Georgia", "Victoria", "Florence", "Austin", "Chelsea",
)  # fmt: skip
LAST_NAMES = (
    "Lopez", "Smith", "Okafor", "Wang", "Petrova", "Silva", "Haddad", "Murphy", "Rossi",
    "Tanaka", "Mensah", "Muller", "Sharma", "Khan", "Novak", "Garcia", "Kim", "Nguyen", "Ali",
    "Cohen", "Brown", "Diaz", "Ivanova", "Sato", "Mendes", "Ortiz", "Berg", "Laine", "Costa",
    "Moreau", "Adeyemi", "Park", "Singh", "Kowalski", "Fischer", "Hansen", "Larsen", "Romero",
    "Bianchi", "Popescu",
)  # fmt: skip
TITLES = ("Dr", "Mr", "Ms")
PLACES = (
    "Paris", "London", "Berlin", "Tokyo", "Lagos", "Lima", "Oslo", "Cairo", "Madrid", "Rome",
    "Dublin", "Nairobi", "Mumbai", "Seoul", "Sydney", "Toronto", "Vienna", "Prague", "Lisbon",
    "Athens", "Chicago", "Boston", "Denver", "Kenya", "Brazil", "Canada", "Peru", "Norway",
    "Egypt", "Chile", "Jordan", "Georgia", "Victoria", "Florence", "Austin", "Chelsea",
    "New York", "San Francisco", "Los Angeles", "Buenos Aires", "Hong Kong", "Cape Town",
    "New Delhi", "Rio de Janeiro", "Kuala Lumpur", "Abu Dhabi", "South Korea", "New Zealand",
    "Costa Rica", "Sri Lanka", "Las Vegas", "Mexico City",
)  # fmt: skip
COMPANIES = (
    "Acme", "Globex", "Initech", "Umbrella", "Northwind", "Contoso", "Fabrikam", "Hooli",
    "Vandelay", "Soylent", "Tyrell", "Cyberdyne", "Wonka", "Oscorp", "Pinnacle", "Summit",
    "Horizon", "Evergreen", "Silverline", "Bluewater", "Redstone", "Ironwood", "Brightpath",
    "Clearview", "Goldfield", "Starlight",
)  # fmt: skip
COMPANY_SUFFIXES = (
    "Corp", "Inc", "Ltd", "Group", "Labs", "Bank", "Airlines", "Motors", "Foods", "Media",
    "Energy", "Systems",
)  # fmt: skip
AMBIGUOUS_NAMES = tuple(n for n in FIRST_NAMES if n in PLACES)  # people or places by context
_CLEAR_FIRST_NAMES = tuple(n for n in FIRST_NAMES if n not in AMBIGUOUS_NAMES)
_CLEAR_PLACES = tuple(n for n in PLACES if n not in AMBIGUOUS_NAMES)
INSTITUTIONS = ("Bank", "University", "Museum", "Council", "Port")  # "<X> of <place>"

NOUNS = (
    "hotel", "museum", "bridge", "restaurant", "station", "market", "concert", "meeting",
    "report", "service", "train", "airport", "library", "park", "school", "hospital",
    "festival", "game", "film", "book", "product", "plan", "office", "garden", "bakery",
    "stadium", "theatre", "beach", "flight", "phone", "car", "shop", "cafe", "road", "show",
    "menu", "room", "team", "app", "course",
)  # fmt: skip
DESCRIPTIVE = (
    "red", "blue", "green", "old", "new", "large", "small", "local", "main", "central",
    "northern", "southern", "wooden", "early", "late", "second",
)  # fmt: skip
POSITIVE_ADJECTIVES = (
    "good", "great", "excellent", "wonderful", "pleasant", "friendly", "reliable",
    "impressive", "superb", "lovely", "helpful", "fantastic",
)  # fmt: skip
NEGATIVE_ADJECTIVES = (
    "bad", "terrible", "awful", "poor", "rude", "unreliable", "disappointing", "dreadful",
    "noisy", "dirty", "horrible", "useless",
)  # fmt: skip
NEUTRAL_ADJECTIVES = (
    "open", "closed", "empty", "full", "ready", "finished", "available", "unchanged",
)  # fmt: skip
# (past, base) forms
POSITIVE_VERBS = (
    ("praised", "praise"), ("liked", "like"), ("loved", "love"), ("enjoyed", "enjoy"),
    ("admired", "admire"), ("recommended", "recommend"), ("welcomed", "welcome"),
    ("celebrated", "celebrate"),
)  # fmt: skip
NEGATIVE_VERBS = (
    ("hated", "hate"), ("criticised", "criticise"), ("disliked", "dislike"),
    ("blamed", "blame"), ("rejected", "reject"), ("mocked", "mock"),
    ("condemned", "condemn"), ("dreaded", "dread"),
)  # fmt: skip
NEUTRAL_VERBS = (
    ("visited", "visit"), ("described", "describe"), ("reviewed", "review"),
    ("inspected", "inspect"), ("mentioned", "mention"), ("discussed", "discuss"),
    ("saw", "see"), ("bought", "buy"), ("sold", "sell"), ("built", "build"),
    ("photographed", "photograph"), ("opened", "open"),
)  # fmt: skip
REPORT_VERBS = ("said", "wrote", "reported", "claimed", "thinks")
ADVERBS = ("yesterday", "today", "recently", "finally", "once")
LAST_UNITS = ("week", "month", "year", "night", "summer", "winter")
THIS_UNITS = ("morning", "week", "year", "evening")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
DURATIONS = (("days", "day"), ("weeks", "week"), ("hours", "hour"), ("years", "year"))
GRAMMAR = (
    "the", "a", "in", "at", "near", "was", "is", "not", "that", "but", "and", "on", "for",
    "last", "this",
)  # fmt: skip
ABBREVIATIONS = {
    "Dr": "doctor", "Mr": "mister", "Ms": "miss", "Corp": "corporation", "Inc": "incorporated",
    "Ltd": "limited",
}  # fmt: skip
_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = {2: "twenty", 3: "thirty"}


def number_words(n: int) -> list[str]:
    """English words of 0 <= n < 40 ("twenty one")."""
    if not 0 <= n < 40:
        raise ValueError(f"number_words spells 0 to 39, got {n}")
    if n < 20:
        return [_ONES[n]]
    tens, ones = divmod(n, 10)
    return [_TENS[tens]] + ([_ONES[ones]] if ones else [])


def _vocabulary() -> list[str]:
    """Every template word that the invented language translates (lower case)."""
    words: list[str] = [*NOUNS, *DESCRIPTIVE, *POSITIVE_ADJECTIVES, *NEGATIVE_ADJECTIVES]
    words += [*NEUTRAL_ADJECTIVES, *REPORT_VERBS, *ADVERBS, *LAST_UNITS, *THIS_UNITS, *GRAMMAR]
    words += [v[0] for v in (*POSITIVE_VERBS, *NEGATIVE_VERBS, *NEUTRAL_VERBS)]
    words += [d.lower() for d in (*DAYS, *MONTHS)] + [u[1] for u in DURATIONS]
    words += [t.lower() for t in TITLES]
    return sorted(set(words))


_CONSONANTS, _VOWELS, _FINALS = "bdfgklmnprstvz", "aeiou", "nrsl"


def _invent(word: str, salt: int) -> str:
    """A made-up word for `word`: consonant-vowel syllables picked by a hash of the word."""
    h = zlib.crc32(f"{word}#{salt}".encode())
    syllables = 1 if len(word) <= 3 else 2 if len(word) <= 7 else 3
    out = ""
    for _ in range(syllables):
        h, c = divmod(h, len(_CONSONANTS))
        h, v = divmod(h, len(_VOWELS))
        out += _CONSONANTS[c] + _VOWELS[v]
    h, f = divmod(h, 2 * len(_FINALS))
    return out + (_FINALS[f] if f < len(_FINALS) else "")


def _lexicon() -> dict[str, str]:
    """The invented language's dictionary: one distinct word per template word, none equal to
    a (lower-cased) name word, the same for every seed."""
    names = {w.lower() for n in (*FIRST_NAMES, *LAST_NAMES, *PLACES, *COMPANIES) for w in n.split()}
    taken = names | {s.lower() for s in (*COMPANY_SUFFIXES, *INSTITUTIONS, "of")}
    lexicon: dict[str, str] = {}
    for word in _vocabulary():
        salt = 0
        while (made := _invent(word, salt)) in taken:
            salt += 1
        taken.add(made)
        lexicon[word] = made
    return lexicon


LEXICON = _lexicon()


def target_word(word: str) -> str:
    """The invented language's word for an English template word (any case)."""
    return LEXICON[word.lower()]


@dataclass(frozen=True)
class Piece:
    """Part of a sentence: English words with their BIO tags, and its translation."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    target: tuple[str, ...]

    def __add__(self, other: Piece) -> Piece:
        """English and translation both in this order (`translated` builds other orders)."""
        return Piece(self.words + other.words, self.tags + other.tags, self.target + other.target)


EMPTY = Piece((), (), ())


def plain(*words: str, target: Sequence[str] | None = None) -> Piece:
    """Words outside entities; translated word by word in order unless `target` is given."""
    translated = tuple(target) if target is not None else tuple(target_word(w) for w in words)
    return Piece(tuple(words), ("O",) * len(words), translated)


def entity(name: str, kind: str) -> Piece:
    """A (possibly multi-word) name: B- then I- tags, copied into the translation."""
    words = tuple(name.split())
    tags = (f"B-{kind}",) + (f"I-{kind}",) * (len(words) - 1)
    return Piece(words, tags, words)


def english(*pieces: Piece) -> Piece:
    """The pieces' English in this order, without translation (it is built separately)."""
    out = EMPTY
    for p in pieces:
        out = out + Piece(p.words, p.tags, ())
    return out


def translated(english_part: Piece, *target_order: Piece | tuple[str, ...]) -> Piece:
    """`english_part`'s words and tags with the translation of the pieces in `target_order`."""
    target: tuple[str, ...] = ()
    for p in target_order:
        target += p.target if isinstance(p, Piece) else p
    return Piece(english_part.words, english_part.tags, target)


def person(first: str | None, last: str | None = None, title: str | None = None) -> Piece:
    """A person: "Maria", "Maria Lopez" or "Dr Lopez" (the title is O, after the name in the
    translation)."""
    name = " ".join(w for w in (first, last) if w)
    if not name:
        raise ValueError("a person needs a first or last name")
    if title is None:
        return entity(name, "PER")
    return translated(english(plain(title), entity(name, "PER")), (name,), (target_word(title),))


def noun_phrase(noun: str, adjective: str | None = None, article: str = "the") -> Piece:
    """ "the / a [adjective] noun": the noun then its adjective ("the" dropped, "a" last)."""
    words = (article, adjective, noun) if adjective else (article, noun)
    after = (target_word("a"),) if article == "a" else ()
    adj = (target_word(adjective),) if adjective else ()
    return Piece(words, ("O",) * len(words), (target_word(noun), *adj, *after))


def prepositional(preposition: str, place: Piece) -> Piece:
    """ "in / at / near X": X then the preposition."""
    return translated(english(plain(preposition), place), place, (target_word(preposition),))


def time_phrase(kind: str, word: str, number: int | None = None) -> Piece:
    """A time phrase: "yesterday" (kind "adverb"), "last week", "this morning", "on Monday",
    "in May" or "for 3 days" ("for": `word` is the plural unit). Head first in translation."""
    if kind == "adverb":
        return plain(word)
    if kind in ("last", "this", "on", "in"):
        return plain(kind, word, target=(target_word(word), target_word(kind)))
    if kind == "for":
        if number is None:
            raise ValueError("a 'for' time phrase needs a number")
        singular = dict(DURATIONS)[word]
        return plain(
            "for",
            str(number),
            word,
            target=(str(number), target_word(singular), target_word("for")),
        )
    raise ValueError(f"unknown time phrase kind {kind!r}")


@dataclass(frozen=True)
class Clause:
    """A clause: its words, tags and translation, its opinion (-1, 0, +1, negation applied)
    and its template's signature (which slots hold what)."""

    piece: Piece
    polarity: int
    signature: str


def _flip(polarity: int, negated: bool) -> int:
    return -polarity if negated else polarity


def adjective_polarity(adjective: str) -> int:
    """+1 / -1 / 0 for an adjective after "was" / "is"."""
    if adjective in POSITIVE_ADJECTIVES:
        return 1
    if adjective in NEGATIVE_ADJECTIVES:
        return -1
    if adjective in NEUTRAL_ADJECTIVES:
        return 0
    raise ValueError(f"{adjective!r} is not an opinion or neutral adjective of the corpus")


def verb_polarity(past: str) -> int:
    """+1 / -1 / 0 for a verb (past form)."""
    for verbs, polarity in ((POSITIVE_VERBS, 1), (NEGATIVE_VERBS, -1), (NEUTRAL_VERBS, 0)):
        if past in (v[0] for v in verbs):
            return polarity
    raise ValueError(f"{past!r} is not a verb of the corpus")


def _with_time(
    core: Piece, target: tuple[str, ...], time: Piece | None, front: bool
) -> tuple[Piece, tuple[str, ...]]:
    """Put a time phrase before (front) or after the clause's English; first in translation."""
    if time is None:
        return core, target
    words = english(time, core) if front else english(core, time)
    return words, time.target + target


def copula_clause(
    subject: Piece,
    adjective: str,
    *,
    place: Piece | None = None,
    negated: bool = False,
    copula: str = "was",
    time: Piece | None = None,
    time_front: bool = True,
    signature: str = "",
) -> Clause:
    """ "[time] subject [place] was [not] adjective [time]" → "[time] subject [place] adjective
    [not] was"."""
    neg = (plain("not"),) if negated else ()
    core = english(subject, *(p for p in (place,) if p), plain(copula), *neg, plain(adjective))
    target = subject.target + (place.target if place else ()) + (target_word(adjective),)
    target += (target_word("not"),) if negated else ()
    target += (target_word(copula),)
    words, target = _with_time(core, target, time, time_front)
    polarity = _flip(adjective_polarity(adjective), negated)
    return Clause(Piece(words.words, words.tags, target), polarity, signature)


def verb_clause(
    agent: Piece,
    verb: tuple[str, str],
    obj: Piece,
    *,
    place: Piece | None = None,
    negated: bool = False,
    time: Piece | None = None,
    time_front: bool = True,
    signature: str = "",
) -> Clause:
    """ "[time] agent [did not] verb object [place] [time]" → "[time] agent object [place] verb
    [not]"."""
    past, base = verb
    verb_words = plain("did", "not", base, target=()) if negated else plain(past, target=())
    core = english(agent, verb_words, obj, *(p for p in (place,) if p))
    target = agent.target + obj.target + (place.target if place else ()) + (target_word(past),)
    target += (target_word("not"),) if negated else ()
    words, target = _with_time(core, target, time, time_front)
    polarity = _flip(verb_polarity(past), negated)
    return Clause(Piece(words.words, words.tags, target), polarity, signature)


def report_clause(agent: Piece, verb: str, inner: Clause, signature: str = "") -> Clause:
    """ "agent said that <inner>" → "agent <inner> that said"; the inner clause's opinion."""
    words = english(agent, plain(verb, "that"), inner.piece)
    target = agent.target + inner.piece.target + (target_word("that"), target_word(verb))
    return Clause(Piece(words.words, words.tags, target), inner.polarity, signature)


def sentence_polarity(polarities: Sequence[int]) -> int:
    """The last clause with an opinion decides; 0 when no clause has one."""
    for p in reversed(polarities):
        if p:
            return p
    return 0


def normalize_word(word: str) -> list[str]:
    """One word's normalised spelling: numbers spelled out, abbreviations expanded, lower
    case; the full stop goes."""
    if word == ".":
        return []
    if word.isdigit():
        return number_words(int(word))
    return [ABBREVIATIONS.get(word, word).lower()]


def sentence_row(clauses: Sequence[Clause], connectors: Sequence[str]) -> dict[str, object]:
    """The corpus row of clauses joined by connectors ("but", "and"), with a full stop; its
    template is the first clause's signature."""
    if len(connectors) != len(clauses) - 1:
        raise ValueError("one connector between each two clauses")
    piece = clauses[0].piece
    for connector, clause in zip(connectors, clauses[1:], strict=True):
        piece = piece + plain(connector) + clause.piece
    piece = piece + plain(".", target=(".",))
    words = list(piece.words)
    words[0] = words[0][:1].upper() + words[0][1:]
    polarity = sentence_polarity([c.polarity for c in clauses])
    normalized = [n for w in words for n in normalize_word(w)]
    return {
        "text": " ".join(words),
        "sentiment": SENTIMENTS[polarity + 1],
        "tags": list(piece.tags),
        "translation": " ".join(t for t in piece.target if t),
        "normalized": " ".join(normalized),
        "template": clauses[0].signature,
    }


# ---------------------------------------------------------------------------------------------
# Drawing sentences


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _random_entity(rng: np.random.Generator, kind: str, clear: bool = True) -> Piece:
    """A random person ("Maria", "Maria Lopez", "Dr Lopez"), place or organisation ("Acme",
    "Acme Corp", "Bank of Lisbon"). `clear`: the slot tells people from places (an agent, after
    "in"); elsewhere names that are both ("Jordan") are not drawn alone."""
    u = rng.random()
    if kind == "PER":
        if u < 0.4:
            return person(_pick(rng, FIRST_NAMES if clear else _CLEAR_FIRST_NAMES))
        if u < 0.85:
            return person(_pick(rng, FIRST_NAMES), _pick(rng, LAST_NAMES))
        return person(None, _pick(rng, LAST_NAMES), _pick(rng, TITLES))
    if kind == "LOC":
        return entity(_pick(rng, PLACES if clear else _CLEAR_PLACES), "LOC")
    if u < 0.3:
        return entity(_pick(rng, COMPANIES), "ORG")
    if u < 0.8:
        return entity(f"{_pick(rng, COMPANIES)} {_pick(rng, COMPANY_SUFFIXES)}", "ORG")
    return entity(f"{_pick(rng, INSTITUTIONS)} of {_pick(rng, PLACES)}", "ORG")


def _random_noun_phrase(rng: np.random.Generator) -> Piece:
    adjective = _pick(rng, DESCRIPTIVE) if rng.random() < 0.5 else None
    return noun_phrase(_pick(rng, NOUNS), adjective, "a" if rng.random() < 0.2 else "the")


def _random_slot(
    rng: np.random.Generator, weights: dict[str, float], clear: bool
) -> tuple[Piece, str]:
    """A noun phrase ("NP") or an entity of a type, drawn with `weights` (summing to 1); and
    which it is. `clear`: as for `_random_entity`."""
    kinds, u = list(weights), rng.random()
    cumulative = np.cumsum(list(weights.values()))
    kind = kinds[min(int(np.searchsorted(cumulative, u, side="right")), len(kinds) - 1)]
    piece = _random_noun_phrase(rng) if kind == "NP" else _random_entity(rng, kind, clear)
    return piece, kind


def _random_place(rng: np.random.Generator) -> tuple[Piece | None, str]:
    u = rng.random()
    if u < 0.4:
        return None, "-"
    if u < 0.7:
        return prepositional("in", _random_entity(rng, "LOC")), "in"
    if u < 0.9:
        return prepositional("at", _random_entity(rng, "ORG")), "at"
    return prepositional("near", _random_entity(rng, "LOC")), "near"


def _random_time(rng: np.random.Generator) -> tuple[Piece | None, bool, str]:
    """A time phrase or none, whether it opens the clause, and its kind."""
    if rng.random() < 0.45:
        return None, False, "-"
    kind = _pick(rng, ("adverb", "last", "this", "on", "in", "for"))
    if kind == "adverb":
        time = time_phrase(kind, _pick(rng, ADVERBS))
    elif kind == "last":
        time = time_phrase(kind, _pick(rng, LAST_UNITS))
    elif kind == "this":
        time = time_phrase(kind, _pick(rng, THIS_UNITS))
    elif kind == "on":
        time = time_phrase(kind, _pick(rng, DAYS))
    elif kind == "in":
        time = time_phrase(kind, _pick(rng, MONTHS))
    else:
        time = time_phrase(kind, _pick(rng, [d[0] for d in DURATIONS]), int(rng.integers(2, 31)))
    front = bool(rng.random() < 0.5)
    return time, front, f"{kind}{'<' if front else '>'}"


def _random_adjective(rng: np.random.Generator, polarity: int) -> str:
    """A random adjective of the given opinion (+1, -1, 0)."""
    return _pick(
        rng, {1: POSITIVE_ADJECTIVES, -1: NEGATIVE_ADJECTIVES}.get(polarity, NEUTRAL_ADJECTIVES)
    )


def _random_verb(rng: np.random.Generator, polarity: int) -> tuple[str, str]:
    """A random verb (past, base) of the given opinion (+1, -1, 0)."""
    verbs = {1: POSITIVE_VERBS, -1: NEGATIVE_VERBS}.get(polarity, NEUTRAL_VERBS)
    return verbs[int(rng.integers(len(verbs)))]


def _random_clause(rng: np.random.Generator, polarity: int, report: bool = True) -> Clause:
    """A clause whose opinion (after negation) is `polarity`."""
    u = rng.random()
    negated = bool(rng.random() < 0.3)
    carrier = -polarity if negated else polarity
    if report and u < 0.15:
        agent, agent_kind = _random_slot(rng, {"PER": 0.8, "ORG": 0.2}, clear=True)
        inner = _random_clause(rng, polarity, report=False)
        said = _pick(rng, REPORT_VERBS)
        return report_clause(agent, said, inner, f"report/{agent_kind}/{inner.signature}")
    time, front, time_kind = _random_time(rng) if report else (None, False, "-")
    if u < 0.55:
        subject, subject_kind = _random_slot(
            rng, {"NP": 0.5, "PER": 0.2, "LOC": 0.15, "ORG": 0.15}, clear=False
        )
        place, place_kind = _random_place(rng) if subject_kind == "NP" else (None, "-")
        adjective = _random_adjective(rng, carrier)
        copula = "is" if time is None and rng.random() < 0.3 else "was"
        signature = f"cop/{subject_kind}/{place_kind}/{time_kind}"
        return copula_clause(
            subject, adjective, place=place, negated=negated, copula=copula, time=time,
            time_front=front, signature=signature,
        )  # fmt: skip
    agent, agent_kind = _random_slot(rng, {"PER": 0.7, "ORG": 0.3}, clear=True)
    obj, obj_kind = _random_slot(
        rng, {"NP": 0.55, "PER": 0.15, "LOC": 0.15, "ORG": 0.15}, clear=False
    )
    place, place_kind = _random_place(rng) if obj_kind in ("NP", "PER") else (None, "-")
    verb = _random_verb(rng, carrier)
    signature = f"verb/{agent_kind}/{obj_kind}/{place_kind}/{time_kind}"
    return verb_clause(
        agent, verb, obj, place=place, negated=negated, time=time, time_front=front,
        signature=signature,
    )  # fmt: skip


def _random_sentence(rng: np.random.Generator, label: int) -> dict[str, object]:
    """A row whose sentiment is `label` (-1, 0, +1)."""
    if rng.random() < 0.55:
        polarities = [label]
    elif label == 0:
        polarities = [0, 0]
    elif rng.random() < 0.25:
        polarities = [label, 0]
    else:
        polarities = [int(rng.integers(-1, 2)), label]
    clauses = [_random_clause(rng, p) for p in polarities]
    connectors = [_pick(rng, ("but", "and")) for _ in clauses[1:]]
    return sentence_row(clauses, connectors)


def first_entity(words: Sequence[str], tags: Sequence[str]) -> str:
    """The words of the first entity span ("" when there is none)."""
    out: list[str] = []
    for word, tag in zip(words, tags, strict=True):
        if out and not tag.startswith("I-"):
            break
        if tag.startswith("B-") or (out and tag.startswith("I-")):
            out.append(word)
    return " ".join(out)


def held_out(signature: str, name: str) -> bool:
    """Whether the pair (first clause's template, first entity) belongs to the test split."""
    return zlib.crc32(f"{signature}|{name}".encode()) % HOLD_OUT == 0


def _write_conll(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """Word and tag per line (tab-separated), a blank line after each sentence."""
    with path.open("w") as f:
        for row in rows:
            words = str(row["text"]).split()
            tags = row["tags"]
            assert isinstance(tags, list)
            f.writelines(f"{w}\t{t}\n" for w, t in zip(words, tags, strict=True))
            f.write("\n")


def make_text_corpus(
    out_dir: str | Path,
    rows: int = 4000,
    seed: int = 0,
    val_rows: int | None = None,
    test_rows: int | None = None,
) -> dict[str, Path]:
    """Write `rows` training sentences, `val_rows` (default rows // 8) validation and
    `test_rows` (default rows // 4) test sentences under `out_dir`: `corpus.jsonl` (all of them,
    one JSON object a line with the fields of `TEXT_FIELDS` and `split`: train / val / test),
    the same rows per split without `split` (`train.jsonl`, `val.jsonl`, `test.jsonl`) and each
    split's words and entity tags as CoNLL (`train.conll`, ...: word, tab, tag per line, a blank
    line after each sentence). Sentiments are balanced in each split; no sentence is in two
    splits. Returns the JSON lines files by name: corpus, train, val, test."""
    check_count("rows", rows, 3)
    sizes = {
        "train": rows,
        "val": rows // 8 if val_rows is None else val_rows,
        "test": rows // 4 if test_rows is None else test_rows,
    }
    for name, size in sizes.items():
        check_count(f"{name} rows", size, 0)
    out = prepare_folder(out_dir, [])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    paths: dict[str, Path] = {"corpus": out / "corpus.jsonl"}
    corpus: list[dict[str, object]] = []
    for split, size in sizes.items():
        labels = rng.permutation(np.arange(size) % 3) - 1
        table: list[dict[str, object]] = []
        for label in labels:
            while True:
                row = _random_sentence(rng, int(label))
                text = str(row["text"])
                words = text.split()
                tags = row["tags"]
                assert isinstance(tags, list)
                if (
                    held_out(str(row["template"]), first_entity(words, tags)) == (split == "test")
                    and MIN_WORDS <= len(words) <= MAX_WORDS
                    and text not in seen
                ):
                    break
            seen.add(text)
            table.append(row)
        paths[split] = out / f"{split}.jsonl"
        with paths[split].open("w") as f:
            f.writelines(json.dumps(row) + "\n" for row in table)
        _write_conll(out / f"{split}.conll", table)
        corpus += [{**row, "split": split} for row in table]
    with paths["corpus"].open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in corpus)
    return paths
