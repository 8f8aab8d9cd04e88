"""The population of the simulated Sniffable: dogs, owners, sniffers and what they choose from.

Everything here is *usage* (who exists and how often they pick what). How much each choice is
worth in likes is the hidden ground truth in :mod:`sniffable.truth`; keeping the two apart
means the world can be re-weighted without touching the formula the models are scored against.

The world is built once per simulation from a numpy ``Generator`` (vectorised, so 100k dogs take
milliseconds) and then held as plain Python lists, because the event loop reads single values
and numpy scalar access is ten times slower than a list index.
"""

from __future__ import annotations

import math
from bisect import bisect
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

SIZES = ("TOY", "SMALL", "MEDIUM", "LARGE", "GIANT")

# breed -> (popularity weight, sizes it comes in, what owners type instead of the canonical name)
BREEDS: dict[str, tuple[float, tuple[str, ...], tuple[str, ...]]] = {
    "French Bulldog": (9.0, ("SMALL",), ("Frenchie", "french bulldog", "French bulldog")),
    "Labrador Retriever": (10.0, ("LARGE",), ("Lab", "labrador", "Labrador")),
    "Golden Retriever": (8.0, ("LARGE",), ("Golden", "golden retriever")),
    "German Shepherd": (6.0, ("LARGE",), ("GSD", "german shepherd", "Alsatian")),
    "Poodle": (5.0, ("TOY", "MEDIUM", "LARGE"), ("poodle", "Toy Poodle")),
    "Beagle": (4.0, ("SMALL", "MEDIUM"), ("beagle",)),
    "Dachshund": (5.0, ("SMALL",), ("Sausage dog", "dachshund", "Doxie")),
    "Pembroke Welsh Corgi": (4.0, ("SMALL",), ("Corgi", "corgi")),
    "Chihuahua": (4.0, ("TOY",), ("chihuahua",)),
    "Pomeranian": (3.0, ("TOY",), ("Pom", "pomeranian")),
    "Shiba Inu": (3.0, ("MEDIUM",), ("Shiba", "shiba inu")),
    "Siberian Husky": (4.0, ("LARGE",), ("Husky", "husky")),
    "Border Collie": (3.0, ("MEDIUM",), ("border collie", "Collie")),
    "Pug": (4.0, ("SMALL",), ("pug",)),
    "Great Dane": (2.0, ("GIANT",), ("great dane",)),
    "Saint Bernard": (1.0, ("GIANT",), ("St. Bernard", "St Bernard")),
    "Bernese Mountain Dog": (2.0, ("GIANT",), ("Berner", "bernese")),
    "Yorkshire Terrier": (3.0, ("TOY",), ("Yorkie", "yorkie")),
    "Shih Tzu": (3.0, ("TOY",), ("shih tzu", "Shihtzu")),
    "Boxer": (2.0, ("LARGE",), ("boxer",)),
    "Mixed": (12.0, SIZES, ("mutt", "Mixed breed", "rescue mix")),
}

# ISO 3166-1 alpha-2 -> (share of owners, whole-hour UTC offset used for the local hour)
COUNTRIES: dict[str, tuple[float, int]] = {
    "US": (22.0, -5),
    "BR": (9.0, -3),
    "IN": (8.0, 5),
    "GB": (6.0, 0),
    "DE": (5.0, 1),
    "MX": (5.0, -6),
    "JP": (5.0, 9),
    "FR": (4.0, 1),
    "ID": (4.0, 7),
    "PH": (4.0, 8),
    "CA": (3.0, -5),
    "AU": (3.0, 10),
    "ES": (3.0, 1),
    "IT": (3.0, 1),
    "KR": (2.0, 9),
    "TR": (2.0, 3),
    "NL": (2.0, 1),
    "PL": (2.0, 1),
    "AR": (2.0, -3),
    "NG": (1.5, 1),
    "ZA": (1.5, 2),
    "SE": (1.0, 1),
    "EG": (1.0, 2),
    "TH": (1.0, 7),
}

