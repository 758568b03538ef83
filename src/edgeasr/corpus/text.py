"""Voice-assistant utterances from templates and entity lists.

The text side of the synthetic corpus. Every utterance is produced twice over: as the
*reference* (normalised: lowercase ``[a-z']`` words, single spaces) and as *segments* — the same
words split where a speaker would naturally pause ("call ... jonathan"). The pipeline synthesises
segments with silence between them, so the pause exists in the audio but never in the reference.
Numbers and times are spelled out in the template fillers themselves, so the TTS engine reads
exactly the reference words and no engine-specific text normalisation can drift from them.

Everything is driven by an explicit ``random.Random``; nothing touches global random state, so a
seed (plus an utterance index) fully determines the text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edgeasr.textnorm import ONES, normalize_text, number_to_words

# --------------------------------------------------------------------------------------------
# Entity lists
# --------------------------------------------------------------------------------------------


def _words(s: str) -> tuple[str, ...]:
    return tuple(w for w in s.split() if w)


def _lines(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.strip().split(",") if x.strip())


FIRST_NAMES: tuple[str, ...] = _words(
    """
    james john robert michael william david richard joseph thomas charles christopher daniel
    matthew anthony mark donald steven paul andrew joshua kenneth kevin brian george timothy
    ronald edward jason jeffrey ryan jacob gary nicholas eric jonathan stephen larry justin scott
    brandon benjamin samuel gregory alexander frank patrick raymond jack dennis jerry tyler aaron
    jose adam nathan henry douglas zachary peter kyle ethan walter noah jeremy christian keith
    roger terry gerald harold sean austin carl arthur lawrence dylan jesse jordan bryan billy joe
    bruce gabriel logan albert willie alan juan wayne elijah randy roy vincent ralph eugene russell
    bobby mason philip louis liam oliver lucas leo hugo oscar felix max theo arlo miles owen caleb
    isaac levi julian luke hudson ezra silas jasper rowan finn declan ronan callum angus hamish
    mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty
    margaret sandra ashley kimberly emily donna michelle carol amanda dorothy melissa deborah
    stephanie rebecca sharon laura cynthia kathleen amy angela shirley anna brenda pamela emma
    nicole helen samantha katherine christine debra rachel carolyn janet catherine maria heather
    diane ruth julie olivia joyce virginia victoria kelly lauren christina joan evelyn judith
    megan andrea cheryl hannah jacqueline martha gloria teresa ann sara madison frances kathryn
    janice jean abigail alice judy sophia grace denise amber doris marilyn danielle beverly
    isabella theresa diana natalie brittany charlotte marie kayla alexis lori ava mia harper
    chloe zoe lily ella nora hazel aurora violet stella maya ruby ivy freya isla poppy imogen
    priya aisha fatima yusuf omar ahmed ali hassan mei wei chen hiroshi yuki kenji sakura raj
    arjun ananya rohan diego carlos sofia lucia mateo valentina camila pablo elena ines tomas
    """
)

SURNAMES: tuple[str, ...] = _words(
    """
    smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez
    gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris
    sanchez clark ramirez lewis robinson walker young allen king wright scott torres hill flores
    green adams nelson baker hall rivera campbell mitchell carter roberts gomez phillips evans
    turner diaz parker cruz edwards collins reyes stewart morris morales murphy cook rogers
    gutierrez ortiz morgan cooper peterson bailey reed kelly howard ramos kim cox ward richardson
    watson brooks chavez wood james bennett gray mendoza ruiz hughes price alvarez castillo
    sanders patel myers long ross foster jimenez powell jenkins perry russell sullivan bell
    coleman butler henderson barnes fisher vasquez simmons romero jordan patterson alexander
    hamilton graham reynolds griffin wallace west cole hayes bryant gibson ellis stevens murray
    ford marshall owens mcdonald harrison kennedy wells hunt black palmer fox rose stone hunter
    """
)

# Long tail: real but uncommon names, sampled with low probability so the model sees each only
# a handful of times — the regime where contextual biasing is supposed to help.
RARE_NAMES: tuple[str, ...] = tuple(
    w
    for w in """
    abernathy balakrishnan castellanos delacroix eberhardt fairweather galbraith haverford
    ignatieff jablonski kaczmarek lindqvist mcallister nakamura oyelaran pemberton quintanilla
    radcliffe szabo thackeray ulrich vanderbilt wojcik xiong yamamoto zielinski achebe bartholomew
    cavendish dostoevsky einarsson fitzwilliam gallagher hendrickson iwasaki jovanovic kowalski
    lombardi mukherjee novak okonkwo petrovic quigley rasmussen sorensen tanaka underwood valente
    wexler yoshida zamora abramowitz bergstrom chaudhry dimitrov esposito ferreira gustafsson
    halvorsen ishikawa jankowski kuznetsov larsson moreau nikolaidis ostrowski papadopoulos
    rosenberg schwartz takahashi urquhart villanueva wainwright yankovic zimmerman aguilar
    bianchi contreras donnelly eriksen fujimoto grabowski hashemi ivanova kapoor lachance
    mahoney nieminen obradovic pellegrini rautenberg sandoval tremblay uchida vukovic whitfield
    ackerman bouchard cardenas dubois engstrom fontaine gerhardt hakimi ibrahim jaramillo kovacs
    lefebvre marchetti nakashima oconnell pacheco ramanathan salazar tamura vidal westbrook
    aldridge beaumont ciccone drummond espinoza falkenberg gorecki holloway illingworth
    jorgensen kirkpatrick lundqvist montgomery norby osei prendergast quinlan rothschild
    stroud tolliver ueda voss winslow
    """.split()
)

# Never generated into train/dev/test text: reserved for biasing and model-update experiments
# ("teach the device a new name"). People and places are kept apart so held-out utterances can
# put each into a template where it makes sense.
HELD_OUT_PEOPLE: tuple[str, ...] = _words(
    """
    ledecky kalisz przybylski nowakowska brzezinski czajkowski kowalczyk grzegorz zbigniew
    thorvaldsen sigurdsson oyelowo achterberg vandersloot antetokounmpo wembanyama szoboszlai
    kvaratskhelia haaland odegaard dembele jokic doncic okafor adebayo
    """
)
HELD_OUT_PLACES: tuple[str, ...] = _words(
    "wroclaw ljubljana tbilisi ouagadougou reykjavik szczecin taormina nuuk"
)
HELD_OUT_NAMES: tuple[str, ...] = HELD_OUT_PEOPLE + HELD_OUT_PLACES

CITIES: tuple[str, ...] = _lines(
    """
    london, paris, berlin, madrid, rome, tokyo, new york, los angeles, chicago, boston, seattle,
    san francisco, denver, austin, dallas, houston, miami, atlanta, toronto, vancouver, montreal,
    sydney, melbourne, auckland, dublin, edinburgh, glasgow, manchester, liverpool, amsterdam,
    brussels, vienna, prague, budapest, warsaw, krakow, stockholm, oslo, copenhagen, helsinki,
    lisbon, barcelona, milan, venice, athens, istanbul, cairo, nairobi, lagos, cape town,
    mumbai, delhi, bangalore, singapore, hong kong, shanghai, beijing, seoul, bangkok, manila,
    mexico city, lima, bogota, santiago, buenos aires, rio de janeiro, sao paulo, phoenix,
    portland, nashville, new orleans, minneapolis, detroit, philadelphia, pittsburgh, honolulu,
    anchorage, salt lake city, las vegas, san diego, orlando, cleveland, zurich, geneva, munich,
    hamburg, lyon, marseille, porto, seville, florence, naples, bristol, cardiff, belfast
    """
)

ROOMS: tuple[str, ...] = _lines(
    """
    kitchen, living room, bedroom, bathroom, office, hallway, garage, basement, dining room,
    nursery, guest room, study, attic, porch, garden, laundry room, kids room, master bedroom
    """
)

DEVICES: tuple[str, ...] = _lines(
    """
    lights, lamp, ceiling light, fan, heater, air conditioner, tv, television, radio, speaker,
    coffee maker, kettle, dishwasher, washing machine, dryer, oven, microwave, thermostat,
    air purifier, humidifier, vacuum, robot vacuum, blinds, curtains, projector, printer,
    sprinklers, fireplace, night light, desk lamp, string lights, dehumidifier, toaster
    """
)

SONGS: tuple[str, ...] = _lines(
    """
    bohemian rhapsody, hotel california, yesterday, imagine, hey jude, let it be, wonderwall,
    smells like teen spirit, billie jean, thriller, like a rolling stone, purple rain,
    sweet child of mine, stairway to heaven, dancing queen, respect, superstition, hallelujah,
    shape of you, blinding lights, bad guy, rolling in the deep, someone like you, halo,
    uptown funk, happy, shake it off, blank space, anti hero, levitating, as it was,
    watermelon sugar, drivers license, good four you, old town road, despacito, believer,
    thunder, radioactive, viva la vida, yellow, clocks, fix you, mr brightside, seven nation army,
    take on me, africa, come together, here comes the sun, let it go, dancing in the moonlight,
    la vie en rose, fly me to the moon, my way, moon river, over the rainbow, stand by me,
    lean on me, wonderful world, heroes, space oddity, under pressure, dont stop me now,
    karma police, creep, no surprises, black hole sun, zombie, linger, dreams, landslide,
    go your own way, the chain, jolene, nine to five, ring of fire, hurt, the sound of silence,
    mrs robinson, bridge over troubled water, vienna, piano man, tiny dancer, rocket man
    """
)

ARTISTS: tuple[str, ...] = _lines(
    """
    the beatles, queen, adele, beyonce, taylor swift, ed sheeran, drake, rihanna, coldplay,
    radiohead, nirvana, pearl jam, the rolling stones, led zeppelin, pink floyd, david bowie,
    elton john, billy joel, bruce springsteen, bob dylan, johnny cash, dolly parton, madonna,
    prince, michael jackson, stevie wonder, aretha franklin, whitney houston, mariah carey,
    harry styles, dua lipa, billie eilish, olivia rodrigo, the weeknd, bruno mars, lady gaga,
    kendrick lamar, kanye west, eminem, the cranberries, fleetwood mac, abba, the killers,
    arctic monkeys, the strokes, daft punk, massive attack, portishead, bjork, sade, norah jones,
    frank sinatra, ella fitzgerald, louis armstrong, miles davis, john coltrane, nina simone,
    bob marley, simon and garfunkel, the police, u two, oasis, blur, muse, the cure, joy division,
    lorde, sia, shakira, bad bunny, rosalia, stromae, florence and the machine, hozier, lizzo
    """
)

GENRES: tuple[str, ...] = _lines(
    """
    jazz, classical music, rock, pop, hip hop, country, blues, reggae, lo fi, chill music,
    workout music, relaxing music, folk, metal, electronic music, dance music, soul, funk,
    indie rock, ambient music, piano music, christmas music, the news, white noise, rain sounds
    """
)

SHOPPING_ITEMS: tuple[str, ...] = _lines(
    """
    milk, eggs, bread, butter, cheese, apples, bananas, oranges, coffee, tea, sugar, flour, rice,
    pasta, tomatoes, onions, garlic, potatoes, carrots, chicken, olive oil, yogurt, cereal,
    orange juice, paper towels, toilet paper, dish soap, laundry detergent, toothpaste, shampoo,
    batteries, light bulbs, cat food, dog food, avocados, spinach, lemons, strawberries,
    peanut butter, honey, salt, pepper, chocolate, ice cream, sparkling water, trash bags
    """
)

TEAMS: tuple[str, ...] = _lines(
    """
    the lakers, the celtics, the warriors, the bulls, the knicks, the yankees, the red sox,
    the dodgers, the cubs, the patriots, the cowboys, the packers, the eagles, the chiefs,
    arsenal, chelsea, liverpool, manchester united, manchester city, tottenham, real madrid,
    barcelona, bayern munich, juventus, the giants, the jets, the rangers, the maple leafs,
    the seahawks, the broncos, the raiders, the mets, the braves, the astros, the heat
    """
)

DAYS: tuple[str, ...] = _lines(
    """
    today, tomorrow, tonight, this weekend, on monday, on tuesday, on wednesday, on thursday,
    on friday, on saturday, on sunday, next week, this afternoon, this evening, tomorrow morning
    """
)

WEEKDAYS: tuple[str, ...] = _words("monday tuesday wednesday thursday friday saturday sunday")

TASKS: tuple[str, ...] = _lines(
    """
    call the dentist, pay the rent, water the plants, take out the trash, pick up the kids,
    buy a birthday present, book the flights, renew my passport, feed the cat, walk the dog,
    take my medicine, send the report, check the mail, charge my phone, call my mother,
    clean the kitchen, return the library books, pick up the dry cleaning, submit the form,
    cancel the subscription, start the laundry, buy more coffee, back up my laptop
    """
)

APPS: tuple[str, ...] = _lines(
    "the camera, the calendar, maps, settings, the calculator, my email, the music app, "
    "the weather app, my notes, the photos, the clock, messages, the browser"
)

SPORTS_STATS: tuple[str, ...] = _lines(
    "score, result, schedule, next game, standings, highlights, starting lineup"
)

# --------------------------------------------------------------------------------------------
# Fillers
# --------------------------------------------------------------------------------------------

Filler = Callable[[random.Random], str]


def _pick(seq: Sequence[str]) -> Filler:
    return lambda rng: rng.choice(seq)


def _contact(rng: random.Random) -> str:
    """A person to call or message: mostly common names, a long tail of rare surnames."""
    r = rng.random()
    if r < 0.45:
        return rng.choice(FIRST_NAMES)
    if r < 0.75:
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
    if r < 0.85:
        return rng.choice(
            (
                "mom",
                "dad",
                "grandma",
                "grandpa",
                "my wife",
                "my husband",
                "my sister",
                "my brother",
                "the office",
                "my boss",
                "doctor " + rng.choice(SURNAMES),
            )
        )
    if r < 0.95:
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(RARE_NAMES)}"
    return rng.choice(RARE_NAMES)


def _number(lo: int, hi: int) -> Filler:
    return lambda rng: number_to_words(rng.randint(lo, hi))


def _clock_time(rng: random.Random) -> str:
    """A clock time as people say it: "seven", "seven thirty", "seven oh five", "half past six"."""
    hour = number_to_words(rng.randint(1, 12))
    style = rng.random()
    if style < 0.2:
        t = f"{hour} o'clock"
    elif style < 0.3:
        t = f"{rng.choice(('quarter past', 'half past', 'quarter to'))} {hour}"
    elif style < 0.45:
        t = hour
    else:
        minute = rng.choice((5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, rng.randint(1, 59)))
        t = (
            f"{hour} oh {number_to_words(minute)}"
            if minute < 10
            else (f"{hour} {number_to_words(minute)}")
        )
    if rng.random() < 0.3:
        t += " " + rng.choice(("in the morning", "in the evening", "at night", "p m", "a m"))
    return t


def _duration(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.55:
        n = rng.choice((1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 45, rng.randint(1, 90)))
        return f"{number_to_words(n)} minute" + ("s" if n != 1 else "")
    if r < 0.7:
        n = rng.choice((10, 15, 20, 30, 45, 90, rng.randint(5, 59)))
        return f"{number_to_words(n)} seconds"
    if r < 0.85:
        n = rng.randint(1, 5)
        return f"{number_to_words(n)} hour" + ("s" if n != 1 else "")
    return rng.choice(
        (
            "an hour",
            "half an hour",
            "a minute",
            "an hour and a half",
            "a quarter of an hour",
            "one hour and ten minutes",
        )
    )


def _phone_number(rng: random.Random) -> str:
    digits = [ONES[rng.randint(0, 9)] for _ in range(rng.choice((3, 7, 10)))]
    return " ".join("oh" if d == "zero" and rng.random() < 0.5 else d for d in digits)


FILLERS: dict[str, Filler] = {
    "contact": _contact,
    "first": _pick(FIRST_NAMES),
    "city": _pick(CITIES),
    "room": _pick(ROOMS),
    "device": _pick(DEVICES),
    "song": _pick(SONGS),
    "artist": _pick(ARTISTS),
    "genre": _pick(GENRES),
    "item": _pick(SHOPPING_ITEMS),
    "team": _pick(TEAMS),
    "day": _pick(DAYS),
    "weekday": _pick(WEEKDAYS),
    "task": _pick(TASKS),
    "app": _pick(APPS),
    "stat": _pick(SPORTS_STATS),
    "time": _clock_time,
    "duration": _duration,
    "percent": lambda rng: number_to_words(
        rng.choice((10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100, rng.randint(1, 100)))
    ),
    "level": _number(1, 10),
    "temp": _number(60, 80),
    "celsius": _number(16, 28),
    "count": _number(2, 12),
    "bignum": _number(20, 9999),
    "small": _number(2, 20),
    "phone": _phone_number,
}

# --------------------------------------------------------------------------------------------
# Templates. " | " marks a natural pause: spoken as silence, absent from the reference.
# --------------------------------------------------------------------------------------------

TEMPLATES: tuple[str, ...] = (
    # calls and messages
    "call {contact}",
    "call | {contact}",
    "please call {contact} on speaker",
    "call {contact} | on mobile",
    "phone {contact}",
    "dial {phone}",
    "video call {contact}",
    "text {contact} that i'm running late",
    "send a message to {contact} | saying i'll be there in {duration}",
    "send a message to {contact}",
    "tell {contact} | i'm on my way",
    "read my messages from {contact}",
    "did {contact} call me",
    "what's {contact}'s phone number",
    "email {contact} about the meeting {day}",
    # timers, alarms, reminders
    "set a timer for {duration}",
    "set a timer | for {duration}",
    "start a {duration} timer",
    "how much time is left on my timer",
    "cancel the timer",
    "wake me up at {time}",
    "set an alarm for {time}",
    "set an alarm for {time} {day}",
    "set an alarm | for {time}",
    "turn off my {time} alarm",
    "remind me to {task} {day}",
    "remind me to {task} at {time}",
    "remind me in {duration} to {task}",
    "remind me | to {task}",
    "what are my reminders for {day}",
    # smart home
    "turn on the {device}",
    "turn off the {device}",
    "turn on the {room} {device}",
    "turn off the {device} in the {room}",
    "switch off the {room} {device}",
    "dim the {room} lights to {percent} percent",
    "set the thermostat to {temp} degrees",
    "set the {room} to {celsius} degrees",
    "turn the heating | up to {celsius} degrees",
    "is the {device} on",
    "open the blinds in the {room}",
    "lock the front door",
    "start the {device}",
    # music and media
    "play {song}",
    "play {song} by {artist}",
    "play something by {artist}",
    "play | {artist}",
    "play some {genre}",
    "play {genre} in the {room}",
    "shuffle my {artist} playlist",
    "add {song} to my playlist",
    "who sings {song}",
    "skip this song",
    "turn the volume up to {level}",
    "set the volume to {level}",
    "volume {level}",
    "turn it down | a little",
    "pause the music",
    "resume {song}",
    # weather, time, travel
    "what's the weather in {city}",
    "what's the weather like {day}",
    "what's the weather | in {city} {day}",
    "will it rain in {city} {day}",
    "do i need an umbrella {day}",
    "how hot will it be in {city}",
    "what time is it in {city}",
    "how long does it take to drive to {city}",
    "navigate to {city}",
    "directions to | {city}",
    "how far is {city} from {city}",
    "book a flight to {city} for {weekday}",
    # shopping, lists
    "add {item} to my shopping list",
    "add {item} and {item} to the shopping list",
    "put {item} | on my list",
    "remove {item} from my shopping list",
    "what's on my shopping list",
    "order more {item}",
    # calendar and questions
    "what's on my calendar {day}",
    "schedule a meeting with {contact} {day} at {time}",
    "cancel my meeting with {contact}",
    "when is my next appointment",
    "what is {small} times {small}",
    "what's {bignum} plus {bignum}",
    "convert {count} cups to millilitres",
    "how many ounces in {count} pounds",
    "what's the {stat} of {team}",
    "what was the {stat} of the game against {team}",
    "when do {team} play next",
    "did {team} win last night",
    "who won the game between {team} and {team}",
    "open {app}",
    "take a picture",
    "what's the news {day}",
    "tell me a joke",
    "how do you spell {first}",
    "find a restaurant near me",
    "find coffee shops in {city}",
    "navigate to {contact}'s house",
)

# Templates whose slots hold a person or a place: the only ones used for held-out names.
_PERSON_SLOTS = ("contact",)
_PLACE_SLOTS = ("city",)
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Utterance:
    """One generated utterance.

    ``segments`` are the words to synthesise, split where the speaker pauses; ``text`` is the
    normalised reference (segments joined, no pause marker).
    """

    text: str
    segments: tuple[str, ...]
    template: int

    @property
    def tts_text(self) -> str:
        """Single-string form for engines called once per utterance (a comma hints the pause)."""
        return ", ".join(self.segments)


def _fill(template: str, rng: random.Random, override: dict[str, Filler] | None) -> str:
    fillers = {**FILLERS, **(override or {})}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in fillers:
            raise KeyError(f"template slot {{{name}}} has no filler")
        return fillers[name](rng)

    return _SLOT.sub(sub, template)


def make_utterance(
    template: str, rng: random.Random, override: dict[str, Filler] | None, template_idx: int
) -> Utterance:
    """Fill ``template`` (``override`` adds or replaces slot fillers) and split it at pauses;
    ``template_idx`` is its index in :data:`TEMPLATES`, or -1 for templates from elsewhere."""
    filled = _fill(template, rng, override)
    segments = tuple(normalize_text(p) for p in filled.split("|"))
    segments = tuple(s for s in segments if s)
    return Utterance(text=" ".join(segments), segments=segments, template=template_idx)


def _make(template_idx: int, rng: random.Random, override: dict[str, Filler] | None) -> Utterance:
    return make_utterance(TEMPLATES[template_idx], rng, override, template_idx)


def generate_utterance(rng: random.Random) -> Utterance:
    """One utterance from the regular (train/dev/test) distribution; never a held-out name."""
    return _make(rng.randrange(len(TEMPLATES)), rng, None)


def held_out_generator(names: Sequence[str]) -> Callable[[random.Random], Utterance]:
    """Utterances of the regular person/place templates, each with one of ``names``."""
    people = [n for n in names if n not in HELD_OUT_PLACES]
    places = [n for n in names if n in HELD_OUT_PLACES]
    person_tpl = [i for i, t in enumerate(TEMPLATES) if any(f"{{{s}}}" in t for s in _PERSON_SLOTS)]
    place_tpl = [i for i, t in enumerate(TEMPLATES) if any(f"{{{s}}}" in t for s in _PLACE_SLOTS)]

    def person(rng: random.Random) -> str:
        name = rng.choice(people)
        return name if rng.random() < 0.5 else f"{rng.choice(FIRST_NAMES)} {name}"

    def gen(rng: random.Random) -> Utterance:
        if places and (not people or rng.random() < len(places) / len(names)):
            return _make(rng.choice(place_tpl), rng, {"city": _pick(places)})
        return _make(rng.choice(person_tpl), rng, {"contact": person})

    return gen


def generate_utterances(
    n: int, seed: int, names: Sequence[str] | None = None, stream: str = "text"
) -> list[Utterance]:
    """Generate ``n`` utterances deterministically from ``seed``.

    With ``names`` (e.g. :data:`HELD_OUT_NAMES`) every utterance contains one of those names in a
    person or place slot: the material for biasing and "learn a new name" update experiments.
    Utterance ``i`` depends only on (seed, stream, i), so prefixes are stable as ``n`` grows.
    """
    names = [normalize_text(x) for x in names] if names else None
    gen = held_out_generator(names) if names else generate_utterance
    return [gen(utterance_rng(seed, stream, i)) for i in range(n)]


def utterance_rng(seed: int, stream: str, index: int) -> random.Random:
    """Independent RNG per (seed, stream, index); string seeding is stable across processes."""
    return random.Random(f"edgeasr:{seed}:{stream}:{index}")


def vocabulary() -> set[str]:
    """Every word the regular generator can emit (for checks that held-out names stay out)."""
    words: set[str] = set()
    sources: Iterable[Sequence[str]] = (
        FIRST_NAMES,
        SURNAMES,
        RARE_NAMES,
        CITIES,
        ROOMS,
        DEVICES,
        SONGS,
        ARTISTS,
        GENRES,
        SHOPPING_ITEMS,
        TEAMS,
        DAYS,
        WEEKDAYS,
        TASKS,
        APPS,
        SPORTS_STATS,
    )
    for seq in sources:
        for entry in seq:
            words.update(normalize_text(entry).split())
    for t in TEMPLATES:
        words.update(normalize_text(_SLOT.sub(" ", t)).split())
    return words


# Spelling material for made-up surnames (:func:`pseudo_names`): onsets, vowels and codas of
# several European orthographies, and endings typical of surnames, so the names look like the
# contact names a biasing module must handle (Slavic, Nordic, Greek, Italian, ...) without being
# any of the real names the eval sets use.
_ONSETS = _words(
    "b br ch cz d dr f g gr h j k kr kv l m n p pr r s sh st sz t tr v w z zb zd pf th kh"
)
_VOWELS = _words("a e i o u y aa ei ou ie ia io ue")
_CODAS = _words("- - - - n r l s k t m z rn rk st sk lt nd")
_ENDINGS = _words(
    "ski ska wicz czyk enko ovic sson sen berg stad oulos akis elli etti ino ez ard mann dze shvili"
    " ova ek ak ic ko"
)


def pseudo_names(n: int, seed: int) -> tuple[str, ...]:
    """``n`` distinct made-up surnames ("zdrovicz", "kaelstad"), deterministic for ``seed``.

    Training material for neural biasing (:mod:`edgeasr.train.biaser`): a biasing module must
    learn to follow *any* spelling in a contact list, so it is trained on names that neither the
    acoustic model nor the eval sets have seen. Never a word of :func:`vocabulary` or of
    :data:`HELD_OUT_NAMES`; letters a-z only, so every TTS engine reads them by its rules.
    """
    rng = random.Random(f"edgeasr-pseudo-names:{seed}")
    taken = vocabulary() | set(HELD_OUT_NAMES)
    out: dict[str, None] = {}
    while len(out) < n:
        parts = []
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            coda = rng.choice(_CODAS)
            parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS) + ("" if coda == "-" else coda))
        if rng.random() < 0.6:
            parts.append(rng.choice(_ENDINGS))
        name = "".join(parts)
        if 4 <= len(name) <= 12 and name not in taken:
            out[name] = None
    return tuple(out)


def _check_held_out_disjoint() -> None:
    clash = set(HELD_OUT_NAMES) & vocabulary()
    if clash:  # a programming error in the lists above; fail loudly at import
        raise RuntimeError(f"held-out names leak into the training vocabulary: {sorted(clash)}")


_check_held_out_disjoint()
