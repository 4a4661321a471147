"""Keypoint schemas: names, left/right flip pairs, skeleton edges and OKS sigmas."""
from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import DataWarning, some_of


@dataclass(frozen=True)
class KeypointSchema:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] = field(default=())
    # Two keypoints whose distance is the PCK's unit; () = left_shoulder-right_hip where the schema
    # has them, else the longer side of the labelled keypoints' box (``metrics.torso_size``).
    torso: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        if k == 0 or len(set(self.keypoints)) != k:
            raise ValueError(f"schema {self.name}: keypoint names must be given, each once")
        if self.torso and (len(self.torso) != 2 or self.torso[0] == self.torso[1]):
            raise ValueError(f"schema {self.name}: torso is two different keypoints, got {list(self.torso)}")
        for a, b in self.flip_pairs + self.skeleton + ((self.torso,) if self.torso else ()):
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"schema {self.name}: index out of range in pair ({a}, {b})")
        if self.sigmas and len(self.sigmas) != k:
            raise ValueError(f"schema {self.name}: {len(self.sigmas)} sigmas for {k} keypoints")
        if any(not s > 0 for s in self.sigmas):
            raise ValueError(f"schema {self.name}: sigmas must be > 0, got {list(self.sigmas)}")
        paired = [i for pair in self.flip_pairs for i in pair]
        if len(set(paired)) != len(paired):
            raise ValueError(f"schema {self.name}: flip pairs must join two different keypoints, each "
                             f"keypoint in one pair at most, got {[list(p) for p in self.flip_pairs]}")

    def torso_pair(self) -> tuple[int, int] | None:
        """The two keypoints whose distance normalises PCK, or None (box side instead)."""
        if self.torso:
            return self.torso[0], self.torso[1]
        shoulder, hip = self.find("left_shoulder"), self.find("right_hip")
        return None if shoulder is None or hip is None else (shoulder, hip)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def flip_index(self) -> np.ndarray:
        """Permutation that maps each keypoint to its mirror-image label."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def index(self, name: str) -> int:
        return self.keypoints.index(name)

    def find(self, name: str) -> int | None:
        """The index of the keypoint ``name``, or of the one keypoint that spells it otherwise
        (``LShoulder`` or ``l_shoulder`` for ``left_shoulder``; ``matching_names``); else None."""
        return _find(self.keypoints, name)

    def spelling(self, name: str) -> str | None:
        """This schema's name for the keypoint ``name`` (``find``), or None."""
        i = self.find(name)
        return None if i is None else self.keypoints[i]

    def select(self, names) -> "KeypointSchema":
        """The schema of only the keypoints ``names`` (kept in this schema's order), with the
        flip pairs, bones, sigmas and torso among them."""
        keep = [i for i, n in enumerate(self.keypoints) if n in set(names)]
        new = {old: i for i, old in enumerate(keep)}

        def among(pairs):
            return tuple((new[a], new[b]) for a, b in pairs if a in new and b in new)

        torso = among((self.torso,)) if self.torso else ()
        name = self.name if len(keep) == self.num_keypoints else f"{self.name}[{len(keep)}]"  # (coco17[15])
        return KeypointSchema(name, tuple(self.keypoints[i] for i in keep), among(self.flip_pairs),
                              among(self.skeleton), tuple(self.sigmas[i] for i in keep) if self.sigmas else (),
                              torso[0] if torso else ())

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "keypoints": list(self.keypoints),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "skeleton": [list(p) for p in self.skeleton],
            "sigmas": list(self.sigmas),
            **({"torso": list(self.torso)} if self.torso else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "KeypointSchema":
        """Pairs (flip_pairs, skeleton, torso) by index or by keypoint name."""
        names = [str(n) for n in d["keypoints"]]

        def index(v) -> int:
            if isinstance(v, str):
                if v not in names:
                    raise ValueError(f"schema {d['name']}: no keypoint named {v!r}")
                return names.index(v)
            return int(v)

        def pairs(key: str) -> tuple[tuple[int, int], ...]:
            out = []
            for pair in d.get(key, ()) or ():
                if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
                    raise ValueError(f"schema {d['name']}: each of {key} is two keypoints, got {pair!r}")
                out.append((index(pair[0]), index(pair[1])))
            return tuple(out)

        torso = list(d.get("torso", ()) or ())
        if len(torso) == 1 and isinstance(torso[0], (list, tuple)):  # [[a, b]], written as the other pairs
            torso = list(torso[0])
        if any(isinstance(v, (list, tuple, dict)) for v in torso):
            raise ValueError(f"schema {d['name']}: torso is one pair of keypoints ([left_shoulder, right_hip]), "
                             f"got {d['torso']!r}")
        return cls(
            name=str(d["name"]),
            keypoints=tuple(names),
            flip_pairs=pairs("flip_pairs"),
            skeleton=pairs("skeleton"),
            sigmas=tuple(float(v) for v in d.get("sigmas", ()) or ()),
            torso=tuple(index(v) for v in torso),
        )


COCO17 = KeypointSchema(
    name="coco17",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=(
        (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (0, 6), (5, 7), (7, 9), (6, 8), (8, 10),
        (5, 6), (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
    ),
    sigmas=(.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89),
)
# pycocotools divides these by 10.
COCO17_SIGMAS = np.array(COCO17.sigmas) / 10.0

SCHEMAS = {"coco17": COCO17}


SCHEMA_KEYS = ("name", "keypoints", "flip_pairs", "skeleton", "sigmas", "torso")


_SIDES = ("left", "right"), ("l", "r")


def pairs_by_name(names) -> list[tuple[int, int]]:
    """Left/right keypoints paired by their names, what the flip augmentation swaps: ``left`` /
    ``right`` or ``l`` / ``r`` at the start or the end, set off by ``_``, ``-``, ``.`` or a space
    (``left_hand``, ``hand.left``, ``l_knee``), or by case (``leftHand``, OpenPose's ``LShoulder``)."""
    index = {str(n): i for i, n in enumerate(names)}
    lower = {n.lower(): i for n, i in index.items()}
    pairs, used = [], set()
    for name, i in index.items():
        for left, right in _SIDES:
            swapped = _swap_side(name, left, right)
            j = lower.get(swapped.lower()) if swapped else None
            if j is not None and j != i and not {i, j} & used:
                pairs.append((i, j))
                used |= {i, j}
                break
    return pairs


def sided_but_unpaired(names, pairs) -> list[str]:
    """Names that say a side (``pairs_by_name``'s markers) but are in none of ``pairs``."""
    paired = {i for pair in pairs for i in pair}
    return [str(n) for i, n in enumerate(names) if i not in paired
            and any(_swap_side(str(n), a, b) for a, b in (*_SIDES, *(side[::-1] for side in _SIDES)))]


def side_of(name: str) -> str | None:
    """``"left"``, ``"right"`` or None: the side a keypoint's name marks, as ``pairs_by_name``
    reads it (``left_hand``, ``l_knee``, ``LFoot``)."""
    for left, right in _SIDES:
        if _swap_side(str(name), left, right) is not None:
            return "left"
        if _swap_side(str(name), right, left) is not None:
            return "right"
    return None


def keypoint_key(name: str) -> str:
    """A keypoint's side and part, for matching the keypoints of two schemas: ``left_knee``,
    ``l_knee``, ``LKnee`` and ``knee.left`` are all ``left:knee``; ``nose`` is ``:nose``."""
    name = str(name)
    for left, right in _SIDES:
        for side, marker in (("left", left), ("right", right)):
            part = _swap_side(name, marker, "")
            if part is not None:
                return f"{side}:{_plain(part)}"
    return f":{_plain(name)}"


def _plain(name: str) -> str:
    return "".join(c for c in name.lower() if c not in "_-. ")


@functools.lru_cache(maxsize=1024)  # (tracking asks for the hips and shoulders at every frame)
def _find(keypoints: tuple[str, ...], name: str) -> int | None:
    found = matching_names([name], keypoints).get(name)
    return None if found is None else keypoints.index(found)


def matching_names(wanted, available) -> dict[str, str]:
    """Each of ``wanted``'s keypoint names that ``available`` has -> its name there: the same
    name, else the one name of the same side and part (``keypoint_key``), so that a schema's
    ``l_knee`` takes Google's ``left_knee``. A side and part that several unmatched names share
    on either side match nothing."""
    wanted, available = [str(n) for n in wanted], [str(n) for n in available]
    found = {n: n for n in wanted if n in available}
    rest_wanted = [n for n in wanted if n not in found]
    rest_available = [n for n in available if n not in found.values()]
    for n in rest_wanted:
        key = keypoint_key(n)
        same = [m for m in rest_available if keypoint_key(m) == key]
        if len(same) == 1 and sum(keypoint_key(w) == key for w in rest_wanted) == 1:
            found[n] = same[0]
    return {n: found[n] for n in wanted if n in found}


def _swap_side(name: str, left: str, right: str) -> str | None:
    """``name`` with its ``left`` side marker made ``right`` (None: it has no such marker)."""
    low = name.lower()
    for sep in "_-. ":
        if low.startswith(left + sep):
            return right + name[len(left):]
        if low.endswith(sep + left):
            return name[:-len(left)] + right
    rest = name[len(left):]
    if low.startswith(left) and rest[:1].isupper() and (len(left) > 1 or name[0].isupper()):
        return right + rest  # leftHand, LShoulder
    return None


def schema_from_config(value: str | dict | KeypointSchema) -> KeypointSchema:
    """A training config's ``schema``: a known name (``coco17``) or a mapping with ``name``,
    ``keypoints`` (names) and optional ``flip_pairs`` (default: ``pairs_by_name``; ``[]`` for
    none), ``skeleton`` (pairs of names or indices), ``torso`` (one pair) and ``sigmas`` (OKS, COCO's
    units; default COCO's for keypoints of COCO's names, their mean for the others)."""
    if isinstance(value, dict):
        unknown = [k for k in value if k not in SCHEMA_KEYS]
        if unknown:
            raise ValueError(f"schema: unknown key {unknown[0]!r} (known: {', '.join(SCHEMA_KEYS)})")
        for key in ("name", "keypoints"):
            if key not in value:
                raise ValueError(f"schema: {key!r} is missing")
        if not isinstance(value["keypoints"], list):
            raise ValueError("schema: keypoints must be a list of names")
        twice = sorted({str(n) for n in value["keypoints"] if value["keypoints"].count(n) > 1})
        if twice:  # (before the pairs and bones that name them)
            raise ValueError(f"schema {value['name']}: keypoint names must be given, each once ({some_of(twice)} "
                             "more than once)")
        if "flip_pairs" not in value:  # a flip must swap left and right labels too
            value = {**value, "flip_pairs": pairs_by_name(value["keypoints"])}
            lonely = sided_but_unpaired(value["keypoints"], value["flip_pairs"])
            if lonely:
                verbs = "names a side but has" if len(lonely) == 1 else "name a side but have"
                warnings.warn(f"schema {value['name']}: {', '.join(lonely)} {verbs} no partner by name; a flip "
                              "keeps their labels (give flip_pairs, or [] for none)", DataWarning, stacklevel=2)
        try:
            schema = KeypointSchema.from_dict(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"schema: {e}" if not str(e).startswith("schema") else str(e)) from None
        return with_sigmas(schema)
    return get_schema(value)


def with_sigmas(schema: KeypointSchema) -> KeypointSchema:
    """``schema``, or where it has no OKS sigmas, with COCO's for COCO's keypoints, also spelled
    otherwise (OKS then agrees with COCO's), and their mean for the others."""
    if schema.sigmas:
        return schema
    coco = dict(zip(COCO17.keypoints, COCO17.sigmas))
    named = matching_names(schema.keypoints, COCO17.keypoints)  # (LShoulder takes left_shoulder's)
    return dataclasses.replace(schema, sigmas=tuple(float(coco[named[n]]) if n in named else
                                                    float(np.mean(COCO17.sigmas)) for n in schema.keypoints))


def get_schema(name_or_dict: str | dict | KeypointSchema) -> KeypointSchema:
    if isinstance(name_or_dict, KeypointSchema):
        return name_or_dict
    if isinstance(name_or_dict, dict):
        return KeypointSchema.from_dict(name_or_dict)
    try:
        return SCHEMAS[name_or_dict]
    except KeyError:
        raise ValueError(f"unknown keypoint schema {name_or_dict!r}; known: {sorted(SCHEMAS)}") from None