# photo filter (None: no filter) -> share of posts from apps that have filters (2.x and later)
FILTERS: dict[str | None, float] = {
    None: 40.0,
    "clarendon": 14.0,
    "juno": 10.0,
    "valencia": 9.0,
    "lark": 8.0,
    "gingham": 7.0,
    "moon": 6.0,
    "x-pro ii": 6.0,
}


@dataclass(frozen=True)
class HashtagConcept:
    """One meaning behind several spellings. ``kind`` is popular, niche, spammy or neutral."""

    name: str
    kind: str
    weight: float
    variants: tuple[str, ...]


# The first variant is the common spelling; the rest are what people also type. In the ground
# truth every variant of a concept has the same effect: #adorabull *is* #adorable. Whether a
# featurizer merges them is its versioned decision, which is the uncertainty the design asks for.
HASHTAGS: tuple[HashtagConcept, ...] = (
    HashtagConcept(
        "adorable",
        "popular",
        10.0,
        ("#adorable", "#Adorable", "#adorabull", "#ADORABLE", "#ÁDORABLE!", "#adorable!!"),
    ),
    HashtagConcept("puppy", "popular", 9.0, ("#puppy", "#Puppy", "#puppylove", "#puppyy", "#PUPPY")),
    HashtagConcept("goodboy", "popular", 8.0, ("#goodboy", "#GoodBoy", "#good_boy", "#goodboi")),
    HashtagConcept(
        "dogsofsniffable",
        "popular",
        8.0,
        ("#dogsofsniffable", "#DogsOfSniffable", "#dogs_of_sniffable", "#dogsofsnifable"),
    ),
    HashtagConcept("cute", "neutral", 9.0, ("#cute", "#Cute", "#cutie", "#CUTE")),
    HashtagConcept("dog", "neutral", 12.0, ("#dog", "#Dog", "#dogs", "#doggo", "#dogstagram")),
    HashtagConcept(
        "frenchie",
        "popular",
        3.0,
        ("#frenchie", "#Frenchie", "#frenchbulldog", "#FrenchBulldog", "#frenchies"),
    ),
    HashtagConcept("zoomies", "niche", 2.0, ("#zoomies", "#Zoomies", "#zoomie")),
    HashtagConcept("sploot", "niche", 1.0, ("#sploot", "#Sploot", "#splooting")),
    HashtagConcept("blep", "niche", 1.0, ("#blep", "#Blep", "#mlem")),
    HashtagConcept("corgibutt", "niche", 0.6, ("#corgibutt", "#CorgiButt", "#corgi_butt")),
    HashtagConcept("adoptdontshop", "niche", 1.5, ("#adoptdontshop", "#AdoptDontShop", "#rescuedog")),
    HashtagConcept("woofwednesday", "niche", 1.0, ("#woofwednesday", "#WoofWednesday")),
    HashtagConcept("like4like", "spammy", 3.0, ("#like4like", "#l4l", "#Like4Like", "#likeforlike")),
    HashtagConcept(
        "follow4follow", "spammy", 2.5, ("#follow4follow", "#f4f", "#followforfollow", "#FollowMe")
    ),
    HashtagConcept("instagood", "spammy", 2.0, ("#instagood", "#InstaGood", "#photooftheday")),
    HashtagConcept("freepuppies", "spammy", 0.5, ("#freepuppies", "#free_puppies", "#FREEPUPPIES")),
    HashtagConcept("crypto", "spammy", 0.4, ("#crypto", "#dogecoin", "#DOGE", "#nft")),
)

VARIANT_TO_CONCEPT: dict[str, str] = {v: c.name for c in HASHTAGS for v in c.variants}

DOG_NAMES = (
    "Biscuit",
    "Luna",
    "Max",
    "Bella",
    "Charlie",
    "Daisy",
    "Rocky",
    "Coco",
    "Milo",
    "Lola",
    "Teddy",
    "Nala",
    "Bruno",
    "Pepper",
    "Ziggy",
    "Mochi",
    "Olive",
    "Tofu",
    "Hugo",
    "Frida",
    "Pixel",
    "Waffles",
    "Kiki",
    "Bao",
    "Simba",
    "Lupita",
    "Otto",
    "Yuki",
    "Fritz",
    "Chispa",
)

