"""How to say each AudioSet class in a caption.

One row per class the composer should be able to name well:

    display name | subject | verb phrase (base form) | family | flags | noun phrase

- subject + verb give a sentence ("a dog" + "bark" → "a dog barks"); with no subject the class is a
  source-ambiguous sound and is named by its noun phrase ("a thud", default: the verb's -ing form).
- family groups near-synonyms (Dog, Bark, Bow-wow, Yip → dog): only the strongest member is said.
- flags: g = generic parent (dropped when a more specific class of its group is heard),
         p = plural subject, f = filler (never said unless it is the whole story),
         c = context (room / outdoors), said as a place, not as a sound.
Classes not listed fall back to their display name (see `entry`).
The groups below are the AudioSet top-level branches, by class index (YAMNet keeps the ontology order).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

GROUPS = [  # (first index, last index, group)
    (0, 66, "human"), (67, 131, "animal"), (132, 276, "music"), (277, 293, "nature"),
    (294, 347, "vehicle"), (348, 381, "domestic"), (382, 397, "alarm"), (398, 411, "mechanism"),
    (412, 419, "tools"), (420, 430, "explosion"), (431, 437, "material"), (438, 450, "liquid"),
    (451, 493, "misc"), (494, 520, "ambience"),
]

TABLE = """
Speech | someone | speak | speech |
Child speech, kid speaking | a child | speak | speech |
Conversation | people | talk | speech | p
Narration, monologue | a narrator | speak | speech |
Babbling | a baby | babble | baby |
Speech synthesizer | a synthesized voice | speak | speech |
Shout | someone | shout | shout |
Bellow | someone | bellow | shout |
Whoop | someone | whoop | shout |
Yell | someone | yell | shout |
Children shouting | children | shout | shout | p
Screaming | someone | scream | scream |
Whispering | someone | whisper | whisper |
Laughter | someone | laugh | laugh |
Baby laughter | a baby | laugh | laugh |
Giggle | someone | giggle | laugh |
Snicker | someone | snicker | laugh |
Belly laugh | someone | laugh heartily | laugh |
Chuckle, chortle | someone | chuckle | laugh |
Crying, sobbing | someone | cry | cry |
Baby cry, infant cry | a baby | cry | cry |
Whimper | someone | whimper | cry |
Wail, moan | someone | moan | cry |
Sigh | someone | sigh | sigh |
Singing | someone | sing | singing |
Choir | a choir | sing | singing |
Yodeling | someone | yodel | singing |
Chant | voices | chant | singing | p
Mantra | voices | chant a mantra | singing | p
Child singing | a child | sing | singing |
Synthetic singing | a synthetic voice | sing | singing |
Rapping | someone | rap | singing |
Humming | someone | hum | humming |
Groan | someone | groan | groan |
Grunt | someone | grunt | groan |
Whistling | someone | whistle | whistling |
Breathing | someone | breathe heavily | breathing |
Wheeze | someone | wheeze | breathing |
Snoring | someone | snore | snoring |
Gasp | someone | gasp | breathing |
Pant | someone | pant | breathing |
Snort | someone | snort | breathing |
Cough | someone | cough | cough |
Throat clearing | someone | clear their throat | cough |
Sneeze | someone | sneeze | sneeze |
Sniff | someone | sniff | sniff |
Run | someone | run | footsteps |
Shuffle | feet | shuffle | footsteps | p
Walk, footsteps | footsteps | pass | footsteps | p | footsteps
Chewing, mastication | someone | chew food | eating |
Biting | someone | bite into food | eating |
Gargling | someone | gargle | gargle |
Stomach rumble | a stomach | rumble | stomach |
Burping, eructation | someone | burp | burp |
Hiccup | someone | hiccup | hiccup |
Fart | someone | fart | fart |
Hands | hands | move | hands | pg
Finger snapping | fingers | snap | clap | p
Clapping | someone | clap | clap |
Heart sounds, heartbeat | a heart | beat | heart |
Heart murmur | a heart | murmur | heart |
Cheering | a crowd | cheer | crowd |
Applause | an audience | applaud | crowd |
Chatter | people | chatter | crowd | p
Crowd | a crowd | murmur | crowd |
Hubbub, speech noise, speech babble | people | talk in the background | crowd | p | the babble of voices
Children playing | children | play | crowd | p
Animal | an animal | call | animal | g
Domestic animals, pets | a pet | make noises | animal | g
Dog | a dog | bark | dog |
Bark | a dog | bark | dog |
Yip | a small dog | yip | dog |
Howl | a dog | howl | dog |
Bow-wow | a dog | bark | dog |
Growling | a dog | growl | dog |
Whimper (dog) | a dog | whimper | dog |
Cat | a cat | meow | cat |
Purr | a cat | purr | cat |
Meow | a cat | meow | cat |
Hiss | air | hiss | hiss | | a hiss
Caterwaul | a cat | yowl | cat |
Livestock, farm animals, working animals | farm animals | call | livestock | pg
Horse | a horse | neigh | horse |
Clip-clop | hooves | clip-clop | horse | p | hooves clip-clopping
Neigh, whinny | a horse | neigh | horse |
Cattle, bovinae | a cow | moo | cow |
Moo | a cow | moo | cow |
Cowbell | a cowbell | clank | cowbell |
Pig | a pig | grunt | pig |
Oink | a pig | oink | pig |
Goat | a goat | bleat | goat |
Bleat | a sheep | bleat | sheep |
Sheep | a sheep | bleat | sheep |
Fowl | poultry | cluck | chicken | g
Chicken, rooster | a chicken | cluck | chicken |
Cluck | a hen | cluck | chicken |
Crowing, cock-a-doodle-doo | a rooster | crow | chicken |
Turkey | a turkey | gobble | turkey |
Gobble | a turkey | gobble | turkey |
Duck | a duck | quack | duck |
Quack | a duck | quack | duck |
Goose | a goose | honk | goose |
Honk | a goose | honk | goose |
Wild animals | a wild animal | call | animal | g
Roaring cats (lions, tigers) | a lion | roar | lion |
Roar | an animal | roar | lion |
Bird | a bird | sing | bird |
Bird vocalization, bird call, bird song | a bird | sing | bird |
Chirp, tweet | a bird | chirp | bird |
Squawk | a bird | squawk | bird |
Pigeon, dove | a pigeon | coo | pigeon |
Coo | a pigeon | coo | pigeon |
Crow | a crow | caw | crow |
Caw | a crow | caw | crow |
Owl | an owl | hoot | owl |
Hoot | an owl | hoot | owl |
Bird flight, flapping wings | wings | flap | bird | p
Canidae, dogs, wolves | a wolf | howl | dog | g
Rodents, rats, mice | a mouse | squeak | rodent |
Mouse | a mouse | squeak | rodent |
Patter | small feet | patter | patter | p | pattering
Insect | insects | buzz | insect | p
Cricket | crickets | chirp | insect | p
Mosquito | a mosquito | whine | insect |
Fly, housefly | a fly | buzz | insect |
Buzz | something | buzz | buzz | | buzzing
Bee, wasp, etc. | a bee | buzz | insect |
Frog | a frog | croak | frog |
Croak | a frog | croak | frog |
Snake | a snake | hiss | snake |
Rattle | something | rattle | rattle | | rattling
Whale vocalization | a whale | sing | whale |
Music | music | play | music | g
Musical instrument | an instrument | play | music | g
Plucked string instrument | a plucked string instrument | play | guitar | g
Guitar | a guitar | play | guitar |
Electric guitar | an electric guitar | play | guitar |
Bass guitar | a bass guitar | play | bass |
Acoustic guitar | an acoustic guitar | play | guitar |
Steel guitar, slide guitar | a slide guitar | play | guitar |
Tapping (guitar technique) | a guitar | play | guitar |
Strum | a guitar | strum | guitar |
Banjo | a banjo | play | banjo |
Sitar | a sitar | play | sitar |
Mandolin | a mandolin | play | mandolin |
Zither | a zither | play | zither |
Ukulele | a ukulele | play | ukulele |
Keyboard (musical) | a keyboard | play | keyboard | g
Piano | a piano | play | piano |
Electric piano | an electric piano | play | piano |
Organ | an organ | play | organ |
Electronic organ | an electronic organ | play | organ |
Hammond organ | a Hammond organ | play | organ |
Synthesizer | a synthesizer | play | synth |
Sampler | a sampler | play | synth |
Harpsichord | a harpsichord | play | harpsichord |
Percussion | percussion | play | drums | g
Drum kit | a drum kit | play | drums |
Drum machine | a drum machine | play a beat | drums |
Drum | a drum | beat | drums |
Snare drum | a snare drum | rattle | drums |
Rimshot | a drummer | play rimshots | drums |
Drum roll | a drummer | play a roll | drums |
Bass drum | a bass drum | thump | drums |
Timpani | timpani | rumble | drums | p
Tabla | a tabla | play | tabla |
Cymbal | a cymbal | crash | cymbal |
Hi-hat | a hi-hat | tick | cymbal |
Wood block | a wood block | knock | woodblock |
Tambourine | a tambourine | jingle | tambourine |
Rattle (instrument) | a rattle | shake | shaker |
Maraca | maracas | shake | shaker | p
Gong | a gong | ring | gong |
Tubular bells | tubular bells | ring | bell | p
Mallet percussion | mallet percussion | play | mallet | g
Marimba, xylophone | a xylophone | play | mallet |
Glockenspiel | a glockenspiel | play | mallet |
Vibraphone | a vibraphone | play | mallet |
Steelpan | a steel drum | play | steelpan |
Orchestra | an orchestra | play | orchestra |
Brass instrument | a brass instrument | play | brass | g
French horn | a French horn | play | horn |
Trumpet | a trumpet | play | trumpet |
Trombone | a trombone | play | trombone |
Bowed string instrument | a bowed string instrument | play | strings | g
String section | strings | play | strings | p
Violin, fiddle | a violin | play | violin |
Pizzicato | plucked strings | play | violin | p
Cello | a cello | play | cello |
Double bass | a double bass | play | double bass |
Wind instrument, woodwind instrument | a woodwind instrument | play | woodwind | g
Flute | a flute | play | flute |
Saxophone | a saxophone | play | saxophone |
Clarinet | a clarinet | play | clarinet |
Harp | a harp | play | harp |
Bell | a bell | ring | bell | g
Church bell | church bells | ring | church bell | p
Jingle bell | sleigh bells | jingle | jingle bell | p
Bicycle bell | a bicycle bell | ring | bicycle bell |
Tuning fork | a tuning fork | ring | tuning fork |
Chime | a chime | ring | chime |
Wind chime | wind chimes | tinkle | chime | p
Change ringing (campanology) | church bells | peal | church bell | p
Harmonica | a harmonica | play | harmonica |
Accordion | an accordion | play | accordion |
Bagpipes | bagpipes | play | bagpipes | p
Didgeridoo | a didgeridoo | drone | didgeridoo |
Shofar | a shofar | blow | shofar |
Theremin | a theremin | wail | theremin |
Singing bowl | a singing bowl | ring | singing bowl |
Scratching (performance technique) | a DJ | scratch a record | scratching |
Song | a song | play | genre | g
Background music | background music | play | genre | g
Theme music | theme music | play | genre | g
Jingle (music) | a jingle | play | genre | g
Soundtrack music | soundtrack music | play | genre | g
Video game music | video game music | play | genre | g
Dance music | dance music | play | genre | g
Happy music | upbeat music | play | genre | g
Sad music | sad music | play | genre | g
Tender music | gentle music | play | genre | g
Exciting music | exciting music | play | genre | g
Angry music | aggressive music | play | genre | g
Scary music | eerie music | play | genre | g
Wind | wind | blow | wind |
Rustling leaves | leaves | rustle | leaves | p
Wind noise (microphone) | wind | buffet the microphone | wind |
Thunderstorm | a thunderstorm | rage | thunder |
Thunder | thunder | rumble | thunder |
Water | water | splash | water | g
Rain | rain | fall | rain |
Raindrop | raindrops | fall | rain | p
Rain on surface | rain | patter on a surface | rain |
Stream | a stream | babble | stream |
Waterfall | a waterfall | roar | stream |
Ocean | the sea | roar | ocean |
Waves, surf | waves | crash | ocean | p
Steam | steam | hiss | steam |
Gurgling | water | gurgle | gurgle |
Fire | a fire | crackle | fire |
Crackle | something | crackle | crackle | | crackling
Vehicle | a vehicle | rumble | vehicle | g
Boat, Water vehicle | a boat | motor along | boat |
Sailboat, sailing ship | a sailboat | creak | boat |
Rowboat, canoe, kayak | oars | splash | boat | p
Motorboat, speedboat | a motorboat | roar | boat |
Ship | a ship | rumble | boat |
Motor vehicle (road) | a motor vehicle | drive by | car | g
Car | a car | drive by | car |
Vehicle horn, car horn, honking | a car horn | honk | car horn |
Toot | a horn | toot | car horn |
Car alarm | a car alarm | blare | car alarm |
Power windows, electric windows | a power window | whir | car |
Skidding | tires | skid | tires | p
Tire squeal | tires | squeal | tires | p
Car passing by | a car | pass by | car |
Race car, auto racing | a race car | roar past | car |
Truck | a truck | rumble | truck |
Air brake | air brakes | hiss | truck | p
Air horn, truck horn | an air horn | blast | car horn |
Reversing beeps | a reversing truck | beep | truck |
Ice cream truck, ice cream van | an ice cream van | play its tune | truck |
Bus | a bus | rumble | bus |
Emergency vehicle | an emergency vehicle | sound its siren | siren |
Police car (siren) | a police siren | wail | siren |
Ambulance (siren) | an ambulance siren | wail | siren |
Fire engine, fire truck (siren) | a fire engine siren | wail | siren |
Motorcycle | a motorcycle | roar | motorcycle |
Traffic noise, roadway noise | traffic | rumble | traffic |
Rail transport | a train | rumble | train | g
Train | a train | rumble past | train |
Train whistle | a train whistle | blow | train |
Train horn | a train horn | blare | train |
Railroad car, train wagon | train cars | clatter | train | p
Train wheels squealing | train wheels | squeal | train | p
Subway, metro, underground | a subway train | rumble | train |
Aircraft | an aircraft | fly over | aircraft | g
Aircraft engine | an aircraft engine | drone | aircraft |
Jet engine | a jet engine | roar | aircraft |
Propeller, airscrew | a propeller | whir | aircraft |
Helicopter | a helicopter | fly over | helicopter |
Fixed-wing aircraft, airplane | an airplane | fly over | aircraft |
Bicycle | a bicycle | roll by | bicycle |
Skateboard | a skateboard | roll | skateboard |
Engine | an engine | run | engine | g
Light engine (high frequency) | a small engine | buzz | engine |
Dental drill, dentist's drill | a dental drill | whine | dental drill |
Lawn mower | a lawn mower | drone | lawn mower |
Chainsaw | a chainsaw | roar | chainsaw |
Medium engine (mid frequency) | an engine | run | engine |
Heavy engine (low frequency) | a heavy engine | rumble | engine |
Engine knocking | an engine | knock | engine |
Engine starting | an engine | start | engine |
Idling | an engine | idle | engine |
Accelerating, revving, vroom | an engine | rev | engine |
Door | a door | open and close | door |
Doorbell | a doorbell | ring | doorbell |
Ding-dong | a doorbell | chime | doorbell |
Sliding door | a sliding door | slide | door |
Slam | a door | slam | door |
Knock | someone | knock | knock |
Tap | | tap | tap | | light tapping
Squeak | something | squeak | squeak | | squeaking
Cupboard open or close | a cupboard door | open and close | cupboard |
Drawer open or close | a drawer | slide open and shut | drawer |
Dishes, pots, and pans | plates and pans | clatter | dishes | p
Cutlery, silverware | cutlery | clink | cutlery |
Chopping (food) | a knife | chop food on a board | chopping |
Frying (food) | food | sizzle in a frying pan | frying |
Microwave oven | a microwave oven | hum | microwave |
Blender | a blender | whir | blender |
Water tap, faucet | water | run from a tap | tap water |
Sink (filling or washing) | water | run into a sink | tap water |
Bathtub (filling or washing) | a bathtub | fill with water | tap water |
Hair dryer | a hair dryer | blow | hair dryer |
Toilet flush | a toilet | flush | toilet |
Toothbrush | someone | brush their teeth | toothbrush |
Electric toothbrush | an electric toothbrush | buzz | toothbrush |
Vacuum cleaner | a vacuum cleaner | roar | vacuum |
Zipper (clothing) | a zipper | zip | zipper |
Keys jangling | keys | jangle | keys | p
Coin (dropping) | coins | drop and jingle | coins | p
Scissors | scissors | snip | scissors | p
Electric shaver, electric razor | an electric shaver | buzz | shaver |
Shuffling cards | someone | shuffle cards | cards |
Typing | someone | type | typing |
Typewriter | a typewriter | clack | typing |
Computer keyboard | a computer keyboard | click | typing |
Writing | a pen | scratch on paper | writing |
Alarm | an alarm | sound | alarm | g
Telephone | a telephone | ring | telephone |
Telephone bell ringing | a telephone | ring | telephone |
Ringtone | a phone | ring | telephone |
Telephone dialing, DTMF | a phone | dial | telephone |
Dial tone | a dial tone | hum | telephone |
Busy signal | a busy signal | beep | telephone |
Alarm clock | an alarm clock | ring | alarm clock |
Siren | a siren | wail | siren |
Civil defense siren | an air-raid siren | wail | siren |
Buzzer | a buzzer | buzz | buzzer |
Smoke detector, smoke alarm | a smoke alarm | beep | smoke alarm |
Fire alarm | a fire alarm | ring | smoke alarm |
Foghorn | a foghorn | blow | foghorn |
Whistle | a whistle | blow | whistle |
Steam whistle | a steam whistle | shriek | whistle |
Mechanisms | a mechanism | whir | mechanism | g
Ratchet, pawl | a ratchet | click | ratchet |
Clock | a clock | tick | clock |
Tick | a clock | tick | clock |
Tick-tock | a clock | tick | clock |
Gears | gears | turn | gears | p
Pulleys | a pulley | creak | pulley |
Sewing machine | a sewing machine | rattle | sewing machine |
Mechanical fan | a fan | whir | fan |
Air conditioning | an air conditioner | hum | fan |
Cash register | a cash register | ring up a sale | cash register |
Printer | a printer | print | printer |
Camera | a camera | click | camera |
Single-lens reflex camera | a camera shutter | click | camera |
Tools | tools | clank | tools | pg
Hammer | a hammer | strike | hammer |
Jackhammer | a jackhammer | pound | jackhammer |
Sawing | a saw | cut through wood | saw |
Filing (rasp) | a file | rasp | rasp |
Sanding | sandpaper | scrape | sanding |
Power tool | a power tool | whir | power tool | g
Drill | a drill | whir | drill |
Explosion | an explosion | boom | explosion | g
Gunshot, gunfire | a gun | fire | gunshot |
Machine gun | a machine gun | fire | gunshot |
Fusillade | guns | fire | gunshot | p
Artillery fire | artillery | fire | gunshot |
Cap gun | a cap gun | pop | cap gun |
Fireworks | fireworks | explode | fireworks | p
Firecracker | firecrackers | pop | fireworks | p
Burst, pop | | pop | pop | | a pop
Eruption | a volcano | erupt | eruption |
Boom | | boom | boom | | a boom
Wood | wood | knock | wood | g
Chop | an axe | chop wood | chop |
Splinter | wood | splinter | wood |
Crack | | crack | crack | | a crack
Glass | glass | clink | glass | g
Chink, clink | glasses | clink | glass | p
Shatter | glass | shatter | shatter |
Liquid | liquid | slosh | liquid | g
Splash, splatter | water | splash | splash |
Slosh | liquid | slosh | splash |
Squish | | squish | squish | | a squish
Drip | water | drip | drip |
Pour | liquid | pour | pour |
Trickle, dribble | water | trickle | pour |
Gush | water | gush | pour |
Fill (with liquid) | a container | fill with liquid | pour |
Spray | an aerosol can | spray | spray |
Pump (liquid) | a pump | whir | pump |
Stir | someone | stir a pot | stir |
Boiling | water | boil | boiling |
Sonar | a sonar | ping | sonar |
Arrow | an arrow | whoosh past | arrow |
Whoosh, swoosh, swish | | whoosh | whoosh | | a whoosh
Thump, thud | | thud | thud | | a thud
Thunk | | thunk | thud | | a thunk
Electronic tuner | a tuner | beep | beep |
Effects unit | | | effects | f
Chorus effect | | | effects | f
Basketball bounce | a basketball | bounce | basketball |
Bang | | bang | bang | | a bang
Slap, smack | | slap | slap | | a slap
Whack, thwack | | whack | whack | | a whack
Smash, crash | | crash | crash | | a crash
Breaking | something | break | breaking |
Bouncing | something | bounce | bouncing |
Whip | a whip | crack | whip |
Flap | something | flap | flap | | flapping
Scratch | | scratch | scratch | | scratching
Scrape | | scrape | scrape | | scraping
Rub | | rub | rub | | rubbing
Roll | something | roll | roll | | rolling
Crushing | something | crunch | crush | | crushing
Crumpling, crinkling | paper | crinkle | paper |
Tearing | paper | tear | paper |
Beep, bleep | a device | beep | beep |
Ping | | ping | ping | | a ping
Ding | a bell | ding | ding |
Clang | metal | clang | clang |
Squeal | something | squeal | squeal | | a squeal
Creak | something | creak | creak | | creaking
Rustle | something | rustle | rustle | | rustling
Whir | a motor | whir | whir |
Clatter | things | clatter | clatter | p | clattering
Sizzle | food | sizzle | frying |
Clicking | | click | click | | clicking
Clickety-clack | | clack | click | | a clickety-clack
Rumble | | rumble | rumble | | a low rumble
Plop | something | plop into water | plop | | a plop
Jingle, tinkle | something | jingle | jingle | | jingling
Hum | | hum | hum | | a hum
Zing | | zing | zing | | a zing
Boing | | boing | boing | | a boing
Crunch | | crunch | crunch | | crunching
Silence | | | silence | f | silence
Sine wave | a pure tone | sound | tone |
Harmonic | | | tone | f
Chirp tone | a chirp tone | sweep | tone |
Sound effect | | | effects | f
Pulse | | | pulse | f
Inside, small room | | | room | c | in a small room
Inside, large room or hall | | | room | c | in a large hall
Inside, public space | | | room | c | in a public space
Outside, urban or manmade | | | outdoors | c | outdoors in a town
Outside, rural or natural | | | outdoors | c | outdoors in the countryside
Reverberation | | | reverb | f
Echo | | | reverb | f
Noise | | | noise | f | background noise
Environmental noise | | | noise | f | background noise
Static | static | crackle | static |
Mains hum | an electrical hum | drone | hum |
Distortion | | | effects | f
Sidetone | | | effects | f
Cacophony | | | noise | f
White noise | white noise | hiss | noise |
Pink noise | pink noise | hiss | noise |
Throbbing | something | throb | throb | | throbbing
Vibration | something | vibrate | vibration | | a vibration
Television | a television | play | tv |
Radio | a radio | play | radio |
Field recording | | | noise | f
"""

BARE_GENRES = {"opera", "jazz", "blues", "funk", "disco", "techno", "reggae", "ska", "flamenco", "grunge",
               "heavy metal", "punk rock", "progressive rock", "rock and roll", "psychedelic rock", "afrobeat",
               "rhythm and blues", "bluegrass", "dubstep", "drum and bass", "electronica", "beatboxing",
               "a capella", "lullaby", "trance music", "salsa music"}

# one-syllable verbs ending consonant-vowel-consonant double the last letter: whir → whirring, cut → cutting
_DOUBLES = re.compile(r"[^aeiou]*[aeiou][^aeiouwxy]")


@dataclass(frozen=True)
class Entry:
    name: str
    index: int
    subject: str
    verb: str
    family: str
    group: str
    plural: bool = False
    generic: bool = False
    filler: bool = False
    context: bool = False
    noun: str = ""               # how to name the event without a verb ("a thud", "a dog barking")

    @property
    def has_sentence(self) -> bool:
        return bool(self.subject and self.verb)

    def sentence(self) -> str:
        """'a dog barks'; source-ambiguous sounds fall back to their noun phrase."""
        if not self.has_sentence:
            return self.noun
        return f"{self.subject} {self.verb if self.plural else third_person(self.verb)}"

    def gerund(self) -> str:
        """'a dog barking' (for 'over ...', 'with ... in the background')."""
        if self.noun:
            return self.noun
        return f"{self.subject} {present_participle(self.verb)}"


def _inflect(verb: str, form) -> str:
    """Inflect the first word and each verb after ' and ' ('open and close' → 'opens and closes')."""
    parts = verb.split(" and ")
    out = []
    for i, part in enumerate(parts):
        head, _, rest = part.partition(" ")
        if i == 0 or head not in NOT_VERBS:
            head = form(head)
        out.append(head + (" " + rest if rest else ""))
    return " and ".join(out)


NOT_VERBS = {"shut", "pans"}      # words after 'and' that stay as they are ('slide open and shut')


def _third(head: str) -> str:
    if head.endswith(("s", "sh", "ch", "x", "z")) or (head.endswith("o") and head[-2:-1] not in "aeiou"):
        return head + "es"
    if head.endswith("y") and head[-2:-1] not in "aeiou":
        return head[:-1] + "ies"
    return head + "s"


def _ing(head: str) -> str:
    if _DOUBLES.fullmatch(head):
        return head + head[-1] + "ing"
    if head.endswith("ie"):
        return head[:-2] + "ying"
    if head.endswith("e") and not head.endswith(("ee", "ye", "oe")):
        return head[:-1] + "ing"
    return head + "ing"


def third_person(verb: str) -> str:
    return _inflect(verb, _third)


def present_participle(verb: str) -> str:
    return _inflect(verb, _ing)


def group_of(index: int) -> str:
    for first, last, name in GROUPS:
        if first <= index <= last:
            return name
    return "misc"


@lru_cache(maxsize=1)
def _rows() -> dict[str, tuple[str, ...]]:
    rows = {}
    for line in TABLE.strip().splitlines():
        cells = [c.strip() for c in line.split("|")]
        cells += [""] * (6 - len(cells))
        rows[cells[0]] = tuple(cells)
    return rows


def _plain_name(name: str) -> str:
    return name.split(",")[0].split("(")[0].strip().lower()


@lru_cache(maxsize=1024)
def entry(name: str, index: int = -1) -> Entry:
    """How to say AudioSet class `name` (display name as in YAMNet's class map)."""
    row = _rows().get(name)
    group = group_of(index)
    if row is None:                      # genres and the rare rest: "<name>" as a plain noun phrase
        plain = _plain_name(name)
        if group == "music":         # a genre: named, never the sentence's subject ("a piano plays jazz")
            noun = plain if ("music" in plain or plain in BARE_GENRES) else f"{plain} music"
            return Entry(name, index, subject="", verb="", family="genre", group=group, generic=True, noun=noun)
        return Entry(name, index, subject="", verb="", family=plain, group=group, noun=f"the sound of {plain}")
    _, subject, verb, family, flags, noun = row
    if subject == "something":           # say these by their noun phrase, never "something ..."
        subject = ""
    e = Entry(name, index, subject=subject, verb=verb, family=family or _plain_name(name), group=group,
              plural="p" in flags, generic="g" in flags, filler="f" in flags, context="c" in flags, noun=noun)
    if not e.noun and not e.subject and e.verb:
        e = Entry(**{**e.__dict__, "noun": present_participle(e.verb)})
    return e
