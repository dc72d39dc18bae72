"""Tracking scenes whose truth is known by construction, from the real pixels of the default clip.

No labelled multi-object-tracking dataset can be had here. So real persons are cut out
of the pedestrian clip and walked along chosen paths over the clip's empty background;
the paths are the truth.

- The background (:func:`background`) is the per-pixel median of 60 frames spread over
  the clip: every person moves on within it, so the median holds none.
- The persons (:func:`select_people`) are the detector's boxes on every
  20th frame of the clip where a person stands alone: score >= 0.5; no other box
  (down to 0.25) overlapping the box grown by 15% of its height (8 px at least); the box
  12 px or more inside the frame; at least 1.6 times as tall as wide and 70 px tall (a
  whole standing body, not a cut-off or bent one). The tallest are taken first, each only
  if it looks unlike every one taken so far: the Bhattacharyya distance of the HSV
  histograms of its foreground pixels (those differing from the background), upper and
  lower half of the body apart, averaged, is at least :data:`DISTINCT` (the same person
  on other frames of the clip measured 0.19-0.45, different persons mostly 0.5-0.9).
  A cutout is the crop of the box, rounded outward, with :data:`MARGIN` pixels around.
- A scene (:func:`make_scenes`) pastes each person's cutout, as the rectangle it is, with
  its box's bottom centre (the feet) on its path, person by person from the top of the
  image down: the one lower in the image (larger ``y2``) is nearer the camera and hides
  those behind it. Cutouts keep their size (no perspective rescale).
- The truth of a frame is each person's pasted box clipped to the frame. A person whose
  box is less than half inside the frame, or whose in-frame box is more than 70% covered
  by the rectangles pasted in front of it, is *ignored* in that frame: present (its track
  may go on) but not demanded (:attr:`Scene.ignored`; a scorer drops a hypothesis that
  matches it rather than count it false).

Walking speeds are those of the clip's persons. Tracked with the default tracker over
the whole clip, its walking persons cover a median 0.54 of their body height per second
(quartiles 0.33 and 0.68; 4.5 px per frame at its 10 fps, 6-7 px for persons 90-130 px
tall, as the cutouts are). Each walk here has a pace of 0.4-0.6 heights per second, in
pixels per frame by the person's own height and the clip's rate (5-8 px per frame).
Frames are rendered when read (:class:`Frames`), so a scene costs a few kilobytes until
then. Everything is deterministic: no randomness, the same clip and
bundle give the same scenes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

MARGIN = 8
"""Pixels of the source frame kept around a person's box in its cutout."""
DISTINCT = 0.45
"""The least histogram distance (Bhattacharyya, 0-1) between two persons taken."""
PACE = 0.54
"""The median walking pace of the clip's persons, body heights per second (quartiles 0.33 and 0.68)."""
HIDDEN = 0.7
"""A person whose in-frame box is covered more than this share by those in front is ignored."""
INSIDE = 0.5
"""A person whose box is less than this share inside the frame is ignored."""
EVERY = 20
"""The clip's frames searched for persons standing alone: every EVERY-th."""
BACKGROUND_FRAMES = 60
"""Frames of the clip, spread over it, whose per-pixel median is the background."""