CAPTION_OPENERS = (
    "Look at this face",
    "Sunday vibes",
    "Who's a good dog",
    "Park day with {name}",
    "{name} discovered snow",
    "Nap time for {name}",
    "First day home!",
    "{name} says hi",
    "Caught mid-zoomie",
    "Bath day. {name} is not amused",
    "Birthday pup",
    "Beach day",
    "New toy, who dis",
    "{name} and the squirrel: round 3",
    "Morning walk",
)
CAPTION_TAILS = (
    "",
    "!",
    " 🐶",
    " ❤️",
    "... again",
    " #blessed",
    " lol",
    ". Best boy ever.",
    " and then it rained. Of course it rained.",
    " (we did not make it to the car in time)",
    ". Ten out of ten would boop. Twelve out of ten would boop twice if allowed by the pup.",
)

POSTS_PER_DOG_PER_DAY = 1.5


@dataclass(frozen=True)
class Dog:
    """A dog's fixed traits. ``charisma`` is latent: no event carries it, likes reveal it."""

    index: int
    dog_id: str
    name: str
    breed: str
    breed_entered: str
    size: str
    age_months: int
    age_given: bool
    country: str
    charisma: float
    owner: int


@dataclass(frozen=True)
class Owner:
    """The person posting: where, with which phone, and how they tag."""

    index: int
    country: str
    device: str
    app: int
    spammer: bool
    tag_mean: float
    style: int


def _cum(weights: list[float]) -> list[float]:
    return list(accumulate(weights))


def _usual(style: int, concept: int, n: int) -> int:
    """The spelling an owner usually types: the common one for most, a quirk for some."""
    quirk = (style * 31 + concept * 7) % 100
    return 0 if quirk < 65 else quirk % n


class World:
    """Who exists, built deterministically from one numpy ``Generator``.

    It is read-only once built: ``followers`` and ``owner_app`` are the values at the start,
    which each run of a simulation copies and then changes (dogs gain followers, owners
    upgrade), so runs can be replayed and nothing lives in module globals.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        n_dogs: int,
        n_owners: int,
        n_sniffers: int,
        app_weights: list[float],
    ) -> None:
        if n_dogs < 1 or n_owners < 1 or n_sniffers < 1:
            raise ValueError("a world needs at least one dog, owner and sniffer")
        countries = list(COUNTRIES)
        c_w = np.array([COUNTRIES[c][0] for c in countries])
        owner_country = rng.choice(len(countries), size=n_owners, p=c_w / c_w.sum())
        app_p = np.array(app_weights) / sum(app_weights)
        owner_app = rng.choice(len(app_weights), size=n_owners, p=app_p)
        spammer = rng.random(n_owners) < 0.04
        tag_mean = np.where(spammer, 9.0, rng.gamma(2.0, 1.2, n_owners))
        style = rng.integers(0, 1 << 16, n_owners)
        devices = ("ios", "android", "web")
        device = rng.choice(3, size=n_owners, p=[0.48, 0.47, 0.05])
        self.owners = [
            Owner(
                i,
                countries[owner_country[i]],
                devices[device[i]],
                int(owner_app[i]),
                bool(spammer[i]),
                float(tag_mean[i]),
                int(style[i]),
            )
            for i in range(n_owners)
        ]
        # App per owner at the start; owners upgrade during a run (see Simulation).
        self.owner_app: list[int] = [o.app for o in self.owners]

        breeds = list(BREEDS)
        b_w = np.array([BREEDS[b][0] for b in breeds])
        breed_i = rng.choice(len(breeds), size=n_dogs, p=b_w / b_w.sum())
        size_u = rng.random(n_dogs)
        variant_u = rng.random(n_dogs)
        variant_pick = rng.integers(0, 1 << 16, n_dogs)
        puppy = rng.random(n_dogs) < 0.2
        age = np.where(puppy, rng.integers(2, 12, n_dogs), rng.integers(12, 180, n_dogs))
        age_given = rng.random(n_dogs) < 0.8
        dog_owner = rng.integers(0, n_owners, n_dogs)
        charisma = rng.normal(0.0, 0.5, n_dogs)
        # Followers: lognormal body with a few celebrity dogs in a Pareto tail.
        followers = np.exp(rng.normal(math.log(120.0), 1.4, n_dogs))
        celeb = rng.random(n_dogs) < 0.01
        followers = np.where(celeb, followers * (20.0 + rng.pareto(1.2, n_dogs) * 20.0), followers)
        # Posting activity: heavy-tailed too, and livelier dogs tend to have more followers.
        activity = np.exp(rng.normal(0.0, 0.9, n_dogs) + 0.15 * np.log(followers))
        id_bits = rng.integers(0, 1 << 62, n_dogs)
        names = rng.integers(0, len(DOG_NAMES), n_dogs)

        self.dogs: list[Dog] = []
        for i in range(n_dogs):
            breed = breeds[breed_i[i]]
            _, sizes, aliases = BREEDS[breed]
            entered = breed if variant_u[i] >= 0.15 else aliases[variant_pick[i] % len(aliases)]
            o = int(dog_owner[i])
            self.dogs.append(
                Dog(
                    index=i,
                    dog_id=f"dog_{int(id_bits[i]):015x}",
                    name=DOG_NAMES[names[i]],
                    breed=breed,
                    breed_entered=entered,
                    size=sizes[int(size_u[i] * len(sizes))],
                    age_months=int(age[i]),
                    age_given=bool(age_given[i]),
                    country=self.owners[o].country,
                    charisma=float(charisma[i]),
                    owner=o,
                )
            )
        self.by_id = {d.dog_id: d for d in self.dogs}
        self.followers: list[int] = [int(f) for f in np.round(followers)]
        self._activity_cum = _cum(activity.tolist())

        snf_bits = rng.integers(0, 1 << 62, n_sniffers)
        self.sniffer_ids = [f"snf_{int(b):015x}" for b in snf_bits]
        self.sniffer_app = rng.choice(len(app_weights), size=n_sniffers, p=app_p).tolist()

        self._concept_cum_normal = _cum([0.0 if c.kind == "spammy" else c.weight for c in HASHTAGS])
        self._concept_cum_spam = _cum([c.weight * (6.0 if c.kind == "spammy" else 1.0) for c in HASHTAGS])
        self._filter_names = list(FILTERS)
        self._filter_cum = _cum(list(FILTERS.values()))

    def dog(self, dog_id: str) -> Dog:
        return self.by_id[dog_id]

    # -- choices the event loop makes; each takes uniforms from the caller's rng ----------

    def pick_dog(self, u: float) -> int:
        return min(bisect(self._activity_cum, u * self._activity_cum[-1]), len(self.dogs) - 1)

    def pick_filter(self, u: float) -> str | None:
        cum = self._filter_cum
        return self._filter_names[min(bisect(cum, u * cum[-1]), len(cum) - 1)]

    def pick_hashtags(self, rng, owner: Owner, n: int) -> list[str]:
        """``n`` hashtags as this owner types them: mostly their usual spelling of a concept.

        Concepts are drawn by usage weight (spammers lean on the spammy ones); each owner has a
        usual spelling per concept, the common one for most owners, so ``#adorable`` is
        frequent, ``#adorabull`` rarer and ``#ÁDORABLE!`` rarer still.
        """
        cum = self._concept_cum_spam if owner.spammer else self._concept_cum_normal
        total = cum[-1]
        tags: list[str] = []
        for _ in range(n):
            ci = min(bisect(cum, rng.random() * total), len(cum) - 1)
            variants = HASHTAGS[ci].variants
            if rng.random() < 0.8:
                tag = variants[_usual(owner.style, ci, len(variants))]
            else:
                tag = variants[int(rng.random() * len(variants))]
            tags.append(tag)
        return tags

    @staticmethod
    def make_caption(rng, dog: Dog) -> str:
        head = CAPTION_OPENERS[int(rng.random() * len(CAPTION_OPENERS))].format(name=dog.name)
        return head + CAPTION_TAILS[int(rng.random() * len(CAPTION_TAILS))]