@dataclass(frozen=True)
class Person:
    """A person cut out of the clip.

    Attributes
    ----------
    image : np.ndarray
        The cutout: the box's crop, rounded outward, with :data:`MARGIN` pixels around.
    frame : int
        The clip's frame it was cut from.
    box : np.ndarray
        Its integer box ``x1, y1, x2, y2`` in that frame (without the margin).
    score : float
        The detector's score of it there.
    """

    image: np.ndarray
    frame: int
    box: np.ndarray
    score: float

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of its box."""
        return int(self.box[2] - self.box[0]), int(self.box[3] - self.box[1])


def read_clip(clip: Path | str) -> tuple[float, int]:
    """Return the clip's frame rate and frame count."""
    cap = cv2.VideoCapture(str(clip))
    try:
        if not cap.isOpened():
            raise OSError(f"cannot open {clip}")
        return float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def _frames(clip: Path | str, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for the frames at ``indices`` (increasing) of the clip."""
    cap = cv2.VideoCapture(str(clip))
    try:
        i = 0
        for want in indices:
            while i < want:
                cap.grab()
                i += 1
            ok, frame = cap.read()
            i += 1
            if not ok:
                return
            yield want, frame
    finally:
        cap.release()


def background(clip: Path | str) -> np.ndarray:
    """Return the clip without its persons: the per-pixel median of frames spread over it.

    Parameters
    ----------
    clip : Path or str
        The video.

    Returns
    -------
    np.ndarray
        The BGR background, the clip's frame size.
    """
    _, count = read_clip(clip)
    indices = np.unique(np.linspace(0, count - 1, BACKGROUND_FRAMES).astype(int))
    stack = np.stack([frame for _, frame in _frames(clip, indices.tolist())])
    return np.median(stack, axis=0).astype(np.uint8)


def _alone(boxes: np.ndarray, k: int) -> bool:
    """Whether box ``k`` has no other box overlapping it grown by 15% of its height."""
    x1, y1, x2, y2 = boxes[k]
    grow = max(8.0, 0.15 * (y2 - y1))
    others = np.delete(boxes, k, axis=0)
    near = ((others[:, 0] < x2 + grow) & (others[:, 2] > x1 - grow)
            & (others[:, 1] < y2 + grow) & (others[:, 3] > y1 - grow))
    return not near.any()


def _histograms(crop: np.ndarray, under: np.ndarray) -> list[np.ndarray]:
    """HSV histograms of the upper and lower body's foreground pixels of a box's crop."""
    mask = (np.abs(crop.astype(np.int16) - under.astype(np.int16)).max(axis=2) > 40).astype(np.uint8)
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    h = crop.shape[0]
    out = []
    for top, bottom in ((0.1, 0.5), (0.5, 0.95)):
        rows = slice(int(top * h), int(bottom * h))
        hist = cv2.calcHist([hsv[rows]], [0, 1, 2], mask[rows], [8, 4, 4], [0, 180, 0, 256, 0, 256])
        out.append(cv2.normalize(hist, hist).flatten())
    return out


def _distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean Bhattacharyya distance of two persons' upper and lower body histograms."""
    return float(np.mean([cv2.compareHist(x, y, cv2.HISTCMP_BHATTACHARYYA)
                          for x, y in zip(a, b, strict=True)]))


def select_people(
    clip: Path | str, bundle: Path | str, n: int, *, bg: np.ndarray | None = None
) -> list[Person]:
    """Return ``n`` distinct persons of the clip, standing alone, tallest first.

    See the module's description for how they are chosen. Nothing is cached: the
    detector runs on the clip's frames each call (about 40 frames).

    Parameters
    ----------
    clip : Path or str
        The video.
    bundle : Path or str
        The model bundle whose detector finds the persons.
    n : int
        How many persons.
    bg : np.ndarray, optional
        The clip's :func:`background` (computed where None).

    Returns
    -------
    list of Person
        ``n`` persons, by box height, tallest first.

    Raises
    ------
    ValueError
        When the clip has fewer than ``n`` such persons.
    """
    from edge.bundle import load_bundle
    from edge.runtime.models import load_detector

    bg = background(clip) if bg is None else bg
    height, width = bg.shape[:2]
    _, count = read_clip(clip)
    detector = load_detector(load_bundle(Path(bundle)), {"threads": 2})
    candidates = []
    try:
        for index, frame in _frames(clip, range(0, count, EVERY)):
            found = detector(frame, conf_th=0.25)
            for k, (box, score) in enumerate(zip(found.boxes, found.scores, strict=True)):
                x1, y1, x2, y2 = np.floor(box[:2]).tolist() + np.ceil(box[2:]).tolist()
                x1, y1, x2, y2 = int(x1), int(y1), int(x2), int(y2)
                w, h = x2 - x1, y2 - y1
                inside = x1 >= 12 and y1 >= 12 and x2 <= width - 12 and y2 <= height - 12
                if score >= 0.5 and inside and h >= 70 and h >= 1.6 * w and _alone(found.boxes, k):
                    image = frame[y1 - MARGIN:y2 + MARGIN, x1 - MARGIN:x2 + MARGIN].copy()
                    hist = _histograms(frame[y1:y2, x1:x2], bg[y1:y2, x1:x2])
                    person = Person(image, index, np.array([x1, y1, x2, y2]), float(score))
                    candidates.append((h, -index, person, hist))
    finally:
        detector.backend.close()
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    chosen: list[tuple[Person, list[np.ndarray]]] = []
    for _, _, person, hist in candidates:
        if all(_distance(hist, other) >= DISTINCT for _, other in chosen):
            chosen.append((person, hist))
            if len(chosen) == n:
                return [person for person, _ in chosen]
    raise ValueError(f"{clip} has {len(chosen)} distinct persons standing alone, not {n}")


@dataclass(frozen=True)
class Walk:
    """One person's way through a scene.

    Attributes
    ----------
    person : int
        Index into the scene's persons; also the person's id in the truth.
    points : tuple of (float, float)
        Waypoints of the feet (the box's bottom centre), in pixels.
    speed : float
        Pixels per frame at the clip's rate.
    start : int
        The frame it appears at (at ``points[0]``).
    pauses : dict of int to int
        Frames it stands still at a waypoint, by waypoint index.
    """

    person: int
    points: tuple[tuple[float, float], ...]
    speed: float
    start: int = 0
    pauses: dict[int, int] = field(default_factory=dict)

    def positions(self) -> np.ndarray:
        """Return the feet's position at each frame from :attr:`start` to the path's end: ``(T, 2)``."""
        points = np.asarray(self.points, dtype=np.float64)
        out = [points[0]]
        for k in range(len(points) - 1):
            out += [points[k]] * self.pauses.get(k, 0)
            a, b = points[k], points[k + 1]
            steps = max(1, round(float(np.linalg.norm(b - a)) / self.speed))
            out += [a + (b - a) * j / steps for j in range(1, steps + 1)]
        out += [points[-1]] * self.pauses.get(len(points) - 1, 0)
        return np.array(out)


class Frames(Sequence):
    """A scene's frames, rendered when read: the background with the cutouts pasted.

    Parameters
    ----------
    bg : np.ndarray
        The background.
    images : list of np.ndarray
        The persons' cutouts.
    pastes : list of list of (int, int, int)
        Per frame, back to front, ``(person, x, y)``: the cutout's top-left corner.
    """

    def __init__(self, bg: np.ndarray, images: list[np.ndarray], pastes: list[list[tuple[int, int, int]]]):
        self.bg, self.images, self.pastes = bg, images, pastes

    def __len__(self) -> int:
        return len(self.pastes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        frame = self.bg.copy()
        height, width = frame.shape[:2]
        for person, x, y in self.pastes[i]:
            image = self.images[person]
            h, w = image.shape[:2]
            fx1, fy1, fx2, fy2 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
            if fx1 < fx2 and fy1 < fy2:
                frame[fy1:fy2, fx1:fx2] = image[fy1 - y:fy2 - y, fx1 - x:fx2 - x]
        return frame

    def every(self, k: int) -> Frames:
        """Return every ``k``-th frame, from the first."""
        return Frames(self.bg, self.images, self.pastes[::k])


@dataclass
class Scene:
    """A constructed scene: frames and the truth of each.

    Attributes
    ----------
    name : str
        Short name (``crossing``, ``stop``, ``edges``, ``group``, ``crowd``).
    description : str
        What happens in it.
    frames : Frames
        The BGR frames (rendered when read).
    gt : list of dict
        Per frame, ``{person id: box}`` of the persons counted there (float64
        ``x1, y1, x2, y2``, clipped to the frame).
    ignored : list of dict
        Per frame, ``{person id: box}`` of the persons present but mostly hidden or
        outside: not demanded, and a hypothesis on one is not false.
    visible : list of dict
        Per frame, ``{person id: share}`` of each present person's box that shows (in the
        frame and not covered by those in front).
    fps : float
        Its frame rate.
    index : list of int
        Each frame's index in the scene at the clip's rate.
    """

    name: str
    description: str
    frames: Frames
    gt: list[dict[int, np.ndarray]]
    ignored: list[dict[int, np.ndarray]]
    visible: list[dict[int, float]]
    fps: float
    index: list[int]

    def __len__(self) -> int:
        return len(self.frames)

    def every(self, k: int) -> Scene:
        """Return the scene at a ``k``-th of its frame rate: every ``k``-th frame from the first."""
        return Scene(self.name, self.description, self.frames.every(k), self.gt[::k], self.ignored[::k],
                     self.visible[::k], self.fps / k, self.index[::k])


def build_scene(
    name: str, description: str, bg: np.ndarray, people: list[Person], walks: list[Walk], n_frames: int,
    fps: float,
) -> Scene:
    """Render a scene's pastes and truth from its walks.

    Parameters
    ----------
    name, description : str
        The scene's name and what happens in it.
    bg : np.ndarray
        The background.
    people : list of Person
        The persons; each walk names one by index (its id in the truth).
    walks : list of Walk
        Who walks where; one whose path ends before the scene stays at its last point.
    n_frames : int
        The scene's length in frames at the clip's rate.
    fps : float
        The clip's rate.

    Returns
    -------
    Scene
        The scene at the clip's rate.
    """
    height, width = bg.shape[:2]
    tracks = {walk.person: (walk.start, walk.positions()) for walk in walks}
    pastes, gts, ignored, visible = [], [], [], []
    for t in range(n_frames):
        boxes = {}
        for pid, (start, positions) in tracks.items():
            if start <= t:
                fx, fy = positions[min(t - start, len(positions) - 1)]
                w, h = people[pid].size
                x1, y2 = round(fx - w / 2), round(fy)
                boxes[pid] = (x1, y2 - h, x1 + w, y2)
        order = sorted(boxes, key=lambda pid: (boxes[pid][3], pid))
        pastes.append([(pid, boxes[pid][0] - MARGIN, boxes[pid][1] - MARGIN) for pid in order])
        gt, ign, vis = {}, {}, {}
        for z, pid in enumerate(order):
            x1, y1, x2, y2 = boxes[pid]
            cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
            if cx1 >= cx2 or cy1 >= cy2:
                continue
            covered = np.zeros((cy2 - cy1, cx2 - cx1), dtype=bool)
            for front in order[z + 1:]:
                fx1, fy1, fx2, fy2 = boxes[front]
                covered[max(fy1 - MARGIN - cy1, 0):max(fy2 + MARGIN - cy1, 0),
                        max(fx1 - MARGIN - cx1, 0):max(fx2 + MARGIN - cx1, 0)] = True
            inside = covered.size / ((x2 - x1) * (y2 - y1))
            hidden = float(covered.mean())
            box = np.array([cx1, cy1, cx2, cy2], dtype=np.float64)
            (gt if inside >= INSIDE and hidden <= HIDDEN else ign)[pid] = box
            vis[pid] = inside * (1 - hidden)
        gts.append(gt)
        ignored.append(ign)
        visible.append(vis)
    frames = Frames(bg, [person.image for person in people], pastes)
    return Scene(name, description, frames, gts, ignored, visible, fps, list(range(n_frames)))


def scene_walks(people: list[Person], width: int, fps: float) -> list[tuple[str, str, int, list[Walk]]]:
    """Return the scenes' plans: ``(name, description, frames at the clip's rate, walks)``.

    Each person walks at a pace in body heights per second, within the clip's measured
    quartiles (0.33-0.68, median 0.54: :data:`PACE`), turned into pixels per frame by its
    own height and the clip's rate. The crossing's front person is the tallest
    (person 0) and the one it hides the second tallest, its feet 12 px higher, so that
    its box fits in the front cutout as the two meet, half-way through the scene.

    Parameters
    ----------
    people : list of Person
        Six persons, tallest first.
    width : int
        The frame's width.
    fps : float
        The clip's rate.

    Returns
    -------
    list of tuple
        One plan per scene.
    """
    back_w, _ = people[1].size
    front_w, _ = people[0].size
    if back_w > front_w + 2 * MARGIN:
        raise ValueError(f"person 1 ({back_w} px wide) cannot hide behind person 0 ({front_w} px)")

    def speed(k: int, pace: float) -> float:
        return pace * people[k].size[1] / fps

    def frames(seconds: float) -> int:
        return round(seconds * fps)

    cx = width / 2
    cross = frames(8.0)
    a, b = speed(0, 0.45), speed(1, 0.45)
    stroll = speed(2, 0.5)
    group = float(np.mean([speed(k, 0.45) for k in (3, 4, 5)]))
    together = group * frames(5.0)
    return [
        ("crossing", "two persons walk towards each other; the nearer one hides the other fully as they pass",
         cross, [Walk(0, ((cx + a * cross / 2, 430), (cx - a * cross / 2, 430)), a),
                 Walk(1, ((cx - b * cross / 2, 418), (cx + b * cross / 2, 418)), b)]),
        ("stop", "a person walks 3 s, stands still 3 s, walks on; another passes behind it meanwhile",
         frames(9.0), [Walk(2, ((120, 340), (120 + 3 * fps * stroll, 325), (120 + 6 * fps * stroll, 300)),
                            stroll, pauses={1: frames(3.0)}),
                       Walk(3, ((600, 270), (100, 255)), speed(3, 0.5))]),
        ("edges", "persons enter at the left edge and leave at the right edge",
         frames(12.0), [Walk(0, ((-30, 300), (width + 60, 300)), speed(0, 0.5)),
                        Walk(4, ((420, 400), (width + 60, 420)), speed(4, 0.5)),
                        Walk(5, ((-40, 450), (width + 60, 450)), speed(5, 0.6), start=frames(4.0))]),
        ("group", "three persons walk side by side for 5 s, then go their separate ways",
         frames(10.0), [Walk(k, ((x, y), (x + 0.96 * together, y + 0.29 * together),
                                 (x + (0.96 + dx) * together, y + (0.29 + dy) * together)), group)
                        for k, x, y, dx, dy in ((3, 100, 240, 0.86, -0.51), (4, 73, 294, 0.96, 0.29),
                                                (5, 46, 348, 0.45, 0.89))]),
        ("crowd", "six persons on crossing ways: two pairs passing head-on, two walking across both",
         frames(10.0), [Walk(0, ((40, 300), (width + 60, 300)), speed(0, 0.45)),
                        Walk(1, ((740, 312), (-60, 312)), speed(1, 0.45)),
                        Walk(2, ((150, 390), (width + 60, 390)), speed(2, 0.45)),
                        Walk(3, ((740, 378), (-60, 378)), speed(3, 0.5)),
                        Walk(4, ((280, 215), (500, 600)), speed(4, 0.4)),
                        Walk(5, ((640, 560), (400, 170)), speed(5, 0.6))]),
    ]


def make_scenes(
    clip: Path | str,
    bundle: Path | str,
    fps_divisor: int = 1,
    *,
    bg: np.ndarray | None = None,
    people: list[Person] | None = None,
) -> list[Scene]:
    """Build the tracking scenes from the clip's persons and background.

    Parameters
    ----------
    clip : Path or str
        The video (``data/vtest.avi``).
    bundle : Path or str
        The model bundle whose detector picks the persons (:func:`select_people`).
    fps_divisor : int, optional
        1 for the clip's rate; 3 for the same scenes at a third of it (every third frame
        from the first).
    bg : np.ndarray, optional
        The clip's :func:`background`, computed where None.
    people : list of Person, optional
        Six persons of :func:`select_people`, chosen where None.

    Returns
    -------
    list of Scene
        ``crossing``, ``stop``, ``edges``, ``group`` and ``crowd``.
    """
    fps, _ = read_clip(clip)
    bg = background(clip) if bg is None else bg
    people = select_people(clip, bundle, 6, bg=bg) if people is None else people
    scenes = [build_scene(name, description, bg, people, walks, n_frames, fps)
              for name, description, n_frames, walks in scene_walks(people, bg.shape[1], fps)]
    return [scene.every(fps_divisor) for scene in scenes] if fps_divisor != 1 else scenes


def match(truth: np.ndarray, boxes: np.ndarray, iou_th: float = 0.5) -> list[tuple[int, int]]:
    """Return ``(truth row, box row)`` pairs matched greedily by IoU, best first, at ``iou_th`` or more.

    Parameters
    ----------
    truth, boxes : np.ndarray
        ``x1, y1, x2, y2`` rows (further columns ignored).
    iou_th : float, optional
        The least IoU of a match.

    Returns
    -------
    list of tuple of int
        The matched pairs.
    """
    from edge.runtime.golden import box_iou

    if len(truth) == 0 or len(boxes) == 0:
        return []
    iou = box_iou(np.asarray(truth, dtype=np.float64)[:, :4], np.asarray(boxes, dtype=np.float64)[:, :4])
    pairs, used_t, used_b = [], set(), set()
    for flat in np.argsort(-iou, axis=None):
        t, b = np.unravel_index(flat, iou.shape)
        if iou[t, b] < iou_th:
            break
        if t not in used_t and b not in used_b:
            pairs.append((int(t), int(b)))
            used_t.add(t)
            used_b.add(b)
    return pairs
